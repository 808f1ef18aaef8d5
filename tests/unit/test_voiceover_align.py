"""workers.speech.align on speech with known timings, made by espeak-ng in several voices, rates and pitches, with
background noise and room echo (sox): the script's words are placed where they were said, a recording of anything
else is refused naming what did not match, and a long recording is cut at its word boundaries into 2-10 s parts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from workers.speech.align import (
    AlignmentError,
    ScriptMismatch,
    align_script,
    guess_pronunciation,
    number_words,
    script_tokens,
    voiceover_parts,
)
from workers.speech.recording import load_recording
from workers.tts.base import Timed

pytestmark = pytest.mark.skipif(subprocess.run(["which", "sox"], capture_output=True).returncode != 0,
                                reason="sox is installed by `make setup`")

TEXT = ("Paid partnership with Lumen Labs. Meet the Glow Serum, a light serum for everyday skin care. "
        "It absorbs in seconds and layers well under sunscreen. Tap the cart below to see today's bundle.")
OTHER = "The weather in the mountains turned cold overnight, and the hikers waited for the morning train home."
FIRST_HALF = "Paid partnership with Lumen Labs. Meet the Glow Serum, a light serum for everyday skin care."
REORDERED = ("Tap the cart below to see today's bundle. It absorbs in seconds and layers well under sunscreen. "
             "Paid partnership with Lumen Labs. Meet the Glow Serum, a light serum for everyday skin care.")
MORE = TEXT + " And remember to follow the channel for more deals every single day of the week."
# voice, words per minute, pitch (espeak -p), sox effect
VARIANTS = [("en-gb+f3", 150, 50, None), ("en-us", 175, 50, None), ("en+m3", 130, 30, None),
            ("en-us+f2", 200, 70, "noise"), ("en-gb", 160, 50, "echo"), ("en-us+m3", 150, 50, "pitch")]


def say(tmp: Path, text: str, voice: str = "en-gb+f3", rate: int = 150, pitch: int = 50,
        effect: str | None = None) -> np.ndarray:
    wav = tmp / f"say-{abs(hash((text, voice, rate, pitch, effect)))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(wav), text], check=True,
                   capture_output=True)
    # sox -R seeds its noise the same way every run: unseeded, one draw in CI lost two words of 33 (matched 0.94)
    if effect == "noise":  # white noise about 20 dB under the speech
        noise = tmp / "noise.wav"
        subprocess.run(["sox", "-R", str(wav), str(noise), "synth", "whitenoise", "vol", "0.03"], check=True,
                       capture_output=True)
        subprocess.run(["sox", "-m", str(wav), str(noise), str(wav.with_suffix(".fx.wav"))], check=True,
                       capture_output=True)
    elif effect == "echo":
        subprocess.run(["sox", str(wav), str(wav.with_suffix(".fx.wav")), "reverb", "60"], check=True,
                       capture_output=True)
    elif effect == "pitch":
        subprocess.run(["sox", str(wav), str(wav.with_suffix(".fx.wav")), "pitch", "300"], check=True,
                       capture_output=True)
    return load_recording(wav.with_suffix(".fx.wav") if effect else wav)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("align")


@pytest.mark.parametrize(("voice", "rate", "pitch", "effect"), VARIANTS)
def test_voiceover_of_the_script_is_accepted_in_any_voice(tmp, voice, rate, pitch, effect):
    got = align_script(say(tmp, TEXT, voice, rate, pitch, effect), TEXT)
    assert got.matched == 1.0
    assert [w.text for w in got.words] == script_tokens(TEXT)
    starts = [w.start for w in got.words]
    assert starts == sorted(starts) and all(w.end > w.start for w in got.words)
    assert got.words[-1].end <= got.duration + 1e-6
    assert {p.text for p in got.phonemes} >= {"p", "m", "i:", "V"}  # espeak-ng symbols the lips read


def _tts(tmp: Path, voice: str, rate: int, effect: str | None):
    """(samples at 16 kHz as a recording is read, our TTS's speech with its own word and phoneme times)."""
    from workers.speech.recording import RATE
    from workers.tts.espeak import EspeakTTS
    from workers.tts.wav import resample

    speech = EspeakTTS(voice=voice, words_per_minute=rate).synthesize(TEXT)
    samples = resample(speech.samples, speech.sample_rate, RATE)
    if effect:
        from workers.tts.wav import speech_to_wav

        plain = tmp / f"tts-{voice}.wav"
        speech_to_wav(speech, plain)
        fx = plain.with_suffix(".fx.wav")
        args = {"noise": ["synth", "whitenoise", "vol", "0.03"], "echo": ["reverb", "60"]}[effect]
        if effect == "noise":
            subprocess.run(["sox", "-R", str(plain), str(tmp / "n.wav"), *args], check=True, capture_output=True)
            subprocess.run(["sox", "-m", str(plain), str(tmp / "n.wav"), str(fx)], check=True, capture_output=True)
        else:
            subprocess.run(["sox", str(plain), str(fx), *args], check=True, capture_output=True)
        samples = load_recording(fx)
    return samples, speech


TIMED = [VARIANTS[1], VARIANTS[3], VARIANTS[4]]


@pytest.mark.parametrize(("voice", "rate", "pitch", "effect"), TIMED)
def test_voiceover_word_times_match_the_speech(tmp, voice, rate, pitch, effect):
    """Against espeak-ng's own word timings (the project's TTS reports them), resampled to 16 kHz: word starts and
    ends within 40 ms on average, nine in ten within 80 ms."""
    samples, speech = _tts(tmp, voice, rate, effect)
    got = align_script(samples, TEXT)
    errors = np.abs([x - y for a, b in zip(got.words, speech.words, strict=True) for x, y in ((a.start, b.start),
                                                                                              (a.end, b.end))])
    # espeak-ng places a word after a comma at the start of the pause, the aligner where the sound starts: a few
    # boundaries differ by a pause; the bulk agree within a few frames.
    assert errors.mean() < 0.04 and np.percentile(errors, 90) < 0.08, errors.round(3)


def test_voiceover_phonemes_are_placed_where_they_are_said(tmp):
    """The lips follow a voice-over's aligned phonemes: the mouth opening they give (the renderer's phoneme target)
    against the one from espeak-ng's own phoneme times, over the three voices above. Before, the aligner's phone
    pass failed on every script longer than a few words and each word's phones shared its time evenly: 0.64-0.69
    here; placed by the phone pass, 0.79-0.82."""
    from workers.renderers.footage import phoneme_target
    from workers.tts.base import Speech

    rs = []
    for voice, rate, _, effect in TIMED:
        samples, speech = _tts(tmp, voice, rate, effect)
        got = align_script(samples, TEXT)
        ours = phoneme_target(Speech(samples=samples, sample_rate=16000, phonemes=speech.phonemes), 25, 0, 1)
        aligned = phoneme_target(Speech(samples=samples, sample_rate=16000, phonemes=got.phonemes), 25, 0, 1)
        n = min(len(ours), len(aligned))
        rs.append(float(np.corrcoef(ours[:n], aligned[:n])[0, 1]))
    print("\nmouth target from aligned phonemes vs espeak-ng's own, r:", [round(r, 3) for r in rs])
    assert min(rs) > 0.75 and np.mean(rs) > 0.77, rs


@pytest.mark.parametrize(("said", "named"), [
    (OTHER, ["partnership", "lumen", "serum", "sunscreen", "bundle"]),
    (FIRST_HALF, ["absorbs", "sunscreen", "bundle"]),
    (REORDERED, ["partnership", "lumen", "serum"]),
])
@pytest.mark.parametrize("variant", [VARIANTS[0], VARIANTS[3]])
def test_voiceover_of_something_else_is_refused_naming_the_words(tmp, said, named, variant):
    with pytest.raises(ScriptMismatch, match="does not say the script") as refused:
        align_script(say(tmp, said, *variant), TEXT)
    missing = {w.lower() for w in refused.value.missing}
    if said == OTHER:  # a few short words may be heard by chance in other speech; most of the script is not
        assert len(set(named) & missing) >= 2 and len(missing) >= 0.5 * len(script_tokens(TEXT))
    else:
        assert set(named) <= missing
    if said == FIRST_HALF:  # the second half is missing, and only words of it (a short one may be heard by chance)
        second = script_tokens(TEXT)[len(script_tokens(FIRST_HALF)):]
        assert set(refused.value.missing) <= set(second) and len(refused.value.missing) >= 0.85 * len(second)
    assert ", ".join(refused.value.missing[:3]) in str(refused.value)


def test_voiceover_saying_more_than_the_script_is_refused_saying_where(tmp):
    with pytest.raises(ScriptMismatch, match=r"says more than the script: \d+\.\d s of speech at .*after the last"):
        align_script(say(tmp, MORE), TEXT)


def test_voiceover_numbers_and_brand_names_align(tmp):
    text = "Paid partnership with Northpeak. The Trailbox 42 keeps water cold for 24 hours, USB-C included."
    got = align_script(say(tmp, text, "en-us", 160), text)
    assert [w.text for w in got.words] == script_tokens(text)
    assert "42" in [w.text for w in got.words] and "USB-C" in [w.text for w in got.words]
    assert number_words(42) == ["forty", "two"] and number_words(2021) == ["two", "thousand", "twenty", "one"]
    assert guess_pronunciation("northpeak").split()[:2] == ["N", "AO"]


def test_voiceover_in_a_language_the_aligner_lacks_is_refused(tmp):
    with pytest.raises(AlignmentError, match="no model for language 'de'; it aligns: en"):
        align_script(np.zeros(16000, np.float32), "Bezahlte Partnerschaft.", language="de")


# --- cutting at word boundaries ---------------------------------------------------------------------------
def _words(spec: list[tuple[float, float]]) -> list[Timed]:
    return [Timed(f"w{i}", a, b) for i, (a, b) in enumerate(spec)]


def test_voiceover_parts_are_2_to_10_s_cut_in_the_gaps_and_cover_every_word():
    rng = np.random.default_rng(3)
    t, spec = 0.3, []
    for _ in range(120):  # ~40 s of words with pauses, some long (sentence ends)
        d = float(rng.uniform(0.15, 0.5))
        spec.append((t, t + d))
        t += d + float(rng.choice([0.05, 0.08, 0.6]))
    words = _words(spec)
    parts = voiceover_parts(words, duration=t + 0.3)
    assert parts[0][0] == 0.0 and parts[-1][1] == pytest.approx(t + 0.3, abs=1e-3)
    assert [p[2] for p in parts] == [0, *[p[3] for p in parts[:-1]]] and parts[-1][3] == len(words)
    for start, end, i, j in parts:
        assert 2.0 <= end - start <= 10.0
        assert start <= words[i].start and end >= words[j - 1].end  # never inside a word
    # the cuts prefer the long pauses
    gaps = [words[i].start - words[i - 1].end for _, _, i, _ in parts[1:]]
    assert np.mean(gaps) > 0.4


def test_voiceover_parts_keep_an_overlong_word_alone_and_a_short_recording_whole():
    words = _words([(0.2, 1.0), (1.1, 13.5), (13.6, 15.0), (15.1, 16.5)])
    parts = voiceover_parts(words, duration=17.0)
    assert any((i, j) == (1, 2) for _, _, i, j in parts)
    assert voiceover_parts(_words([(0.1, 0.9)]), duration=1.2) == [(0.0, 1.2, 0, 1)]


def test_voiceover_parts_of_a_real_recording(tmp):
    text = " ".join([TEXT] * 3)
    samples = say(tmp, text, "en-us", 170)
    got = align_script(samples, text)
    parts = voiceover_parts(got.words, duration=got.duration)
    assert len(parts) >= 4
    assert all(2.0 <= b - a <= 10.0 for a, b, _, _ in parts)
    assert sum(j - i for _, _, i, j in parts) == len(got.words)


def test_alignment_reports_its_progress_in_seconds_of_audio_decoded(tmp):
    """Three passes over the recording (words, phones, each part again): `progress(done, total)` starts at 0 of
    three times its length, never goes back, moves on between the passes and ends at the total; a refused
    recording's progress ends there too."""
    samples = say(tmp, TEXT)
    total = 3 * len(samples) / 16000
    seen: list[tuple[float, float]] = []
    align_script(samples, TEXT, progress=lambda done, of: seen.append((done, of)))
    assert seen[0] == (0.0, pytest.approx(total)) and seen[-1] == (pytest.approx(total), pytest.approx(total))
    done = [d for d, _ in seen]
    assert done == sorted(done) and len(set(done)) >= 5, seen  # words, phones, each part (several), the end
    assert all(of == pytest.approx(total) for _, of in seen)
    refused: list[tuple[float, float]] = []
    with pytest.raises(ScriptMismatch):
        align_script(say(tmp, OTHER), TEXT, progress=lambda d, of: refused.append((d, of)))
    assert refused[0][0] == 0.0 and refused[-1][0] == pytest.approx(refused[-1][1])
