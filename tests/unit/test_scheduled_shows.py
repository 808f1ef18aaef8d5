"""Scheduled shows against a real SQLite database built by the migrations: the planner's rows (air times,
deadlines, breaks, hand-over), policy refusals and daily caps at plan time, backpressure on the render queue,
re-timing of a late channel, and how the air layer takes breaks and planned air times."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from sqlmodel import select

from studio.config import Settings, StreamerConfig
from studio.db import session_scope
from studio.models import Avatar, Consent, Segment, Show, utcnow
from studio.schedule import PlanState, to_ms
from tests.conftest import FULL_SCOPE, as_admin, db_show
from workers.plan.scheduled import dispatch_within_buffer, plan_scheduled_show, retime_channel
from workers.streamer.air import ChannelAir
from workers.streamer.supervisor import feeder_policy

TEXT = "Paid partnership with Lumen Labs. Meet the Glow Serum, a light serum for every day."


@pytest.fixture
def world(fresh_db):
    """A channel with a show whose schedule hands over between two avatars (each with its own consent)."""
    engine = fresh_db
    ids = db_show(engine, text=TEXT)
    with session_scope(engine) as s:
        first = s.get(Consent, ids["consent"])
        avatar = Avatar(creator_id=first.creator_id, name="Bo", bundle_path="-", footage_sha256="-", width=360,
                        height=640, fps=25, duration_s=30)
        s.add(avatar)
        s.flush()
        consent = Consent(creator_id=first.creator_id, avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                          statement_sha256="-", starts_at=first.starts_at, ends_at=first.ends_at, scope=FULL_SCOPE)
        s.add(consent)
        s.flush()
        ids["avatar2"], ids["consent2"] = avatar.id, consent.id
    ids["schedule"] = {"rotation": [{"script_id": ids["script"]}],
                       "avatars": [{"avatar_id": ids["avatar"], "consent_id": ids["consent"], "minutes": 2},
                                   {"avatar_id": ids["avatar2"], "consent_id": ids["consent2"], "minutes": 2}],
                       "breaks": {"every_minutes": 3, "seconds": 20}}
    settings = Settings()
    rt = SimpleNamespace(engine=engine, settings=settings, store_is_data_dir=True)
    return rt, ids


def _schedule(rt, ids, schedule=None, **show_fields):
    with session_scope(rt.engine) as s:
        show = s.get(Show, ids["show"])
        show.schedule = schedule or ids["schedule"]
        for k, v in show_fields.items():
            setattr(show, k, v)


def _plan(rt, ids, now):
    with session_scope(rt.engine) as s:
        return plan_scheduled_show(rt, s, s.get(Show, ids["show"]), now=now)


def _rows(rt, ids):
    with session_scope(rt.engine) as s:
        return s.exec(select(Segment).where(Segment.show_id == ids["show"]).order_by(Segment.seq)).all()


def test_plan_materialises_timed_rows_with_breaks_and_hand_over(world):
    rt, ids = world
    _schedule(rt, ids)
    now = utcnow().replace(microsecond=0)
    new = _plan(rt, ids, now)
    rows = _rows(rt, ids)
    assert len(new) == len(rows) > 20
    cfg = rt.settings.scheduler
    # The first row airs start_lead after now; every deadline is its air time minus the margin.
    assert rows[0].air_at == now + timedelta(seconds=cfg.start_lead_seconds)
    segs = [r for r in rows if r.kind == "segment"]
    assert all(r.deadline == r.air_at - timedelta(seconds=cfg.margin_seconds) for r in segs)
    assert all(r.state == "planned" and r.script_id == ids["script"] for r in segs)
    # Air times only move forward, in seq order, and nothing is planned past the horizon.
    assert [r.seq for r in rows] == list(range(len(rows)))
    assert all(b.air_at > a.air_at for a, b in zip(rows, rows[1:], strict=False))
    assert rows[-1].air_at < now + timedelta(seconds=cfg.horizon_seconds)
    # Breaks every 3 minutes, 20 s, ready (no render); the segment after each opens with the banner again.
    breaks = [i for i, r in enumerate(rows) if r.kind == "break"]
    assert len(breaks) >= 9
    for i in breaks:
        assert rows[i].state == "ready" and rows[i].script_id is None and rows[i].duration_s == 20
        assert rows[i + 1].show_start and rows[i + 1].air_at >= rows[i].air_at + timedelta(seconds=20)
    gaps = [(rows[b].air_at - rows[a].air_at).total_seconds() for a, b in zip(breaks, breaks[1:], strict=False)]
    assert all(abs(g - 180) < 15 for g in gaps), gaps
    # Two-minute stints: the avatars take turns, each under its own consent, and hand over after ~2 minutes.
    runs: list[list] = []
    for r in segs:
        if not runs or runs[-1][0].avatar_id != r.avatar_id:
            runs.append([])
        runs[-1].append(r)
    assert len(runs) >= 10
    pairs = {ids["avatar"]: ids["consent"], ids["avatar2"]: ids["consent2"]}
    assert [run[0].avatar_id for run in runs[:4]] == [ids["avatar"], ids["avatar2"]] * 2
    assert all(r.consent_id == pairs[r.avatar_id] for r in segs)
    for run, nxt in zip(runs, runs[1:-1], strict=False):
        span = (nxt[0].air_at - run[0].air_at).total_seconds()
        assert 115 <= span <= 120 + 20 + 15, span  # the stint, plus a break and one airing that had begun


def test_next_pass_continues_where_the_plan_stands(world):
    rt, ids = world
    _schedule(rt, ids)
    now = utcnow().replace(microsecond=0)
    _plan(rt, ids, now)
    before = _rows(rt, ids)
    assert _plan(rt, ids, now) == []  # horizon already covered: nothing new
    later = now + timedelta(minutes=5)
    new = _plan(rt, ids, later)
    rows = _rows(rt, ids)
    assert new and len(rows) == len(before) + len(new)
    added = rows[len(before):]
    assert added[0].air_at >= before[-1].air_at and added[0].seq == before[-1].seq + 1
    with session_scope(rt.engine) as s:
        state = PlanState.from_dict(s.get(Show, ids["show"]).plan_state)
    assert state.t_ms >= to_ms(later) + (rt.settings.scheduler.horizon_seconds - 30) * 1000


def test_plan_is_deterministic(world, fresh_db):
    rt, ids = world
    _schedule(rt, ids)
    now = utcnow().replace(microsecond=0)
    _plan(rt, ids, now)
    first = [(r.air_at, r.kind, r.avatar_id, r.text, r.show_start) for r in _rows(rt, ids)]
    with session_scope(rt.engine) as s:
        for r in s.exec(select(Segment)).all():
            s.delete(r)
        s.get(Show, ids["show"]).plan_state = None
    _plan(rt, ids, now)
    assert [(r.air_at, r.kind, r.avatar_id, r.text, r.show_start) for r in _rows(rt, ids)] == first


def test_policy_refusal_hands_over_and_never_plans_the_refused_avatar(world):
    rt, ids = world
    with session_scope(rt.engine) as s:  # the second consent does not cover this channel's territory
        s.get(Consent, ids["consent2"]).scope = {**FULL_SCOPE, "territories": ["DE"]}
    _schedule(rt, ids)
    _plan(rt, ids, utcnow())
    segs = [r for r in _rows(rt, ids) if r.kind == "segment"]
    assert segs and {r.consent_id for r in segs} == {ids["consent"]}


def test_revoked_consent_plans_nothing_and_is_audited(world):
    rt, ids = world
    with session_scope(rt.engine) as s:
        for cid in (ids["consent"], ids["consent2"]):
            s.get(Consent, cid).status = "revoked"
    _schedule(rt, ids)
    assert _plan(rt, ids, utcnow()) == []
    assert _rows(rt, ids) == []


def test_daily_cap_bounds_what_is_planned(world):
    rt, ids = world
    cap_h = 0.05  # 180 s a day for each consent
    with session_scope(rt.engine) as s:
        for cid in (ids["consent"], ids["consent2"]):
            s.get(Consent, cid).scope = {**FULL_SCOPE, "max_hours_per_day": cap_h}
    _schedule(rt, ids)
    _plan(rt, ids, utcnow())
    wpm = rt.settings.tts.words_per_minute
    from studio.planner import estimate_seconds

    for cid in (ids["consent"], ids["consent2"]):
        planned = sum(estimate_seconds(r.text, wpm) for r in _rows(rt, ids) if r.kind == "segment"
                      and r.consent_id == cid)
        assert 0 < planned <= cap_h * 3600


def test_dispatch_keeps_the_buffer_target_and_no_more(world):
    rt, ids = world
    _schedule(rt, ids)
    now = utcnow()
    _plan(rt, ids, now)
    target = rt.settings.streamer.buffer_target_seconds
    with session_scope(rt.engine) as s:
        first = dispatch_within_buffer(rt, s, ids["channel"], now=now)
        rows = {r.id: r for r in s.exec(select(Segment)).all()}
        assert first and all(rows[i].kind == "segment" for i in first)
        wpm = rt.settings.tts.words_per_minute
        from workers.plan.scheduled import row_seconds

        queued = sum(row_seconds(rows[i], wpm) for i in first)
        assert target <= queued < target + 10  # up to the target, plus at most one segment
        for i in first:
            rows[i].task_id = f"t-{i}"
    with session_scope(rt.engine) as s:
        assert dispatch_within_buffer(rt, s, ids["channel"], now=now) == []  # full: nothing more
        # Two segments air: two more may be queued, the next ones in seq order.
        aired = [s.get(Segment, i) for i in first[:2]]
        for r in aired:
            r.state = "aired"
    with session_scope(rt.engine) as s:
        more = dispatch_within_buffer(rt, s, ids["channel"], now=now)
        seqs = {r.id: r.seq for r in s.exec(select(Segment)).all()}
    assert 1 <= len(more) <= 3 and min(seqs[i] for i in more) > max(seqs[i] for i in first)


def test_dispatch_failure_is_queued_again(world):
    """A dispatch that failed (Redis down past the retries) left no task id: the next pass queues it."""
    rt, ids = world
    _schedule(rt, ids)
    now = utcnow()
    _plan(rt, ids, now)
    with session_scope(rt.engine) as s:
        first = dispatch_within_buffer(rt, s, ids["channel"], now=now)
        for i in first[1:]:
            s.get(Segment, i).task_id = "queued"
    with session_scope(rt.engine) as s:
        assert dispatch_within_buffer(rt, s, ids["channel"], now=now)[0] == first[0]


def test_late_channel_moves_the_rest_of_its_plan(world):
    rt, ids = world
    _schedule(rt, ids)
    planned_at = utcnow().replace(microsecond=0)
    _plan(rt, ids, planned_at)
    before = {r.id: r.air_at for r in _rows(rt, ids)}
    with session_scope(rt.engine) as s:
        t_before = PlanState.from_dict(s.get(Show, ids["show"]).plan_state).t_ms
    # Four minutes later nothing has aired: the channel is about three minutes late.
    now = planned_at + timedelta(minutes=4)
    with session_scope(rt.engine) as s:
        moved = retime_channel(rt, s, s.get(Show, ids["show"]), now=now)
    assert moved > 150
    rows = _rows(rt, ids)
    margin = timedelta(seconds=rt.settings.scheduler.margin_seconds)
    assert rows[0].air_at >= now
    assert all(r.air_at >= before[r.id] for r in rows)
    assert all(b.air_at > a.air_at for a, b in zip(rows, rows[1:], strict=False))
    assert all(r.deadline == r.air_at - margin for r in rows if r.kind == "segment")
    with session_scope(rt.engine) as s:
        assert PlanState.from_dict(s.get(Show, ids["show"]).plan_state).t_ms > t_before
    # On time again: nothing moves.
    with session_scope(rt.engine) as s:
        assert retime_channel(rt, s, s.get(Show, ids["show"]), now=now) == 0


def _row(rt, ids, **fields):
    with session_scope(rt.engine) as s:
        seq = len(s.exec(select(Segment)).all())
        fields = {"script_id": ids["script"], "text": "Hello.", **fields}
        row = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                      consent_id=ids["consent"], seq=seq, **fields)
        s.add(row)
    return row.id


def test_air_takes_a_break_as_idle_loop_for_its_length(world, monkeypatch):
    rt, ids = world
    brk = _row(rt, ids, kind="break", state="ready", duration_s=20.0, script_id=None, air_at=utcnow())
    seg = _row(rt, ids, state="ready", path="/x.mp4", duration_s=4.0, air_at=utcnow() + timedelta(seconds=20),
               show_start=True)
    clock = [1000.0]
    monkeypatch.setattr("workers.streamer.air.time.monotonic", lambda: clock[0])
    air = ChannelAir(rt, ids["channel"])
    assert air.next_segment() is None  # the break starts: idle loop
    with session_scope(rt.engine) as s:
        row = s.get(Segment, brk)
        assert row.state == "aired" and row.aired_at is not None
    clock[0] += 19.0
    assert air.next_segment() is None  # still in the break
    clock[0] += 1.5
    ref = air.next_segment()
    assert ref is not None and ref.id == seg
    assert air.breaks_aired == 1
    # A break is not air time of the clone: the daily cap counts segments only.
    from studio.usage import aired_seconds

    with session_scope(rt.engine) as s:
        assert aired_seconds(s, ids["consent"], at=utcnow()) == 0


def test_air_waits_for_a_planned_time_beyond_the_tolerance(world):
    rt, ids = world
    early = rt.settings.streamer.early_tolerance_seconds
    far = _row(rt, ids, state="ready", path="/x.mp4", duration_s=4.0,
               air_at=utcnow() + timedelta(seconds=early + 30))
    air = ChannelAir(rt, ids["channel"])
    assert air.next_segment() is None
    with session_scope(rt.engine) as s:
        row = s.get(Segment, far)
        assert row.state == "ready"  # waiting, not skipped
        row.air_at = utcnow() + timedelta(seconds=early - 5)
    ref = air.next_segment()
    assert ref is not None and ref.id == far


@pytest.mark.parametrize(("crashes", "want"), [(1, 2.0), (5, 2.0), (6, 4.0), (7, 8.0), (9, 32.0), (12, 60.0)])
def test_feeder_restart_pause_backs_off_and_never_gives_up(crashes, want):
    cfg = StreamerConfig(restart_pause_seconds=2.0, max_restarts_per_minute=5, max_restart_pause_seconds=60.0)
    policy = feeder_policy(cfg)
    assert policy.delay(crashes) == want and not policy.gives_up(1000)


def test_show_body_with_a_schedule():
    from api.routers.catalog import ShowIn

    sched = {"rotation": [{"script_id": "s1", "weight": 2}, {"script_id": "s2"}],
             "avatars": [{"avatar_id": "a1", "consent_id": "c1"}, {"avatar_id": "a2", "consent_id": "c2"}]}
    body = ShowIn.model_validate({"channel_id": "ch", "name": "n", "schedule": sched})
    assert (body.avatar_id, body.consent_id, body.script_ids) == ("a1", "c1", ["s1", "s2"])
    with pytest.raises(ValidationError, match="first avatar"):
        ShowIn.model_validate({"channel_id": "ch", "name": "n", "schedule": sched, "avatar_id": "a2"})
    with pytest.raises(ValidationError, match="rotation"):
        ShowIn.model_validate({"channel_id": "ch", "name": "n", "schedule": sched, "script_ids": ["s1"]})
    with pytest.raises(ValidationError, match="avatar_id, consent_id, script_ids required"):
        ShowIn.model_validate({"channel_id": "ch", "name": "n"})
    with pytest.raises(ValidationError, match="cooldown_s must be 0 to 3600"):
        ShowIn.model_validate({"channel_id": "ch", "name": "n", "schedule": {
            **sched, "rotation": [{"script_id": "s1", "cooldown_s": -1}]}})


def test_api_creates_a_scheduled_show_and_checks_every_presenter(world):
    from fastapi.testclient import TestClient

    from api.app import create_app

    rt, ids = world
    body = {"channel_id": ids["channel"], "name": "mornings", "schedule": {
        **ids["schedule"], "timezone": "Europe/Berlin", "windows": [{"days": ["mon-fri"], "start": "09:00",
                                                                     "end": "18:00"}]}}
    with TestClient(create_app(rt)) as client:
        as_admin(client, rt.engine)
        r = client.post("/api/shows", json=body)
        assert r.status_code == 201, r.text
        show = r.json()
        assert show["avatar_id"] == ids["avatar"] and show["script_ids"] == [ids["script"]]
        assert show["schedule"]["windows"][0]["days"] == ["mon", "tue", "wed", "thu", "fri"]
        # The second presenter's consent leaves out this channel's territory: refused, naming that consent.
        with session_scope(rt.engine) as s:
            s.get(Consent, ids["consent2"]).scope = {**FULL_SCOPE, "territories": ["DE"]}
        r = client.post("/api/shows", json=body)
        assert r.status_code == 422
        findings = r.json()["findings"]
        assert [f["consent_id"] for f in findings] == [ids["consent2"]] and "territor" in findings[0]["message"]
        # A presenter under a consent that does not cover that avatar.
        bad = {**body, "schedule": {**body["schedule"], "avatars": [
            {"avatar_id": ids["avatar2"], "consent_id": ids["consent"]}]}}
        r = client.post("/api/shows", json=bad)
        assert r.status_code == 422 and "does not cover avatar" in r.text
        # Malformed schedule: a clear 422 naming the field and the value.
        r = client.post("/api/shows", json={**body, "schedule": {**body["schedule"], "timezone": "Mars/Base"}})
        assert r.status_code == 422 and "Mars/Base" in r.text
    with session_scope(rt.engine) as s:
        assert len(s.exec(select(Show)).all()) == 2  # the fixture's and the one accepted
