"""The render beat follows the render's progress (workers.render.segment.RenderBeat), on SQLite and PostgreSQL: an
attempt that stops making progress stops beating (so the scheduler can hand its segment to another worker), beats
again when it moves on, and never beats past the render's hard time limit; while stalled it counts in its worker node's
stalled renders."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from sqlmodel import Session

from studio.config import Settings
from studio.models import Segment, WorkerInfo
from tests.conftest import db_show
from workers.render.segment import RenderBeat
from workers.worker_report import CPU, pid_alive, record_stall, record_start, touch

pytestmark = pytest.mark.integration

EVERY = 0.1


def _row(engine) -> str:
    ids = db_show(engine)
    with Session(engine) as s:
        seg = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                      consent_id=ids["consent"], script_id=ids["script"], text="x", seq=0, state="rendering",
                      attempts=1)
        s.add(seg)
        s.commit()
        return seg.id


def _beat_at(engine, seg_id):
    with Session(engine) as s:
        return s.get(Segment, seg_id).updated_at


def _busy(beat: RenderBeat, seconds: float) -> None:
    """A render making progress for `seconds`: a frame every 20 ms."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        beat.progress()
        time.sleep(0.02)


def _until(check, seconds: float = 5.0) -> bool:
    """Whether `check()` holds within `seconds`, polled. The bounds are generous: on a busy machine (the suite's
    parallel pass) a beat thread may wait its turn for a while."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if check():
            return True
        time.sleep(0.02)
    return check()


def _busy_until(beat: RenderBeat, check, seconds: float = 5.0) -> bool:
    """A render making progress until `check()` holds (True), or for `seconds` (False)."""
    return _until(lambda: beat.progress() or check(), seconds)


def test_a_stalled_render_stops_beating_and_beats_again_when_it_moves_on(fresh_db):
    seg_id = _row(fresh_db)
    rt = SimpleNamespace(engine=fresh_db, settings=Settings())
    beat = RenderBeat(rt, seg_id, 1, every=EVERY, stall_s=0.5).start()
    try:
        first = _beat_at(fresh_db, seg_id)
        assert _busy_until(beat, lambda: _beat_at(fresh_db, seg_id) > first), "a busy render did not beat"
        assert not beat.stalled
        assert _until(lambda: beat.stalled), "no progress past stall_s, yet not stalled"
        stalled = _beat_at(fresh_db, seg_id)
        time.sleep(5 * EVERY)
        assert _beat_at(fresh_db, seg_id) == stalled, "a stalled render kept beating"
        assert _busy_until(beat, lambda: not beat.stalled and _beat_at(fresh_db, seg_id) > stalled), \
            "the render moved on; its beat did not"
    finally:
        beat.stop()


def test_no_beat_past_the_hard_time_limit_however_busy(fresh_db):
    seg_id = _row(fresh_db)
    rt = SimpleNamespace(engine=fresh_db, settings=Settings())
    beat = RenderBeat(rt, seg_id, 1, every=EVERY, stall_s=60, limit_s=0.4).start()
    try:
        assert _busy_until(beat, lambda: not beat._thread.is_alive()), "the beat ran on past the hard limit"
        last = _beat_at(fresh_db, seg_id)
        _busy(beat, 4 * EVERY)
        assert _beat_at(fresh_db, seg_id) == last
    finally:
        beat.stop()


def _stalled(engine, node: str) -> int:
    with Session(engine) as s:
        return len(s.get(WorkerInfo, node).stalled)


def _listed(engine, node: str) -> list[tuple]:
    with Session(engine) as s:
        return [(e["segment"], e["attempt"], e["pid"]) for e in s.get(WorkerInfo, node).stalled]


def test_a_stalled_render_counts_in_its_workers_stalled_renders_until_it_moves_on_or_returns(fresh_db):
    """A thread stuck in a call that never returns keeps its slot of the worker after its segment went elsewhere:
    ops see it as the node's stalled renders (/metrics studio_worker_stalled_renders), for as long as it stalls."""
    node = "render@gpu1"
    record_start(fresh_db, name=node, queues=["render.gpu"], device=CPU, cpu_count=2)
    rt = SimpleNamespace(engine=fresh_db, settings=Settings())
    me = os.getpid()
    # `one` stalls after a second without progress, `two` after 0.3 s; each check is polled with generous bounds,
    # and none depends on how soon after a step the next line runs (the suite's parallel pass keeps the CPUs busy).
    one = RenderBeat(rt, _row(fresh_db), 1, every=EVERY, stall_s=1.0, node=node).start()
    two = RenderBeat(rt, _row(fresh_db), 1, every=EVERY, stall_s=0.3, node=node).start()
    try:
        assert _busy_until(one, lambda: _listed(fresh_db, node) == [(two.segment_id, 1, me)]), \
            "a stalled render was not listed, or a busy one was"
        assert _until(lambda: sorted(_listed(fresh_db, node)) == sorted([(one.segment_id, 1, me),
                                                                         (two.segment_id, 1, me)])), \
            "two stalled renders were not both listed"
        assert _busy_until(one, lambda: _listed(fresh_db, node) == [(two.segment_id, 1, me)]), \
            "a render that moved on stayed listed"
        two.stop()  # the other returns at last (failed, cancelled or done): its slot is free
        assert (two.segment_id, 1, me) not in _listed(fresh_db, node)
        assert _until(lambda: _listed(fresh_db, node) == [(one.segment_id, 1, me)]), \
            "a render that stalled again was not listed"
        one.stop()
        assert _stalled(fresh_db, node) == 0
    finally:
        one.stop()
        two.stop()
    assert _stalled(fresh_db, node) == 0, "a stop after a stop counted a render out twice"


