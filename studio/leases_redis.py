"""Channel leases in Redis (`streamer.lease_backend: redis`): the semantics of `studio.leases`, each operation
one Lua script, so one round trip and atomic on the server.

Keys, under `prefix` (default "studio:leases:"):
- `lease:<channel>`: a hash (owner, host, token, since, expires, ttl, handover), times in ms by the Redis
  server's clock (TIME inside the script, so the hosts' clocks do not matter). Released: no owner, expires = the
  release time. The key itself expires (PEXPIREAT) one lease length after the lease does, which is also how long
  a pending hand-over promise lasts, so a dead lease leaves nothing behind.
- `token:<channel>`: the fencing token, INCR on every claim; it never expires, so a token never goes back while
  Redis keeps its data (run it with persistence, or a restart resets the counters).
- `owned:<owner>`: the channels an owner holds, so `renew` extends all of them in one script.
- `channels`: every channel with a lease key (for `live_holders`); `streamers` (zset owner -> last heartbeat)
  and `capacity` (hash owner -> "capacity host") for `live_streamers`.

The scripts name keys that are not in KEYS (an owner's channels), so they run on one Redis, not a Cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import redis

from studio.lease_store import LeaseView
from studio.leases import Held

PREFIX = "studio:leases:"
TIMEOUT_S = 2.0
FORGET_AFTER_MS = 3_600_000  # a streamer unseen this long is dropped from the capacity list at a heartbeat

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: lease, token counter, owned set of the claimer, channels; ARGV: channel, owner, host, ttl ms, owned prefix
_CLAIM = _NOW + """
local now, ttl = now_ms(), tonumber(ARGV[4])
local l = redis.call('HMGET', KEYS[1], 'owner', 'expires', 'handover')
local expires = tonumber(l[2])
if l[1] and expires and expires > now then return false end
if l[3] and l[3] ~= ARGV[2] and expires and expires > now - ttl then return false end
if l[1] then redis.call('SREM', ARGV[5] .. l[1], ARGV[1]) end
local token = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'host', ARGV[3], 'token', token, 'since', now,
           'expires', now + ttl, 'ttl', ttl)
