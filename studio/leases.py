"""Channel leases: each live channel is aired by exactly one `studio streamer`, whichever host it runs on.

A streamer registers itself (`heartbeat`: owner id, host, capacity) and holds a lease per channel it airs:
owner, expiry and a fencing token. Every second it renews all of them in one statement; a streamer that
dies stops renewing, its leases expire, and the others claim its channels (`claim` succeeds only on a free,
released or expired lease, and adds one to the token). The token is the fence: a segment airs, and the
ingest accepts a publish, only while `holds(channel, owner, token)` is true, so a streamer that was paused
or cut off past its expiry stops at once and never airs beside the new owner.

Balance (`plan`): live channels are spread over live streamers by capacity. A streamer below its share takes
free channels first; when none is free it asks one of a streamer above its share to hand one over
(`ask_handover`); that owner stops the channel at its next segment boundary and `release`s it, and the
asker claims it on its next pass. Never both at once: the asker can only claim after the release.

Times come from the database clock (PostgreSQL `now()`), so the hosts' clocks do not matter; SQLite (one
host) uses this process's clock. Pure planning in `plan`; the rest are single statements.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, or_, text, update
from sqlmodel import Session, select

from studio.models import ChannelLease, StreamerHost, utcnow


def db_now(session: Session) -> datetime:
    """The database's clock as naive UTC (this process's clock on SQLite)."""
    if session.get_bind().dialect.name == "postgresql":
        now = session.exec(text("SELECT now()")).one()[0]
        return now.astimezone(UTC).replace(tzinfo=None)
    return utcnow()


# --- streamers -----------------------------------------------------------------------------------------------

def heartbeat(session: Session, *, owner: str, host: str, capacity: int) -> datetime:
    """Say this streamer is alive (insert or refresh its row); returns the database time used."""
    now = db_now(session)
    row = session.get(StreamerHost, owner)
    if row is None:
        session.add(StreamerHost(owner=owner, host=host, capacity=capacity, started_at=now, seen_at=now))
    else:
        row.seen_at, row.capacity, row.host = now, capacity, host
    session.flush()
    return now


def live_streamers(session: Session, *, ttl: float, now: datetime | None = None) -> dict[str, int]:
    """owner -> capacity of every streamer seen within `ttl` seconds."""
    now = now or db_now(session)
    rows = session.exec(select(StreamerHost).where(StreamerHost.seen_at > now - timedelta(seconds=ttl))).all()
    return {r.owner: r.capacity for r in rows}


def forget_streamer(session: Session, owner: str) -> None:
    session.exec(delete(StreamerHost).where(StreamerHost.owner == owner))


def prune_streamers(session: Session, *, older_than: float) -> int:
    """Drop rows of streamers not seen for `older_than` seconds (they died); returns how many."""
    now = db_now(session)
    res = session.exec(delete(StreamerHost).where(StreamerHost.seen_at < now - timedelta(seconds=older_than)))
    return res.rowcount or 0


# --- leases --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Held:
    """A lease this streamer holds: the fencing token, and whether another streamer asked for the channel."""

    token: int
    handover_to: str | None = None


def renew(session: Session, *, owner: str, ttl: float) -> dict[str, Held]:
    """Extend every unexpired lease of `owner` by `ttl` seconds from now, in one statement; returns the ones
    still held (an expired one is lost even if nobody took it yet: the owner must claim it again, with a
    new token, so that anything fenced by the old token stops)."""
    now = db_now(session)
    session.exec(update(ChannelLease)
                 .where(ChannelLease.owner == owner, ChannelLease.expires_at > now)
                 .values(expires_at=now + timedelta(seconds=ttl)))
    rows = session.exec(select(ChannelLease).where(ChannelLease.owner == owner,
                                                   ChannelLease.expires_at > now)).all()
    return {r.channel_id: Held(r.token, r.handover_to) for r in rows}


def claim(session: Session, *, channel_id: str, owner: str, host: str, ttl: float) -> int | None:
    """Take the channel's lease if nobody holds it (never leased, released or expired) and nobody else was
    promised it by a hand-over; returns the new fencing token, or None when another streamer holds it."""
    now = db_now(session)
    expires = now + timedelta(seconds=ttl)
    if session.get(ChannelLease, channel_id) is None:
        # First lease of this channel: insert; a concurrent insert by another streamer makes ours fail.
        try:
            with session.begin_nested():
                session.add(ChannelLease(channel_id=channel_id, owner=owner, host=host, token=1,
                                         expires_at=expires, since=now))
            return 1
        except Exception:  # noqa: BLE001 - IntegrityError: someone else inserted it first; fall through
            pass
    free = or_(ChannelLease.owner.is_(None), ChannelLease.expires_at <= now)
    promised = or_(ChannelLease.handover_to.is_(None), ChannelLease.handover_to == owner,
                   ChannelLease.expires_at <= now - timedelta(seconds=ttl))  # a promise lapses with time
    res = session.exec(update(ChannelLease)
                       .where(ChannelLease.channel_id == channel_id, free, promised)
                       .values(owner=owner, host=host, token=ChannelLease.token + 1, expires_at=expires,
                               since=now, handover_to=None))
    if not res.rowcount:
        return None
    session.expire_all()
    return session.get(ChannelLease, channel_id).token


def release(session: Session, *, channel_id: str, owner: str, token: int) -> bool:
    """Give the lease up (clean stop, show ended, hand-over). Only the holder of `token` can; the token
    counter stays, and a pending hand-over stays so that the asker gets the channel."""
    res = session.exec(update(ChannelLease)
                       .where(ChannelLease.channel_id == channel_id, ChannelLease.owner == owner,
                              ChannelLease.token == token)
                       .values(owner=None, expires_at=db_now(session)))
    return bool(res.rowcount)


def holds(session: Session, *, channel_id: str, owner: str, token: int) -> bool:
    """The fence: does `owner` still hold the channel's lease with `token`, unexpired, by the database?"""
    now = db_now(session)
    row = session.exec(select(ChannelLease.channel_id).where(
        ChannelLease.channel_id == channel_id, ChannelLease.owner == owner, ChannelLease.token == token,
        ChannelLease.expires_at > now)).first()
    return row is not None


