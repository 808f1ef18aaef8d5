"""A still of a channel's live HLS preview, for pages in browsers that play no HLS (Chromium, Firefox).

nginx-rtmp writes `<hls dir>/<stream>.m3u8` and its MPEG-TS fragments, each starting on a keyframe. The newest
fragment's first frame is decoded (one frame, not the fragment) and cached by fragment name, so many pages polling
one channel cost one decode per fragment.
"""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import av

_NAME = re.compile(r"[0-9A-Za-z_-]{1,128}")
_cache: dict[str, tuple[str, bytes]] = {}
_lock = threading.Lock()


def hls_dir(data_root: Path) -> Path:
    """Where this host's nginx-rtmp writes the HLS previews (workers.stack.embedded, api.cli_roles)."""
    return Path(data_root) / "nginx" / "hls"


class PreviewError(Exception):
    """No preview to show; the message says why."""


def newest_fragment(hls_dir: Path, stream: str) -> Path:
    if not _NAME.fullmatch(stream):
        raise PreviewError(f"{stream!r} is not a stream name")
    playlist = hls_dir / f"{stream}.m3u8"
    try:
        lines = playlist.read_text().splitlines()
    except FileNotFoundError:
        raise PreviewError(f"channel {stream} is not airing: no HLS playlist yet") from None
    fragments = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    if not fragments:
        raise PreviewError(f"channel {stream}: the HLS playlist has no fragment yet")
    return hls_dir / Path(fragments[-1]).name


def first_frame_jpeg(path: Path, *, width: int = 360, quality: int = 80) -> bytes:
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
    except (av.FFmpegError, StopIteration, OSError) as exc:
        raise PreviewError(f"{path.name}: no picture could be decoded ({exc})") from None
    image = frame.to_image()
    height = round(image.height * width / image.width / 2) * 2
    out = io.BytesIO()
    image.resize((width, height)).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def latest_preview_jpeg(hls_dir: Path, stream: str) -> bytes:
    fragment = newest_fragment(hls_dir, stream)
    with _lock:
        cached = _cache.get(stream)
    if cached and cached[0] == fragment.name:
        return cached[1]
    jpeg = first_frame_jpeg(fragment)
    with _lock:
        _cache[stream] = (fragment.name, jpeg)
    return jpeg
