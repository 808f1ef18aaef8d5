"""The cooperative cancellation check of a running render (POLICY C5), on a real SQLite database built by the
migrations, and the revocation's best-effort revoke of queued Celery tasks when the broker is down."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from studio.db import session_scope
from studio.models import Consent, Segment, utcnow
from tests.conftest import db_show
from tests.media_helpers import free_port
from workers.render.segment import RenderCancelled, StillWanted

TEXT = "Paid partnership with Lumen Labs. Meet the Glow Serum."


@pytest.fixture
def world(fresh_db):
    """A segment RENDERING its first attempt under a granted consent; `rt` carries only the engine."""
    engine = fresh_db
    ids = db_show(engine, text=TEXT)
    with session_scope(engine) as s:
        seg = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                      consent_id=ids["consent"], script_id=ids["script"], text=TEXT, seq=0, state="rendering",
                      attempts=1)
        s.add(seg)
    return SimpleNamespace(engine=engine), seg.id, ids["consent"]


def _set(rt, model, row_id: str, **values) -> None:
    with session_scope(rt.engine) as s:
        row = s.get(model, row_id)
        for k, v in values.items():
            setattr(row, k, v)


def test_a_render_is_wanted_while_its_segment_renders_this_attempt_under_a_holding_consent(world):
    rt, seg_id, _ = world
    assert StillWanted(rt, seg_id, 1).problem() is None
    StillWanted(rt, seg_id, 1).check()  # does not raise
    _set(rt, Segment, seg_id, attempts=2)  # a redelivered task took the segment over
    assert "attempt 2" in StillWanted(rt, seg_id, 1).problem()
    assert StillWanted(rt, seg_id, 2).problem() is None


@pytest.mark.parametrize(("change", "expected"), [
    ("revoked", "is revoked"),
    ("expired", "is expired"),
    ("term_over", "ended at"),
    ("cancelled", "is cancelled"),
    ("skipped", "is skipped"),
])
def test_a_render_is_unwanted_once_its_consent_lapses_or_its_segment_leaves_rendering(world, change, expected):
    rt, seg_id, consent_id = world
    if change in ("revoked", "expired"):
        _set(rt, Consent, consent_id, status=change)
    elif change == "term_over":
        _set(rt, Consent, consent_id, ends_at=utcnow() - timedelta(seconds=1))
    else:
        _set(rt, Segment, seg_id, state=change)
    wanted = StillWanted(rt, seg_id, 1)
    assert expected in wanted.problem()
    with pytest.raises(RenderCancelled, match=expected):
        wanted.check()


def test_frames_stop_at_the_first_check_after_the_revocation(world):
    rt, seg_id, consent_id = world
    source = (np.full((4, 4, 3), i, np.uint8) for i in range(100))
    passed = []
    with pytest.raises(RenderCancelled, match="is revoked"):
        for frame in StillWanted(rt, seg_id, 1).frames(source, interval=0.0):
            passed.append(int(frame[0, 0, 0]))
            if len(passed) == 3:
                _set(rt, Consent, consent_id, status="revoked")
    assert passed == [0, 1, 2]


def test_frames_are_checked_by_wall_time_not_on_every_frame(world, monkeypatch):
    rt, seg_id, _ = world
    wanted = StillWanted(rt, seg_id, 1)
    checks = []
    monkeypatch.setattr(StillWanted, "check", lambda self: checks.append(time.monotonic()))

    def slow(n: int):
        for i in range(n):
            time.sleep(0.01)
            yield np.full((2, 2, 3), i, np.uint8)

    assert len(list(wanted.frames(slow(60), interval=0.1))) == 60  # about 0.6 s of frames
    assert 3 <= len(checks) <= 7
    assert all(b - a >= 0.1 for a, b in zip(checks, checks[1:], strict=False))


def test_revoking_queued_tasks_never_fails_a_revocation_when_the_broker_is_down(monkeypatch, caplog):
    import workers.app
    from workers.consent.revocation import revoke_queued_tasks

    monkeypatch.setenv("STUDIO_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    monkeypatch.setattr(workers.app, "app", workers.app.make_celery())
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="studio.revocation"):
        revoke_queued_tasks(["task-1", "task-2"])
    assert time.monotonic() - started < 3.0
    assert "could not revoke 2 queued render tasks" in caplog.text
