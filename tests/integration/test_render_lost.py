"""A render host that dies whole, on real parts: `studio worker --queues render.cpu` on a real redis-server takes
a segment, and its whole process group (the worker and its pool: the host) is killed with SIGKILL mid-render.
Celery cannot redeliver that task until the broker's visibility timeout (hours); the attempt's beat stops instead,
and the scheduler's `requeue_lost_renders` puts the segment back to PLANNED after `render_lost_seconds`, where it
is queued to a second worker and rendered once more (attempt 2). The lost task, redelivered late, leaves alone a
segment that beats under another task, and one that is rendered. A render stuck in its thread (a GPU worker's
threads pool, where Celery has no time limit) stops beating and loses its segment the same way."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import threading
import time
from contextlib import ExitStack
from datetime import timedelta

import pytest
import yaml
from sqlmodel import select

import workers.render.segment as segment_module
from studio.db import session_scope
from studio.models import AuditEvent, Segment, WorkerInfo, utcnow
from tests.conftest import STUDIO
from tests.integration.conftest import TEXT, ingested, segment_row, world_rows
from tests.media_helpers import free_port, stop_process
from workers.plan.scheduler import requeue_lost_renders
from workers.render.segment import _claim, render_segment_direct
from workers.stack.embedded import wait_port
from workers.worker_report import CPU, record_start

pytestmark = pytest.mark.integration

LOST_AFTER = 6.0


@pytest.fixture(scope="module")
def lost_world(tmp_path_factory, small_footage):
    rt, ids = world_rows(*ingested(tmp_path_factory.mktemp("render-lost"), small_footage()))
    settings = rt.settings.model_copy(update={"scheduler": rt.settings.scheduler.model_copy(
        update={"render_lost_seconds": LOST_AFTER})})
    return dataclasses.replace(rt, settings=settings, store=rt.store), ids


def _worker(env: dict, name: str, log) -> subprocess.Popen:
    # A session of its own: killing its process group is the host dying (the worker and every pool process).
    return subprocess.Popen([STUDIO, "worker", "--queues", "render.cpu", "--concurrency", "1", "--name", name],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(what: str, until, timeout: float, log) -> float:
    started = time.monotonic()
    while not until():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s\n{log.read_text()[-3000:]}"
        time.sleep(0.1)
    return time.monotonic() - started


def _requeued(rt, seg_id: str, *, since: float, log) -> float:
    """Run the scheduler's requeue until it takes the segment (and only it) back; seconds since `since`, which are
    about render_lost_seconds after the attempt's last beat."""
    requeued: list[str] = []

    def lost() -> bool:
        requeued.extend(requeue_lost_renders(rt))
        return bool(requeued)

    _wait("the scheduler sees the render lost", lost, LOST_AFTER + 10, log)
    waited = time.monotonic() - since
    assert requeued == [seg_id]
    assert LOST_AFTER - 2.5 <= waited <= LOST_AFTER + 5
    return waited


