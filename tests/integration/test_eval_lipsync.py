"""`studio eval lipsync` on synthetic footage: an avatar from the first 70 %, three candidates rendered from
the held-out audio and measured against the held-out frames with the same face mesh."""

from __future__ import annotations

import json
import math
import subprocess

import av
import pytest

from studio.config import MediaProfile, Settings
from tests.conftest import STUDIO, studio_env
from workers.eval_lipsync import CANDIDATES, eval_lipsync
from workers.media.probe import FootageError

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
    return result, tmp / "out", stages


def test_every_candidate_has_every_metric(evaluated):
    result, _, stages = evaluated
    assert set(result["candidates"]) == set(CANDIDATES)
    for name, m in result["candidates"].items():
        for key in METRICS:
            assert m[key] is not None and math.isfinite(m[key]), (name, key, m[key])
        assert m["frames_compared"] + m["mesh_dropped"] == result["frames"]
        assert m["frames_compared"] >= 0.9 * result["frames"], (name, m)
    assert result["frames"] == 150  # the last 30 % of 20 s at 25 fps, audio cut to the video
    assert set(result["beats_baselines"]) == {"correlation", "lmd"}
    assert set(result["margins"]) == {"loudness", "plain_loop"}
    assert {"split", "analyse", "measure"} <= stages
    json.dumps(result, allow_nan=False)


def test_renderer_follows_the_voice_better_than_the_idle_loop(evaluated):
    c = evaluated[0]["candidates"]
    assert c["plain_loop"]["correlation"] < c["renderer"]["correlation"]
    assert c["renderer"]["correlation"] > 0.3
    # Outside the mouth the renderer leaves the base loop untouched: same PSNR as the plain loop.
    assert abs(c["renderer"]["psnr_outside_db"] - c["plain_loop"]["psnr_outside_db"]) < 0.2


def test_outputs_have_the_evaluated_frame_count(evaluated):
    result, out, _ = evaluated
    assert sorted(p.name for p in out.iterdir()) == ["reference.mp4", "rendered.mp4"]
    for name in ("rendered", "reference"):
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
