"""A scheduled show on real parts: the scheduler's passes (plan, re-time, dispatch within the buffer), real renders
of a real avatar, and the channel aired through nginx-rtmp and recorded. Two avatars hand over after their
one-minute stints, a break airs the idle loop and the banner opens the next segment, and nothing airs before its
planned time less the tolerance."""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import replace
from datetime import UTC, timedelta

import av
import pytest
from sqlmodel import select

from studio.config import SchedulerConfig, StreamerConfig
from studio.db import session_scope
from studio.models import AuditEvent, Avatar, Channel, Consent, Product, Script, Segment, Show, utcnow
from tests.conftest import FULL_SCOPE
from tests.integration.conftest import TEXT, air_and_record, ingested
from workers.plan.scheduler import tick
from workers.render.segment import render_segment_direct, render_slate

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path, small_footage):
    rt, creator, avatar = ingested(tmp_path, small_footage())
    # Tight margins so that a test of a minute sees the plan air; the rules are the product's.
    rt = replace(rt, settings=rt.settings.model_copy(update={
        "scheduler": SchedulerConfig(start_lead_seconds=3, margin_seconds=2, late_tolerance_seconds=5),
        "streamer": StreamerConfig(early_tolerance_seconds=2, buffer_target_seconds=30)}))
    now = utcnow()
    with session_scope(rt.engine) as s:
        # A second avatar of the same creator (the same bundle will do), with a consent of its own.
        second = Avatar(creator_id=creator.id, name="Ava studio look", bundle_path=avatar.bundle_path,
                        footage_sha256=avatar.footage_sha256, width=avatar.width, height=avatar.height,
                        fps=avatar.fps, duration_s=avatar.duration_s)
        product = Product(name="Serum", brand="Lumen", category="beauty")
        channel = Channel(name="sched", territories=["US"])
        s.add_all([second, product, channel])
        s.flush()
        consents = [Consent(creator_id=creator.id, avatar_id=a, signed_name="Ava", statement="x" * 30,
                            starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1), scope=FULL_SCOPE,
                            statement_sha256="-") for a in (avatar.id, second.id)]
        script = Script(product_id=product.id, text=TEXT)
        s.add_all([*consents, script])
        s.flush()
        schedule = {"rotation": [{"script_id": script.id}],
                    "avatars": [{"avatar_id": avatar.id, "consent_id": consents[0].id, "minutes": 1},
                                {"avatar_id": second.id, "consent_id": consents[1].id, "minutes": 1}],
                    "breaks": {"every_minutes": 1, "seconds": 4}}
        show = Show(channel_id=channel.id, avatar_id=avatar.id, consent_id=consents[0].id, name="sched",
                    script_ids=[script.id], schedule=schedule)
        s.add(show)
    return rt, {"channel": channel.id, "show": show.id, "avatars": (avatar.id, second.id)}


def test_scheduled_show_hands_over_takes_breaks_and_keeps_its_times(world, tmp_path):
    rt, ids = world
    with session_scope(rt.engine) as s:
        slate = rt.data.segments / ids["channel"] / "slate-card.mp4"
        render_slate(rt, channel=s.get(Channel, ids["channel"]), out=slate)
    jobs: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    def renderer():
        while not stop.is_set():
            try:
                render_segment_direct(rt, jobs.get(timeout=0.2))
            except queue.Empty:
                continue

    def scheduler():
        while not stop.is_set():
            tick(rt, jobs.put)
            stop.wait(1.0)

    threads = [threading.Thread(target=renderer, daemon=True), threading.Thread(target=scheduler, daemon=True)]
    for t in threads:
        t.start()
    try:
        recording = air_and_record(rt, ids["channel"], slate, tmp_path, seconds=80)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)

    with session_scope(rt.engine) as s:
        rows = s.exec(select(Segment).where(Segment.show_id == ids["show"]).order_by(Segment.seq)).all()
        events = s.exec(select(AuditEvent).where(AuditEvent.kind.in_(["segment.aired", "break.aired"]))
                        .order_by(AuditEvent.id)).all()
    by_id = {r.id: r for r in rows}
    aired = [by_id[e.subject_id] for e in events if e.subject_id in by_id]
    segs = [r for r in aired if r.kind == "segment"]
    # In plan order, once each; both avatars on air, the first one first.
    assert [r.seq for r in aired] == sorted({r.seq for r in aired})
    assert len(segs) >= 6
    assert segs[0].avatar_id == ids["avatars"][0] and ids["avatars"][1] in {r.avatar_id for r in segs}
    # The break aired, and the next segment that aired after it opened with the banner.
    breaks = [i for i, r in enumerate(aired) if r.kind == "break"]
    assert breaks, [r.kind for r in rows]
    after = [r for r in aired[breaks[0] + 1:] if r.kind == "segment"]
    assert after and after[0].show_start
    # Nothing aired earlier than its planned time less the tolerance (air_start: wall clock of its first frame).
    early = rt.settings.streamer.early_tolerance_seconds
    for e in events:
        if e.kind == "segment.aired" and e.subject_id in by_id:
            planned = by_id[e.subject_id].air_at.replace(tzinfo=UTC).timestamp()  # naive UTC in the database
            assert e.data["air_start"] >= planned - early - 1.0, json.dumps(e.data)
    # The recording is one stream: video timestamps only increase.
    with av.open(str(recording)) as c:
        dts = [p.dts for p in c.demux(c.streams.video[0]) if p.dts is not None]
    assert len(dts) > 25 * 60 and all(b > a for a, b in zip(dts, dts[1:], strict=False))