def test_a_render_lost_with_its_whole_host_is_queued_again_and_rendered_once_elsewhere(lost_world, tmp_path,
                                                                                       monkeypatch):
    rt, ids = lost_world
    with session_scope(rt.engine) as s:
        seg = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                      consent_id=ids["consent"], script_id=ids["script"], text=" ".join([TEXT] * 4), seq=0,
                      task_id="render-a")
        s.add(seg)
    seg_id = seg.id
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    config = tmp_path / "studio.yaml"
    config.write_text(yaml.safe_dump(rt.settings.model_dump(mode="json", exclude_none=True)))
    env = {**os.environ, "STUDIO_CONFIG": str(config), "STUDIO_REDIS_URL": url}
    env.pop("STUDIO_DATA_DIR", None)
    log_a, log_b = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    with ExitStack() as stack:
        redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                  "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        stack.callback(stop_process, redis)
        assert wait_port("127.0.0.1", port, 10), "redis-server did not start"
        monkeypatch.setenv("STUDIO_REDIS_URL", url)
        import workers.app

        client = workers.app.make_celery()
        monkeypatch.setattr(workers.app, "app", client)
        host_a = _worker(env, "render-a@%h", log_a.open("w"))
        stack.callback(stop_process, host_a)
        client.send_task("studio.render_segment", args=[seg_id], queue="render.cpu", task_id="render-a")

        # Mid-render, after at least one beat: the attempt is alive, and nothing takes it away.
        claimed = {}

        def beating() -> bool:
            row = segment_row(rt, seg_id)
            if row.state == "rendering":
                claimed.setdefault("at", row.updated_at)
                return row.updated_at > claimed["at"]
            assert row.state == "planned", f"the render ended ({row.state}) before the host could be killed"
            return False

        _wait("worker a claims the segment and beats", beating, 120, log_a)
        assert requeue_lost_renders(rt) == []
        os.killpg(host_a.pid, signal.SIGKILL)
        killed = time.monotonic()
        host_a.wait(10)

        host_b = _worker(env, "render-b@%h", log_b.open("w"))
        stack.callback(stop_process, host_b)
        waited = _requeued(rt, seg_id, since=killed, log=log_a)
        print(f"\nrender lost with its host: queued again {waited:.1f} s after the kill "
              f"(render_lost_seconds {LOST_AFTER:.0f})")
        row = segment_row(rt, seg_id)
        assert (row.state, row.task_id, row.attempts) == ("planned", None, 1)

        # Queued again as the scheduler's dispatch does: the task id on the row first, then the message.
        with session_scope(rt.engine) as s:
            s.get(Segment, seg_id).task_id = "render-b"
        client.send_task("studio.render_segment", args=[seg_id], queue="render.cpu", task_id="render-b")
        _wait("worker b claims the segment", lambda: segment_row(rt, seg_id).state != "planned", 120, log_b)
        row = segment_row(rt, seg_id)
        if row.state == "rendering":
            # The lost task, redelivered while the new attempt beats, leaves it.
            assert _claim(rt, seg_id, task_id="render-a") is None
            assert segment_row(rt, seg_id).attempts == 2
        _wait("worker b renders the segment", lambda: segment_row(rt, seg_id).state == "ready", 180, log_b)
        row = segment_row(rt, seg_id)
        assert (row.attempts, row.task_id) == (2, "render-b")
        # ... and a rendered one.
        assert _claim(rt, seg_id, task_id="render-a") is None
        assert segment_row(rt, seg_id).state == "ready"

    with session_scope(rt.engine) as s:
        events = s.exec(select(AuditEvent).where(AuditEvent.subject_id == seg_id)).all()
    kinds = [e.kind for e in events]
    assert kinds.count("segment.requeued") == 1 and kinds.count("segment.rendered") == 1
    [requeued_event] = [e for e in events if e.kind == "segment.requeued"]
    assert requeued_event.data["attempt"] == 1 and "stopped beating" in requeued_event.data["reason"]


def test_a_render_that_beats_is_never_requeued_and_a_silent_one_is_once(lost_world):
    """Without workers: rows stand in for attempts at given beat times."""
    rt, ids = lost_world
    now = utcnow()
    with session_scope(rt.engine) as s:
        rows = {name: Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                              consent_id=ids["consent"], script_id=ids["script"], text=TEXT, seq=100 + i,
                              state="rendering", attempts=1, task_id=f"t-{name}",
                              updated_at=now - timedelta(seconds=ago))
                for i, (name, ago) in enumerate({"fresh": 1, "silent": LOST_AFTER + 1, "old": 3600}.items())}
        rows["spent"] = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                                consent_id=ids["consent"], script_id=ids["script"], text=TEXT, seq=110,
                                state="rendering", attempts=4, task_id="t-spent",
                                updated_at=now - timedelta(seconds=3600))
        s.add_all(rows.values())
    ids_of = {name: row.id for name, row in rows.items()}
    assert sorted(requeue_lost_renders(rt, now=now)) == sorted([ids_of["silent"], ids_of["old"]])
    assert requeue_lost_renders(rt, now=now) == []  # once
    states = {name: segment_row(rt, seg_id).state for name, seg_id in ids_of.items()}
    # The spent one, lost on its last attempt (MAX_RENDER_ATTEMPTS), fails now: no claim may ever come to fail it
    # (before, it stayed RENDERING).
    assert states == {"fresh": "rendering", "silent": "planned", "old": "planned", "spent": "failed"}
    spent = segment_row(rt, ids_of["spent"])
    assert "attempt 4, the last" in spent.error
    with session_scope(rt.engine) as s:
        [failed] = s.exec(select(AuditEvent).where(AuditEvent.subject_id == ids_of["spent"])).all()
    assert failed.kind == "segment.failed" and failed.data["attempts"] == 4
    with session_scope(rt.engine) as s:
        for seg_id in ids_of.values():
            s.delete(s.get(Segment, seg_id))


