"""Segment state machine: every state change goes through `transition`, which refuses illegal moves."""

from __future__ import annotations

from enum import StrEnum


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
