"""Phones recognised in speech that has no transcript, as espeak-ng symbols with their times.

pocketsphinx decodes with its phone language model (all-phone search, en-us, shipped in the wheel) and each
ARPAbet phone is mapped to the espeak-ng symbol the renderers' phoneme path reads (workers.speech.arpabet), so a
recording without a script drives the lips through the same tables as our own TTS (`with_recognised_phonemes`).

The phone identities are often wrong (a phone loop has no words to lean on); what the lips need most is when
speech starts and stops and roughly how open each sound is, and that is what the settings were tuned for, on
espeak-ng speech whose own phoneme times are known: voices en-us, en-gb, en+f3, en-us+m3 at 130-200 words a minute
and pitch 30-70, each clean, with white noise at 20 dB SNR, pink noise at 10 dB, reverberation (RT60 0.4 s) and
reverberation with noise at 15 dB (60 clips, 407 s). Frames at 25 fps where recognition and espeak-ng agree on
speech vs pause: 92 % with pocketsphinx's defaults (lw 6.5, 100 frames/s, worst clip 71 %), 95 % as set here
(worst clip 88 %); the correlation of the mouth opening they imply rose from 0.59 to 0.67. Narrower beams lose
accuracy, wider ones only cost time; the phone insertion penalty and batch normalisation changed nothing; triphones
(allphone_ci off) gain 0.02 in correlation at seven times the cost. Decoding takes about 3 % of the audio's
duration (30 s in 0.95 s on one busy core).

Timing: recognised phone boundaries sit a median 3.5 ms before espeak-ng's (3042 boundaries; espeak-ng's own times
match the sound's onsets to 1.4 ms), speech onsets after a pause 12.5 ms before, ends 3 ms after. All are within
one decoder frame (12.5 ms), a third of a video frame, so no shift is applied; the rendered lip-sync eval finds
the recognition path at lag 0 (workers.eval.lipsync, best_lag_frames).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from workers.speech.arpabet import SILENCE, espeak_symbol
from workers.tts.base import Speech, Timed

RATE = 16000  # the en-us acoustic model's sample rate
# Language weight 1.0 instead of 6.5: the phone bigrams then overrule what is heard less often, which keeps
# vowels from being swallowed in fast or noisy speech. Beams at 1e-20 cost nothing measurable and lose nothing.
DECODER = {"lw": 1.0, "beam": 1e-20, "pbeam": 1e-20}
# 80 decoder frames a second instead of 100: each phone then lasts at least about 40 ms (three HMM states), which
# drops the one-frame phones a phone loop inserts in pauses and noise.
FRAME_RATE = 80
_LEVEL = 0.15  # RMS of the loudest 20 ms windows after levelling (about -16 dBFS)
_PEAK_PCT = 99  # which windows count as the loudest: a clip that is mostly pause is levelled by its speech
_MAX_GAIN = 100.0  # 40 dB at most: room tone is not lifted to speech level
_FLOOR = 0.002  # faint seeded noise: pocketsphinx's cepstral normalisation breaks on digital silence
MIN_VOICED_SHARE = 0.05  # below this share of phones that are not pauses, recognition heard too little speech


class RecognitionError(RuntimeError):
    """pocketsphinx is missing or failed on this audio; the message says which."""


def _phone_lm() -> Path:
    from pocketsphinx import get_model_path

    return Path(get_model_path("en-us")) / "en-us-phone.lm.bin"


@functools.lru_cache(maxsize=1)
def _recogniser():
    """One all-phone decoder per process and the lock that guards it: a decoder is not thread-safe."""
    try:
        from pocketsphinx import Config, Decoder
    except ImportError:
        raise RecognitionError("pocketsphinx is not installed: run `make setup`") from None
    lm = _phone_lm()
    if not lm.is_file():
        raise RecognitionError(f"pocketsphinx's phone model {lm} is missing: reinstall pocketsphinx")
    # bestpath off: the Viterbi backtrace is what gives phone times; lattice rescoring would only cost time.
    dec = Decoder(Config(allphone=str(lm), lm=None, loglevel="FATAL", bestpath=False, frate=FRAME_RATE, **DECODER))
    return dec, threading.Lock()


def _prepared(samples: np.ndarray, rate: int) -> bytes:
    """16 kHz 16-bit PCM at a steady level over a faint noise floor (seeded: the same audio gives the same phones)."""
    x = np.asarray(samples, np.float32)
    if x.ndim != 1:
        raise ValueError(f"samples must be mono (one dimension), got shape {x.shape}")
    if rate != RATE:
        g = np.gcd(int(rate), RATE)
        x = resample_poly(x, RATE // g, int(rate) // g).astype(np.float32)
    n = len(x) // 320
    windows = np.sqrt(np.mean(x[:n * 320].reshape(n, 320) ** 2, axis=1)) if n else np.zeros(1)
    x = x * min(_LEVEL / max(float(np.percentile(windows, _PEAK_PCT)), 1e-9), _MAX_GAIN)
    x = x + np.random.default_rng(0).normal(0, _FLOOR, len(x)).astype(np.float32)
    return (np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes()


def recognize_phonemes(samples: np.ndarray, *, rate: int = RATE) -> list[Timed]:
    """The phones heard in mono float `samples` at `rate` Hz, in order, as espeak-ng symbols with their start and
    end in seconds; pauses and noise are '_' (adjacent ones merged). The same audio always gives the same phones.

    ValueError: the samples are not mono or the rate is not positive. RecognitionError: pocketsphinx is missing or
    failed; the next call starts on a fresh decoder."""
    if rate <= 0:
        raise ValueError(f"rate must be a positive sample rate in Hz, got {rate}")
    if len(samples) == 0:
        return []
    raw = _prepared(samples, rate)
    duration = len(samples) / rate
    dec, lock = _recogniser()
    with lock:
        try:
            # Live cepstral normalisation carries its mean over from the last utterance: start every call from
            # the model's initial mean, or the phones depend on what was decoded before.
            dec.reinit_feat()
            dec.start_utt()
            dec.process_raw(raw, full_utt=True)
            dec.end_utt()
            segs = [(s.word, s.start_frame, s.end_frame) for s in dec.seg()]
        except Exception as exc:
            # A decoder left inside an utterance refuses the next start_utt: the next call builds a fresh one.
            _recogniser.cache_clear()
            raise RecognitionError(f"pocketsphinx failed on {duration:.1f} s of audio: {exc}") from None
    phones: list[Timed] = []
    for word, first, last in segs:
        symbol = espeak_symbol(word)
        start, end = min(first / FRAME_RATE, duration), min((last + 1) / FRAME_RATE, duration)
        if end <= start:
            continue
        if phones and symbol == SILENCE and phones[-1].text == SILENCE:
            phones[-1] = Timed(SILENCE, phones[-1].start, end)
        else:
            phones.append(Timed(symbol, start, end))
    return phones


def voiced_share(phones: list[Timed], duration: float) -> float:
    """Share of `duration` seconds covered by phones that are not a pause."""
    voiced = sum(p.end - p.start for p in phones if p.text != SILENCE)
    return voiced / duration if duration > 0 else 0.0


def with_recognised_phonemes(speech: Speech, *, min_voiced_share: float = MIN_VOICED_SHARE) -> Speech:
    """`speech` with the phonemes recognised in it, so that the renderer drives its lips as for our own TTS.

    Unchanged, and so left to the avatar's audio map, when it has phonemes already (our TTS, an aligned voice-over:
    exact, where recognised ones are not) or when recognition heard speech in less than `min_voiced_share` of it
    (silence, noise, music). Pauses are left out, as in the phonemes our TTS reports."""
    if speech.phonemes or len(speech.samples) == 0:
        return speech
    phones = recognize_phonemes(speech.samples, rate=speech.sample_rate)
    if voiced_share(phones, speech.duration) < min_voiced_share:
        return speech
    return replace(speech, phonemes=[p for p in phones if p.text != SILENCE])
