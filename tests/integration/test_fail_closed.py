"""Fail closed (DESIGN invariant 1, POLICY V1): a fault at any step of the policy middleware fails the
segment, which is retried and never airs unlabelled or unmarked; the streamer airs only what carries a
valid stamp, and the recording of its RTMP output shows the badge on every sampled frame and no trace
(not one watermarked second) of a segment that failed."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from sqlmodel import select

from studio.db import session_scope
from studio.models import AuditEvent, Avatar, Segment
from tests.conftest import has_badge
from tests.integration.conftest import air_and_record, new_show, plan_segment, segment_row
from workers.provenance.verify import verify_file
from workers.render.faults import STEPS, InjectedFault, parse_faults
from workers.render.segment import render_segment_direct, render_slate

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _files(rt, channel_id: str, seq: int) -> list[Path]:
    return list((rt.data.segments / channel_id).glob(f"{seq:08d}-*"))


@pytest.mark.parametrize("step", STEPS)
def test_a_fault_at_any_step_fails_the_segment_and_the_retry_labels_it_fully(avatar_world, monkeypatch, step):
    rt, ids = avatar_world
    seq = 100 + STEPS.index(step)
    seg_id = plan_segment(rt, ids, seq, show_start=True)  # show start, so the banner step runs too
    monkeypatch.setenv("STUDIO_FAULTS", f"{step}:{seq}:1")
    with pytest.raises(InjectedFault, match=f"at {step}"):
        render_segment_direct(rt, seg_id)
    row = segment_row(rt, seg_id)
    assert row.state == "failed" and f"injected fault at {step}" in row.error
    assert row.stamp is None and row.path is None
    assert not _files(rt, ids["channel"], seq), "a failed attempt left a file behind"
    # The retry (what Celery does next) is not faulted: it must come out with every label.
    assert render_segment_direct(rt, seg_id) == "ready"
    row = segment_row(rt, seg_id)
    assert row.attempts == 2
    assert {"badge", "banner", "captions", "aigc_metadata", "watermark"} <= set(row.stamp["labels"])
    assert {p.name for p in _files(rt, ids["channel"], seq)} == {Path(row.path).name,
                                                                Path(row.path).with_suffix(".vtt").name}


def test_fault_spec_is_checked():
    assert parse_faults("watermark:3, stamp:4:2")[1].attempts == 2
    for bad in ("watermark", "nosuchstep:1", "badge:x", "badge:1:2:3"):
        with pytest.raises(ValueError, match="STUDIO_FAULTS"):
            parse_faults(bad)


def _render_like_celery(rt, seg_id: str, retries: int = 3) -> str:
    """The render task's retry loop: up to 1 + `retries` attempts."""
    for _ in range(1 + retries):
        try:
            return render_segment_direct(rt, seg_id)
        except InjectedFault:
            continue
    return segment_row(rt, seg_id).state


def test_recording_of_the_stream_shows_no_failed_segment_and_the_badge_throughout(avatar_world, monkeypatch,
                                                                                  tmp_path):
    """POLICY V1: on the recording of the aired stream, slate included, the badge is on every sampled frame; a segment
    that failed or changed after stamping never airs."""
    rt, ids = avatar_world
    channel, show = new_show(rt, ids, "fail-closed")
    seg = {seq: plan_segment(rt, ids, seq, channel=channel.id, show=show.id, show_start=seq == 0)
           for seq in range(4)}
    # seq 1: the watermark step fails on every attempt; seq 2: the metadata step fails once, then works.
    monkeypatch.setenv("STUDIO_FAULTS", "watermark:1,metadata:2:1")
    states = {seq: _render_like_celery(rt, seg_id) for seq, seg_id in seg.items()}
    assert states == {0: "ready", 1: "failed", 2: "ready", 3: "ready"}
    assert segment_row(rt, seg[1]).attempts == 4 and not _files(rt, channel.id, 1)
    # At the streamer: seq 3's bytes are swapped after stamping (a fault between render and air).
    p3 = rt.local(segment_row(rt, seg[3]).path)
    p3.write_bytes(rt.local(segment_row(rt, seg[0]).path).read_bytes())

    slate = rt.data.segments / channel.id / "slate.mp4"
    with session_scope(rt.engine) as s:
        bundle = rt.local_dir(s.get(Avatar, ids["avatar"]).bundle_path)
    render_slate(rt, channel=channel, out=slate, bundle=bundle, avatar_id=ids["avatar"])
    recording = air_and_record(rt, channel.id, slate, tmp_path, seconds=16.0)

    with session_scope(rt.engine) as s:
        aired = {row.seq: row for row in s.exec(select(Segment).where(Segment.channel_id == channel.id)).all()}
        refused = [e for e in s.exec(select(AuditEvent).where(AuditEvent.kind == "segment.refused")).all()
                   if e.subject_id == seg[3]]
    assert {q: r.state for q, r in aired.items()} == {0: "aired", 1: "skipped", 2: "aired", 3: "refused"}
    assert "changed after stamping" in refused[0].data["reason"]

    with av.open(str(recording)) as c:
        stream = c.streams.video[0]
        sampled = 0
        for i, frame in enumerate(c.decode(stream)):
            if i % 5 == 0:
                rgb = frame.to_ndarray(format="rgb24")
                assert has_badge(rgb[18:50, 230:345]), f"no badge at {float(frame.pts * stream.time_base):.1f} s"
                sampled += 1
    assert sampled >= 16 * 25 // 5 - 10
    # Every watermarked second of the recording belongs to a segment that aired or to the slate.
    report = verify_file(recording, key=rt.key, engine=rt.engine, ocr=False)
    on_air = {run["produce_id"] for run in report["watermark"]["marks"]}
    assert {aired[0].produce_id, aired[2].produce_id} <= on_air
    assert aired[1].produce_id not in on_air and aired[3].produce_id not in on_air
