"""Append-only, hash-chained audit log (POLICY C6): each event's hash covers the previous one, and each event
carries a MAC of its hash made with the key of the role that wrote it (studio.audit_keys).

A hash chain shows an edited, reordered, inserted or deleted event by the broken link after it, but anyone
with the database can append an event and its hash. The MAC stops that: a consent event verifies only with
the control key, which render and streaming hosts do not hold. Events from before migration 0009 have no MAC;
they are accepted, with a warning, up to the last id that migration found (`UnkeyedAuditEvents`), and an
unkeyed event after it is reported.

A chain cut short is still a valid chain, so the deletion of the newest events shows only against
`checkpoint`: the head of the chain (last id, its hash, the count) MACed with the control key and kept outside the
database, in Redis and the media store, where any host reads it (studio.audit_checkpoint).
`verify_log` checks the chain, every MAC, and that the checkpointed head is still there, unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import String, func, text, type_coerce
from sqlmodel import Session, select

from studio import audit_keys
from studio.audit_checkpoint import (
    AuditError,
    Checkpoint,
    CheckpointPlaces,
    CheckpointRefused,
    CheckpointUnavailable,
)
from studio.audit_keys import CONTROL, ROLES, AuditKeyring
from studio.models import AuditEvent, UnkeyedAuditEvents, utcnow

__all__ = ["GENESIS", "AuditError", "AuditReport", "Checkpoint", "CheckpointPlaces", "CheckpointRefused",
           "CheckpointUnavailable", "checkpoint", "event_hash", "record", "verify_chain", "verify_log"]
GENESIS = "0" * 64


def event_hash(prev_hash: str, at: datetime, kind: str, subject_id: str, data: dict) -> str:
    body = json.dumps([prev_hash, at.isoformat(), kind, subject_id, data], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _lock_chain(session: Session) -> None:
    """Take the database's write lock before reading the chain's head, so two processes appending at once
    cannot both link to the same event (a fork `verify_log` would report). SQLite: any write statement takes
    its single write lock until commit (pysqlite runs a lone SELECT outside the transaction, so reading first
    would not); PostgreSQL: a transaction-scoped advisory lock."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        session.exec(text("UPDATE auditevent SET id = id WHERE id = -1"))
    elif dialect == "postgresql":
        session.exec(text("SELECT pg_advisory_xact_lock(7340033)"))


def record(session: Session, *, kind: str, subject_id: str, data: dict | None = None) -> AuditEvent:
    """Append one event in the caller's transaction, signed with the key of the role `kind` belongs to (from the
    keyring the runtime bound to the session's engine); appends are serialised across processes.
    `audit_keys.AuditKeyError` for an unknown kind, or one whose role's key this process does not hold."""
    keyring = audit_keys.bound(session.get_bind().engine)
    keyring.signer(kind)  # refused before the chain's lock is taken
    _lock_chain(session)
    last = session.exec(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).first()
    prev = last.hash if last else GENESIS
    at = utcnow()
    data = data or {}
    digest = event_hash(prev, at, kind, subject_id, data)
    role, mac = keyring.sign(kind, digest)
    ev = AuditEvent(at=at, kind=kind, subject_id=subject_id, data=data, prev_hash=prev, hash=digest,
                    mac_role=role, mac=mac)
    session.add(ev)
    session.flush()
    return ev


def verify_chain(events: list[AuditEvent]) -> list[str]:
    """Return the problems found (empty when the chain is intact). `verify_log` says more and sees deleted tails."""
    problems = []
    prev = GENESIS
    for ev in events:
        if ev.prev_hash != prev:
            problems.append(f"event {ev.id}: previous hash does not match (edited, deleted or reordered)")
        if event_hash(ev.prev_hash, ev.at, ev.kind, ev.subject_id, ev.data) != ev.hash:
            problems.append(f"event {ev.id}: content does not match its hash (edited)")
        prev = ev.hash
    return problems


# --- full verification -------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditReport:
    """What `verify_log` found. `ok` means no problem; warnings (no checkpoint yet) do not clear or spoil it.
    `checkpoint_from`: where the checkpoint compared with the log was read (None: none was)."""

    ok: bool
    events: int
    problems: list[str]
    head_hash: str
    warnings: list[str] = field(default_factory=list)
    checkpoint_from: str | None = None


