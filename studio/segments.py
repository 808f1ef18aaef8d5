"""Segment state machine: every state change goes through `move` (the transition, which refuses illegal moves, with
the row's error, time and audit event in one call)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlmodel import Session

    from studio.models import Segment


class SegmentState(StrEnum):
    PLANNED = "planned"      # in the plan, render not started
    RENDERING = "rendering"  # a worker holds it
    READY = "ready"          # rendered, labelled, stamped; may air
    AIRED = "aired"          # went out on the channel
    FAILED = "failed"        # render or labelling failed; retried while attempts remain
    REFUSED = "refused"      # the streamer refused it at air time (stamp, consent)
    SKIPPED = "skipped"      # missed its turn; the slate covered for it
    CANCELLED = "cancelled"  # consent revoked or show stopped before it aired


S = SegmentState
TRANSITIONS: dict[SegmentState, frozenset[SegmentState]] = {
    S.PLANNED: frozenset({S.RENDERING, S.SKIPPED, S.CANCELLED}),
    S.RENDERING: frozenset({S.READY, S.FAILED, S.PLANNED, S.SKIPPED, S.CANCELLED}),
    S.READY: frozenset({S.AIRED, S.REFUSED, S.SKIPPED, S.CANCELLED}),
    S.FAILED: frozenset({S.PLANNED, S.SKIPPED, S.CANCELLED}),
    S.AIRED: frozenset(),
    S.REFUSED: frozenset(),
    S.SKIPPED: frozenset(),
    S.CANCELLED: frozenset(),
}
TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


class IllegalTransition(ValueError):
    pass


def transition(current: str, target: str) -> SegmentState:
    """Return the new state, or raise naming both states when the move is not allowed."""
    try:
        cur, tgt = SegmentState(current), SegmentState(target)
    except ValueError as exc:
        raise IllegalTransition(f"unknown segment state: {exc}") from None
    if tgt not in TRANSITIONS[cur]:
        allowed = ", ".join(sorted(TRANSITIONS[cur])) or "none (terminal)"
        raise IllegalTransition(f"segment cannot go from {cur} to {tgt}; allowed: {allowed}")
    return tgt


_UNCHANGED: Any = object()
DEFAULT_EVENT = "segment.<state>"


def move(s: Session, seg: Segment, to: str, *, error: str | None = _UNCHANGED, at: datetime | None = None,
         event: str | None = DEFAULT_EVENT, data: dict[str, Any] | None = None) -> SegmentState:
    """The one way a segment row changes state: the transition (IllegalTransition names both states when the move
    is not allowed), its error (set, or cleared with None; left as it is when not given), its time (`at`, when
    given, becomes `updated_at`) and its audit event: `event` is its kind (`segment.<new state>` by default; None
    when the caller records one event for many moves), `data` its fields. Returns the new state."""
    seg.state = transition(seg.state, to)
    if error is not _UNCHANGED:
        seg.error = error
    if at is not None:
        seg.updated_at = at
    if event is not None:
        from studio import audit

        audit.record(s, kind=f"segment.{seg.state}" if event == DEFAULT_EVENT else event, subject_id=seg.id,
                     data=data or {})
    return seg.state


def requeue_lost(s: Session, segment_id: str, *, attempts: int, beat_before: datetime, now: datetime,
                 reason: str) -> bool:
    """Put a RENDERING segment whose attempt `attempts` stopped beating before `beat_before` back to PLANNED, fenced
    in one UPDATE on that state, attempt and beat (a render that beat since, or another attempt, keeps it); with its
    audit event. True when it was requeued."""
    from sqlmodel import update

    from studio import audit
    from studio.models import Segment

    taken = s.exec(update(Segment).where(Segment.id == segment_id, Segment.state == SegmentState.RENDERING,
                                         Segment.attempts == attempts, Segment.updated_at < beat_before)
                   .values(state=transition(SegmentState.RENDERING, SegmentState.PLANNED), task_id=None,
                           updated_at=now)).rowcount
    if taken:
        audit.record(s, kind="segment.requeued", subject_id=segment_id, data={"reason": reason, "attempt": attempts})
    return bool(taken)
