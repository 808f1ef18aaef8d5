"""Fail closed at air time: the channel's feeder, backed by the real database and policy check, airs
stamped segments and refuses an unstamped one, a tampered one, one stamped for another channel and
one whose consent was revoked; the recording from nginx-rtmp shows none of the refused pictures."""

from __future__ import annotations

from datetime import timedelta

import av
import numpy as np
import pytest
from sqlmodel import select

from studio.config import MediaProfile, Settings
from studio.db import session_scope, upgrade
from studio.keys import init_audit_keys, init_key
from studio.models import (
    AuditEvent,
    Avatar,
    Channel,
    Consent,
    Creator,
    Product,
    Script,
    Segment,
    Show,
    new_produce_id,
    utcnow,
)
from studio.policy_profiles import effective_policy
from studio.runtime import build_runtime
from studio.storage import sha256_file
from tests.conftest import FULL_SCOPE, has_badge
from tests.integration.conftest import air_and_record
from workers.media.watermark import Mark, avatar_ref_from_id, produce_token_from_id
from workers.render.segment import encode_labelled, render_slate
from workers.tts.base import Speech

pytestmark = pytest.mark.integration
# Distinct hues, kept off 0 and 255 in every channel: on a flat picture clipped at black in two channels the
# watermark is too weak to read back after encoding, and the middleware (rightly) refuses to stamp it.
COLOURS = {"green": (40, 200, 40), "magenta": (210, 40, 210), "red": (210, 40, 40), "yellow": (220, 220, 40),
           "cyan": (40, 200, 210), "blue": (40, 40, 210)}


def _frames(rgb, n, w, h):
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = rgb
    return (frame.copy() for _ in range(n))


@pytest.fixture
def world(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"), media=MediaProfile(width=320, height=576))
    init_key(settings)
    init_audit_keys(settings)
    upgrade(settings.db_url)
    rt = build_runtime(settings)
    now = utcnow()
    with session_scope(rt.engine) as s:
        creator = Creator(name="Ava")
        s.add(creator)
        s.flush()
        avatar = Avatar(creator_id=creator.id, name="Ava", bundle_path="-", footage_sha256="-", width=320,
                        height=576, fps=25, duration_s=40)
        a, b = Channel(name="A", territories=["US"]), Channel(name="B", territories=["US"])
        s.add_all([avatar, a, b])
        s.flush()
        consents = [Consent(creator_id=creator.id, avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                            starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1), scope=FULL_SCOPE,
                            statement_sha256="-") for _ in range(2)]
        product = Product(name="P", brand="B", category="home")
        s.add_all([*consents, product])
        s.flush()
        script = Script(product_id=product.id, text="Paid partnership.")
        s.add(script)
        s.flush()
        show = Show(channel_id=a.id, avatar_id=avatar.id, consent_id=consents[0].id, name="s", script_ids=[script.id])
        s.add(show)
        s.flush()
        ids = dict(a=a.id, b=b.id, show=show.id, avatar=avatar.id, consent=consents[0].id,
                   revoked_consent=consents[1].id, script=script.id)
    return rt, ids


def _marks(produce_id: str, avatar_id: str) -> dict:
    return {"policy": effective_policy(["default"]), "refs": {"avatar": avatar_id},
            "mark": Mark(produce_token_from_id(produce_id), avatar_ref_from_id(avatar_id))}


def _segment(rt, ids, seq, colour, *, stamp_channel=None, consent=None):
    p = rt.settings.media
    seg = Segment(channel_id=ids["a"], show_id=ids["show"], avatar_id=ids["avatar"],
                  consent_id=consent or ids["consent"], script_id=ids["script"], text="-", seq=seq, state="ready")
    path = rt.data.segment_path(ids["a"], seq, seg.produce_id)
    speech = Speech(samples=np.zeros(32000, np.float32), sample_rate=16000)
    stamp, _ = encode_labelled(rt, speech=speech, frames=_frames(COLOURS[colour], 50, p.width, p.height), out=path,
                               segment_id=seg.id, channel_id=stamp_channel or ids["a"], produce_id=seg.produce_id,
                               show_id=ids["show"], banner_for=None, **_marks(seg.produce_id, ids["avatar"]))
    seg.path, seg.stamp, seg.duration_s = str(path), stamp.to_dict(), 2.0
    with session_scope(rt.engine) as s:
        s.add(seg)
    return seg


def test_only_genuinely_stamped_consented_segments_air(world, tmp_path):
    rt, ids = world
    p = rt.settings.media
    _segment(rt, ids, 0, "green")
    unstamped = _segment(rt, ids, 1, "magenta")
    tampered = _segment(rt, ids, 2, "red")
    other_channel = _segment(rt, ids, 3, "yellow", stamp_channel=ids["b"])
    revoked = _segment(rt, ids, 4, "cyan", consent=ids["revoked_consent"])
    _segment(rt, ids, 5, "blue")
    with session_scope(rt.engine) as s:
        s.get(Segment, unstamped.id).stamp = None
        s.get(Consent, ids["revoked_consent"]).status = "revoked"
    # Swap the tampered segment's bytes for another, validly encoded picture after it was stamped.
    donor, donor_id = rt.data.segments / "donor.mp4", new_produce_id()
    encode_labelled(rt, speech=Speech(np.zeros(32000, np.float32), 16000),
                    frames=_frames(COLOURS["red"], 50, p.width, p.height), out=donor, segment_id="x",
                    channel_id=ids["a"], produce_id=donor_id, show_id="x", banner_for=None,
                    **_marks(donor_id, ids["avatar"]))
    tampered_path = rt.data.segment_path(ids["a"], 2, tampered.produce_id)
    tampered_path.write_bytes(donor.read_bytes()[:-16] + b"\0" * 16)
    assert sha256_file(tampered_path) != tampered.stamp["sha256"]

    with session_scope(rt.engine) as s:
        channel_a = s.get(Channel, ids["a"])
    slate = render_slate(rt, channel=channel_a, out=rt.data.segments / ids["a"] / "slate.mp4")
    assert slate.channel_id == ids["a"]
    recording = air_and_record(rt, ids["a"], rt.data.segments / ids["a"] / "slate.mp4", tmp_path, seconds=8.0)

    with session_scope(rt.engine) as s:
        states = {seg.seq: seg.state for seg in s.exec(select(Segment)).all()}
        refusals = {e.subject_id: e.data["reason"] for e in s.exec(select(AuditEvent)).all()
                    if e.kind == "segment.refused"}
    assert states == {0: "aired", 1: "refused", 2: "refused", 3: "refused", 4: "refused", 5: "aired"}
    assert "no policy stamp" in refusals[unstamped.id]
    assert "changed after stamping" in refusals[tampered.id]
    assert f"stamped for channel {ids['b']}" in refusals[other_channel.id]
    assert "revoked" in refusals[revoked.id]

    seen = set()
    with av.open(str(recording)) as c:
        for i, frame in enumerate(c.decode(c.streams.video[0])):
            if i % 5:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            centre = rgb[200:400, 100:220].reshape(-1, 3).mean(axis=0)
            nearest = min(COLOURS, key=lambda n: float(np.sum((centre - np.array(COLOURS[n])) ** 2)))
            if float(np.sum((centre - np.array(COLOURS[nearest])) ** 2)) < 40 ** 2:
                seen.add(nearest)
            # The badge is on every frame, slate included, top right.
            box = rgb[10:60, 160:310]
            assert has_badge(box), f"no badge at frame {i}"
    assert seen == {"green", "blue"}, f"colours on air: {seen}"
