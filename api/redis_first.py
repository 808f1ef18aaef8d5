"""Shared state in Redis, so that every API process behind a balancer sees it, and in a table of this process while
Redis does not answer: the API keeps working (each process on its own) through a Redis restart."""

from __future__ import annotations

import time

import redis

REDIS_RETRY_S = 5.0  # after Redis failed to answer, the table of this process serves for this long


class RedisFirst:
    """`call(op, *args)`: `op` of the Redis-backed store, or of `memory` (the same operations in this process)
    when there is no Redis or it failed to answer in the last `retry_s` seconds."""

    def __init__(self, on_redis, memory, *, retry_s: float = REDIS_RETRY_S) -> None:
        self.redis, self.memory, self._retry_s = on_redis, memory, retry_s
        self._down_until = 0.0

    def __call__(self, op: str, *args):
        if self.redis is not None and time.monotonic() >= self._down_until:
            try:
                return getattr(self.redis, op)(*args)
            except (redis.RedisError, OSError):
                self._down_until = time.monotonic() + self._retry_s
        return getattr(self.memory, op)(*args)
