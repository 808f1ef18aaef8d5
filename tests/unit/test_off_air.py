"""How long a revoked clone stayed on air, as a revocation's certificate reads it from the streamer's records:
a segment cut (or ended) on air, or the clone's idle loop cut to the card. Each needs the other kinds to be ignored:
another consent, a frame that ended before the revocation."""

from __future__ import annotations

import time

import pytest

from studio import audit
from studio.db import session_scope
from workers.consent.revocation import _off_air_seconds

CONSENT = "c-revoked"


def _record(engine, kind: str, *, consent: str, air_start: float, seconds: float) -> None:
    with session_scope(engine) as s:
        audit.record(s, kind=kind, subject_id="x", data={"consent_id": consent, "air_start": air_start,
                                                          "seconds": seconds, "channel_id": "ch"})


def _off_air(engine, revoked_at: float) -> float | None:
    with session_scope(engine) as s:
        return _off_air_seconds(s, CONSENT, revoked_at)


def test_the_idle_loop_cut_to_the_card_is_when_the_clone_went_off_air(fresh_db):
    revoked = time.time()
    _record(fresh_db, "segment.aired", consent=CONSENT, air_start=revoked - 6, seconds=4)  # ended before it
    _record(fresh_db, "idle.off_air", consent="another", air_start=revoked - 0.5, seconds=2)
    assert _off_air(fresh_db, revoked) is None  # nothing of this consent was on air
    _record(fresh_db, "idle.off_air", consent=CONSENT, air_start=revoked - 0.4, seconds=1.1)
    assert _off_air(fresh_db, revoked) == pytest.approx(0.7, abs=0.002)


def test_the_later_of_a_segment_cut_and_the_idle_loop_counts(fresh_db):
    revoked = time.time()
    _record(fresh_db, "segment.aired", consent=CONSENT, air_start=revoked - 1, seconds=1.9)
    _record(fresh_db, "idle.off_air", consent=CONSENT, air_start=revoked + 0.9, seconds=0.3)
    assert _off_air(fresh_db, revoked) == pytest.approx(1.2, abs=0.002)
