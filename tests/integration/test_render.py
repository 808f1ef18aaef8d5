"""The render path on real parts (mediapipe ingest, espeak-ng, the footage renderer, the policy middleware,
ffmpeg): a planned segment becomes a labelled, captioned, stamped segment, idempotently, fail closed."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from studio.db import session_scope
from studio.models import Avatar, Channel, Consent, Segment
from studio.policy import PolicyStamp, check_stamp, verify_aigc_metadata
from studio.storage import sha256_file
from tests.conftest import has_badge
from tests.integration.conftest import TEXT, plan_segment, segment_row
from workers.render.segment import render_segment_direct

pytestmark = pytest.mark.slow


def test_planned_segment_becomes_labelled_stamped_and_captioned(avatar_world):
    rt, ids = avatar_world
    seg_id = plan_segment(rt, ids, 0, show_start=True)
    assert render_segment_direct(rt, seg_id) == "ready"
    row = segment_row(rt, seg_id)
    path = rt.local(row.path)
    check_stamp(rt.key, PolicyStamp.from_dict(row.stamp), channel_id=ids["channel"], sha256=sha256_file(path))
    assert set(row.stamp["labels"]) == {"badge", "banner", "captions", "aigc_metadata", "watermark"}
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


def test_render_is_idempotent_and_recovers_a_dead_attempt(avatar_world):
    rt, ids = avatar_world
    seg_id = plan_segment(rt, ids, 1)
    assert render_segment_direct(rt, seg_id) == "ready"
    first = segment_row(rt, seg_id)
    mtime = rt.local(first.path).stat().st_mtime_ns
    assert render_segment_direct(rt, seg_id) == "ready"  # a redelivered task does nothing
    assert segment_row(rt, seg_id).path == first.path and rt.local(first.path).stat().st_mtime_ns == mtime

    # A worker died mid-render: the segment sits in RENDERING and the task comes back.
    seg2 = plan_segment(rt, ids, 2)
    with session_scope(rt.engine) as s:
        row = s.get(Segment, seg2)
        row.state, row.attempts = "rendering", 1
    assert render_segment_direct(rt, seg2) == "ready"
    row = segment_row(rt, seg2)
    assert row.attempts == 2 and row.path.endswith("-a2.mp4")


def test_revoked_consent_cancels_and_a_broken_bundle_fails_closed(avatar_world):
    rt, ids = avatar_world
    seg_id = plan_segment(rt, ids, 3)
    with session_scope(rt.engine) as s:
        s.get(Consent, ids["consent"]).status = "revoked"
    try:
        assert render_segment_direct(rt, seg_id) == "cancelled"
        assert "revoked" in segment_row(rt, seg_id).error
        assert not list((rt.data.segments / ids["channel"]).glob("00000003-*"))
    finally:
        with session_scope(rt.engine) as s:
            s.get(Consent, ids["consent"]).status = "granted"

    seg_id = plan_segment(rt, ids, 4)
    with session_scope(rt.engine) as s:
        bundle = rt.local_dir(s.get(Avatar, ids["avatar"]).bundle_path)
    units = bundle / "units.json"
    saved = units.read_bytes()
    units.write_text("{broken")
    try:
        with pytest.raises(Exception, match="unreadable"):
            render_segment_direct(rt, seg_id)
    finally:
        units.write_bytes(saved)
    row = segment_row(rt, seg_id)
    assert row.state == "failed" and "unreadable" in row.error and row.stamp is None
    assert not list((rt.data.segments / ids["channel"]).glob("00000004-*"))


def test_idle_slate_and_segments_meet_on_the_same_loop_frame(avatar_world):
    """Idle loop and speaking segments start and end on one loop frame: no head jump at any join."""
    from workers.render.segment import render_slate

    rt, ids = avatar_world
    slate = rt.data.segments / ids["channel"] / "slate.mp4"
    with session_scope(rt.engine) as s:
        channel = s.get(Channel, ids["channel"])
    stamp = render_slate(rt, channel=channel, out=slate, bundle=_bundle(rt, ids), avatar_id=ids["avatar"])
    check_stamp(rt.key, stamp, channel_id=ids["channel"], sha256=sha256_file(slate))
    seg_id = plan_segment(rt, ids, 5)
    render_segment_direct(rt, seg_id)

    def ends(path):
        with av.open(str(path)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
        return frames[0], frames[-1], len(frames)

    s_first, s_last, n = ends(slate)
    g_first, g_last, _ = ends(rt.local(segment_row(rt, seg_id).path))
    assert n == 25
    upper = (slice(60, 220), slice(0, 360))  # hair, eyes and brow: well above the mouth and its blend
    for a, b in ((s_last, g_first), (g_last, s_first)):
        # The two files carry different watermarks (a faint low-frequency pattern each), so the frames are
        # not identical; a head jump is a shift of the picture, which phase correlation measures directly.
        ga, gb = (cv2.cvtColor(np.ascontiguousarray(x[upper]), cv2.COLOR_RGB2GRAY).astype(np.float32) for x in (a, b))
        (dx, dy), _ = cv2.phaseCorrelate(ga, gb)
        assert np.hypot(dx, dy) < 0.5, f"head jumps at a join: shifted by ({dx:.2f}, {dy:.2f}) px"
        diff = np.abs(a[upper].astype(int) - b[upper].astype(int))
        assert diff.mean() < 4.0, f"frames at a join differ by {diff.mean():.1f} on average"


def _bundle(rt, ids) -> Path:
    with session_scope(rt.engine) as s:
        return rt.local_dir(s.get(Avatar, ids["avatar"]).bundle_path)


# --- the renderer contract ------------------------------------------------------------------------------------------
def test_the_footage_bundle_keeps_its_layout(avatar_world):
    """The bundle the footage backend builds (since the renderer contract: in its own file) keeps the layout and
    manifest of bundle version 5, so avatars built before still render."""
    from workers.renderers.footage import BUNDLE_VERSION

    rt, ids = avatar_world
    bundle = _bundle(rt, ids)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert BUNDLE_VERSION == 5 and manifest["version"] == 5
    assert set(manifest) == {"version", "avatar_id", "footage_sha256", "profile", "crop", "fps", "loop_frames",
                             "files"}
    assert sorted(manifest["files"]) == ["analysis.json", "audio_map.json", "base.mp4", "base_track.json",
                                         "consent_ref.npz", "mouths.npy", "units.json"]
    assert {p.name for p in bundle.iterdir()} == {*manifest["files"], "manifest.json"}
    assert all(sha256_file(bundle / name) == digest for name, digest in manifest["files"].items())
    assert (manifest["avatar_id"], manifest["fps"], manifest["profile"]["width"]) == (ids["avatar"], 25, 360)
    with session_scope(rt.engine) as s:
        assert s.get(Avatar, ids["avatar"]).renderer == "footage"


def test_a_backend_registered_alone_builds_renders_and_idles_its_avatars(tmp_path, small_footage, monkeypatch):
    """A new backend is one registration: ingest builds the avatar with it, the avatar names it, its renders go to
    its queue, and the render and the slate use it (here the test's tiny GPU-queue backend of solid frames)."""
    from tests.integration.conftest import ingested, world_rows
    from tests.renderer_helpers import registered, tiny_backend
    from workers.queue_policy import render_queue
    from workers.render.segment import render_slate

    registered(monkeypatch, tiny_backend("tiny", "gpu"))
    rt, ids = world_rows(*ingested(tmp_path, small_footage(), renderer="tiny"))
    bundle = _bundle(rt, ids)
    assert {p.name for p in bundle.iterdir()} == {"tiny.json", "consent_ref.npz", "manifest.json"}
    with session_scope(rt.engine) as s:
        avatar = s.get(Avatar, ids["avatar"])
        assert avatar.renderer == "tiny" and render_queue(avatar) == "render.gpu"

    seg_id = plan_segment(rt, ids, 0)
    assert render_segment_direct(rt, seg_id) == "ready"
    with session_scope(rt.engine) as s:
        channel = s.get(Channel, ids["channel"])
    slate = rt.data.segments / ids["channel"] / "slate.mp4"
    render_slate(rt, channel=channel, out=slate, bundle=bundle, avatar_id=ids["avatar"])
    colour = np.array(json.loads((bundle / "tiny.json").read_text())["colour"], float)
    for path, level in ((rt.local(segment_row(rt, seg_id).path), 1.0), (slate, 0.5)):
        with av.open(str(path)) as c:
            frame = next(c.decode(c.streams.video[0])).to_ndarray(format="rgb24")
        centre = frame[280:360, 140:220].reshape(-1, 3).mean(axis=0)  # clear of the label and the captions
        assert np.abs(centre - (colour * level).astype(np.uint8)).max() < 12, (path.name, centre, colour * level)


def test_a_segment_speaks_with_a_piper_voice_captioned_by_its_timings(avatar_world, tmp_path):
    """tts.type piper: the script is said by a (tiny) Piper voice, the captions are its words at the model's own
    timings, and the segment is as long as the voice's audio."""
    pytest.importorskip("piper", reason="the piper backend needs piper-tts")
    from studio.config import TTSConfig
    from studio.runtime import build_runtime
    from tests.piper_helpers import make_tiny_piper_voice
    from workers.tts import make_tts

    rt, ids = avatar_world
    config = TTSConfig(type="piper", voice_path=str(make_tiny_piper_voice(tmp_path / "voice")))
    piper_rt = build_runtime(rt.settings.model_copy(update={"tts": config}))
    seg_id = plan_segment(piper_rt, ids, 60)
    assert render_segment_direct(piper_rt, seg_id) == "ready"
    row = segment_row(piper_rt, seg_id)
    speech = make_tts(config).synthesize(TEXT)
    assert row.duration_s == pytest.approx(speech.frame_count(25) / 25)
    vtt = piper_rt.local(row.path).with_suffix(".vtt").read_text()
    assert " ".join(line for line in vtt.splitlines()[2:] if line and "-->" not in line) == TEXT