def test_a_render_stuck_in_its_thread_stops_beating_and_its_segment_goes_to_another_worker(lost_world, tmp_path,
                                                                                          monkeypatch):
    """A GPU worker runs its renders in threads (`--pool threads`): Celery enforces no time limit there, and nothing
    can stop a thread stuck in a call that never returns (the GPU, a native library). Its beat thread lives on, so
    before, the segment stayed RENDERING for good. Now the beat stops once the render has made no progress for
    `worker.render_stall_seconds`, the scheduler queues the segment again, and the stuck attempt, when it wakes,
    finds it taken and leaves no file."""
    rt, ids = lost_world
    rt = dataclasses.replace(rt, settings=rt.settings.model_copy(update={"worker": rt.settings.worker.model_copy(
        update={"render_stall_seconds": 1.0})}))
    with session_scope(rt.engine) as s:
        seg = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                      consent_id=ids["consent"], script_id=ids["script"], text=" ".join([TEXT] * 2), seq=200)
        s.add(seg)
    seg_id = seg.id
    stuck, release = threading.Event(), threading.Event()
    real = segment_module.make_renderer

    class Stuck:
        """The real renderer, hanging at its sixth frame until released."""

        def __init__(self, renderer):
            self.renderer = renderer

        def render(self, speech):
            for i, frame in enumerate(self.renderer.render(speech)):
                if i == 5:
                    stuck.set()
                    release.wait(120)
                yield frame

    monkeypatch.setattr(segment_module, "make_renderer", lambda *a, **kw: Stuck(real(*a, **kw)))
    ended = {}
    node = "render@gpu-stuck"
    record_start(rt.engine, name=node, queues=["render.gpu"], device=CPU, cpu_count=2)
    render = threading.Thread(target=lambda: ended.setdefault("state", render_segment_direct(rt, seg_id, node=node)),
                              name="gpu-render-thread")
    render.start()
    log = tmp_path / "none.log"
    log.write_text("")
    try:
        assert stuck.wait(120), "the render never reached its sixth frame"
        at = time.monotonic()
        assert requeue_lost_renders(rt) == []  # it beat a moment ago
        waited = _requeued(rt, seg_id, since=at, log=log)
        print(f"\nrender stuck in its thread: queued again {waited:.1f} s after it stuck "
              f"(render_stall_seconds 1, render_lost_seconds {LOST_AFTER:.0f})")
        row = segment_row(rt, seg_id)
        assert (row.state, row.attempts) == ("planned", 1)
        # Its segment went elsewhere, but the thread still takes a slot of its worker: ops see it.
        with session_scope(rt.engine) as s:
            assert [(e["segment"], e["attempt"]) for e in s.get(WorkerInfo, node).stalled] == [(seg_id, 1)]
    finally:
        release.set()
        render.join(60)
    assert not render.is_alive()
    with session_scope(rt.engine) as s:
        assert s.get(WorkerInfo, node).stalled == []  # it returned: the slot is free
    # Woken, the stuck attempt sees the segment taken from it: it stops, leaves the row as the scheduler left it
    # and keeps no file of its own.
    assert ended["state"] == "planned"
    row = segment_row(rt, seg_id)
    assert (row.state, row.attempts, row.path) == ("planned", 1, None)
    attempt_file = rt.data.segment_path(row.channel_id, row.seq, row.produce_id, attempt=1)
    assert not attempt_file.exists() and not attempt_file.with_suffix(".vtt").exists()
    with session_scope(rt.engine) as s:
        events = s.exec(select(AuditEvent).where(AuditEvent.subject_id == seg_id)).all()
        assert [e.kind for e in events if e.kind.startswith("segment.")].count("segment.requeued") == 1
        s.delete(s.get(Segment, seg_id))
