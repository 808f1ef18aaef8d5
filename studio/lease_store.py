"""Where channel leases live: one interface (`LeaseStore`), two backends chosen by `streamer.lease_backend`.

`database` (the default): the tables of `studio.leases`, by the database's clock; `DatabaseLeases` is a thin
adapter that runs each of those functions in a session of its own. `redis`: `studio.leases_redis.RedisLeases`,
Lua scripts by the Redis server's clock. Both keep one contract (tests/unit/test_lease_store.py runs the same
spec over both): a claim succeeds only on a free, released or expired lease and its fencing token grows on every
claim, never going back; a renewal extends every unexpired lease of the owner in one round trip and an expired
lease is lost even to its owner; release needs the matching token; `holds` is the fence.

The lease store holds the fence; the segment row's `air_token` mark stays in the database whichever backend
holds the leases (workers.streamer.air).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.engine import Engine

from studio import leases
from studio.db import session_scope
from studio.leases import Held

BACKENDS = ("database", "redis")


@dataclass(frozen=True)
class LeaseView:
    """A live (unexpired, held) lease as the API shows it: who airs the channel, from which host, since when."""

    owner: str
    host: str | None
    token: int
    since: datetime   # naive UTC, by the store's clock
    expires: datetime


class LeaseStore(Protocol):
    """What a streamer, the bench and the API need of a lease backend. Keyword-only, no session: each call is one
    transaction (database) or one round trip (Redis)."""

    def heartbeat(self, *, owner: str, host: str, capacity: int) -> None: ...

    def live_streamers(self, *, ttl: float) -> dict[str, int]: ...

    def forget_streamer(self, owner: str) -> None: ...

    def renew(self, *, owner: str, ttl: float) -> dict[str, Held]: ...

    def claim(self, *, channel_id: str, owner: str, host: str, ttl: float) -> int | None: ...

    def release(self, *, channel_id: str, owner: str, token: int) -> bool: ...

    def holds(self, *, channel_id: str, owner: str, token: int) -> bool: ...

    def ask_handover(self, *, channel_id: str, owner: str, to: str) -> bool: ...

    def live_holders(self) -> dict[str, str]: ...

    def handovers(self, channel_ids: Iterable[str]) -> dict[str, str]: ...

    def lease_of(self, channel_id: str) -> LeaseView | None: ...

    def leases_of(self, channel_ids: Iterable[str]) -> dict[str, LeaseView]: ...

    def close(self) -> None: ...


class DatabaseLeases:
    """`studio.leases` behind `LeaseStore`: each call in a session of its own, committed at once."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def heartbeat(self, *, owner: str, host: str, capacity: int) -> None:
        with session_scope(self.engine) as s:
            leases.heartbeat(s, owner=owner, host=host, capacity=capacity)

    def live_streamers(self, *, ttl: float) -> dict[str, int]:
        with session_scope(self.engine) as s:
            return leases.live_streamers(s, ttl=ttl)

    def forget_streamer(self, owner: str) -> None:
        with session_scope(self.engine) as s:
            leases.forget_streamer(s, owner)

    def renew(self, *, owner: str, ttl: float) -> dict[str, Held]:
        with session_scope(self.engine) as s:
            return leases.renew(s, owner=owner, ttl=ttl)

    def claim(self, *, channel_id: str, owner: str, host: str, ttl: float) -> int | None:
        with session_scope(self.engine) as s:
            return leases.claim(s, channel_id=channel_id, owner=owner, host=host, ttl=ttl)

    def release(self, *, channel_id: str, owner: str, token: int) -> bool:
        with session_scope(self.engine) as s:
            return leases.release(s, channel_id=channel_id, owner=owner, token=token)

    def holds(self, *, channel_id: str, owner: str, token: int) -> bool:
        with session_scope(self.engine) as s:
            return leases.holds(s, channel_id=channel_id, owner=owner, token=token)

    def ask_handover(self, *, channel_id: str, owner: str, to: str) -> bool:
        with session_scope(self.engine) as s:
            return leases.ask_handover(s, channel_id=channel_id, owner=owner, to=to)

    def live_holders(self) -> dict[str, str]:
        with session_scope(self.engine) as s:
            return leases.live_holders(s)

    def handovers(self, channel_ids: Iterable[str]) -> dict[str, str]:
        with session_scope(self.engine) as s:
            return {r.channel_id: r.handover_to for r in leases.leases(s, channel_ids).values() if r.handover_to}

    def lease_of(self, channel_id: str) -> LeaseView | None:
        with session_scope(self.engine) as s:
            row = leases.leases(s, [channel_id]).get(channel_id)
            if row is None or row.owner is None or row.expires_at <= leases.db_now(s):
                return None
            return LeaseView(owner=row.owner, host=row.host, token=row.token, since=row.since,
                             expires=row.expires_at)

    def leases_of(self, channel_ids: Iterable[str]) -> dict[str, LeaseView]:
        """The live leases of `channel_ids`, in one query (the ops page's channel list)."""
        with session_scope(self.engine) as s:
            now = leases.db_now(s)
            return {cid: LeaseView(owner=row.owner, host=row.host, token=row.token, since=row.since,
                                   expires=row.expires_at)
                    for cid, row in leases.leases(s, list(channel_ids)).items()
                    if row.owner is not None and row.expires_at > now}

    def close(self) -> None:
        """Nothing of its own to close: the engine is the caller's."""


def _redis_store(settings, engine: Engine) -> LeaseStore:
    from studio.leases_redis import TIMEOUT_S, RedisLeases

    return RedisLeases(settings.redis.client(timeout=TIMEOUT_S, connect_timeout=TIMEOUT_S))


_FACTORIES: dict[str, Callable[[object, Engine], LeaseStore]] = {
    "database": lambda _settings, engine: DatabaseLeases(engine),
    "redis": _redis_store,
}


def lease_store(settings, engine: Engine) -> LeaseStore:
    """The lease backend `settings.streamer.lease_backend` names: the database of `engine`, or the Redis of
    `settings.redis` (services.redis_url, its password and services.redis_tls)."""
    backend = settings.streamer.lease_backend
    if backend not in _FACTORIES:
        raise ValueError(f"streamer.lease_backend: {backend!r} is not a lease backend; use one of "
                         f"{', '.join(BACKENDS)}")
    return _FACTORIES[backend](settings, engine)
