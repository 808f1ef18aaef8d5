"""`studio eval lipsync` on synthetic footage: an avatar from the first 70 %, four candidates rendered from
the held-out audio and measured against the held-out frames with the same face mesh; and the lag between voice and
mouth in renders driven by our TTS's phonemes and by recognised ones; and on footage whose mouth the phonemes said
shape, lips from those phonemes (`--phonemes`) against the recognised ones."""

from __future__ import annotations

import json
import math
import subprocess

import av
import numpy as np
import pytest
import yaml

from studio.config import MediaProfile, Settings
from tests.conftest import STUDIO, studio_env
from workers.eval.lipsync import CANDIDATES, eval_lipsync, read_phonemes
from workers.eval.metrics import openness
from workers.media.face import FaceAnalyzer
from workers.media.probe import FootageError, frame_rms
from workers.renderers.footage import FootageRenderer
from workers.speech.recognize import with_recognised_phonemes
from workers.tts.base import Speech
from workers.tts.espeak import EspeakTTS

pytestmark = pytest.mark.slow
METRICS = ("correlation", "lmd_pct", "silent_closed", "seam", "psnr_outside_db")


def _frames(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, small_footage):
    tmp = tmp_path_factory.mktemp("eval")
    settings = Settings(data_dir=str(tmp / "data"), media=MediaProfile(width=360, height=640))
    stages = set()
    result = eval_lipsync(small_footage(seconds=20.0), settings=settings, workdir=tmp / "work", out_dir=tmp / "out",
                          progress=lambda stage, done, total: stages.add(stage))
    return result, tmp / "out", stages, tmp / "work"


def test_every_candidate_has_every_metric(evaluated):
    result, _, stages, _ = evaluated
    assert set(result["candidates"]) == set(CANDIDATES)
    for name, m in result["candidates"].items():
        for key in METRICS:
            assert m[key] is not None and math.isfinite(m[key]), (name, key, m[key])
        assert m["frames_compared"] + m["mesh_dropped"] == result["frames"]
        assert m["frames_compared"] >= 0.9 * result["frames"], (name, m)
        assert isinstance(m["best_lag_frames"], int) and abs(m["best_lag_frames"]) <= 5, (name, m)
    assert result["frames"] == 150  # the last 30 % of 20 s at 25 fps, audio cut to the video
    assert set(result["beats_baselines"]) == {"correlation", "lmd"}
    assert set(result["margins"]) == {"loudness", "plain_loop"}
    assert {"split", "analyse", "recognise", "measure"} <= stages
    assert set(result["drives"]) == {"renderer", "recognition"}
    assert set(result["recognition"]) == {"vs_audio_map", "beats_baselines", "margins", "lag_within_one_frame"}
    assert set(result["recognition"]["margins"]) == {"loudness", "plain_loop"}
    json.dumps(result, allow_nan=False)


def test_renderer_follows_the_voice_better_than_the_idle_loop(evaluated):
    c = evaluated[0]["candidates"]
    assert c["plain_loop"]["correlation"] < c["renderer"]["correlation"]
    assert c["renderer"]["correlation"] > 0.3
    # Outside the mouth the renderer leaves the base loop untouched: same PSNR as the plain loop.
    assert abs(c["renderer"]["psnr_outside_db"] - c["plain_loop"]["psnr_outside_db"]) < 0.2


def test_recognised_phonemes_drive_the_lips_in_time_with_the_voice(evaluated):
    result = evaluated[0]
    rec, c = result["candidates"]["recognition"], result["candidates"]
    assert result["drives"]["recognition"] == "recognised phonemes"
    assert result["recognition_run"]["phonemes"] >= 30 and 0.4 < result["recognition_run"]["voiced_share"] < 0.9
    assert rec["best_lag_frames"] == 0 and result["recognition"]["lag_within_one_frame"]
    assert rec["correlation"] > 0.6 and rec["silent_closed"] >= 0.7
    assert result["recognition"]["margins"]["plain_loop"]["correlation"] > 0.5
    assert abs(rec["psnr_outside_db"] - c["plain_loop"]["psnr_outside_db"]) < 0.2


