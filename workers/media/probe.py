"""Reading media with PyAV: probe, decode frames, decode audio. Errors name the file and the problem."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class FootageError(ValueError):
    """The footage cannot be used; the message says why, with the value."""


@dataclass(frozen=True)
class MediaInfo:
    width: int
    height: int
    fps: float
    duration: float
    has_audio: bool
    video_codec: str


def probe(path: Path) -> MediaInfo:
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise FootageError(f"{path.name}: file is missing or empty")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise FootageError(f"{path.name}: no video stream (is this an audio file?)")
            v = c.streams.video[0]
            rate = v.average_rate or v.guessed_rate
            fps = float(rate) if rate else 0.0
            if v.duration is not None and v.time_base is not None:
                duration = float(v.duration * v.time_base)
            elif c.duration is not None:
                duration = c.duration / av.time_base
            else:
                duration = 0.0
            return MediaInfo(
                width=v.codec_context.width, height=v.codec_context.height, fps=fps, duration=duration,
                has_audio=bool(c.streams.audio), video_codec=v.codec_context.name,
            )
    except FootageError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:
        raise FootageError(f"{path.name}: not a readable video ({exc.__class__.__name__}: {exc})") from None


def iter_frames(path: Path, *, width: int | None = None, height: int | None = None,
                start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, RGB uint8 frame) from `start`, optionally scaled. Decode errors are FootageError."""
    path = Path(path)
    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            if start > 0:
                rate = stream.average_rate or stream.guessed_rate or Fraction(25)
                target = int(start / rate / stream.time_base)
                c.seek(target, stream=stream, backward=True, any_frame=False)
            index = None
            for frame in c.decode(stream):
                if index is None:
                    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
                    t = float(frame.pts * stream.time_base) if frame.pts is not None else 0.0
                    index = round(t * float(rate))
                if index >= start:
                    img = frame.to_ndarray(format="rgb24", width=width, height=height) if width else \
                        frame.to_ndarray(format="rgb24")
                    yield index, img
                index += 1
    except av.error.FFmpegError as exc:
        raise FootageError(f"{path.name}: video is truncated or corrupt ({exc})") from None


def read_audio(path: Path, *, rate: int = 16000) -> np.ndarray:
    """Whole audio track as mono float32 at `rate`."""
    path = Path(path)
    chunks = []
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise FootageError(f"{path.name}: no audio track; the footage must include the creator's voice")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in c.decode(c.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise FootageError(f"{path.name}: audio is truncated or corrupt ({exc})") from None
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def frame_rms(samples: np.ndarray, *, rate: int, fps: float, frames: int) -> np.ndarray:
    """RMS loudness per video frame window."""
    hop = rate / fps
    out = np.zeros(frames, np.float32)
    for i in range(frames):
        a, b = int(i * hop), int((i + 1) * hop)
        win = samples[a:b]
        out[i] = float(np.sqrt(np.mean(win * win))) if len(win) else 0.0
    return out
