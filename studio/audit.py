"""Append-only, hash-chained audit log (POLICY C6): each event's hash covers the previous one."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from sqlmodel import Session, select

from studio.models import AuditEvent, utcnow

GENESIS = "0" * 64


def event_hash(prev_hash: str, at: datetime, kind: str, subject_id: str, data: dict) -> str:
    body = json.dumps([prev_hash, at.isoformat(), kind, subject_id, data], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def record(session: Session, *, kind: str, subject_id: str, data: dict | None = None) -> AuditEvent:
    """Append one event in the caller's transaction."""
    last = session.exec(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).first()
    prev = last.hash if last else GENESIS
    at = utcnow()
    data = data or {}
    ev = AuditEvent(at=at, kind=kind, subject_id=subject_id, data=data, prev_hash=prev,
                    hash=event_hash(prev, at, kind, subject_id, data))
    session.add(ev)
    session.flush()
    return ev


def verify_chain(events: list[AuditEvent]) -> list[str]:
    """Return the problems found (empty when the chain is intact)."""
    problems = []
    prev = GENESIS
    for ev in events:
        if ev.prev_hash != prev:
            problems.append(f"event {ev.id}: previous hash does not match (edited, deleted or reordered)")
        if event_hash(ev.prev_hash, ev.at, ev.kind, ev.subject_id, ev.data) != ev.hash:
            problems.append(f"event {ev.id}: content does not match its hash (edited)")
        prev = ev.hash
    return problems
