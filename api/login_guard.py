"""Password guessing, limited without handing anyone a way to lock a victim out.

Failed sign-ins are counted in fixed windows, in Redis so that every API process sees the same counts (in a
bounded table of this process when Redis does not answer):
- per email and client address: after PAIR_MAX failures that address may not try that email again until the
  window ends; the victim's own address is not affected by an attacker's;
- per client address, any email: after ADDRESS_MAX failures the address may not sign in at all for the window;
- per email, all addresses: after EMAIL_MAX failures only addresses that signed in to that email before (kept for
  KNOWN_DAYS) may try it, so a spread-out guess of one password stops while its owner still gets in;
- everyone: after GLOBAL_MAX failures in a minute only known addresses may sign in for the rest of that minute.
Password hashing (argon2id, deliberately slow) runs at most HASH_SLOTS at a time per process; a request that
cannot get a slot within HASH_WAIT_S is answered 503 with Retry-After, so a flood of logins cannot take every
CPU of the API.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from api.redis_first import RedisFirst

WINDOW_S = 900
PAIR_MAX = 5
ADDRESS_MAX = 30
EMAIL_MAX = 50
GLOBAL_WINDOW_S = 60
GLOBAL_MAX = 600
KNOWN_DAYS = 60
KNOWN_MAX = 16           # addresses remembered per email
MEMORY_MAX_KEYS = 10_000  # the in-process table when Redis does not answer
HASH_SLOTS = 2
HASH_WAIT_S = 5.0


@dataclass(frozen=True)
class Refusal:
    seconds: int
    reason: str


class _MemoryCounters:
    """The same operations as Redis's INCR/EXPIRE and sets, in a table of at most MEMORY_MAX_KEYS entries (the
    least recently touched go first)."""

    def __init__(self, max_keys: int = MEMORY_MAX_KEYS) -> None:
        self._rows: OrderedDict[str, tuple[float, object]] = OrderedDict()
        self._max = max_keys
        self._lock = threading.Lock()

    def _live(self, key: str, now: float):
        row = self._rows.get(key)
        if row is None or row[0] <= now:
            self._rows.pop(key, None)
            return None
        self._rows.move_to_end(key)
        return row[1]

    def _put(self, key: str, expires: float, value: object) -> None:
        self._rows[key] = (expires, value)
        self._rows.move_to_end(key)
        while len(self._rows) > self._max:
            self._rows.popitem(last=False)

    def count(self, key: str) -> tuple[int, int]:
        now = time.monotonic()
        with self._lock:
            value = self._live(key, now)
            return (int(value), int(self._rows[key][0] - now) + 1) if value is not None else (0, 0)

    def incr(self, key: str, ttl: int) -> None:
        now = time.monotonic()
        with self._lock:
            value = self._live(key, now)
            expires = self._rows[key][0] if value is not None else now + ttl
            self._put(key, expires, int(value or 0) + 1)

    def remember(self, key: str, member: str, ttl: int) -> None:
        now = time.monotonic()
        with self._lock:
            members = list(self._live(key, now) or [])
            members = [m for m in members if m != member][-(KNOWN_MAX - 1):] + [member]
            self._put(key, now + ttl, members)

    def known(self, key: str, member: str) -> bool:
        with self._lock:
            return member in (self._live(key, time.monotonic()) or [])

    def clear(self, key: str) -> None:
        with self._lock:
            self._rows.pop(key, None)


class _RedisCounters:
    def __init__(self, client: redis.Redis) -> None:
        self._r = client

    def count(self, key: str) -> tuple[int, int]:
        value, ttl = self._r.pipeline().get(key).ttl(key).execute()
        return (int(value), max(int(ttl), 1)) if value is not None else (0, 0)

    def incr(self, key: str, ttl: int) -> None:
        # NX: the window starts at the first failure and is not pushed back by later ones.
        self._r.pipeline().incr(key).expire(key, ttl, nx=True).execute()

    def remember(self, key: str, member: str, ttl: int) -> None:
        pipe = self._r.pipeline()
        pipe.zadd(key, {member: time.time()})
        pipe.zremrangebyrank(key, 0, -(KNOWN_MAX + 1))  # keep the newest KNOWN_MAX
        pipe.expire(key, ttl)
        pipe.execute()

    def known(self, key: str, member: str) -> bool:
        return self._r.zscore(key, member) is not None

    def clear(self, key: str) -> None:
        self._r.delete(key)


def _h(value: str) -> str:
    """Emails and addresses are hashed in key names: the counters hold no personal data in the clear."""
    return hashlib.sha256(value.encode()).hexdigest()[:24]


class LoginGuard:
    def __init__(self, redis_client: redis.Redis | None = None) -> None:
        # Redis away: this process's own bounded table still limits guessing meanwhile.
        self._call = RedisFirst(_RedisCounters(redis_client) if redis_client is not None else None, _MemoryCounters())
        self._hashing = threading.BoundedSemaphore(HASH_SLOTS)

    def refusal(self, email: str, address: str) -> Refusal | None:
        """Why `address` may not try `email` now, or None."""
        e, a = _h(email), _h(address)
        known = self._call("known", f"login:known:{e}", a)
        n, ttl = self._call("count", f"login:fail:pair:{e}:{a}")
        if n >= PAIR_MAX:
            return Refusal(ttl, f"too many wrong passwords for {email!r} from this address")
        n, ttl = self._call("count", f"login:fail:addr:{a}")
        if n >= ADDRESS_MAX and not known:
            return Refusal(ttl, "too many wrong passwords from this address")
        n, ttl = self._call("count", f"login:fail:email:{e}")
        if n >= EMAIL_MAX and not known:
            return Refusal(ttl, f"too many wrong passwords for {email!r}; sign in from an address you used before")
        n, ttl = self._call("count", "login:fail:all")
        if n >= GLOBAL_MAX and not known:
            return Refusal(ttl, "too many wrong passwords on this service just now")
        return None

    def failed(self, email: str, address: str) -> None:
        e, a = _h(email), _h(address)
        self._call("incr", f"login:fail:pair:{e}:{a}", WINDOW_S)
        self._call("incr", f"login:fail:addr:{a}", WINDOW_S)
        self._call("incr", f"login:fail:email:{e}", WINDOW_S)
        self._call("incr", "login:fail:all", GLOBAL_WINDOW_S)

    def succeeded(self, email: str, address: str) -> None:
        e, a = _h(email), _h(address)
        self._call("remember", f"login:known:{e}", a, KNOWN_DAYS * 86400)
        self._call("clear", f"login:fail:pair:{e}:{a}")

    @contextmanager
    def hashing(self) -> Iterator[bool]:
        """Yields True with one of HASH_SLOTS held, or False when none came free within HASH_WAIT_S."""
        got = self._hashing.acquire(timeout=HASH_WAIT_S)
        try:
            yield got
        finally:
            if got:
                self._hashing.release()
