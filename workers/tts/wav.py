"""Writing Speech as a mono 16-bit PCM WAV file."""

from __future__ import annotations

import os
import tempfile
import wave
from pathlib import Path

import numpy as np

from workers.tts.base import Speech


def resample(samples: np.ndarray, rate: int, to: int) -> np.ndarray:
    """`samples` at `to` Hz (float64), by linear interpolation: speech only, where aliasing above 8 kHz does not
    matter."""
    samples = np.asarray(samples, dtype=np.float64)
    if rate == to or not len(samples):
        return samples
    count = round(len(samples) * to / rate)
    return np.interp(np.arange(count) * (rate / to), np.arange(len(samples)), samples)


def speech_to_wav(speech: Speech, path: str | os.PathLike, *, sample_rate: int | None = None) -> None:
    """Write `speech` to `path`, resampled (linear interpolation) to `sample_rate` if given.

    The file appears complete or not at all: it is written next to `path` and then renamed over it,
    so a reader (ffmpeg, the streamer) never sees a half-written file.
    """
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    path = Path(path)
    rate = sample_rate or speech.sample_rate
    samples = resample(speech.samples, speech.sample_rate, rate)
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f, wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the file is read by other services
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
