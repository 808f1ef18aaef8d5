"""Recorded speech: forced alignment (with its check that the recording says the script) and phoneme recognition,
in seconds of compute per second of audio (real-time factor), against plain pocketsphinx decoding of the same audio
(its general English language model, default settings) measured in the same run; and the alignment's word-boundary
error on speech whose timings are known (the project's espeak-ng TTS reports them), in several voices, rates and
with noise and echo, against the naive peer that spreads the words over the speech by their length; and how well
the aligned phonemes drive the lips: the mouth-opening target they give (the renderer's phoneme path) correlated
with the one from espeak-ng's own phoneme times, against the same words with their phones sharing each word's
time evenly (what the aligner gave before its phone pass worked).

`python -m bench voiceover_align` (part of `make bench`)."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Figure, report
from workers.stack.demo import PRODUCTS

SCRIPT = " ".join(text for *_, text in PRODUCTS)
VARIANTS = [("en-us", 165, None), ("en-gb+f3", 150, None), ("en+m3", 130, None), ("en-us+f2", 200, "noise"),
            ("en-gb", 160, "echo")]


def _speech(voice: str, rate: int, effect: str | None, text: str, tmp: Path):
    """(samples at 16 kHz, espeak-ng's own word timings) for `text`, with a sox effect applied."""
    from workers.speech.recording import RATE, load_recording
    from workers.tts.espeak import EspeakTTS
    from workers.tts.wav import speech_to_wav

    speech = EspeakTTS(voice=voice, words_per_minute=rate).synthesize(text)
    wav = tmp / f"{voice}-{rate}.wav"
    speech_to_wav(speech, wav, sample_rate=RATE)
    if effect == "noise":
        subprocess.run(["sox", "-R", str(wav), str(tmp / "n.wav"), "synth", "whitenoise", "vol", "0.03"], check=True,
                       capture_output=True)
        subprocess.run(["sox", "-m", str(wav), str(tmp / "n.wav"), str(tmp / "fx.wav")], check=True,
                       capture_output=True)
        wav = tmp / "fx.wav"
    elif effect == "echo":
        subprocess.run(["sox", str(wav), str(tmp / "fx.wav"), "reverb", "60"], check=True, capture_output=True)
        wav = tmp / "fx.wav"
    return load_recording(wav), speech


def _plain_decode_seconds(samples: np.ndarray) -> float:
    """The peer: pocketsphinx as it comes (general English LM), decoding the same audio once."""
    from pocketsphinx import Decoder

    from workers.speech.align import levelled_pcm

    dec = Decoder(samprate=16000, loglevel="FATAL")
    pcm = levelled_pcm(samples)
    t = time.perf_counter()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    return time.perf_counter() - t


def _naive(words, duration: float, samples: np.ndarray) -> list[tuple[float, float]]:
    """The peer for accuracy: the words spread over the loud span of the audio in proportion to their length."""
    loud = np.flatnonzero(np.abs(samples) > 0.02)
    a, b = (loud[0] / 16000, loud[-1] / 16000) if loud.size else (0.0, duration)
    lengths = np.array([len(w.text) + 1 for w in words], float)
    edges = a + (b - a) * np.concatenate([[0], np.cumsum(lengths)]) / lengths.sum()
    return list(zip(edges[:-1], edges[1:], strict=True))


def _evenly(words, phonemes):
    """The peer for phone placement: each aligned word's phones sharing its time evenly."""
    from workers.tts.base import Timed

    out = []
    for w in words:
        mine = [p for p in phonemes if w.start - 1e-6 <= p.start < w.end - 1e-6]
        edges = np.linspace(w.start, w.end, len(mine) + 1)
        out += [Timed(p.text, a, b) for p, a, b in zip(mine, edges[:-1], edges[1:], strict=True)]
    return out


def _mouth_r(samples: np.ndarray, truth, phonemes) -> float:
    from workers.renderers.footage import phoneme_target
    from workers.tts.base import Speech

    ours = phoneme_target(Speech(samples=samples, sample_rate=16000, phonemes=truth), 25, 0, 1)
    got = phoneme_target(Speech(samples=samples, sample_rate=16000, phonemes=phonemes), 25, 0, 1)
    n = min(len(ours), len(got))
    return float(np.corrcoef(ours[:n], got[:n])[0, 1])


def main() -> None:
    from workers.speech.align import align_script

    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-align-") as td:
        tmp = Path(td)
        # Speed: about a minute of speech (the three demo scripts, twice).
        long_text = f"{SCRIPT} {SCRIPT}"
        samples, _ = _speech("en-us", 165, None, long_text, tmp)
        seconds = len(samples) / 16000
        try:  # the decoders loaded, not timed (8 s of it say more than this: refused)
            align_script(samples[:16000 * 8], "Paid partnership with Lumen Labs.")
        except ValueError:
            pass
        t = time.perf_counter()
        align_script(samples, long_text)
        align_s = time.perf_counter() - t
        peer_s = _plain_decode_seconds(samples)
        figures.append(Figure(f"alignment + check, RTF ({seconds:.0f} s of speech)", align_s / seconds, "s/s",
                              "plain pocketsphinx decoding", peer_s / seconds))
        try:
            from workers.speech.recognize import recognize_phonemes
        except ImportError:
            recognize_phonemes = None
        if recognize_phonemes is not None:
            recognize_phonemes(samples[:16000 * 4])
            t = time.perf_counter()
            recognize_phonemes(samples)
            figures.append(Figure(f"phoneme recognition, RTF ({seconds:.0f} s)", (time.perf_counter() - t) / seconds,
                                  "s/s", "plain pocketsphinx decoding", peer_s / seconds))
        # Accuracy: word boundaries (starts and ends) against espeak-ng's own timings.
        errors, naive, placed, even = [], [], [], []
        text = PRODUCTS[0][3]
        for voice, rate, effect in VARIANTS:
            samples, said = _speech(voice, rate, effect, text, tmp)
            truth = said.words
            got = align_script(samples, text)
            placed.append(_mouth_r(samples, said.phonemes, got.phonemes))
            even.append(_mouth_r(samples, said.phonemes, _evenly(got.words, got.phonemes)))
            for w, ref in zip(got.words, truth, strict=True):
                errors += [abs(w.start - ref.start), abs(w.end - ref.end)]
            for (a, b), ref in zip(_naive(truth, len(samples) / 16000, samples), truth, strict=True):
                naive += [abs(a - ref.start), abs(b - ref.end)]
        figures.append(Figure(f"word-boundary error, mean ({len(VARIANTS)} voices)", 1000 * float(np.mean(errors)),
                              "ms", "words spread by length", 1000 * float(np.mean(naive))))
        figures.append(Figure("word-boundary error, 90th percentile", 1000 * float(np.percentile(errors, 90)), "ms",
                              "words spread by length", 1000 * float(np.percentile(naive, 90))))
        figures.append(Figure("lips from aligned phonemes, r vs TTS's own", float(np.mean(placed)), "r",
                              "phones shared evenly in each word", float(np.mean(even))))
    report("voiceover_align", figures, notes="RTF: seconds of compute per second of audio, lower is faster; "
           "voices: " + ", ".join(f"{v} {r} wpm{' + ' + e if e else ''}" for v, r, e in VARIANTS))


if __name__ == "__main__":
    main()
