"""recognize_phonemes against espeak-ng's own phoneme times: several voices, rates, noise and echo."""

from __future__ import annotations

import numpy as np
import pytest

from workers.renderers.footage import phoneme_openness
from workers.speech import recognize
from workers.speech.arpabet import ARPABET_TO_ESPEAK, SILENCE
from workers.speech.recognize import RecognitionError, recognize_phonemes, voiced_share, with_recognised_phonemes
from workers.tts.base import Speech, Timed
from workers.tts.espeak import EspeakTTS

FPS = 25
PAD_S = 1.0
TEXT = "Welcome back to the studio. Today we look at a bright red jacket, made from recycled wool."
VOICES = [("en-us", 165), ("en-gb", 140), ("en+f3", 190), ("en-us+m3", 165)]
# Measured 0.89-0.98 over these clips; a recogniser that hears only pauses scores about 0.33 on them, one that
# hears only speech about 0.67.
AGREEMENT = 0.85


def _padded(speech: Speech) -> Speech:
    """The speech between one-second pauses, as a recording would have them."""
    pad = np.zeros(int(PAD_S * speech.sample_rate), np.float32)
    return Speech(samples=np.concatenate([pad, speech.samples, pad]), sample_rate=speech.sample_rate,
                  phonemes=[Timed(p.text, p.start + PAD_S, p.end + PAD_S) for p in speech.phonemes])


def _noisy(x: np.ndarray, snr_db: float, seed: int = 3) -> np.ndarray:
    speech_rms = float(np.sqrt(np.mean(x[np.abs(x) > 0.02 * np.abs(x).max()] ** 2)))
    noise = np.random.default_rng(seed).normal(0, speech_rms * 10 ** (-snr_db / 20), len(x))
    return (x + noise).astype(np.float32)


def _echoed(x: np.ndarray, rate: int, rt60: float = 0.4, seed: int = 4) -> np.ndarray:
    """A room: the direct sound plus an exponentially decaying tail of reflections (RT60 `rt60` s)."""
    t = np.arange(int(rt60 * rate)) / rate
    ir = np.random.default_rng(seed).normal(0, 0.25, len(t)) * np.exp(-6.9 * t / rt60)
    ir[:int(0.003 * rate)], ir[0] = 0.0, 1.0
    y = np.convolve(x, ir)[:len(x)]
    return (y / np.abs(y).max() * np.abs(x).max()).astype(np.float32)


CONDITIONS = {"clean": lambda x, r: x, "noise 15 dB": lambda x, r: _noisy(x, 15), "echo": _echoed}


@pytest.fixture(scope="module")
def spoken() -> dict[str, Speech]:
    return {voice: _padded(EspeakTTS(voice, wpm).synthesize(TEXT)) for voice, wpm in VOICES}


def _voiced_frames(phones: list[Timed], n: int) -> np.ndarray:
    voiced = np.zeros(n, bool)
    for p in phones:
        if p.text != SILENCE:
            voiced[int(p.start * FPS):max(int(p.start * FPS) + 1, int(np.ceil(p.end * FPS)))] = True
    return voiced[:n]


@pytest.mark.parametrize("condition", CONDITIONS)
def test_speech_and_pause_frames_agree_with_espeaks_own_timings(spoken, condition):
    for voice, speech in spoken.items():
        heard = recognize_phonemes(CONDITIONS[condition](speech.samples, speech.sample_rate), rate=speech.sample_rate)
        n = speech.frame_count(FPS)
        truth, got = _voiced_frames(speech.phonemes, n), _voiced_frames(heard, n)
        agreement = float(np.mean(truth == got))
        assert agreement >= AGREEMENT, (voice, condition, agreement)
        # The threshold tells a working recogniser from one that hears only pauses or only speech.
        assert max(np.mean(~truth), np.mean(truth)) < AGREEMENT - 0.1, (voice, truth.mean())


def test_phones_are_espeak_symbols_in_order_inside_the_audio(spoken):
    speech = spoken["en-us"]
    heard = recognize_phonemes(speech.samples, rate=speech.sample_rate)
    assert {p.text for p in heard} <= set(ARPABET_TO_ESPEAK.values()) | {SILENCE}
    assert all(0 <= p.start < p.end <= speech.duration + 1e-9 for p in heard)
    assert all(a.end <= b.start + 1e-9 for a, b in zip(heard, heard[1:], strict=False))
    assert all(not (a.text == b.text == SILENCE) for a, b in zip(heard, heard[1:], strict=False))  # pauses merged
    assert heard[0].text == SILENCE and heard[0].end >= 0.3  # the leading pause
    voiced = [p.text for p in heard if p.text != SILENCE]
    # Vowels and closures both come through, so the lips open wide and shut.
    assert sum(phoneme_openness(t) >= 0.7 for t in voiced) >= 5 and sum(phoneme_openness(t) == 0 for t in voiced) >= 2


def test_the_same_audio_gives_the_same_phones_whatever_was_decoded_before(spoken):
    speech = spoken["en+f3"]
    first = recognize_phonemes(speech.samples, rate=speech.sample_rate)
    recognize_phonemes(np.random.default_rng(5).normal(0, 0.1, 16000).astype(np.float32))
    assert recognize_phonemes(speech.samples, rate=speech.sample_rate) == first


@pytest.mark.parametrize("name", ["digital silence", "faint noise", "mains hum"])
def test_silence_and_noise_give_no_voiced_phones(name):
    t = np.arange(3 * 16000) / 16000
    samples = {"digital silence": np.zeros(len(t)),
               "faint noise": np.random.default_rng(6).normal(0, 10 ** (-50 / 20), len(t)),
               "mains hum": 0.01 * np.sin(2 * np.pi * 50 * t)}[name].astype(np.float32)
    heard = recognize_phonemes(samples)
    assert {p.text for p in heard} <= {SILENCE}, heard
    quiet = Speech(samples=samples, sample_rate=16000)
    assert with_recognised_phonemes(quiet) is quiet  # left to the audio map


def test_speech_without_phonemes_gets_them_and_speech_with_them_keeps_them(spoken):
    speech = spoken["en-gb"]
    bare = Speech(samples=speech.samples, sample_rate=speech.sample_rate)
    heard = with_recognised_phonemes(bare)
    assert heard.phonemes and all(p.text != SILENCE for p in heard.phonemes)
    assert heard.samples is bare.samples and voiced_share(heard.phonemes, heard.duration) > 0.4
    assert with_recognised_phonemes(speech) is speech


def test_a_decoder_that_failed_is_replaced_for_the_next_call():
    dec, _ = recognize._recogniser()
    dec.start_utt()  # left inside an utterance, as a failure half-way would leave it
    samples = np.random.default_rng(7).normal(0, 0.1, 16000).astype(np.float32)
    with pytest.raises(RecognitionError, match=r"1\.0 s of audio"):
        recognize_phonemes(samples)
    assert recognize._recogniser()[0] is not dec
    assert recognize_phonemes(samples) is not None


def test_bad_input_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"shape \(2, 100\)"):
        recognize_phonemes(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="got 0"):
        recognize_phonemes(np.zeros(100, np.float32), rate=0)
    assert recognize_phonemes(np.zeros(0, np.float32)) == []