@dataclass(frozen=True)
class _Row:
    """One event as stored, read without the ORM's converters so a vandalised row is reported, not raised."""

    id: int
    at: datetime | None
    kind: str
    subject_id: str
    data: dict | None
    prev_hash: str
    hash: str
    mac_role: str | None
    mac: str | None


_TABLE = AuditEvent.__table__
_UNKEYED = UnkeyedAuditEvents.__table__
_BATCH = 1000


def _rows(session: Session, problems: list[str], *where) -> Iterator[_Row]:
    """Events in id order, streamed; a row whose time or data cannot be parsed adds a problem and is still yielded."""
    c = _TABLE.c
    stmt = select(c.id, type_coerce(c.at, String), c.kind, c.subject_id, type_coerce(c.data, String),
                  c.prev_hash, c.hash, c.mac_role, c.mac).where(*where).order_by(c.id)
    result = session.connection().execution_options(stream_results=True, yield_per=_BATCH).execute(stmt)
    for id_, at_raw, kind, subject_id, data_raw, prev_hash, hash_, mac_role, mac in result:
        at, data = _parse_at(at_raw), _parse_data(data_raw)
        if at is None:
            problems.append(f"event {id_}: timestamp {at_raw!r} is not a date and time (edited)")
        if data is None:
            problems.append(f"event {id_}: data {str(data_raw)[:80]!r} is not a JSON object (edited)")
        yield _Row(id_, at, kind, subject_id, data, prev_hash, hash_, mac_role, mac)


def _row_at(session: Session, event_id: int, problems: list[str]) -> _Row | None:
    return next(_rows(session, problems, _TABLE.c.id == event_id), None)


def _count_up_to(session: Session, event_id: int) -> int:
    return session.exec(select(func.count()).select_from(_TABLE).where(_TABLE.c.id <= event_id)).one()


def _parse_at(raw: object) -> datetime | None:
    if isinstance(raw, datetime):  # drivers that hand back datetimes even for a coerced column
        return raw
    try:
        return datetime.fromisoformat(str(raw))
    except ValueError:
        return None


def _parse_data(raw: object) -> dict | None:
    if isinstance(raw, dict):  # drivers that decode JSON columns themselves
        return raw
    try:
        value = json.loads(str(raw))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _scan(session: Session, problems: list[str], *, after: _Row | None = None,
          macs: _Macs | None = None) -> tuple[_Row | None, int]:
    """Check links, content hashes and time order of the events after `after` (None: the whole log, from
    genesis), and with `macs` their MACs; return the last event seen and how many were read. Memory stays flat
    however long the log."""
    prev, seen = after, 0
    where = [_TABLE.c.id > after.id] if after else []
    for r in _rows(session, problems, *where):
        expected = prev.hash if prev else GENESIS
        if r.prev_hash != expected:
            problems.append(_link_problem(session, r, prev))
        readable = r.at is not None and r.data is not None
        if readable and event_hash(r.prev_hash, r.at, r.kind, r.subject_id, r.data) != r.hash:
            problems.append(f"event {r.id}: content does not match its hash (edited or forged)")
        elif readable and macs is not None:  # an edited event is reported above; its MAC adds nothing
            macs.check(r, problems)
        if prev and prev.at and r.at and r.at < prev.at:
            problems.append(f"event {r.id}: recorded at {r.at.isoformat()}, before event {prev.id} "
                            f"({prev.at.isoformat()}) that comes ahead of it (reordered)")
        prev, seen = r, seen + 1
    return prev, seen


def _link_problem(session: Session, r: _Row, prev: _Row | None) -> str:
    # Only a broken link pays for this look-up (hash is unique, so indexed).
    links_to = session.exec(select(_TABLE.c.id).where(_TABLE.c.hash == r.prev_hash)).first()
    if prev is None:
        if links_to is not None:
            return f"event {r.id}: is the first event but links to event {links_to} after it (reordered)"
        return f"event {r.id}: is the first event but links to an earlier one that is gone (events before it deleted)"
    if links_to is not None:
        return f"event {r.id}: links to event {links_to}, not to event {prev.id} before it (inserted or reordered)"
    if r.prev_hash == GENESIS:
        return f"event {r.id}: starts a new chain instead of following event {prev.id} (forged or reordered)"
    if r.id - prev.id > 1:
        return (f"event {r.id}: previous hash does not match event {prev.id}; "
                f"{_ids(prev.id + 1, r.id - 1)} missing (deleted)")
    return (f"event {r.id}: previous hash does not match event {prev.id} "
            f"(an event between them was deleted, or event {prev.id} was rewritten or forged)")


