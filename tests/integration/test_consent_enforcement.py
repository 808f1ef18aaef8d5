"""The consent scope enforced at plan time and at air time (POLICY C3, C4, S2, S4) on real parts: the scheduler's
plan_show, the real render, and the channel's feeder airing through nginx-rtmp to an ffmpeg recorder. A script
the creator has not approved, a segment over the daily cap and a channel whose destination lies outside the
scope are planned not at all or refused at air with the reason on the segment; the recording shows the slate."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import av
import numpy as np
import pytest
from sqlmodel import select

from studio.db import session_scope
from studio.models import (
    Attestation,
    AuditEvent,
    Avatar,
    Channel,
    Consent,
    Creator,
    Destination,
    Product,
    Script,
    ScriptApproval,
    Segment,
    Show,
    utcnow,
)
from studio.usage import text_sha256
from tests.conftest import FULL_SCOPE
from tests.integration.conftest import TEXT, air_and_record, segment_row
from workers.plan.scheduler import plan_show
from workers.render.segment import render_segment_direct, render_slate
from workers.streamer.air import ChannelAir

pytestmark = [pytest.mark.integration]
SHORT = "Paid partnership with Lumen Labs. Meet the Glow Serum."  # one short segment: quick to render and air


def _world(rt, ids, name: str, *, scope: dict | None = None, approval: bool = False,
           territories: tuple[str, ...] = ("US",), script_ids: list[str] | None = None) -> dict:
    """A consent, channel and show of their own for the module's avatar: `ids` with those three replaced."""
    now = utcnow()
    with session_scope(rt.engine) as s:
        creator_id = s.get(Avatar, ids["avatar"]).creator_id
        consent = Consent(creator_id=creator_id, avatar_id=ids["avatar"], signed_name="Ava", statement="x" * 30,
                          starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1),
                          scope={**FULL_SCOPE, **(scope or {})}, statement_sha256="-",
                          require_script_approval=approval)
        channel = Channel(name=name, territories=list(territories))
        s.add_all([consent, channel])
        s.flush()
        show = Show(channel_id=channel.id, avatar_id=ids["avatar"], consent_id=consent.id, name=name,
                    script_ids=script_ids or [ids["script"]])
        s.add(show)
    return {**ids, "consent": consent.id, "channel": channel.id, "show": show.id, "creator": creator_id}


def _plan(rt, show_id: str) -> list[str]:
    with session_scope(rt.engine) as s:
        return plan_show(rt, s, s.get(Show, show_id))


def _planned_scripts(rt, show_id: str) -> set[str]:
    with session_scope(rt.engine) as s:
        return {seg.script_id for seg in s.exec(select(Segment).where(Segment.show_id == show_id)).all()}


def _segment(rt, w: dict, seq: int) -> str:
    """A planned segment of the world's show saying SHORT."""
    with session_scope(rt.engine) as s:
        seg = Segment(channel_id=w["channel"], show_id=w["show"], avatar_id=w["avatar"], consent_id=w["consent"],
                      script_id=w["script"], text=SHORT, seq=seq)
        s.add(seg)
    return seg.id


def _aired_earlier(rt, w: dict, *, seconds: float, ago: timedelta) -> str:
    """An airing of `seconds` under the world's consent, `ago` before now, on a channel of its own (the cap
    counts every channel); returns the segment's id."""
    with session_scope(rt.engine) as s:
        channel = Channel(name="earlier", territories=["US"])
        s.add(channel)
        s.flush()
        show = Show(channel_id=channel.id, avatar_id=w["avatar"], consent_id=w["consent"], name="earlier",
                    script_ids=[w["script"]])
        s.add(show)
        s.flush()
        seg = Segment(channel_id=channel.id, show_id=show.id, avatar_id=w["avatar"], consent_id=w["consent"],
                      script_id=w["script"], text=TEXT, seq=0, state="aired", duration_s=seconds,
                      aired_at=utcnow() - ago)
        s.add(seg)
    return seg.id


def _card_slate(rt, channel_id: str) -> Path:
    with session_scope(rt.engine) as s:
        channel = s.get(Channel, channel_id)
    out = rt.data.segments / channel_id / "slate-card.mp4"
    render_slate(rt, channel=channel, out=out)
    return out


