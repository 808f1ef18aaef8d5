"""Running renders of a revoked clone are cancelled (POLICY C5), on real parts (mediapipe ingest, espeak-ng,
the footage renderer, ffmpeg; redis-server and a Celery worker for the task path): a render of a long segment
stops within about a second of the revocation instead of running to its end, its encoder is killed, no file
of the attempt is left or reappears, the segment ends CANCELLED (not FAILED, not retried), and the deletion
runs only after the render has stopped. Queued render tasks are revoked in Celery. The usage checks (scope,
script approval) are applied at render time and again before stamping."""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from studio.db import session_scope
from studio.models import AuditEvent, Avatar, Channel, Consent, Product, Script, Segment, Show, utcnow
from tests.conftest import FULL_SCOPE
from tests.integration.conftest import TEXT, ingested, worker_on_redis
from workers.consent.revocation import revoke_consent_direct
from workers.queue_policy import render_queue
from workers.render.segment import render_segment_direct

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]

LONG = " ".join([TEXT] * 16)  # about 96 s of speech: a render of many seconds (48 s took 4.9 s on a quiet machine)


@pytest.fixture(scope="module")
def base(tmp_path_factory, small_footage):
    """A data dir with one ingested avatar, a product and a script. Each test takes a clone of its own (a copy
    of the bundle, under its own consent, channel and show): a revocation deletes the clone's bundle."""
    rt, creator, avatar = ingested(tmp_path_factory.mktemp("render-cancel"), small_footage())
    with session_scope(rt.engine) as s:
        product = Product(name="Serum", brand="Lumen", category="beauty")
        s.add(product)
        s.flush()
        script = Script(product_id=product.id, text=TEXT)
        s.add(script)
    return rt, {"creator": creator.id, "avatar": avatar.id, "script": script.id}


def clone(rt, base_ids: dict, name: str) -> dict:
    """A copy of the base avatar with a consent, a channel and a show of its own. The show is not on its
    channel's schedule (nothing airs here), so a revocation does not first wait for the streamer's cut."""
    now = utcnow()
    with session_scope(rt.engine) as s:
        template = s.get(Avatar, base_ids["avatar"])
        avatar = Avatar(creator_id=base_ids["creator"], name=name, bundle_path="-",
                        footage_sha256=template.footage_sha256, width=template.width, height=template.height,
                        fps=template.fps, duration_s=template.duration_s)
        avatar.bundle_path = rt.key_of(rt.data.bundle_dir(avatar.id))
        shutil.copytree(rt.local_dir(template.bundle_path), rt.local_dir(avatar.bundle_path))
        consent = Consent(creator_id=base_ids["creator"], avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                          starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1), scope=FULL_SCOPE,
                          statement_sha256="-")
        channel = Channel(name=name, territories=["US"])
        s.add_all([avatar, consent, channel])
        s.flush()
        show = Show(channel_id=channel.id, avatar_id=avatar.id, consent_id=consent.id, name=name,
                    script_ids=[base_ids["script"]], status="stopped")
        s.add(show)
    return {"avatar": avatar.id, "consent": consent.id, "channel": channel.id, "show": show.id,
            "script": base_ids["script"], "bundle": rt.local_dir(avatar.bundle_path)}


def plan(rt, ids: dict, seq: int, text: str = LONG) -> Segment:
    with session_scope(rt.engine) as s:
        seg = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                      consent_id=ids["consent"], script_id=ids["script"], text=text, seq=seq)
        s.add(seg)
    return seg


def row(rt, seg_id: str) -> Segment:
    with session_scope(rt.engine) as s:
        return s.get(Segment, seg_id)


def files_of(rt, seg: Segment) -> list[Path]:
    """Every file under the segments folder that belongs to the segment: mp4, captions, partial encodes."""
    return sorted(p for p in rt.data.segments.rglob(f"*{seg.produce_id}*"))


def partial_encode(rt, seg: Segment) -> list[Path]:
    return list((rt.data.segments / seg.channel_id).glob(f".*{seg.produce_id}*.part"))