def _ids(first: int, last: int) -> str:
    return f"event {first} is" if first == last else f"events {first}..{last} are"


# --- MACs ---------------------------------------------------------------------------------------
class _Macs:
    """Checks each event's MAC with the key of the role its kind belongs to; counts the unkeyed events from
    before migration 0009 (ids up to `last_unkeyed`), which pass with a warning."""

    def __init__(self, keyring: AuditKeyring, last_unkeyed: int) -> None:
        self.keyring, self.last_unkeyed, self.unkeyed = keyring, last_unkeyed, 0

    def check(self, r: _Row, problems: list[str]) -> None:
        what = f"event {r.id} {r.kind}"
        if r.mac is None:
            if r.id <= self.last_unkeyed:
                self.unkeyed += 1
            elif self.last_unkeyed:
                problems.append(f"{what}: has no MAC, yet comes after event {self.last_unkeyed}, the last one from "
                                "before migration 0009 (forged)")
            else:
                problems.append(f"{what}: has no MAC, and no event predates migration 0009 (forged)")
            return
        if r.id <= self.last_unkeyed:
            problems.append(f"{what}: carries a MAC, yet is not after event {self.last_unkeyed}, the last one "
                            "migration 0009 found without a MAC (table unkeyedauditevents edited)")
        allowed = audit_keys.KIND_ROLES.get(r.kind)
        if allowed is None:
            problems.append(f"{what}: no role writes this kind (forged)")
        elif r.mac_role not in allowed:
            problems.append(f"{what}: signed as {r.mac_role or 'no role'}, but only the {' or '.join(allowed)} "
                            f"role writes {r.kind} (forged)")
        elif not hmac.compare_digest(r.mac.encode(), audit_keys.event_mac(self.keyring.key(r.mac_role),
                                                                           r.hash).encode()):
            problems.append(f"{what}: MAC does not match the {r.mac_role} key (forged)")

    def warnings(self) -> list[str]:
        if not self.unkeyed:
            return []
        return [f"{self.unkeyed} event(s) up to event {self.last_unkeyed} are unkeyed (from before migration 0009): "
                "their hash chain is checked, not who wrote them"]


def _last_unkeyed(session: Session, problems: list[str]) -> int:
    """The last event id from before migration 0009 (0: none). More than one row is an edit; the lowest counts."""
    values = session.exec(select(_UNKEYED.c.last_id).order_by(_UNKEYED.c.last_id)).all()
    if len(values) > 1:
        problems.append(f"table unkeyedauditevents holds {len(values)} rows where migration 0009 wrote one (edited)")
    if values and not isinstance(values[0], int):
        problems.append(f"table unkeyedauditevents: last_id {values[0]!r} is not an event id (edited)")
        return 0
    return values[0] if values else 0


def verify_log(session: Session, *, keyring: AuditKeyring, places: CheckpointPlaces,
               legacy_key: bytes | None = None) -> AuditReport:
    """Check every event of the log (`studio audit verify`): its hash, its link, its MAC (so `keyring` must
    hold every role's key), and that the head in the newest valid checkpoint of `places` is still there.
    `legacy_key`: the policy key, which MACed checkpoints before the role keys; such a checkpoint is still read,
    with a warning. CheckpointUnavailable when a place cannot be reached."""
    for role in ROLES:
        keyring.key(role)
    problems: list[str] = []
    macs = _Macs(keyring, _last_unkeyed(session, problems))
    head, seen = _scan(session, problems, macs=macs)
    warnings = macs.warnings()
    found = places.read(key=keyring.key(CONTROL), legacy_key=legacy_key)
    problems += found.problems
    warnings += found.warnings
    if (cp := found.checkpoint) is not None:
        if cp.legacy:
            legacy = _legacy_problem(cp, macs.last_unkeyed, found.where)
            (problems if legacy else warnings).append(legacy or _legacy_warning(found.where))
        problems += _checkpoint_problems(session, cp, head_id=head.id if head else 0)
    return AuditReport(ok=not problems, events=seen, problems=problems, head_hash=head.hash if head else GENESIS,
                       warnings=warnings, checkpoint_from=found.where)


