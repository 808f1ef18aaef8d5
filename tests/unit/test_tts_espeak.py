"""EspeakTTS against the real libespeak-ng (apt package espeak-ng, installed by `make setup`)."""

from __future__ import annotations

import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from workers.tts import espeak
from workers.tts.base import Speech, SpeechError
from workers.tts.espeak import EspeakTTS
from workers.tts.wav import speech_to_wav

TWO_SENTENCES = "Welcome back to the studio. Today we look at a bright red jacket!"
WORDS = "Welcome back to the studio Today we look at a bright red jacket".split()


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return EspeakTTS()


@pytest.fixture(scope="module")
def speech(tts: EspeakTTS) -> Speech:
    return tts.synthesize(TWO_SENTENCES)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def span(speech: Speech, start: float, end: float) -> np.ndarray:
    return speech.samples[int(start * speech.sample_rate): int(end * speech.sample_rate)]


def test_audio_is_float32_mono_in_range_at_native_rate(speech: Speech) -> None:
    assert speech.samples.dtype == np.float32 and speech.samples.ndim == 1
    assert speech.sample_rate == 22050
    assert 0.1 < float(np.abs(speech.samples).max()) <= 1.0
    assert 2.0 < speech.duration < 8.0


def test_words_are_the_words_of_the_text_in_order(speech: Speech) -> None:
    assert [w.text for w in speech.words] == WORDS


def test_word_timings_are_increasing_and_inside_the_audio(speech: Speech) -> None:
    starts = [w.start for w in speech.words]
    assert starts[0] >= 0 and all(a < b for a, b in zip(starts, starts[1:], strict=False))
    for word, following in zip(speech.words, speech.words[1:], strict=False):
        assert word.start < word.end <= following.start, word
    assert speech.words[-1].start < speech.words[-1].end <= speech.duration


def test_trailing_silence_is_at_most_0_2_s(speech: Speech) -> None:
    assert 0 <= speech.duration - speech.words[-1].end <= 0.2 + 0.01


def test_speech_is_louder_in_words_than_in_the_pause_between_sentences(speech: Speech) -> None:
    studio, today = speech.words[4], speech.words[5]
    assert today.start - studio.end > 0.1  # espeak pauses after a full stop
    pause = rms(span(speech, studio.end, today.start))
    voiced = rms(np.concatenate([span(speech, w.start, w.end) for w in speech.words]))
    assert pause < 0.1 * voiced, (pause, voiced)


def test_phonemes_are_ordered_inside_the_audio_and_skip_pauses(speech: Speech) -> None:
    phonemes = speech.phonemes
    assert len(phonemes) > len(speech.words)
    assert all(p.start < p.end <= speech.duration for p in phonemes)
    assert all(a.end <= b.start + 1e-9 for a, b in zip(phonemes, phonemes[1:], strict=False))
    assert not any(p.text.startswith("_") or not p.text for p in phonemes)
    # Word ends are trimmed to the last audible sample; phoneme ends are where espeak put them.
    assert phonemes[0].start >= speech.words[0].start and phonemes[-1].end <= speech.words[-1].end + 0.02


def test_espeak_word_event_quirks_map_back_to_the_texts_words(tts: EspeakTTS) -> None:
    # '42' is spoken as two words, 'well-known' gets one event, and the event for 'really'
    # points at the '-' before it; '&' is spoken ('and') and so is a word.
    speech = tts.synthesize("It costs 42 dollars - really, well-known & loved.")
    assert [w.text for w in speech.words] == "It costs 42 dollars really well-known & loved".split()


def test_words_espeak_joins_are_split_back_out(tts: EspeakTTS) -> None:
    # 'of the' and 'for a' come as one event each, and the event for 'while' points inside 'for'.
    speech = tts.synthesize("One of the best, stay for a while now.")
    assert [w.text for w in speech.words] == "One of the best stay for a while now".split()
    starts = [w.start for w in speech.words]
    assert all(a < b for a, b in zip(starts, starts[1:], strict=False))


def test_non_ascii_text_keeps_its_characters(tts: EspeakTTS) -> None:
    speech = tts.synthesize("Café crème, naïve señor.")
    assert [w.text for w in speech.words] == ["Café", "crème", "naïve", "señor"]


def test_longer_text_gives_longer_audio(tts: EspeakTTS, speech: Speech) -> None:
    longer = tts.synthesize(TWO_SENTENCES + " It is warm, light, and waterproof.")
    assert longer.duration > speech.duration + 1.0
    assert len(longer.words) == len(WORDS) + 6