def ask_handover(session: Session, *, channel_id: str, owner: str, to: str) -> bool:
    """Ask `owner` to hand the channel over to `to` at its next segment boundary (no other request pending)."""
    now = db_now(session)
    res = session.exec(update(ChannelLease)
                       .where(ChannelLease.channel_id == channel_id, ChannelLease.owner == owner,
                              ChannelLease.expires_at > now,
                              or_(ChannelLease.handover_to.is_(None), ChannelLease.handover_to == to))
                       .values(handover_to=to))
    return bool(res.rowcount)


def leases(session: Session, channel_ids: Iterable[str] | None = None) -> dict[str, ChannelLease]:
    stmt = select(ChannelLease)
    if channel_ids is not None:
        stmt = stmt.where(ChannelLease.channel_id.in_(list(channel_ids)))
    return {r.channel_id: r for r in session.exec(stmt).all()}


def live_holders(session: Session, *, now: datetime | None = None) -> dict[str, str]:
    """channel -> owner of every unexpired lease."""
    now = now or db_now(session)
    rows = session.exec(select(ChannelLease.channel_id, ChannelLease.owner).where(
        and_(ChannelLease.owner.is_not(None), ChannelLease.expires_at > now))).all()
    return {c: o for c, o in rows}


# --- balance (pure) ------------------------------------------------------------------------------------------

def shares(n_channels: int, capacities: dict[str, int]) -> dict[str, int]:
    """How many of `n_channels` each streamer should air: in proportion to capacity, never above it; the
    remainders go to the streamers with the largest fractional share, ties by owner id (every streamer
    computes the same answer)."""
    live = {o: c for o, c in capacities.items() if c > 0}
    total = sum(live.values())
    if not live or n_channels <= 0:
        return {o: 0 for o in capacities}
    n = min(n_channels, total)
    exact = {o: n * c / total for o, c in live.items()}
    out = {o: min(live[o], math.floor(x)) for o, x in exact.items()}
    rest = n - sum(out.values())
    for o in sorted(live, key=lambda o: (-(exact[o] - math.floor(exact[o])), o)):
        if rest <= 0:
            break
        if out[o] < live[o]:
            out[o] += 1
            rest -= 1
    while rest > 0:  # capacity caps left some over: give to whoever still has room
        room = [o for o in sorted(live) if out[o] < live[o]]
        if not room:
            break
        out[room[0]] += 1
        rest -= 1
    return {o: out.get(o, 0) for o in capacities}


@dataclass
class Plan:
    """What one streamer should do on this pass."""

    claim: list[str] = field(default_factory=list)      # free channels to claim, in order
    ask: list[tuple[str, str]] = field(default_factory=list)  # (channel, its owner) to ask for a hand-over
    drop: list[str] = field(default_factory=list)        # held channels that are no longer live: release


def plan(me: str, *, live: list[str], holders: dict[str, str], capacities: dict[str, int],
         pending: dict[str, str] | None = None) -> Plan:
    """Decide, for streamer `me`, which channels to claim, which to ask for, and which to drop.

    `live`: channels that should be on air; `holders`: channel -> owner of every unexpired lease;
    `capacities`: live streamers; `pending`: channel -> asker of hand-overs already asked."""
    pending = pending or {}
    out = Plan()
    mine = sorted(c for c, o in holders.items() if o == me)
    live_set = set(live)
    out.drop = [c for c in mine if c not in live_set]
    mine = [c for c in mine if c in live_set]
    target = shares(len(live), capacities).get(me, 0)
    want = target - len(mine) - sum(1 for a in pending.values() if a == me)
    if want <= 0:
        return out
    free = [c for c in live if c not in holders]
    # Spread the claims of streamers starting together: each starts at its own place in the free list.
    if free:
        start = sum(map(ord, me)) % len(free)
        free = free[start:] + free[:start]
    out.claim = free[:want]
    want -= len(out.claim)
    if want <= 0:
        return out
    counts: dict[str, int] = {}
    for c, o in holders.items():
        if c in live_set:
            counts[o] = counts.get(o, 0) + 1
    targets = shares(len(live), capacities)
    for other in sorted(counts, key=lambda o: (-(counts[o] - targets.get(o, 0)), o)):
        if other == me:
            continue
        surplus = counts[other] - targets.get(other, 0)
        candidates = sorted(c for c, o in holders.items() if o == other and c in live_set and c not in pending)
        while surplus > 0 and want > 0 and candidates:
            out.ask.append((candidates.pop(0), other))
            surplus -= 1
            want -= 1
        if want <= 0:
            break
    return out