@pytest.mark.xfail(strict=True, reason=(
    "not met on this footage: the synthetic presenter's mouth is its voice's loudness (synthface._mouth_track), "
    "which the audio map fitted on the same footage reproduces (correlation 0.96) and which no phoneme drive "
    "follows; measured margins -0.18 correlation, -0.79 LMD points. On footage whose mouth the phonemes shape, the "
    "phonemes said beat the map on correlation and tie it on LMD, while recognised ones lose on both (python -m "
    "bench lipsync)"))
def test_recognition_beats_the_audio_map(evaluated):
    assert evaluated[0]["recognition"]["vs_audio_map"]["beats"] == {"correlation": True, "lmd": True}


def _peak_lag(mouth: np.ndarray, voice: np.ndarray) -> float:
    """Frames by which the mouth's opening trails the voice's loudness, to a tenth of a frame: the
    cross-correlation's peak, refined by a parabola through it and its neighbours."""
    n = len(mouth)
    curve = np.array([np.corrcoef(mouth[k:], voice[:n - k])[0, 1] if k >= 0 else
                      np.corrcoef(mouth[:k], voice[-k:])[0, 1] for k in range(-3, 4)])
    i = int(np.clip(np.argmax(curve), 1, 5))
    a, b, c = curve[i - 1:i + 2]
    return i - 3 + 0.5 * (a - c) / (a - 2 * b + c)


def test_speech_driven_renders_follow_the_voice_within_a_frame(evaluated):
    """Our TTS's phonemes and phonemes recognised in the same audio, rendered on the eval's avatar: the mouth's
    opening (face mesh) peaks with the voice's loudness. The earlier phoneme target trailed it by 1.3 frames."""
    bundle = next(evaluated[3].glob("data/**/manifest.json")).parent
    renderer = FootageRenderer(bundle, MediaProfile(width=360, height=640))
    said = EspeakTTS("en-us", 165).synthesize("Welcome back to the studio. Today we look at a bright red jacket, "
                                              "made from recycled wool. My mother made pumpkin pie every autumn.")
    heard = with_recognised_phonemes(Speech(samples=said.samples, sample_rate=said.sample_rate))
    voice = frame_rms(said.samples, rate=said.sample_rate, fps=25, frames=renderer.frame_count(said))
    mesh = FaceAnalyzer()
    try:
        for speech in (said, heard):
            mouth = np.array([openness(mesh.lip_landmarks(f)) for f in renderer.render(speech)])
            assert abs(_peak_lag(mouth, voice)) < 1.0, speech is said
    finally:
        mesh.close()


def test_outputs_have_the_evaluated_frame_count(evaluated):
    result, out, _, _ = evaluated
    assert sorted(p.name for p in out.iterdir()) == ["recognition.mp4", "reference.mp4", "rendered.mp4"]
    for name in ("rendered", "recognition", "reference"):
        path = out / f"{name}.mp4"
        assert result["outputs"][name] == str(path)
        assert _frames(path) == result["frames"]
        with av.open(str(path)) as c:
            assert c.streams.audio, f"{name}.mp4 has no audio"


def test_cli_prints_one_json_object(tmp_path, small_footage):
    clip = small_footage(seconds=10.0)
    done = subprocess.run([STUDIO, "eval", "lipsync", "--footage", str(clip), "--json"], capture_output=True,
                          text=True, env=studio_env(tmp_path / "data"), timeout=540)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    result = json.loads(done.stdout)
    beats = result["beats_baselines"]
    assert done.returncode == (0 if beats["correlation"] and beats["lmd"] else 1)
    assert result["size"] == [720, 1280]  # configs/default.yaml
    assert set(result["candidates"]) == set(CANDIDATES)