def test_rate_changes_duration(speech: Speech) -> None:
    fast = EspeakTTS(words_per_minute=300).synthesize(TWO_SENTENCES)
    slow = EspeakTTS(words_per_minute=100).synthesize(TWO_SENTENCES)
    assert fast.duration < 0.75 * speech.duration
    assert slow.duration > 1.3 * speech.duration
    assert [w.text for w in fast.words] == [w.text for w in slow.words] == WORDS


def test_rate_is_set_again_on_each_call(tts: EspeakTTS, speech: Speech) -> None:
    EspeakTTS(words_per_minute=300).synthesize("Quick.")  # leaves the shared library at 300 wpm
    assert tts.synthesize(TWO_SENTENCES).duration == pytest.approx(speech.duration, abs=0.1)


def test_successive_calls_agree(tts: EspeakTTS) -> None:
    # libespeak-ng keeps state between calls, so samples differ slightly; words, phonemes and
    # timings must not drift beyond its pause rounding (see the module docstring).
    first, second = tts.synthesize(TWO_SENTENCES), tts.synthesize(TWO_SENTENCES)
    assert [w.text for w in first.words] == [w.text for w in second.words]
    assert [p.text for p in first.phonemes] == [p.text for p in second.phonemes]
    assert second.duration == pytest.approx(first.duration, abs=0.06)
    for a, b in zip(first.words + first.phonemes, second.words + second.phonemes, strict=True):
        assert (b.start, b.end) == pytest.approx((a.start, a.end), abs=0.06)


def test_concurrent_calls_do_not_mix(tts: EspeakTTS, speech: Speech) -> None:
    short = "Another short line."
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(tts.synthesize, [TWO_SENTENCES, short] * 8))
    for result in results[::2]:
        assert [w.text for w in result.words] == WORDS
        assert result.duration == pytest.approx(speech.duration, abs=0.1)
    for result in results[1::2]:
        assert [w.text for w in result.words] == ["Another", "short", "line"]
        assert result.duration < speech.duration / 2


@pytest.mark.parametrize("text, problem", [
    ("", "empty"), ("   \n\t", "empty"), ("!!! ...", "no speakable"),
])
def test_unusable_text_is_rejected_with_the_value(tts: EspeakTTS, text: str, problem: str) -> None:
    with pytest.raises(SpeechError, match=problem) as info:
        tts.synthesize(text)
    assert repr(text) in str(info.value)


def test_long_bad_text_is_shortened_in_the_message(tts: EspeakTTS) -> None:
    with pytest.raises(SpeechError, match="no speakable") as info:
        tts.synthesize("?" * 1000)
    assert len(str(info.value)) < 120


def test_unknown_voice_is_named() -> None:
    with pytest.raises(SpeechError, match="xx-no-such-voice"):
        EspeakTTS(voice="xx-no-such-voice")


def test_other_voice_works() -> None:
    speech = EspeakTTS(voice="en-gb").synthesize("Hello there.")
    assert [w.text for w in speech.words] == ["Hello", "there"]


def test_missing_library_says_to_install_espeak_ng(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_library(name: str) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(espeak.ctypes, "CDLL", no_library)
    with pytest.raises(SpeechError, match="apt package espeak-ng"):
        espeak._Engine()


def test_rate_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="1000"):
        EspeakTTS(words_per_minute=1000)


def read_wav(path) -> tuple[int, int, int, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), frames


def test_wav_round_trips_length_rate_and_samples(speech: Speech, tmp_path) -> None:
    path = tmp_path / "line.wav"
    path.write_bytes(b"old contents")  # replaced, not appended to
    speech_to_wav(speech, path)
    channels, width, rate, frames = read_wav(path)
    assert (channels, width, rate, len(frames)) == (1, 2, speech.sample_rate, len(speech.samples))
    assert np.allclose(frames / 32767, speech.samples, atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["line.wav"]  # no temporary file left behind


def test_wav_resamples_to_48k(speech: Speech, tmp_path) -> None:
    path = tmp_path / "line48.wav"
    speech_to_wav(speech, path, sample_rate=48000)
    _, _, rate, frames = read_wav(path)
    assert rate == 48000
    assert abs(len(frames) - len(speech.samples) * 48000 / speech.sample_rate) <= 1
    resampled_rms = rms(frames / 32767)
    assert resampled_rms == pytest.approx(rms(speech.samples), rel=0.05)


def test_wav_clips_out_of_range_samples(tmp_path) -> None:
    speech = Speech(samples=np.array([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=np.float32), sample_rate=8000)
    speech_to_wav(speech, tmp_path / "clip.wav")
    assert read_wav(tmp_path / "clip.wav")[3].tolist() == [-32767, -32767, 0, 32767, 32767]
