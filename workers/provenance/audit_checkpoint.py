"""The audit checkpoint's places for this process (studio.audit_checkpoint): the Redis key every host reads and the
leading scheduler writes through a compare-and-set, then the copy in the media store, then (read only) the local
file of releases before the fleet.

Redis is the one the scheduler already needs (`services.redis_url`, else the embedded redis-server of `studio up`),
so wherever a scheduler runs the shared place is there.
"""

from __future__ import annotations

from urllib.parse import urlparse

import redis

from studio.audit_checkpoint import CheckpointPlaces, CheckpointUnavailable, StoreSlot
from studio.config import Settings
from studio.runtime import Runtime

REDIS_KEY = "studio:audit:checkpoint"
TIMEOUT_S = 5.0

# Keep ARGV[1] unless the key holds a document at a later position (or one that cannot be read: evidence).
# 1: written; 0: refused. Atomic: Redis runs a script alone.
_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, doc = pcall(cjson.decode, current)
  if not ok or type(doc) ~= 'table' then return 0 end
  local last = doc['last_id']
  if last == cjson.null or last == nil then last = 0 end
  if type(last) ~= 'number' then return 0 end
  if last > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


def redis_setting(settings: Settings) -> str:
    """Which setting names the Redis in use, and where it is, for messages: never the URL (it may carry a
    password)."""
    parsed = urlparse(settings.broker_url)
    where = f"{parsed.hostname}:{parsed.port or 6379}"
    if settings.services.redis_url:
        return f"services.redis_url ({where})"
    return f"services.redis_url (unset: the embedded redis-server of `studio up` at {where})"


class RedisSlot:
    """The checkpoint document under one Redis key; `put` is a compare-and-set (a Lua script)."""

    def __init__(self, client: redis.Redis, *, setting: str, key: str = REDIS_KEY) -> None:
        self.client, self.key, self.setting = client, key, setting
        self.where = f"Redis key {key}"
        self._cas = client.register_script(_COMPARE_AND_SET)

    def _unavailable(self, exc: Exception, what: str) -> CheckpointUnavailable:
        return CheckpointUnavailable(f"{self.setting}: Redis cannot be reached or refused the connection while "
                                     f"{what} the audit checkpoint ({type(exc).__name__}); start it (`studio up` "
                                     "spawns one) or set services.redis_url and services.redis_password")

    def get(self) -> bytes | None:
        try:
            return self.client.get(self.key)
        except (redis.RedisError, OSError) as exc:
            raise self._unavailable(exc, "reading") from None

    def put(self, document: bytes, position: int) -> bool:
        try:
            return bool(self._cas(keys=[self.key], args=[document, position]))
        except (redis.RedisError, OSError) as exc:
            raise self._unavailable(exc, "writing") from None


def redis_client(settings: Settings) -> redis.Redis:
    return settings.redis.client(timeout=TIMEOUT_S, connect_timeout=TIMEOUT_S)


def checkpoint_places(rt: Runtime, client: redis.Redis | None = None) -> CheckpointPlaces:
    """Redis (`client`, else one for `services.redis_url`), then the store's copy; the local file of older
    releases is read while neither holds a checkpoint."""
    slot = RedisSlot(client or redis_client(rt.settings), setting=redis_setting(rt.settings))
    return CheckpointPlaces(shared=(slot, StoreSlot(rt.store)), legacy_file=rt.data.audit_checkpoint)