redis.call('PEXPIREAT', KEYS[1], now + 2 * ttl)
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
return token
"""

# KEYS: owned set; ARGV: owner, ttl ms, lease prefix. Returns channel, token, hand-over ('' none), ...
_RENEW = _NOW + """
local now, ttl, out = now_ms(), tonumber(ARGV[2]), {}
for _, cid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local k = ARGV[3] .. cid
  local l = redis.call('HMGET', k, 'owner', 'expires', 'token', 'handover')
  if l[1] == ARGV[1] and tonumber(l[2]) > now then
    redis.call('HSET', k, 'expires', now + ttl, 'ttl', ttl)
    redis.call('PEXPIREAT', k, now + 2 * ttl)
    out[#out + 1] = cid
    out[#out + 1] = l[3]
    out[#out + 1] = l[4] or ''
  else
    redis.call('SREM', KEYS[1], cid)  -- expired or taken: lost, claimed again only with a new token
  end
end
return out
"""

# KEYS: lease, owned set; ARGV: owner, token, channel
_RELEASE = _NOW + """
local l = redis.call('HMGET', KEYS[1], 'owner', 'token', 'ttl')
if l[1] ~= ARGV[1] or l[2] ~= ARGV[2] then return 0 end
local now = now_ms()
redis.call('HDEL', KEYS[1], 'owner')
redis.call('HSET', KEYS[1], 'expires', now)
redis.call('PEXPIREAT', KEYS[1], now + (tonumber(l[3]) or 0) + 1)
redis.call('SREM', KEYS[2], ARGV[3])
return 1
"""

# KEYS: lease; ARGV: owner, token
_HOLDS = _NOW + """
local l = redis.call('HMGET', KEYS[1], 'owner', 'token', 'expires')
if l[1] == ARGV[1] and l[2] == ARGV[2] and tonumber(l[3]) > now_ms() then return 1 end
return 0
"""

# KEYS: lease; ARGV: owner, asker
_ASK = _NOW + """
local l = redis.call('HMGET', KEYS[1], 'owner', 'expires', 'handover')
if l[1] == ARGV[1] and tonumber(l[2]) > now_ms() and (not l[3] or l[3] == ARGV[2]) then
  redis.call('HSET', KEYS[1], 'handover', ARGV[2])
  return 1
end
return 0
"""

# KEYS: streamers zset, capacity hash; ARGV: owner, host, capacity, forget after ms
_HEARTBEAT = _NOW + """
local now = now_ms()
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[4])))) do
  redis.call('ZREM', KEYS[1], gone)
  redis.call('HDEL', KEYS[2], gone)
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. ' ' .. ARGV[2])
return now
"""

# KEYS: streamers zset, capacity hash; ARGV: ttl ms. Returns owner, "capacity host", ...
_LIVE_STREAMERS = _NOW + """
local out = {}
for _, owner in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now_ms() - tonumber(ARGV[1])), '+inf')) do
  out[#out + 1] = owner
  out[#out + 1] = redis.call('HGET', KEYS[2], owner) or '0 '
end
return out
"""

# KEYS: channels set; ARGV: lease prefix. Returns channel, owner, ... of every unexpired lease
_LIVE_HOLDERS = _NOW + """
local now, out = now_ms(), {}
for _, cid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local l = redis.call('HMGET', ARGV[1] .. cid, 'owner', 'expires')
  if not l[2] then
    redis.call('SREM', KEYS[1], cid)  -- the lease key expired away
  elseif l[1] and tonumber(l[2]) > now then
    out[#out + 1] = cid
    out[#out + 1] = l[1]
  end
end
return out
"""

# KEYS: lease. Returns owner, host, token, since, expires of a live lease, or false
_LEASE_OF = _NOW + """
local l = redis.call('HMGET', KEYS[1], 'owner', 'host', 'token', 'since', 'expires')
if l[1] and tonumber(l[5]) > now_ms() then return l end
return false
"""


def _utc(ms: bytes | str | int) -> datetime:
    """Milliseconds since the epoch (the Redis server's clock) as naive UTC, like the database's times."""
    return datetime.fromtimestamp(int(ms) / 1000, UTC).replace(tzinfo=None)


def _ms(seconds: float) -> int:
    if seconds <= 0:
        raise ValueError(f"a lease length must be positive, not {seconds!r} s")
    return max(1, round(seconds * 1000))


def _view(row) -> LeaseView | None:
    """A live lease from the lease_of script's reply (None: none, or expired)."""
    if not row:
        return None
    owner, host, token, since, expires = row
    return LeaseView(owner=_s(owner), host=_s(host) if host is not None else None, token=int(token),
                     since=_utc(since), expires=_utc(expires))


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisLeases:
    """`LeaseStore` on one Redis: every operation a Lua script (one round trip, atomic, the server's clock)."""

    def __init__(self, client: redis.Redis, *, prefix: str = PREFIX):
        self.client, self.prefix = client, prefix
        register = client.register_script
        self._claim, self._renew, self._release = register(_CLAIM), register(_RENEW), register(_RELEASE)
        self._holds, self._ask, self._heartbeat = register(_HOLDS), register(_ASK), register(_HEARTBEAT)
        self._live_streamers, self._live_holders = register(_LIVE_STREAMERS), register(_LIVE_HOLDERS)
        self._lease_of = register(_LEASE_OF)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = PREFIX) -> RedisLeases:
        """A client that gives up after TIMEOUT_S (a lease is a few seconds: a hung call must not outlive it)."""
        return cls(redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S),
                   prefix=prefix)

    # -- keys --------------------------------------------------------------------------------------------------
    def _lease(self, channel_id: str) -> str:
        return f"{self.prefix}lease:{channel_id}"

    def _owned(self, owner: str) -> str:
        return f"{self.prefix}owned:{owner}"

    @property
    def _streamers(self) -> list[str]:
        return [f"{self.prefix}streamers", f"{self.prefix}capacity"]

    # -- streamers ---------------------------------------------------------------------------------------------
    def heartbeat(self, *, owner: str, host: str, capacity: int) -> None:
        self._heartbeat(keys=self._streamers, args=[owner, host, int(capacity), FORGET_AFTER_MS])

    def live_streamers(self, *, ttl: float) -> dict[str, int]:
        flat = self._live_streamers(keys=self._streamers, args=[_ms(ttl)])
        return {_s(o): int(_s(info).split(" ", 1)[0]) for o, info in zip(flat[::2], flat[1::2], strict=True)}

    def forget_streamer(self, owner: str) -> None:
        pipe = self.client.pipeline()
        pipe.zrem(self._streamers[0], owner)
        pipe.hdel(self._streamers[1], owner)
        pipe.execute()

    # -- leases ------------------------------------------------------------------------------------------------
    def renew(self, *, owner: str, ttl: float) -> dict[str, Held]:
        flat = self._renew(keys=[self._owned(owner)], args=[owner, _ms(ttl), f"{self.prefix}lease:"])
        return {_s(flat[i]): Held(int(flat[i + 1]), _s(flat[i + 2]) or None) for i in range(0, len(flat), 3)}

    def claim(self, *, channel_id: str, owner: str, host: str, ttl: float) -> int | None:
        token = self._claim(keys=[self._lease(channel_id), f"{self.prefix}token:{channel_id}", self._owned(owner),
                                  f"{self.prefix}channels"],
                            args=[channel_id, owner, host, _ms(ttl), f"{self.prefix}owned:"])
        return None if token is None else int(token)

    def release(self, *, channel_id: str, owner: str, token: int) -> bool:
        return bool(self._release(keys=[self._lease(channel_id), self._owned(owner)],
                                  args=[owner, int(token), channel_id]))

    def holds(self, *, channel_id: str, owner: str, token: int) -> bool:
        return bool(self._holds(keys=[self._lease(channel_id)], args=[owner, int(token)]))

    def ask_handover(self, *, channel_id: str, owner: str, to: str) -> bool:
        return bool(self._ask(keys=[self._lease(channel_id)], args=[owner, to]))

    def live_holders(self) -> dict[str, str]:
        flat = self._live_holders(keys=[f"{self.prefix}channels"], args=[f"{self.prefix}lease:"])
        return {_s(c): _s(o) for c, o in zip(flat[::2], flat[1::2], strict=True)}

    def handovers(self, channel_ids: Iterable[str]) -> dict[str, str]:
        ids = list(channel_ids)
        pipe = self.client.pipeline(transaction=False)
        for cid in ids:
            pipe.hget(self._lease(cid), "handover")
        return {cid: _s(to) for cid, to in zip(ids, pipe.execute(), strict=True) if to}

    def lease_of(self, channel_id: str) -> LeaseView | None:
        return _view(self._lease_of(keys=[self._lease(channel_id)]))

    def leases_of(self, channel_ids: Iterable[str]) -> dict[str, LeaseView]:
        """The live leases of `channel_ids`, in one round trip (a pipeline of the lease_of script)."""
        ids = list(channel_ids)
        pipe = self.client.pipeline(transaction=False)
        for cid in ids:
            self._lease_of(keys=[self._lease(cid)], client=pipe)
        views = {cid: _view(row) for cid, row in zip(ids, pipe.execute(), strict=True)}
        return {cid: view for cid, view in views.items() if view is not None}

    def close(self) -> None:
        self.client.close()
