"""Publish keeps a show's C2PA chain unbroken and in air order with several publish workers (SQLite and
PostgreSQL): two workers archive one show's aired segments at once, handed out newest first (the worst order), each
retrying a segment whose predecessor is not archived yet as the Celery task does. Every archived copy is signed and
chains to the one aired before it; no two chain to the same one."""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from sqlmodel import select

from studio.config import load_settings
from studio.db import session_scope
from studio.keys import init_all_keys, load_provenance_keys
from studio.models import AuditEvent, Segment
from studio.runtime import build_runtime
from tests.conftest import db_show, require
from workers.media.provenance import read_media
from workers.provenance.archive import ArchiveNotReady, archive_segment_direct

pytestmark = pytest.mark.integration

SEGMENTS = 6


@pytest.fixture
def aired_show(db_url, tmp_path):
    """A show with SEGMENTS aired segments (tiny H.264 files in the store) and one that was cancelled mid-plan."""
    require("ffmpeg")
    settings = load_settings(env={"STUDIO_DATA_DIR": str(tmp_path / "data"), "STUDIO_DATABASE_URL": db_url})
    init_all_keys(settings)
    rt = build_runtime(settings)
    ids = db_show(rt.engine)
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=5", "-t", "0.4",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)], check=True, timeout=60)
    seg_ids = []
    with session_scope(rt.engine) as s:
        for seq in range(SEGMENTS + 1):
            key = f"segments/{ids['channel']}/{seq:08d}.mp4"
            (rt.data.root / key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(clip, rt.data.root / key)
            cancelled = seq == 2  # never aired: the chain passes over it
            seg = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                          consent_id=ids["consent"], script_id=ids["script"], text="x", seq=seq,
                          state="cancelled" if cancelled else "aired", path=key)
            s.add(seg)
            if not cancelled:
                seg_ids.append(seg.id)
    yield rt, ids, seg_ids
    rt.engine.dispose()


def test_two_publish_workers_keep_the_chain_in_air_order(aired_show):
    rt, ids, seg_ids = aired_show
    work: queue.Queue[str] = queue.Queue()
    for seg_id in reversed(seg_ids):
        work.put(seg_id)
    waits, errors, done = [], [], []

    def publish_worker():
        while len(done) < len(seg_ids) and not errors:
            try:
                seg_id = work.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                done.append(archive_segment_direct(rt, seg_id))
            except ArchiveNotReady:
                waits.append(seg_id)
                work.put(seg_id)  # what the task's retry does, without its countdown
            except Exception as exc:  # noqa: BLE001  (reported below)
                errors.append(exc)

    workers = [threading.Thread(target=publish_worker) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors and len(done) == len(seg_ids)

    with session_scope(rt.engine) as s:
        rows = s.exec(select(Segment).where(Segment.show_id == ids["show"], Segment.state == "aired")
                      .order_by(Segment.seq)).all()
        archived = [e.data for e in s.exec(select(AuditEvent).where(AuditEvent.kind == "segment.archived")
                                           .order_by(AuditEvent.id)).all()]
    root = load_provenance_keys(rt.settings).root_pem
    reports = [read_media(rt.local(r.archive_path), trust_anchors_pem=root) for r in rows]
    assert all(r.trusted for r in reports)
    assert [r.manifest_id for r in reports] == [row.manifest_id for row in rows]
    assert [r.sequence_number for r in reports] == [row.seq for row in rows] == [0, 1, 3, 4, 5, 6]
    assert [r.previous_manifest_id for r in reports] == [None] + [r.manifest_id for r in reports[:-1]]
    # Archived in air order, each once.
    assert [a["manifest_id"] for a in archived] == [r.manifest_id for r in reports]
    assert [a["previous"] for a in archived] == [None] + [r.manifest_id for r in reports[:-1]]
    # Archiving again returns what exists.
    assert archive_segment_direct(rt, seg_ids[-1]) == Path(rt.local(rows[-1].archive_path))
    assert waits, "no segment had to wait for its predecessor: the test did not test the order"


def test_a_segment_waits_for_its_predecessor(aired_show):
    rt, _, seg_ids = aired_show
    with pytest.raises(ArchiveNotReady, match=r"segment 1 of show \w+ waits for segment 0"):
        archive_segment_direct(rt, seg_ids[1])
    archive_segment_direct(rt, seg_ids[0])
    assert archive_segment_direct(rt, seg_ids[1]) is not None


def test_the_publish_task_retries_a_waiting_segment_a_bounded_number_of_times(aired_show, monkeypatch):
    from workers import tasks
    from workers.queue_policy import ARCHIVE_ORDER_WAIT_S, ARCHIVE_ORDER_WAITS

    rt, _, seg_ids = aired_show
    monkeypatch.setattr(tasks, "runtime", lambda: rt)
    asked = {}

    class Retry(Exception):
        pass

    def retry(**kwargs):
        asked.update(kwargs)
        return Retry()

    monkeypatch.setattr(tasks.archive_segment_task, "retry", retry)
    with pytest.raises(Retry):
        tasks.archive_segment_task.run(seg_ids[1])
    assert isinstance(asked["exc"], ArchiveNotReady)
    assert (asked["countdown"], asked["max_retries"]) == (ARCHIVE_ORDER_WAIT_S, ARCHIVE_ORDER_WAITS)
    # It waits longer than its predecessor's own retries after errors (5 + 10 + 20 + 40 + 80 s) take.
    assert ARCHIVE_ORDER_WAIT_S * ARCHIVE_ORDER_WAITS > sum(5 * 2 ** n for n in range(5))
    assert tasks.archive_segment_task.run(seg_ids[0]).endswith(".mp4")