def processes_naming(needle: str) -> list[str]:
    """Command lines of live processes that name `needle` (an ffmpeg still writing the segment)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in args:
            found.append(args)
    return found


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def audit_ids(rt, kind: str, subject_id: str) -> list[int]:
    with session_scope(rt.engine) as s:
        return [e.id for e in s.exec(select(AuditEvent).where(AuditEvent.kind == kind,
                                                              AuditEvent.subject_id == subject_id)).all()]


@pytest.fixture(scope="module")
def full_render_seconds(base) -> float:
    """How long the long segment takes when nothing stops it: the yardstick for the cancelled render."""
    rt, base_ids = base
    ids = clone(rt, base_ids, "uncancelled")
    seg = plan(rt, ids, 0)
    started = time.monotonic()
    assert render_segment_direct(rt, seg.id) == "ready"
    seconds = time.monotonic() - started
    print(f"full render of {row(rt, seg.id).duration_s:.1f} s of speech: {seconds:.2f} s")
    assert seconds > 5, f"the long segment rendered in {seconds:.1f} s: too short to cancel halfway"
    return seconds


def test_revocation_stops_a_running_render_and_deletes_after_it(base, full_render_seconds, tmp_path, monkeypatch):
    rt, base_ids = base
    ids = clone(rt, base_ids, "revoked-mid-render")
    seg = plan(rt, ids, 0)
    scratch = tmp_path / "tmp"  # the render's temp speech file goes here, so the test can see it go
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    result: dict = {}

    def render() -> None:
        try:
            result["state"] = render_segment_direct(rt, seg.id)
        except BaseException as exc:  # handed to the test thread, which fails on it
            result["error"] = exc
        result["ended"] = time.monotonic()

    started = time.monotonic()
    worker = threading.Thread(target=render, name="render-under-test")
    worker.start()
    try:
        wait_for(lambda: partial_encode(rt, seg), 60, "the encoder to start writing")
        time.sleep(1.0)  # well into the encode: frames flowing, ffmpeg writing
        assert processes_naming(seg.produce_id), "no encoder was running for the segment"
        assert any(scratch.glob("studio-render-*/speech.wav"))
        revoke_at = time.monotonic()
        rev = revoke_consent_direct(rt, ids["consent"])
        revoked = time.monotonic()
    finally:
        worker.join(timeout=120)
    assert not worker.is_alive()
    assert "error" not in result, f"the render raised {result.get('error')!r} instead of returning"

    stop_seconds = result["ended"] - revoke_at
    total = result["ended"] - started
    print(f"revoked {revoke_at - started:.2f} s into a {full_render_seconds:.2f} s render; the render stopped "
          f"{stop_seconds:.2f} s after the revoke call ({total:.2f} s in all); revocation took "
          f"{revoked - revoke_at:.2f} s")
    assert result["state"] == "cancelled"
    assert stop_seconds < 2.0, f"the render took {stop_seconds:.2f} s to stop after the revocation"
    assert total < 0.6 * full_render_seconds, "the render was not stopped: it ran (almost) to its end"
    # The render stopped before the revocation returned, and the deletion came after it, on the audit record.
    assert result["ended"] <= revoked
    cancelled_events = audit_ids(rt, "segment.cancelled", seg.id)
    certificate_events = audit_ids(rt, "consent.deletion_certificate", ids["consent"])
    assert cancelled_events and certificate_events and max(cancelled_events) < min(certificate_events)
    assert rev.stopped_renders == 1 and rev.cancelled == 1

    after = row(rt, seg.id)
    assert after.state == "cancelled", after.error
    assert f"consent {ids['consent']} is revoked" in after.error
    assert after.attempts == 1 and after.path is None and after.stamp is None
    assert not processes_naming(seg.produce_id), "the encoder outlived the cancelled render"
    assert not list(scratch.glob("studio-render-*")), "the temp speech file of the attempt was left behind"
    assert files_of(rt, seg) == []
    assert not ids["bundle"].exists()
    time.sleep(1.5)  # nothing of the attempt reappears after the deletion
    assert files_of(rt, seg) == [] and row(rt, seg.id).state == "cancelled"


def test_revocation_cancels_a_segment_left_rendering_by_a_dead_worker(base, monkeypatch):
    """No worker answers for a segment stuck in RENDERING: the deletion waits its bounded time, then cancels it."""
    import workers.consent.revocation as revocation

    rt, base_ids = base
    ids = clone(rt, base_ids, "dead-worker")
    seg = plan(rt, ids, 0, text=TEXT)
    with session_scope(rt.engine) as s:
        stuck = s.get(Segment, seg.id)
        stuck.state, stuck.attempts = "rendering", 1
    monkeypatch.setattr(revocation, "RENDER_STOP_TIMEOUT", 0.5)
    started = time.monotonic()
    rev = revoke_consent_direct(rt, ids["consent"])
    assert 0.5 <= time.monotonic() - started < 10
    assert rev.stopped_renders == 0 and rev.cancelled == 1
    assert row(rt, seg.id).state == "cancelled"
    with session_scope(rt.engine) as s:
        stopped = s.exec(select(AuditEvent).where(AuditEvent.kind == "consent.renders_stopped",
                                                  AuditEvent.subject_id == ids["consent"])).one()
    assert stopped.data["overdue"] == [seg.id] and stopped.data["stopped"] == 0
    # The dead worker's task comes back: it finds the segment cancelled and renders nothing.
    assert render_segment_direct(rt, seg.id) == "cancelled"
    assert row(rt, seg.id).attempts == 1 and files_of(rt, seg) == []


def test_a_script_that_lost_its_approval_is_not_rendered(base):
    rt, base_ids = base
    ids = clone(rt, base_ids, "unapproved")
    with session_scope(rt.engine) as s:
        s.get(Consent, ids["consent"]).require_script_approval = True
    seg = plan(rt, ids, 0, text=TEXT)
    assert render_segment_direct(rt, seg.id) == "cancelled"
    after = row(rt, seg.id)
    assert "awaits the creator's approval" in after.error and after.attempts == 0
    assert files_of(rt, seg) == []


def test_a_scope_change_during_the_render_keeps_the_segment_from_being_stamped(base):
    """The in-render check is the cheap one (consent status and term); the full usage check runs again before
    the stamp, so a scope narrowed while the segment rendered still keeps it off air."""
    rt, base_ids = base
    ids = clone(rt, base_ids, "narrowed")
    seg = plan(rt, ids, 0, text=" ".join([TEXT] * 2))
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(state=render_segment_direct(rt, seg.id)))
    worker.start()
    try:
        wait_for(lambda: partial_encode(rt, seg), 60, "the encoder to start writing")
        with session_scope(rt.engine) as s:
            consent = s.get(Consent, ids["consent"])
            consent.scope = {**FULL_SCOPE, "categories": ["outdoor"]}  # beauty no longer consented
    finally:
        worker.join(timeout=120)
    assert result.get("state") == "cancelled"
    after = row(rt, seg.id)
    assert "not among the consented categories" in after.error and after.stamp is None
    assert files_of(rt, seg) == []


# --- through Celery -----------------------------------------------------------------------------------------
@pytest.fixture
def celery_worker(base, tmp_path, monkeypatch):
    """redis-server and one Celery worker of the CPU render queue on loopback, for the base world's data dir."""
    rt, _ = base
    with worker_on_redis(rt, tmp_path, monkeypatch, [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", "render.cpu", "-c", "1",
            "-n", f"render-{uuid.uuid4().hex[:8]}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]) as worker:
        yield worker


def test_through_celery_a_running_task_stops_without_retry_and_a_queued_one_is_revoked(base, celery_worker,
                                                                                     full_render_seconds):
    client, worker_log = celery_worker
    rt, base_ids = base
    ids = clone(rt, base_ids, "celery")
    running, queued = plan(rt, ids, 0), plan(rt, ids, 1, text=TEXT)
    queued_task = str(uuid.uuid4())
    with session_scope(rt.engine) as s:  # as a dispatcher that records the task id when it queues the task
        s.get(Segment, queued.id).task_id = queued_task
        queue = render_queue(s.get(Avatar, ids["avatar"]))
    running_result = client.send_task("studio.render_segment", args=[running.id], queue=queue)
    wait_for(lambda: partial_encode(rt, running), 90, "the worker's encoder to start writing")
    # The worker (concurrency 1, prefetch 1) is busy: this one waits in redis.
    queued_result = client.send_task("studio.render_segment", args=[queued.id], queue=queue, task_id=queued_task)
    time.sleep(1.0)
    assert row(rt, running.id).task_id == running_result.id  # recorded when the worker claimed it
    assert processes_naming(running.produce_id), "no encoder was running in the worker"

    revoke_at = time.monotonic()
    rev = revoke_consent_direct(rt, ids["consent"])
    revoked = time.monotonic()
    # The revocation returned only once the worker had let go of the segment; the task then ends normally.
    # (States are polled, not waited on with .get(): that would leave a redis subscription behind the test.)
    wait_for(lambda: running_result.state != "PENDING" and running_result.state != "STARTED", 30, "the task to end")
    assert running_result.state == "SUCCESS" and running_result.result == "cancelled"
    print(f"through Celery: the revocation, waiting for the worker's render to stop, took {revoked - revoke_at:.2f} s "
          f"(full render {full_render_seconds:.2f} s)")
    assert revoked - revoke_at < 2.0
    assert rev.stopped_renders == 1 and rev.cancelled == 2
    wait_for(lambda: queued_result.state == "REVOKED", 30, "the queued task to be revoked")

    done = row(rt, running.id)
    assert done.state == "cancelled" and done.attempts == 1, (done.state, done.attempts, done.error)
    assert "Retry in" not in worker_log.read_text()
    assert row(rt, queued.id).state == "cancelled" and row(rt, queued.id).attempts == 0
    assert not processes_naming(running.produce_id)
    time.sleep(1.0)
    assert files_of(rt, running) == [] and files_of(rt, queued) == []
