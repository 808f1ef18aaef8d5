"""The render path on real parts (mediapipe ingest, espeak-ng, the footage renderer, the policy middleware,
ffmpeg): a planned segment becomes a labelled, captioned, stamped segment, idempotently, fail closed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import av
import numpy as np
import pytest

from studio.config import MediaProfile, Settings
from studio.db import session_scope, upgrade
from studio.keys import init_key
from studio.models import Avatar, Channel, Consent, Creator, Product, Script, Segment, Show, utcnow
from studio.policy import PolicyStamp, check_stamp, verify_aigc_metadata
from studio.storage import sha256_file
from tests.conftest import has_badge
from workers.ingest import ingest_direct
from workers.render import render_segment_direct
from workers.runtime import build_runtime

pytestmark = pytest.mark.slow
TEXT = "Paid partnership with Lumen Labs. Meet the Glow Serum, a light serum for everyday skin care."


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_footage):
    tmp = tmp_path_factory.mktemp("render")
    settings = Settings(data_dir=str(tmp / "data"), media=MediaProfile(width=360, height=640))
    init_key(settings)
    upgrade(settings.db_url)
    rt = build_runtime(settings)
    with session_scope(rt.engine) as s:
        creator = Creator(name="Ava")
        s.add(creator)
    avatar = ingest_direct(engine=rt.engine, data=rt.data, profile=settings.media, limits=settings.ingest,
                           creator_id=creator.id, name="Ava", footage=small_footage())
    now = utcnow()
    with session_scope(rt.engine) as s:
        consent = Consent(creator_id=creator.id, avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                          starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1), scope={},
                          statement_sha256="-")
        product, channel = Product(name="Serum", brand="Lumen", category="beauty"), Channel(name="c")
        s.add_all([consent, product, channel])
        s.flush()
        script = Script(product_id=product.id, text=TEXT)
        s.add(script)
        s.flush()
        show = Show(channel_id=channel.id, avatar_id=avatar.id, consent_id=consent.id, name="s",
                    script_ids=[script.id])
        s.add(show)
    return rt, {"avatar": avatar.id, "consent": consent.id, "script": script.id, "channel": channel.id,
                "show": show.id}


def _plan(rt, ids, seq: int, *, show_start: bool = False) -> str:
    with session_scope(rt.engine) as s:
        seg = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                      consent_id=ids["consent"], script_id=ids["script"], text=TEXT, seq=seq, show_start=show_start)
        s.add(seg)
    return seg.id


def _row(rt, seg_id) -> Segment:
    with session_scope(rt.engine) as s:
        return s.get(Segment, seg_id)


def test_planned_segment_becomes_labelled_stamped_and_captioned(world):
    rt, ids = world
    seg_id = _plan(rt, ids, 0, show_start=True)
    assert render_segment_direct(rt, seg_id) == "ready"
    row = _row(rt, seg_id)
    path = Path(row.path)
    check_stamp(rt.key, PolicyStamp.from_dict(row.stamp), channel_id=ids["channel"], sha256=sha256_file(path))
    assert set(row.stamp["labels"]) == {"badge", "banner", "captions", "aigc_metadata"}
    with av.open(str(path)) as c:
        meta = verify_aigc_metadata(rt.key, c.metadata["AIGC"])
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
    assert meta["ProduceID"] == row.produce_id and meta["PropagateID"] == ids["show"]
    assert len(frames) == round(row.duration_s * 25) and 3 < row.duration_s < 10
    for f in frames[::10]:  # the badge, top right, on every sampled frame
        box = f[18:50, 230:345]
        assert has_badge(box)
    # The banner covers the upper middle for its first seconds, then goes.
    band = (slice(100, 200), slice(60, 300))
    assert np.abs(frames[10][band].astype(int) - frames[-5][band].astype(int)).mean() > 20
    vtt = path.with_suffix(".vtt").read_text()
    assert vtt.startswith("WEBVTT")
    assert " ".join(line for line in vtt.splitlines()[2:] if line and "-->" not in line) == TEXT


def test_render_is_idempotent_and_recovers_a_dead_attempt(world):
    rt, ids = world
    seg_id = _plan(rt, ids, 1)
    assert render_segment_direct(rt, seg_id) == "ready"
    first = _row(rt, seg_id)
    mtime = Path(first.path).stat().st_mtime_ns
    assert render_segment_direct(rt, seg_id) == "ready"  # a redelivered task does nothing
    assert _row(rt, seg_id).path == first.path and Path(first.path).stat().st_mtime_ns == mtime

    # A worker died mid-render: the segment sits in RENDERING and the task comes back.
    seg2 = _plan(rt, ids, 2)
    with session_scope(rt.engine) as s:
        row = s.get(Segment, seg2)
        row.state, row.attempts = "rendering", 1
    assert render_segment_direct(rt, seg2) == "ready"
    row = _row(rt, seg2)
    assert row.attempts == 2 and row.path.endswith("-a2.mp4")


def test_revoked_consent_cancels_and_a_broken_bundle_fails_closed(world):
    rt, ids = world
    seg_id = _plan(rt, ids, 3)
    with session_scope(rt.engine) as s:
        s.get(Consent, ids["consent"]).status = "revoked"
    try:
        assert render_segment_direct(rt, seg_id) == "cancelled"
        assert "revoked" in _row(rt, seg_id).error
        assert not list((rt.data.segments / ids["channel"]).glob("00000003-*"))
    finally:
        with session_scope(rt.engine) as s:
            s.get(Consent, ids["consent"]).status = "granted"

    seg_id = _plan(rt, ids, 4)
    with session_scope(rt.engine) as s:
        bundle = Path(s.get(Avatar, ids["avatar"]).bundle_path)
    units = bundle / "units.json"
    saved = units.read_bytes()
    units.write_text("{broken")
    try:
        with pytest.raises(Exception, match="unreadable"):
            render_segment_direct(rt, seg_id)
    finally:
        units.write_bytes(saved)
    row = _row(rt, seg_id)
    assert row.state == "failed" and "unreadable" in row.error and row.stamp is None
    assert not list((rt.data.segments / ids["channel"]).glob("00000004-*"))


def test_idle_slate_and_segments_meet_on_the_same_loop_frame(world):
    """Idle loop and speaking segments start and end on one loop frame: no head jump at any join."""
    from workers.render import render_slate

    rt, ids = world
    slate = rt.data.segments / ids["channel"] / "slate.mp4"
    stamp = render_slate(rt, channel_id=ids["channel"], out=slate, bundle=_bundle(rt, ids))
    check_stamp(rt.key, stamp, channel_id=ids["channel"], sha256=sha256_file(slate))
    seg_id = _plan(rt, ids, 5)
    render_segment_direct(rt, seg_id)

    def ends(path):
        with av.open(str(path)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
        return frames[0], frames[-1], len(frames)

    s_first, s_last, n = ends(slate)
    g_first, g_last, _ = ends(_row(rt, seg_id).path)
    assert n == 25
    upper = (slice(60, 220), slice(0, 360))  # hair, eyes and brow: well above the mouth and its blend
    for a, b in ((s_last, g_first), (g_last, s_first)):
        diff = np.abs(a[upper].astype(int) - b[upper].astype(int))
        assert diff.mean() < 1.5, f"head jumps at a join: mean difference {diff.mean():.1f}"


def _bundle(rt, ids) -> Path:
    with session_scope(rt.engine) as s:
        return Path(s.get(Avatar, ids["avatar"]).bundle_path)