def _is_card(rgb: np.ndarray) -> bool:
    """The plain card slate: a dark blue-to-purple gradient where the clone's face would be."""
    h, w = rgb.shape[:2]
    centre = rgb[h // 3: 2 * h // 3, w // 4: 3 * w // 4].reshape(-1, 3).astype(float)
    return float(centre.mean()) < 70 and float(centre[:, 1].mean()) < 40


def _card_frames(recording: Path) -> list[bool]:
    with av.open(str(recording)) as c:
        return [_is_card(f.to_ndarray(format="rgb24")) for f in c.decode(c.streams.video[0])]


def _refusals(rt, seg_id: str) -> list[str]:
    with session_scope(rt.engine) as s:
        return [e.data["reason"] for e in s.exec(select(AuditEvent).where(AuditEvent.subject_id == seg_id,
                                                                          AuditEvent.kind == "segment.refused"))]


# --- (1) the creator's approval of each script -------------------------------------------------------------
def _approve(rt, w: dict) -> None:
    with session_scope(rt.engine) as s:
        script = s.get(Script, w["script"])
        s.add(ScriptApproval(consent_id=w["consent"], script_id=script.id, text_sha256=text_sha256(script.text),
                             signed_name="Ava"))


def test_a_script_is_planned_and_aired_only_as_the_creator_approved_it(avatar_world, tmp_path, caplog):
    rt, ids = avatar_world
    with session_scope(rt.engine) as s:  # a script of its own: its text is edited below
        script = Script(product_id=s.get(Script, ids["script"]).product_id, text=SHORT)
        s.add(script)
    w = _world(rt, ids, "approval", approval=True, script_ids=[script.id])
    w["script"] = script.id
    caplog.set_level(logging.WARNING, logger="studio.scheduler")
    assert _plan(rt, w["show"]) == []
    assert f"script {script.id} not planned: script {script.id} awaits the creator's approval" in caplog.text

    _approve(rt, w)
    planned = _plan(rt, w["show"])
    assert len(planned) >= 2, "nothing planned after the creator approved the script"
    assert render_segment_direct(rt, planned[0]) == "ready"
    # The text changes after the render: what would air is no longer what the creator approved.
    with session_scope(rt.engine) as s:
        s.get(Script, script.id).text = SHORT + " Now with free shipping."
    slate = _card_slate(rt, w["channel"])
    refused_run = air_and_record(rt, w["channel"], slate, tmp_path / "refused", seconds=3.0)
    row = segment_row(rt, planned[0])
    assert row.state == "refused" and row.aired_at is None
    assert f"script {script.id} changed since the creator approved it" in row.error and w["consent"] in row.error
    assert _refusals(rt, planned[0]) == [row.error]
    cards = _card_frames(refused_run)
    assert len(cards) >= 2 * rt.settings.media.fps and all(cards), \
        f"{cards.count(False)} of {len(cards)} frames of the clone in a run whose only segment was refused"
    caplog.clear()
    assert _plan(rt, w["show"]) == []
    assert f"script {script.id} not planned: script {script.id} changed since the creator approved it" in caplog.text

    # The creator approves the new text: the next segment renders and airs.
    _approve(rt, w)
    assert render_segment_direct(rt, planned[1]) == "ready"
    seconds = segment_row(rt, planned[1]).duration_s
    aired_run = air_and_record(rt, w["channel"], slate, tmp_path / "aired", seconds=seconds + 1.0)
    row = segment_row(rt, planned[1])
    assert row.state == "aired" and row.error is None
    clone = _card_frames(aired_run).count(False)
    assert clone >= 0.8 * seconds * rt.settings.media.fps, f"only {clone} frames of the clone on the recording"


# --- (2) the daily cap -------------------------------------------------------------------------------------
def test_a_segment_that_would_pass_the_daily_cap_is_refused_at_air(avatar_world, tmp_path):
    rt, ids = avatar_world
    w = _world(rt, ids, "cap", scope={"max_hours_per_day": 0.01})  # 36 s in any 24 h
    first, second = (_segment(rt, w, seq) for seq in range(2))
    assert [render_segment_direct(rt, i) for i in (first, second)] == ["ready", "ready"]
    d1, d2 = segment_row(rt, first).duration_s, segment_row(rt, second).duration_s
    # Earlier airings leave room for the first segment and half of the second; one older than 24 h is forgotten.
    _aired_earlier(rt, w, seconds=36.0 - d1 - d2 / 2, ago=timedelta(hours=2))
    _aired_earlier(rt, w, seconds=3600.0, ago=timedelta(hours=25))

    air_and_record(rt, w["channel"], _card_slate(rt, w["channel"]), tmp_path, seconds=d1 + 2.0)
    assert segment_row(rt, first).state == "aired"
    row = segment_row(rt, second)
    assert row.state == "refused" and row.aired_at is None
    assert f"consent {w['consent']} allows 0.01 h on air in 24 h" in row.error
    assert f"next segment is {d2:.1f} s" in row.error
    assert _refusals(rt, second) == [row.error]


def test_a_show_whose_consent_reached_its_daily_cap_plans_nothing(avatar_world, caplog):
    rt, ids = avatar_world
    w = _world(rt, ids, "cap-reached", scope={"max_hours_per_day": 0.001})  # 3.6 s
    _aired_earlier(rt, w, seconds=30.0, ago=timedelta(hours=25))
    recent = _aired_earlier(rt, w, seconds=4.0, ago=timedelta(hours=1))
    caplog.set_level(logging.WARNING, logger="studio.scheduler")
    assert _plan(rt, w["show"]) == []
    assert f"show {w['show']} not planned: consent {w['consent']} allows 0.001 h on air in 24 h" in caplog.text
    with session_scope(rt.engine) as s:  # a day later the recent airing leaves the window too
        s.get(Segment, recent).aired_at = utcnow() - timedelta(hours=24, minutes=1)
    assert _plan(rt, w["show"]), "airings older than 24 h must not count against the cap"


# --- (3) platforms and territories ---------------------------------------------------------------------------
def test_a_destination_platform_outside_the_scope_plans_nothing_and_refuses_at_air(avatar_world, caplog):
    rt, ids = avatar_world
    w = _world(rt, ids, "platform")
    planned = _plan(rt, w["show"])
    assert planned, "a channel without destinations, in a consented territory, must plan"
    assert render_segment_direct(rt, planned[0]) == "ready"
    with session_scope(rt.engine) as s:
        s.add(Destination(channel_id=w["channel"], platform="douyin", url="rtmp://127.0.0.1:1/live/key"))

    caplog.set_level(logging.WARNING, logger="studio.scheduler")
    assert _plan(rt, w["show"]) == []
    assert f"show {w['show']} not planned: platform douyin is not among the consented platforms" in caplog.text
    # The segment rendered before the destination was added is refused when it comes to air.
    air = ChannelAir(rt, w["channel"])
    ref = air.next_segment()
    assert ref is not None and ref.id == planned[0]
    assert air.verify(ref) is False
    air.on_refused(ref, "policy check failed at air time")
    row = segment_row(rt, planned[0])
    assert row.state == "refused" and "platform douyin is not among the consented platforms" in row.error


@pytest.mark.parametrize("territories, outside", [(("US", "CN"), "CN"), (("de",), "DE")])
def test_a_channel_territory_outside_the_scope_plans_nothing(avatar_world, caplog, territories, outside):
    rt, ids = avatar_world
    w = _world(rt, ids, f"territory-{outside}", territories=territories)
    caplog.set_level(logging.WARNING, logger="studio.scheduler")
    assert _plan(rt, w["show"]) == []
    assert f"territory {outside} is not among the consented territories ['US']" in caplog.text


# --- per script: scope (S4) and attestations (S2) ------------------------------------------------------------
def test_scripts_outside_the_scope_or_with_unattested_claims_are_left_out_of_the_rotation(avatar_world, caplog):
    rt, ids = avatar_world
    with session_scope(rt.engine) as s:
        gin = Product(name="Gin", brand="Lumen", category="alcohol")
        someone_else = Creator(name="Ben")
        s.add_all([gin, someone_else])
        s.flush()
        serum = s.get(Script, ids["script"]).product_id
        alcohol = Script(product_id=gin.id, text="Paid partnership with Lumen. Meet our gin.")
        german = Script(product_id=serum, text="Bezahlte Partnerschaft mit Lumen. Das Glow Serum.", language="de")
        claim = Script(product_id=serum, text="Paid partnership with Lumen Labs. I use the Glow Serum every day.")
        # Another creator's attestation says nothing about this creator's use.
        s.add_all([alcohol, german, claim, Attestation(creator_id=someone_else.id, product_id=serum, kind="use",
                                                       statement="I use it daily.", signed_name="Ben")])
    scripts = [ids["script"], alcohol.id, german.id, claim.id]
    w = _world(rt, ids, "rotation", script_ids=scripts)
    caplog.set_level(logging.WARNING, logger="studio.scheduler")
    assert _plan(rt, w["show"])
    assert _planned_scripts(rt, w["show"]) == {ids["script"]}
    assert f"script {alcohol.id} not planned: category 'alcohol' is excluded" in caplog.text
    assert f"script {german.id} not planned: language 'de' is not among the consented languages" in caplog.text
    assert f"script {claim.id} not planned: S2.first_person 'I use'" in caplog.text

    # The show's creator attests using the product: the claim script joins the rotation.
    with session_scope(rt.engine) as s:
        s.add(Attestation(creator_id=w["creator"], product_id=serum, kind="use", statement="I use it daily.",
                          signed_name="Ava"))
    w = _world(rt, ids, "rotation-attested", script_ids=scripts)
    assert _plan(rt, w["show"])
    assert _planned_scripts(rt, w["show"]) == {ids["script"], claim.id}