def test_short_clip_is_refused_naming_its_duration(tmp_path, small_footage):
    clip = small_footage(seconds=3.0)
    settings = Settings(data_dir=str(tmp_path / "data"), media=MediaProfile(width=360, height=640))
    with pytest.raises(FootageError, match=r"3\.0 s long.*at least 5 s"):
        eval_lipsync(clip, settings=settings, workdir=tmp_path / "work")
    done = subprocess.run([STUDIO, "eval", "lipsync", "--footage", str(clip), "--json"], capture_output=True,
                          text=True, env=studio_env(tmp_path / "data"), timeout=120)
    assert done.returncode == 2
    assert "3.0 s" in done.stderr and done.stdout == ""


@pytest.fixture(scope="module")
def articulated(tmp_path_factory):
    """20 s of footage whose mouth the phonemes said shape, in another voice than the eval's (en-gb+f3), made and
    measured through the CLI with its phonemes."""
    tmp = tmp_path_factory.mktemp("articulated")
    footage, phonemes = tmp / "f.mp4", tmp / "phonemes.json"
    subprocess.run([STUDIO, "synth", "footage", str(footage), "--seconds", "20", "--width", "360", "--height", "640",
                    "--mouth", "articulation", "--voice", "en-gb+f3", "--phonemes-out", str(phonemes)],
                   check=True, capture_output=True, timeout=300)
    config = tmp / "studio.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp / "data"), "media": {"width": 360, "height": 640}}))
    done = subprocess.run([STUDIO, "eval", "lipsync", "--footage", str(footage), "--phonemes", str(phonemes),
                           "--json", "--config", str(config)], capture_output=True, text=True,
                          env=studio_env(tmp / "data"), timeout=540)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    return json.loads(done.stdout), footage, phonemes


def test_lips_from_the_phonemes_said_beat_lips_from_recognised_ones(articulated):
    """What recognition costs: the same phoneme path, fed the phonemes that were said (as our TTS feeds it), follows
    the mouth they shaped clearly better than fed the phonemes recognised in the audio."""
    result = articulated[0]
    own, rec = result["candidates"]["phonemes"], result["candidates"]["recognition"]
    mapped = result["candidates"]["renderer"]
    print(f"\nphonemes said: correlation {own['correlation']:.3f}, LMD {own['lmd_pct']:.2f}; recognised: "
          f"{rec['correlation']:.3f}, {rec['lmd_pct']:.2f}; audio map: {mapped['correlation']:.3f}, "
          f"{mapped['lmd_pct']:.2f}")
    assert set(result["candidates"]) == {*CANDIDATES, "phonemes"}
    assert own["best_lag_frames"] == 0 and result["phonemes"]["lag_within_one_frame"]
    assert own["correlation"] > rec["correlation"] + 0.08 and own["lmd_pct"] < rec["lmd_pct"]
    assert result["phonemes"]["beats_baselines"] == {"correlation": True, "lmd": True}
    assert set(result["phonemes"]["vs_audio_map"]) == {"correlation", "lmd_pct", "beats"}


def test_phonemes_of_other_speech_are_refused_before_an_avatar_is_built(articulated, tmp_path):
    _, footage, phonemes = articulated
    early = tmp_path / "early.json"  # phonemes of the first 10 s only: nothing said in the held-out last 6 s
    early.write_text(json.dumps({"phonemes": [r for r in json.loads(phonemes.read_text())["phonemes"] if r[2] < 10]}))
    settings = Settings(data_dir=str(tmp_path / "data"), media=MediaProfile(width=360, height=640))
    with pytest.raises(FootageError, match=r"say next to nothing in the held-out part \(14\.00-20\.00 s\)"):
        eval_lipsync(footage, settings=settings, workdir=tmp_path / "work", phonemes=read_phonemes(early))
    assert not list((tmp_path / "work").glob("**/manifest.json"))  # no avatar was built
