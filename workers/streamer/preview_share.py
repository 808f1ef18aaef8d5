"""Preview stills shared by every host: the streamer that airs a channel decodes the newest picture of the
channel's HLS preview on its own host every `streamer.preview_seconds` and writes the JPEG to Redis with an expiry,
so `GET /api/channels/{id}/preview.jpg` shows it whichever host the API runs on.

The decode (one frame of the newest fragment, cached by fragment name in workers.media.preview) runs on the
streamer's preview thread at that period, for the channels it airs now, never per request. A still is written
only when it is a JPEG of at most `streamer.preview_max_kb`; it expires after `TTL_PERIODS` periods, so a dead
streamer's still is gone soon after it. The API falls back to its own host's HLS directory when Redis holds none
(an older streamer, or Redis away).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import redis

from workers.media.preview import PreviewError, latest_preview_jpeg

log = logging.getLogger("studio.streamer")
PREFIX = "studio:channel-preview:"
TTL_PERIODS = 3  # a still not rewritten for three periods is gone: its streamer died or let the channel go
JPEG_MAGIC = b"\xff\xd8\xff"


def is_jpeg(data: bytes | None, *, max_bytes: int) -> bool:
    """A JPEG (by its start-of-image marker) of at most `max_bytes`: the only thing shared or served as a still."""
    return bool(data) and len(data) <= max_bytes and data.startswith(JPEG_MAGIC)


def read(client: redis.Redis | None, channel_id: str, *, max_bytes: int) -> bytes | None:
    """The channel's shared still; None when there is none (expired, never written, Redis away, not a JPEG)."""
    if client is None:
        return None
    try:
        data = client.get(PREFIX + channel_id)
    except (redis.RedisError, OSError):
        return None
    return data if is_jpeg(data, max_bytes=max_bytes) else None


class PreviewShare:
    """Writes the stills of the channels a streamer airs to Redis, one decode per channel and period."""

    def __init__(self, client: redis.Redis, hls_dir: Path, *, every: float, max_bytes: int):
        if every <= 0:
            raise ValueError(f"streamer.preview_seconds must be above 0, got {every}")
        self.client, self.hls_dir, self.every, self.max_bytes = client, Path(hls_dir), every, max_bytes
        self.ttl_ms = max(1000, int(every * TTL_PERIODS * 1000))
        self.published = 0  # stills written, for the tests
        self.skipped: dict[str, str] = {}  # channel -> why its last still was not shared

    def publish(self, channel_ids: Iterable[str]) -> int:
        """Decode and share the still of each channel (one Redis round trip); returns how many were written."""
        stills = {cid: jpeg for cid in channel_ids if (jpeg := self._still(cid)) is not None}
        if not stills:
            return 0
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for cid, jpeg in stills.items():
                    pipe.set(PREFIX + cid, jpeg, px=self.ttl_ms)
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("preview stills not shared (Redis: %s); the API on other hosts shows no still",
                        type(exc).__name__)
            return 0
        self.published += len(stills)
        return len(stills)

    def forget(self, channel_id: str) -> None:
        """Drop the channel's still now (it went off air everywhere), rather than at its expiry, and what this
        streamer kept about it."""
        self.skipped.pop(channel_id, None)
        try:
            self.client.delete(PREFIX + channel_id)
        except (redis.RedisError, OSError):
            pass  # it expires

    def _still(self, channel_id: str) -> bytes | None:
        try:
            jpeg = latest_preview_jpeg(self.hls_dir, channel_id)
        except PreviewError as exc:
            self.skipped[channel_id] = str(exc)
            return None
        if not is_jpeg(jpeg, max_bytes=self.max_bytes):
            self.skipped[channel_id] = (f"still of {len(jpeg)} bytes is over streamer.preview_max_kb "
                                        f"({self.max_bytes // 1024} KiB)")
            return None
        self.skipped.pop(channel_id, None)
        return jpeg

    def run_every(self, airing: Callable[[], list[str]], stop: threading.Event) -> threading.Thread:
        """A thread sharing the stills of `airing()` (the channels on air now) every period until `stop`."""

        def loop() -> None:
            while not stop.is_set():
                try:
                    self.publish(airing())
                except Exception:  # noqa: BLE001 - a still is a convenience; the next period tries again
                    log.exception("sharing preview stills failed; retrying")
                stop.wait(self.every)

        thread = threading.Thread(target=loop, name="preview-share", daemon=True)
        thread.start()
        return thread
