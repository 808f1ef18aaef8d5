"""Render queue policy: Celery settings, priority by deadline, renders that start too late, the streamer skipping
segments that are already lost, and the workers' reports (on a real SQLite database built by the migrations)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from studio.config import Settings
from studio.db import session_scope
from studio.models import (
    AuditEvent,
    Segment,
    WorkerInfo,
    utcnow,
)
from tests.conftest import api_key, db_show
from workers.queue_policy import (
    LEAST_URGENT,
    MAX_RENDER_ATTEMPTS,
    MOST_URGENT,
    PRIORITY_STEPS,
    RENDER_LIMITS,
    VISIBILITY_TIMEOUT_S,
    missed_air_time,
    render_priority,
    render_retry_countdown,
)
from workers.worker_report import Device, is_stale, moving_average, record_render, record_start, touch

NOW = datetime(2025, 1, 1, 12, 0, 0)


def test_sooner_deadline_means_a_lower_redis_priority_number():
    assert render_priority(None, now=NOW) == LEAST_URGENT
    assert render_priority(NOW - timedelta(minutes=5), now=NOW) == MOST_URGENT == 0
    assert render_priority(NOW + timedelta(seconds=5), now=NOW) == 0
    assert render_priority(NOW + timedelta(seconds=20), now=NOW) == 1
    assert render_priority(NOW + timedelta(seconds=100), now=NOW) == 6
    assert render_priority(NOW + timedelta(hours=3), now=NOW) == LEAST_URGENT == 9
    levels = [render_priority(NOW + timedelta(seconds=s), now=NOW) for s in range(-30, 200, 3)]
    assert levels == sorted(levels) and set(levels) <= set(PRIORITY_STEPS)


def test_render_that_would_start_after_its_deadline_or_air_time_is_too_late():
    assert missed_air_time(deadline=None, air_at=None, now=NOW) is None
    assert missed_air_time(deadline=NOW + timedelta(seconds=1), air_at=NOW + timedelta(seconds=9), now=NOW) is None
    assert "after its deadline 11:59:59" in missed_air_time(deadline=NOW - timedelta(seconds=1), air_at=None, now=NOW)
    assert "after its air time 12:00:00" in missed_air_time(deadline=None, air_at=NOW, now=NOW)


def test_celery_settings_for_long_renders():
    from workers.app import app
    from workers.tasks import ingest_task, render_segment_task

    conf = app.conf
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert render_segment_task.acks_late and render_segment_task.time_limit == RENDER_LIMITS.hard_s
    assert render_segment_task.max_retries == MAX_RENDER_ATTEMPTS - 1
    assert [render_retry_countdown(n) for n in range(3)] == [1, 2, 4]
    # Redelivery by visibility timeout must never hand a still-running task to a second worker.
    opts = conf.broker_transport_options
    assert opts["visibility_timeout"] == VISIBILITY_TIMEOUT_S
    assert VISIBILITY_TIMEOUT_S > max(render_segment_task.time_limit, ingest_task.time_limit) + 8
    assert opts["priority_steps"] == list(PRIORITY_STEPS) and opts["queue_order_strategy"] == "priority"
    assert conf.task_default_priority == render_priority(None, now=NOW)


@pytest.fixture
def world(fresh_db):
    """A channel, a show under a granted consent; `rt` carries only the engine (and the default store)."""
    engine = fresh_db
    return SimpleNamespace(engine=engine, settings=Settings(), store_is_data_dir=True), db_show(engine)


def _segment(rt, ids, seq: int, **values) -> str:
    with session_scope(rt.engine) as s:
        seg = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                      consent_id=ids["consent"], script_id=ids["script"], text="Paid partnership.", seq=seq, **values)
        s.add(seg)
    return seg.id


def _row(rt, seg_id) -> Segment:
    with session_scope(rt.engine) as s:
        return s.get(Segment, seg_id)


def _events(rt, kind: str) -> list[AuditEvent]:
    with session_scope(rt.engine) as s:
        return s.exec(select(AuditEvent).where(AuditEvent.kind == kind)).all()


def test_a_render_starting_after_the_deadline_skips_its_segment_and_does_not_render(world):
    from workers.render.segment import render_segment_direct

    rt, ids = world
    late = _segment(rt, ids, 0, deadline=utcnow() - timedelta(seconds=3), air_at=utcnow() + timedelta(seconds=2))
    assert render_segment_direct(rt, late) == "skipped"
    row = _row(rt, late)
    assert row.attempts == 0 and row.path is None and "after its deadline" in row.error
    assert [e.subject_id for e in _events(rt, "segment.skipped")] == [late]
    # A task redelivered for it later, or for a segment already rendered or aired, does nothing.
    assert render_segment_direct(rt, late) == "skipped"
    for state in ("ready", "aired"):
        done = _segment(rt, ids, 1 if state == "ready" else 2, state=state, attempts=1, path="/x.mp4",
                        deadline=utcnow() - timedelta(seconds=3))
        assert render_segment_direct(rt, done) == state
        assert _row(rt, done).attempts == 1 and _row(rt, done).path == "/x.mp4"


def test_a_segment_whose_worker_keeps_dying_is_failed_not_rendered_again(world):
    from workers.render.segment import render_segment_direct

    rt, ids = world
    seg_id = _segment(rt, ids, 0, state="rendering", attempts=MAX_RENDER_ATTEMPTS)
    assert render_segment_direct(rt, seg_id) == "failed"
    row = _row(rt, seg_id)
    assert row.attempts == MAX_RENDER_ATTEMPTS and f"lost on each of {MAX_RENDER_ATTEMPTS} attempts" in row.error


def test_streamer_skips_at_once_segments_that_are_already_lost(world):
    from workers.streamer.air import ChannelAir

    rt, ids = world
    now = utcnow()
    gone = _segment(rt, ids, 0, air_at=now - timedelta(seconds=200))                    # aired long ago, or never
    missed = _segment(rt, ids, 1, deadline=now - timedelta(seconds=1))                 # nobody started it in time
    ready = _segment(rt, ids, 2, state="ready", path="/seg2.mp4", deadline=now - timedelta(seconds=1))
    air = ChannelAir(rt, ids["channel"], max_wait_seconds=60)
    ref = air.next_segment()
    assert ref is not None and ref.id == ready  # without waiting: late but rendered still airs
    assert _row(rt, gone).state == _row(rt, missed).state == "skipped"
    assert "passed more than 60 s ago" in _row(rt, gone).error and "no render" in _row(rt, missed).error
    # One rendering now, due soon: the slate covers while it is waited for; it is not skipped yet.
    rendering = _segment(rt, ids, 3, state="rendering", attempts=1, deadline=now - timedelta(seconds=1),
                         air_at=now - timedelta(seconds=5))
    planned = _segment(rt, ids, 4, deadline=now + timedelta(seconds=30))
    air.next_seq = 3
    assert air.next_segment() is None and _row(rt, rendering).state == "rendering"
    air.next_seq = 4
    assert air.next_segment() is None and _row(rt, planned).state == "planned"


def test_workers_report_device_and_render_speed(fresh_db):
    t0 = datetime(2025, 1, 1, 12, 0, 0)
    record_start(fresh_db, name="render@gpu1", queues=["render"], device=Device("NVIDIA H100", 81559), cpu_count=16,
                 now=t0)
    record_render(fresh_db, name="render@gpu1", frames=250, seconds=5.0, fps=25, now=t0 + timedelta(seconds=10))
    record_render(fresh_db, name="render@gpu1", frames=100, seconds=1.0, fps=25, now=t0 + timedelta(seconds=20))
    record_render(fresh_db, name="render@cpu", frames=50, seconds=4.0, fps=25, queue="render", now=t0)
    with session_scope(fresh_db) as s:
        gpu, cpu = s.get(WorkerInfo, "render@gpu1"), s.get(WorkerInfo, "render@cpu")
    assert (gpu.device, gpu.device_memory_mb, gpu.cpu_count, gpu.renders) == ("NVIDIA H100", 81559, 16, 2)
    assert gpu.render_fps == pytest.approx(moving_average(50.0, 100.0)) == pytest.approx(65.0)
    assert gpu.realtime_factor == pytest.approx(0.3 * 4.0 + 0.7 * 2.0)
    assert gpu.last_seen == t0 + timedelta(seconds=20)
    assert (cpu.device, cpu.queues, cpu.renders, cpu.render_fps) == ("cpu", ["render"], 1, 12.5)
    touch(fresh_db, name="render@gpu1", now=t0 + timedelta(minutes=5))
    assert not is_stale(t0 + timedelta(minutes=5), now=t0 + timedelta(minutes=6))
    assert is_stale(t0 + timedelta(seconds=20), now=t0 + timedelta(minutes=3))


def test_api_lists_workers_and_flags_stale_ones(fresh_db):
    from api.app import create_app

    now = utcnow()
    record_start(fresh_db, name="render@a", queues=["render"], device=Device("cpu"), cpu_count=2, now=now)
    record_start(fresh_db, name="ingest@b", queues=["ingest"], device=Device("cpu"), cpu_count=2,
                 now=now - timedelta(minutes=10))
    with TestClient(create_app(SimpleNamespace(engine=fresh_db, settings=Settings()))) as client:
        client.headers["Authorization"] = f"Bearer {api_key(fresh_db, role='ops')}"
        workers = client.get("/api/workers").json()
    assert [(w["id"], w["stale"], w["queues"], w["device"]) for w in workers] == [
        ("ingest@b", True, ["ingest"], "cpu"), ("render@a", False, ["render"], "cpu")]


def test_device_probe_runs_torch_in_a_child_interpreter(monkeypatch):
    from workers import worker_report

    monkeypatch.setattr(worker_report, "GPU_DRIVER_NODES", ("/",))  # as if a GPU driver were loaded
    device = worker_report.probe_device()
    assert device.name != "unknown"  # the check itself ran (this suite's torch may be a CPU build)
    assert (device.name == "cpu") == (device.memory_mb is None)


@pytest.mark.parametrize(("text", "load"), [
    ("37, 10240\n", (37.0, 10240)),
    ("100, 81559\n12, 3\n", (100.0, 81559)),  # the first GPU
    ("[N/A], [N/A]\n", None),
    ("", None),
])
def test_gpu_load_is_read_from_nvidia_smi_lines(text, load):
    from workers.worker_report import parse_gpu_load

    assert parse_gpu_load(text) == load


def test_a_heartbeat_with_gpu_load_reaches_metrics(fresh_db):
    from api.metrics import collect
    record_start(fresh_db, name="render@gpu", queues=["render"], device=Device("NVIDIA H200", 143771), cpu_count=16)
    touch(fresh_db, name="render@gpu", load=(42.0, 2048))
    touch(fresh_db, name="render@gpu")  # a heartbeat without a reading keeps the last one
    rt = SimpleNamespace(settings=Settings(), data=SimpleNamespace(run=Path("/nonexistent")))
    with Session(fresh_db) as s:
        text = collect(s, rt).decode()
    labels = '{device="NVIDIA H200",queues="render",worker="render@gpu"}'
    assert f"studio_worker_device_load_percent{labels} 42.0" in text
    assert f"studio_worker_device_memory_used_bytes{labels} 2.147483648e+09" in text  # 2048 MiB