def test_a_render_past_its_hard_limit_counts_as_stalled_until_it_returns(fresh_db):
    node = "render@gpu2"
    record_start(fresh_db, name=node, queues=["render.gpu"], device=CPU, cpu_count=2)
    rt = SimpleNamespace(engine=fresh_db, settings=Settings())
    beat = RenderBeat(rt, _row(fresh_db), 1, every=EVERY, stall_s=60, limit_s=0.3, node=node).start()
    try:
        assert _busy_until(beat, lambda: _stalled(fresh_db, node) == 1)  # busy, but past the limit
    finally:
        beat.stop()
    assert _stalled(fresh_db, node) == 0


def test_a_restart_clears_the_stalled_renders_and_a_late_report_changes_nothing(fresh_db):
    node = "render@gpu3"
    record_stall(fresh_db, name=node, segment_id="s1", attempt=1, stalled=True, pid=1)  # never registered: a row
    record_stall(fresh_db, name=node, segment_id="s2", attempt=2, stalled=True, pid=1)
    record_stall(fresh_db, name=node, segment_id="s2", attempt=2, stalled=True, pid=1)  # said twice: listed once
    assert _listed(fresh_db, node) == [("s1", 1, 1), ("s2", 2, 1)]
    record_start(fresh_db, name=node, queues=["render.gpu"], device=CPU, cpu_count=2)  # restarted: slots free
    assert _stalled(fresh_db, node) == 0
    record_stall(fresh_db, name=node, segment_id="s1", attempt=1, stalled=False, pid=1)  # a late report
    assert _stalled(fresh_db, node) == 0


def test_the_heartbeat_drops_stalled_renders_whose_process_is_gone(fresh_db):
    """A prefork pool process stuck past the hard time limit is killed by Celery and replaced: its slot is free, so
    its render leaves the list at the node's next heartbeat. A thread stuck in the worker's own process stays."""
    node = "render@cpu4"
    record_start(fresh_db, name=node, queues=["render.cpu"], device=CPU, cpu_count=2)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record_stall(fresh_db, name=node, segment_id="killed", attempt=1, stalled=True, pid=gone.pid)
    record_stall(fresh_db, name=node, segment_id="stuck", attempt=1, stalled=True, pid=os.getpid())
    touch(fresh_db, name=node)  # no liveness check: both kept
    assert _stalled(fresh_db, node) == 2
    touch(fresh_db, name=node, alive=pid_alive)
    assert _listed(fresh_db, node) == [("stuck", 1, os.getpid())]


def test_stall_seconds_come_from_the_worker_settings():
    settings = Settings(worker={"render_stall_seconds": 42})
    beat = RenderBeat(SimpleNamespace(engine=None, settings=settings), "s", 1)
    assert beat.stall_s == 42.0
    assert Settings().worker.render_stall_seconds == 120.0
    with pytest.raises(ValueError, match="render_stall_seconds"):
        Settings(worker={"render_stall_seconds": 0})


def test_past_the_soft_limit_the_next_check_raises_as_celerys_timer_would(fresh_db):
    """A threads pool has no soft time limit of Celery's: the render's own check raises it, so the render fails
    (and is retried) as under a prefork pool."""
    from billiard.exceptions import SoftTimeLimitExceeded

    from workers.render.segment import StillWanted

    seg_id = _row(fresh_db)
    rt = SimpleNamespace(engine=fresh_db, settings=Settings())
    StillWanted(rt, seg_id, 1, deadline=time.monotonic() + 60).check()  # in time, still wanted: no exception
    with pytest.raises(SoftTimeLimitExceeded, match=f"segment {seg_id}: attempt 1 ran past"):
        StillWanted(rt, seg_id, 1, deadline=time.monotonic() - 0.01).check()
    seen = []
    frames = StillWanted(rt, seg_id, 1, progress=lambda: seen.append(1)).frames(iter(range(5)))
    assert list(frames) == list(range(5)) and len(seen) == 5  # every frame is progress for the beat
