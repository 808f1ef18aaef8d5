"""The `piper` speech backend on a tiny ONNX model with a Piper voice's inputs and outputs (tests/piper_helpers.py),
loaded through the real loading code: audio with the model's own phoneme durations as timings, words for captions,
vowels the lips can read, and each refusal naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("piper", reason="the piper backend needs piper-tts")

from studio.config import TTSConfig  # noqa: E402
from tests.piper_helpers import HOP, RATE, frames_of, make_tiny_piper_voice  # noqa: E402
from workers.renderers.footage import phoneme_openness, phoneme_target  # noqa: E402
from workers.tts import MAX_LOADED_VOICES, make_tts, tts_problems  # noqa: E402
from workers.tts.base import SpeechError  # noqa: E402
from workers.tts.piper import model_problems  # noqa: E402

TEXT = "Meet the Glow Serum. It absorbs in seconds, really!"


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> Path:
    return make_tiny_piper_voice(tmp_path_factory.mktemp("piper"))


@pytest.fixture(scope="module")
def tts(voice):
    return make_tts(TTSConfig(type="piper", voice_path=str(voice)))


def test_piper_speech_is_timed_by_the_models_own_durations(tts):
    speech = tts.synthesize(TEXT)
    assert speech.sample_rate == RATE
    ids = [i for sentence in tts.voice.phonemize(TEXT) for i in tts.voice.phonemes_to_ids(sentence)]
    assert len(speech.samples) == sum(frames_of(i) for i in ids) * HOP  # the model's durations, every sample
    first = speech.phonemes[1]  # after the opening pause: BOS and its pad
    assert first.text == "m" and first.start == pytest.approx((frames_of(1) + frames_of(0)) * HOP / RATE)
    starts = [p.start for p in speech.phonemes]
    assert starts == sorted(starts) and speech.phonemes[-1].end <= speech.duration + 1e-9


def test_piper_words_follow_the_text_for_captions(tts):
    speech = tts.synthesize(TEXT)
    assert [w.text for w in speech.words] == ["Meet", "the", "Glow", "Serum", "It", "absorbs", "in", "seconds",
                                              "really"]
    for a, b in zip(speech.words, speech.words[1:], strict=False):
        assert a.start < a.end <= b.start
    gap = speech.words[4].start - speech.words[3].end  # the sentence's full stop is a pause
    assert gap > speech.words[1].start - speech.words[0].end


def test_piper_vowels_open_the_mouth_and_lips_close_on_m(tts):
    speech = tts.synthesize("Meet the Glow Serum.")
    shown = [p.text for p in speech.phonemes]
    assert {"i", "@", "E"} <= set(shown)  # IPA vowels as the mouth tables name them
    assert all(phoneme_openness(v) > 0.3 for v in ("i", "@", "E", "o"))
    target = phoneme_target(speech, 25, 0.0, 1.0)
    m = next(p for p in speech.phonemes if p.text == "m")
    e = next(p for p in speech.phonemes if p.text == "E")
    assert target[int((e.start + e.end) / 2 * 25)] > target[int((m.start + m.end) / 2 * 25)]


def test_piper_voice_is_loaded_once_per_process(voice):
    config = TTSConfig(type="piper", voice_path=str(voice))
    assert make_tts(config) is make_tts(config)


def test_a_process_keeps_only_the_voices_it_used_last(voice):
    """One more voice than MAX_LOADED_VOICES: the least recently used is let go (loaded again when asked for), the
    others stay loaded, a voice used again counts as recent."""
    configs = [TTSConfig(type="piper", voice_path=str(voice), length_scale=1.0 + k / 10)
               for k in range(MAX_LOADED_VOICES + 1)]
    first = [make_tts(c) for c in configs[:MAX_LOADED_VOICES]]
    assert make_tts(configs[0]) is first[0]  # used again: now the most recent, configs[1] the least
    make_tts(configs[-1])
    assert make_tts(configs[0]) is first[0]
    assert [make_tts(c) is v for c, v in zip(configs[2:MAX_LOADED_VOICES], first[2:], strict=True)] == \
        [True] * (MAX_LOADED_VOICES - 2)
    assert make_tts(configs[1]) is not first[1]  # let go, loaded again


def test_piper_refusals_name_the_problem(voice, tmp_path):
    assert "tts.voice_path is not set" in model_problems(None)[0]
    assert model_problems(str(tmp_path / "none.onnx")) == [f"tts.voice_path {tmp_path / 'none.onnx'} does not exist "
                                                           "or is not a file"]
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(voice.read_bytes())
    assert "lonely.onnx.json: not a Piper voice config" in model_problems(str(lonely))[0]
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    Path(f"{junk}.json").write_text(Path(f"{voice}.json").read_text())
    assert "onnxruntime cannot open it" in model_problems(str(junk))[0]
    other = make_tiny_piper_voice(tmp_path / "tokens", inputs=("tokens", "input_lengths", "scales"))
    assert "lacks the inputs input" in " ".join(model_problems(str(other)))
    german = make_tiny_piper_voice(tmp_path / "de", language="de")
    (problem,) = model_problems(str(german), "en-us")
    assert "tts.voice 'en-us' speaks 'en', the Piper voice tiny.onnx speaks 'de'" in problem
    assert tts_problems(TTSConfig(type="piper", voice_path=str(german), voice="de")) == []
    with pytest.raises(SpeechError, match="does not exist"):
        make_tts(TTSConfig(type="piper", voice_path=str(tmp_path / "none.onnx")))


def test_config_check_refuses_a_missing_piper_voice(tmp_path):
    from typer.testing import CliRunner

    from api.cli import app

    config = tmp_path / "piper.yaml"
    config.write_text(json.dumps({"tts": {"type": "piper", "voice_path": str(tmp_path / "gone.onnx")}}))
    res = CliRunner().invoke(app, ["config", "check", str(config)])
    assert res.exit_code == 1
    assert f"tts piper: tts.voice_path {tmp_path / 'gone.onnx'} does not exist" in res.output.replace("\n", "")


def test_piper_says_nothing_for_empty_text(tts):
    with pytest.raises(SpeechError, match="the text is empty"):
        tts.synthesize("   ")
    assert np.isfinite(tts.synthesize("Hi.").samples).all()
