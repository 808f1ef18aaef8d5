"""Reading media with PyAV: probe, decode frames, decode audio. Errors name the file and the problem.

Uploaded media is untrusted: it is opened only as a file (no other protocol, so a playlist cannot reach
`file:` paths elsewhere on the server or a URL), only with the demuxers in ALLOWED_FORMATS (decided by FFmpeg
probing the content, whatever the name says), and refused before decode when what it declares (resolution,
frame rate, frame count) is more than its duration allows. Decoding then stops at what the duration allows,
so a file that lies about its duration cannot make us decode more than that (a decompression bomb).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from workers.media.allocator import close_decoders

# FFmpeg demuxer names: ISO BMFF/QuickTime (mp4, mov, m4a, 3gp) and Matroska/WebM.
ALLOWED_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm")
OPEN_OPTIONS = {"protocol_whitelist": "file", "format_whitelist": ",".join(ALLOWED_FORMATS)}
MAX_SIDE = 4096  # pixels, either side
MAX_PIXELS = 4096 * 2304  # per frame: 4K in either orientation
MAX_FPS = 120.0
MAX_DURATION = 3600.0  # seconds
FRAME_SLACK = 1.1  # decoded frames may exceed duration x fps by this factor (+ a few) before decode stops
SNIFF_BYTES = 4096


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
    container: str = "mov"

    @property
    def max_frames(self) -> int:
        """The most frames decode may yield: what the declared duration allows at the declared rate."""
        return math.ceil(self.duration * self.fps * FRAME_SLACK) + 5

    @property
    def suffix(self) -> str:
        """The file suffix the server stores this media under, from its probed container."""
        return ".mkv" if self.container in ("matroska", "webm") else ".mp4"


def sniff(path: Path, *, kind: str = "video") -> str | None:
    """What a text file that FFmpeg would follow to other files or URLs is, from its first bytes, or None. The
    description ends with what to do instead: upload the `kind` file itself."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    if b"\x00" in head:
        return None  # binary: a container, which the demuxer allowlist judges
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"#EXTM3U") or b"#EXT-X-" in head or b"#EXTINF" in head:
        return f"an HLS playlist (.m3u8), which names other files or URLs; upload the {kind} file itself"
    if text.startswith(b"ffconcat") or text.startswith(b"file "):
        return f"a concat list, which names other files; upload the {kind} file itself"
    if text.startswith(b"v=0") or text.startswith(b"[playlist]") or text.startswith(b"<?xml"):
        return f"a playlist or stream description, which names other files or URLs; upload the {kind} file itself"
    if b"://" in head or text.lower().startswith(b"file:"):
        return f"a URL or path list, not a {kind} file; upload the {kind} file itself"
    return None


@contextmanager
def open_media(path: Path):
    """Open untrusted media: the file itself only, an allowed container only. FootageError otherwise."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise FootageError(f"{path.name}: file is missing or empty")
    if (what := sniff(path)) is not None:
        raise FootageError(f"{path.name}: refused: this is {what}")
    try:
        container = av.open(str(path), options=dict(OPEN_OPTIONS))
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:
        raise FootageError(f"{path.name}: not a readable video in an accepted container (MP4/MOV or Matroska/WebM;"
                           f" images, image sequences, playlists and other formats are refused) "
                           f"({exc.__class__.__name__}: {exc})") from None
    with container:
        names = set(container.format.name.split(","))
        if not names & set(ALLOWED_FORMATS):
            raise FootageError(f"{path.name}: refused: container format {container.format.name!r} is not accepted "
                               f"(images, image sequences and playlists are not videos); upload MP4/MOV or "
                               f"Matroska/WebM")
        try:
            yield container
        finally:
            close_decoders(container)


def probe(path: Path) -> MediaInfo:
    path = Path(path)
    try:
        with open_media(path) as c:
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
            info = MediaInfo(
                width=v.codec_context.width, height=v.codec_context.height, fps=fps, duration=duration,
                has_audio=bool(c.streams.audio), video_codec=v.codec_context.name,
                container=c.format.name.split(",")[0],
            )
            _check_budget(path, info, declared_frames=v.frames)
            return info
    except FootageError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, OSError) as exc:
        raise FootageError(f"{path.name}: not a readable video ({exc.__class__.__name__}: {exc})") from None


def _check_budget(path: Path, info: MediaInfo, *, declared_frames: int) -> None:
    """Refuse, before any decode, media that declares more than its duration allows (a decompression bomb)."""
    w, h = info.width, info.height
    if w <= 0 or h <= 0 or w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        raise FootageError(f"{path.name}: refused: declared resolution {w}x{h} is over the limit of {MAX_SIDE} "
                           f"pixels a side and {MAX_PIXELS} pixels a frame")
    if not 0 < info.fps <= MAX_FPS:
        raise FootageError(f"{path.name}: refused: declared frame rate {info.fps:g} fps is outside 0–{MAX_FPS:g}")
    if not 0 < info.duration <= MAX_DURATION:
        raise FootageError(f"{path.name}: refused: declared duration {info.duration:g} s is outside "
                           f"0–{MAX_DURATION:g} s")
    if declared_frames > info.max_frames:
        raise FootageError(f"{path.name}: refused: declares {declared_frames} frames, more than its "
                           f"{info.duration:.1f} s at {info.fps:g} fps allow ({info.max_frames})")


def iter_frames(path: Path, *, width: int | None = None, height: int | None = None,
                start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, RGB uint8 frame) from `start`, optionally scaled. Decode errors are FootageError; so is a
    frame larger than declared, or more frames than the declared duration allows (decode stops there)."""
    path = Path(path)
    info = probe(path)
    try:
        with open_media(path) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            if start > 0:
                rate = stream.average_rate or stream.guessed_rate or Fraction(25)
                target = int(start / rate / stream.time_base)
                c.seek(target, stream=stream, backward=True, any_frame=False)
            index = None
            decoded = 0
            for frame in c.decode(stream):
                decoded += 1
                check_frame(path, info, frame, decoded)
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


def check_frame(path: Path, info: MediaInfo, frame, decoded: int) -> None:
    """Stop a decode that goes past what the probe declared: a bigger frame, or more frames than allowed."""
    if frame.width * frame.height > info.width * info.height:
        raise FootageError(f"{Path(path).name}: refused: a frame of {frame.width}x{frame.height} in a video "
                           f"declared {info.width}x{info.height}")
    if decoded > info.max_frames:
        raise FootageError(f"{Path(path).name}: refused: more than {info.max_frames} frames decode from "
                           f"{info.duration:.1f} s at {info.fps:g} fps")


def read_audio(path: Path, *, rate: int = 16000) -> np.ndarray:
    """Whole audio track as mono float32 at `rate`, at most what the declared duration allows."""
    path = Path(path)
    chunks = []
    budget = None
    try:
        with open_media(path) as c:
            if not c.streams.audio:
                raise FootageError(f"{path.name}: no audio track; the footage must include the creator's voice")
            if c.duration is not None:
                budget = math.ceil((c.duration / av.time_base) * rate * FRAME_SLACK) + rate
            got = 0
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in c.decode(c.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    got += len(chunks[-1])
                if budget is not None and got > budget:
                    raise FootageError(f"{path.name}: refused: more audio decodes than its declared duration "
                                       f"allows")
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
