"""One process at a time for a fleet role (the scheduler): a lease in the `leader` table, with a fencing token.

The holder renews its lease every second; a standby takes the lease once it has run out or was released, and the
takeover adds one to the token. Every time is the database's clock: PostgreSQL's now() (in UTC), so hosts whose
clocks disagree still agree on who leads; SQLite is a file on one host, and every process reading it shares that
host's clock.

A lease alone does not stop a leader that was paused (SIGSTOP, a stalled VM) past its lease from writing when it
wakes up, before it notices that another took over. So a leader's writes are fenced: `fence` re-reads the row
under a row lock in the writer's own transaction, just before commit, and raises `LeaseLost` unless owner and
token are still the writer's. A takeover has to wait for that lock, so a write either commits while its writer
still leads or rolls back. (Channel leases for streamers, one row per channel, are studio.leases.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from studio.db import lock_row
from studio.leases import db_now
from studio.models import Leader

LEADER = Leader.__table__


class LeaseLost(RuntimeError):
    """The writer no longer holds the lease it began with; its transaction must roll back."""


@dataclass(frozen=True)
class Lease:
    name: str
    owner: str
    host: str
    token: int
    expires_at: datetime
    since: datetime

    def live(self, now: datetime) -> bool:
        return self.expires_at > now


def current(session: Session, name: str) -> Lease | None:
    """The lease as the database has it now (read as columns: no ORM object that an earlier read left stale)."""
    row = session.execute(select(*LEADER.c).where(LEADER.c.name == name)).first()
    return None if row is None else Lease(**row._mapping)


def claim(session: Session, *, name: str, owner: str, host: str, seconds: float) -> Lease:
    """Renew the lease if `owner` holds it, take it if it has run out (token + 1) or was never taken (token 1);
    return the lease as it stands, which is another's when another holds it. Each step is one conditional write,
    so of two claims at once one wins."""
    now = db_now(session)
    until = now + timedelta(seconds=seconds)
    c = LEADER.c
    renewed = session.execute(update(LEADER).where(c.name == name, c.owner == owner)
                              .values(expires_at=until)).rowcount
    if not renewed:
        taken = session.execute(update(LEADER).where(c.name == name, c.expires_at <= now)
                                .values(owner=owner, host=host, token=c.token + 1, since=now,
                                        expires_at=until)).rowcount
        if not taken:
            insert = (postgresql if session.get_bind().dialect.name == "postgresql" else sqlite).insert
            session.execute(insert(LEADER).values(name=name, owner=owner, host=host, token=1, since=now,
                                                  expires_at=until).on_conflict_do_nothing(index_elements=["name"]))
    return current(session, name)


def release(session: Session, *, name: str, owner: str, token: int) -> bool:
    """End the lease now if `owner` still holds it with `token`, so a standby takes over at its next try."""
    c = LEADER.c
    return bool(session.execute(update(LEADER).where(c.name == name, c.owner == owner, c.token == token)
                                .values(expires_at=db_now(session))).rowcount)


def fence(session: Session, *, name: str, owner: str, token: int) -> None:
    """Raise LeaseLost unless `owner` still holds the lease with `token`; the lease's row stays locked until the
    caller's transaction ends, so no takeover lands between this check and the commit."""
    lock_row(session, "leader", name, key="name")
    held = current(session, name)
    if held is None or held.owner != owner or held.token != token:
        now = "nobody" if held is None else f"{held.owner} (token {held.token})"
        raise LeaseLost(f"the {name} lease is held by {now}, not by {owner} (token {token})")
