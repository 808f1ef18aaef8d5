"""Channel status shared by every host: the streamer that airs a channel writes its status (state, counters,
each destination's health, URLs masked) to Redis every second with a short expiry, so the API on any host, the
ops page and /metrics see every channel, whichever streamer airs it and whichever API replica answers.

Under `studio up` the streamer also writes `data/run/channel-ID.json` (read by `studio demo` and kept for a
look on the host); the readers fall back to those files only when Redis does not answer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import redis

log = logging.getLogger("studio.streamer")
PREFIX = "studio:channel-status:"
TTL_S = 10  # a status not rewritten for this long is gone: its streamer died or let the channel go


def publish(client: redis.Redis, statuses: dict[str, dict], *, ttl: int = TTL_S) -> bool:
    """Write each channel's status (one round trip); False when Redis did not answer."""
    if not statuses:
        return True
    try:
        with client.pipeline(transaction=False) as pipe:
            for cid, status in statuses.items():
                pipe.set(PREFIX + cid, json.dumps(status, default=str), ex=ttl)
            pipe.execute()
        return True
    except (redis.RedisError, OSError) as exc:
        log.warning("channel status not shared (Redis: %s); the API elsewhere shows these channels as not airing",
                    type(exc).__name__)
        return False


def read_all(client: redis.Redis | None, run_dir: Path) -> dict[str, dict]:
    """Every channel's status: from Redis, or from this host's files when Redis does not answer."""
    if client is not None:
        try:
            keys = sorted(client.scan_iter(match=PREFIX + "*", count=500))
            values = client.mget(keys) if keys else []
            out = {}
            for key, raw in zip(keys, values, strict=True):
                if raw is not None:
                    try:
                        out[(key.decode() if isinstance(key, bytes) else key).removeprefix(PREFIX)] = json.loads(raw)
                    except ValueError:
                        continue
            return out
        except (redis.RedisError, OSError):
            pass
    return _files(run_dir)


def read_one(client: redis.Redis | None, run_dir: Path, channel_id: str) -> dict | None:
    if client is not None:
        try:
            raw = client.get(PREFIX + channel_id)
            return json.loads(raw) if raw is not None else None
        except (redis.RedisError, OSError, ValueError):
            pass
    path = Path(run_dir) / f"channel-{channel_id}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _files(run_dir: Path) -> dict[str, dict]:
    out = {}
    for path in sorted(Path(run_dir).glob("channel-*.json")):
        try:
            out[path.stem.removeprefix("channel-")] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being rewritten; the next read gets it
    return out