# --- checkpoint of the head --------------------------------------------------------------------
def _legacy_problem(cp: Checkpoint, last_unkeyed: int, where: str) -> str | None:
    """A policy-key checkpoint was written before migration 0009, so it cannot reach past the events it found;
    one that does was made since by a holder of the policy key (a render or streaming host)."""
    if cp.last_id is not None and cp.last_id > last_unkeyed:
        return (f"audit checkpoint in {where}: MACed with the policy key, as only checkpoints from before "
                f"migration 0009 were, yet it reaches event {cp.last_id}, past event {last_unkeyed}, the last one "
                "from then (forged)")
    return None


def _legacy_warning(where: str) -> str:
    return (f"audit checkpoint in {where} is MACed with the policy key (written before the role keys); the next "
            "checkpoint (the scheduler's, or `studio audit checkpoint`) MACs it with the control key")


def _checkpoint_problems(session: Session, cp: Checkpoint, *, head_id: int) -> list[str]:
    if cp.last_id is None:
        return []  # checkpointed while the log was empty: there was nothing to lose yet
    row = _row_at(session, cp.last_id, [])
    if row is None or row.hash != cp.last_hash:
        return [_head_lost(cp, row, head_id)]
    kept = _count_up_to(session, cp.last_id)
    return [_shrunk(cp, kept)] if kept < cp.count else []


def _head_lost(cp: Checkpoint, row: _Row | None, head_id: int) -> str:
    if row is not None:
        return f"event {cp.last_id}: hash differs from the checkpoint of {cp.at} (the chain was rewritten)"
    if head_id < cp.last_id:
        return (f"{_ids(head_id + 1, cp.last_id)} missing: the log ends at event {head_id} but the checkpoint "
                f"of {cp.at} saw it reach event {cp.last_id} (tail deleted)")
    return f"event {cp.last_id}: the head checkpointed at {cp.at} is gone (deleted)"


def _shrunk(cp: Checkpoint, kept: int) -> str:
    return (f"event {cp.last_id}: {cp.count - kept} of the {cp.count} events up to it at the checkpoint "
            f"of {cp.at} are gone (deleted)")


def checkpoint(session: Session, keyring: AuditKeyring, places: CheckpointPlaces, *,
               legacy_key: bytes | None = None) -> Checkpoint:
    """Write the chain's head, MACed with the control key, to `places`, unless they hold a later one already (a
    leader that lost its lease while this pass ran wrote it): `CheckpointRefused` then. `legacy_key`: the policy
    key, to move on from a checkpoint written before the role keys.

    Reads through its own connection, so only committed events are checkpointed: call it after the
    transaction that recorded them. Before moving the checkpoint forward it checks the events since the
    previous one (the whole log the first time), so its cost follows what was recorded since; a broken
    chain or an unreadable old checkpoint raises AuditError and the old one is kept as evidence."""
    key = keyring.key(CONTROL)
    found = places.read(key=key, legacy_key=legacy_key)
    previous, where = found.checkpoint, found.where or places.names()
    problems: list[str] = list(found.problems)
    with Session(session.get_bind()) as fresh:
        if previous is not None and previous.legacy:
            legacy = _legacy_problem(previous, _last_unkeyed(fresh, problems), where)
            problems += [legacy] if legacy else []
        if problems:
            head, seen = None, 0
        elif previous is None or previous.last_id is None:
            head, seen = _scan(fresh, problems)
        else:
            anchor = _row_at(fresh, previous.last_id, problems)
            if anchor is None or anchor.hash != previous.last_hash:
                problems.append(_head_lost(previous, anchor, head_id=previous.last_id))
                head, seen = None, 0
            else:
                head, seen = _scan(fresh, problems, after=anchor)
                head = head or anchor
        count = _count_up_to(fresh, head.id) if head else 0
    if previous and previous.last_id is not None and head and count < previous.count + seen:
        problems.append(_shrunk(previous, count - seen))
    if problems:
        raise AuditError(f"not moving the audit checkpoint forward: {'; '.join(problems[:5])}; "
                         "run `studio audit verify`, and move the old checkpoint aside only after investigating")
    cp = Checkpoint(last_id=head.id if head else None, last_hash=head.hash if head else GENESIS, count=count,
                    at=utcnow().isoformat())
    if not places.write(cp.document(key), cp.position):
        raise CheckpointRefused(f"audit checkpoint at event {cp.last_id} not written: {places.shared[0].where} "
                                "holds a later one (another scheduler leads now)")
    return cp

