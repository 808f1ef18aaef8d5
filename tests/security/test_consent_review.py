"""Consent review (issue 15, Consent 2 and 3), on real parts: a mediapipe-ingested avatar, redis-server and a Celery
worker on the ingest queue, the real app. With `consent.review: required` a consent whose video passed the check
is pending_review: nothing plans, renders or airs under it until an admin or reviewer approves it; creators,
agencies and ops cannot approve; the audit log names the approver; a rejected consent stays unusable. The grant
answers 202 with a job at once and checks nothing in the request; a creator holds at most
`consent.max_open_phrases` open code phrases. Fails on the code before the review step (main at 8015ba7)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import select

from api.app import create_app
from studio.db import session_scope
from studio.models import (
    Agency,
    AuditEvent,
    Channel,
    Consent,
    ConsentPhrase,
    Product,
    Script,
    Segment,
    Show,
    utcnow,
)
from tests.conftest import FULL_SCOPE, api_key, require
from tests.integration.conftest import TEXT, celery_on_loopback, consent_form, ingested, wait_job
from tests.media_helpers import free_port
from workers.media.consent_clip import make_consent_video
from workers.render.segment import render_segment_direct
from workers.streamer.air import ChannelAir

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]

@dataclass
class World:
    rt: object
    client: TestClient
    avatar: str
    keys: dict[str, str]
    ids: dict[str, str]
    tmp: Path

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def call(self, role: str, method: str, path: str, **kw):
        return self.client.request(method, path, headers=self.auth(role), **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_footage):
    require("redis-server", "ffmpeg", "espeak-ng")
    tmp = tmp_path_factory.mktemp("review")
    rt, creator, avatar = ingested(tmp, small_footage(), review="required")
    with session_scope(rt.engine) as s:
        agency = Agency(name="Acme")
        product = Product(name="Glow Serum", brand="Lumen", category="beauty")
        channel = Channel(name="review", territories=["US"])
        s.add_all([agency, product, channel])
        s.flush()
        script = Script(product_id=product.id, text=TEXT)
        s.add(script)
        s.flush()
        ids = {"creator": creator.id, "agency": agency.id, "script": script.id, "channel": channel.id}
    keys = {"creator": api_key(rt.engine, role="creator", creator_id=creator.id),
            "agency": api_key(rt.engine, role="agency", agency_id=ids["agency"]),
            "ops": api_key(rt.engine, role="ops"), "reviewer": api_key(rt.engine, role="reviewer"),
            "admin": api_key(rt.engine)}
    with celery_on_loopback(rt, tmp, queue="ingest"):
        yield World(rt, TestClient(create_app(rt)), avatar.id, keys, ids, tmp)


def _submit(w: World, name: str):
    """As the creator: a code phrase, a consent video reading it, and the grant. (response, seconds it took)."""
    phrase = w.call("creator", "POST", f"/api/avatars/{w.avatar}/phrase")
    assert phrase.status_code == 201, phrase.text
    video = make_consent_video(w.tmp / f"{name}.mp4", text=phrase.json()["text"], t0=1000.0)
    now = utcnow()
    body = {"avatar_id": w.avatar, "phrase_id": phrase.json()["id"], "signed_name": "Ava",
            "statement": "I, Ava, consent to a digital clone of my face and voice for the scope below.",
            "starts_at": (now - timedelta(minutes=1)).isoformat(), "ends_at": (now + timedelta(days=30)).isoformat(),
            "scope": dict(FULL_SCOPE)}
    started = time.monotonic()
    res = w.call("creator", "POST", "/api/consents", **consent_form(body, video))
    return res, time.monotonic() - started


def _pending(w: World, name: str) -> str:
    """A consent that passed the check and waits for review; its id."""
    res, _ = _submit(w, name)
    assert res.status_code == 202, res.text
    job = wait_job(w.client, res.json()["job_id"], headers=w.auth("creator"))
    assert job["state"] == "SUCCESS" and job["result"]["status"] == "pending_review", job
    return job["result"]["consent_id"]


def _show(w: World, consent_id: str, role: str = "admin"):
    return w.call(role, "POST", "/api/shows", json={"channel_id": w.ids["channel"], "avatar_id": w.avatar,
                                                     "consent_id": consent_id, "script_ids": [w.ids["script"]],
                                                     "name": f"show {consent_id[:6]}"})


def _render_under(w: World, consent_id: str) -> Segment:
    """A segment planned under the consent (a show of it straight in the database) and rendered."""
    with session_scope(w.rt.engine) as s:
        show = Show(channel_id=w.ids["channel"], avatar_id=w.avatar, consent_id=consent_id, name="direct",
                    script_ids=[w.ids["script"]])
        s.add(show)
        s.flush()
        seg = Segment(channel_id=w.ids["channel"], show_id=show.id, avatar_id=w.avatar, consent_id=consent_id,
                      script_id=w.ids["script"], text=TEXT, seq=int(time.time() * 1000) % 1_000_000)
        s.add(seg)
    render_segment_direct(w.rt, seg.id)
    with session_scope(w.rt.engine) as s:
        return s.get(Segment, seg.id)


def _account_id(w: World, role: str) -> str:
    res = w.call(role, "GET", "/api/me")
    assert res.status_code == 200, res.text
    return res.json()["id"]


def _audit(w: World, kind: str, consent_id: str) -> list[AuditEvent]:
    with session_scope(w.rt.engine) as s:
        return list(s.exec(select(AuditEvent).where(AuditEvent.kind == kind, AuditEvent.subject_id == consent_id)))


def test_consent_post_answers_202_with_a_job_and_runs_no_check_in_the_request(world, monkeypatch):
    import workers.consent.video

    def no_check(*_, **__):
        raise AssertionError("the consent video was checked inside the HTTP request")

    monkeypatch.setattr(workers.consent.video, "verify_consent_video", no_check)  # this process: the API's
    res, seconds = _submit(world, "quick")
    assert res.status_code == 202, res.text
    assert seconds < 2.0, f"the grant took {seconds:.2f} s to answer"
    job_id = res.json()["job_id"]
    with session_scope(world.rt.engine) as s:  # nothing recorded by the request itself
        spent = s.exec(select(ConsentPhrase).where(ConsentPhrase.used_at.is_not(None))
                       .order_by(ConsentPhrase.used_at.desc())).first()
        phrase_id = spent.id
        assert s.exec(select(Consent).where(Consent.phrase_id == phrase_id)).first() is None
    job = wait_job(world.client, job_id, headers=world.auth("creator"))
    assert job["state"] == "SUCCESS", job
    assert job["result"]["status"] == "pending_review" and job["result"]["consent_id"], job
    with session_scope(world.rt.engine) as s:
        assert s.get(Consent, job["result"]["consent_id"]).phrase_id == phrase_id


def test_a_broker_that_is_down_spends_no_phrase_and_keeps_nothing(world, monkeypatch):
    import workers.app

    monkeypatch.setenv("STUDIO_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    monkeypatch.setattr(workers.app, "app", workers.app.make_celery())
    phrase = world.call("creator", "POST", f"/api/avatars/{world.avatar}/phrase").json()
    now = utcnow()
    body = {"avatar_id": world.avatar, "phrase_id": phrase["id"], "signed_name": "Ava",
            "statement": "I, Ava, consent to a digital clone of my face and voice for the scope below.",
            "starts_at": now.isoformat(), "ends_at": (now + timedelta(days=30)).isoformat(), "scope": dict(FULL_SCOPE)}
    video = world.tmp / "any.mp4"
    video.write_bytes(b"\0" * 4096)
    res = world.call("creator", "POST", "/api/consents", **consent_form(body, video))
    assert res.status_code == 503 and "broker (Redis) is unreachable" in res.json()["detail"], res.text
    with session_scope(world.rt.engine) as s:
        assert s.get(ConsentPhrase, phrase["id"]).used_at is None  # the creator may still use it
        s.exec(update(ConsentPhrase).where(ConsentPhrase.id == phrase["id"])
               .values(expires_at=utcnow() - timedelta(seconds=1)))  # out of the way of the phrase limit test
    assert [p.name for p in world.rt.data.uploads.iterdir() if p.name.startswith("consent-")] == []


def test_a_pending_consent_airs_nothing_until_approved(world):
    consent_id = _pending(world, "pending")
    mine = world.call("creator", "GET", f"/api/consents/{consent_id}").json()
    assert mine["status"] == "pending_review" and mine["reviewed_at"] is None
    air = ChannelAir(world.rt, world.ids["channel"])

    # Plan time: no show under it. Render time: its segment is cancelled, nothing rendered. Air time: refused.
    show = _show(world, consent_id)
    assert show.status_code == 422 and "pending_review" in show.text, show.text
    seg = _render_under(world, consent_id)
    assert seg.state == "cancelled" and "pending_review" in seg.error and seg.path is None and seg.stamp is None
    assert not air.consent_holds(consent_id)

    res = world.call("reviewer", "POST", f"/api/consents/{consent_id}/approve")
    assert res.status_code == 200, res.text
    assert res.json()["status"] == "granted"
    assert air.consent_holds(consent_id)
    assert _show(world, consent_id).status_code == 201
    mine = world.call("creator", "GET", f"/api/consents/{consent_id}").json()
    assert mine["status"] == "granted" and mine["reviewed_at"] is not None and mine["review_reason"] is None


def test_only_admins_and_reviewers_review_and_the_audit_log_names_the_approver(world):
    consent_id = _pending(world, "roles")
    for role in ("creator", "agency", "ops"):
        for method, path, body in (("GET", "/api/consents/pending", None),
                                   ("POST", f"/api/consents/{consent_id}/approve", None),
                                   ("POST", f"/api/consents/{consent_id}/reject", {"reason": "not the same person"}),
                                   ("GET", f"/api/consents/{consent_id}/media/video", None),
                                   ("GET", f"/api/consents/{consent_id}/media/footage", None)):
            res = world.call(role, method, path, json=body)
            assert res.status_code == 403, f"{method} {path} as {role}: {res.status_code} {res.text[:200]}"
    with session_scope(world.rt.engine) as s:
        assert s.get(Consent, consent_id).status == "pending_review"

    listed = world.call("reviewer", "GET", "/api/consents/pending").json()
    item = next(c for c in listed if c["id"] == consent_id)
    figures = {f["name"]: f for f in item["figures"]}
    assert figures["face_distance"]["ok"] and figures["liveness.lip_sync"]["ok"] and figures["phrase_score"]["ok"]
    assert item["phrase_text"] and item["creator_name"] == "Ava"
    for which in ("footage", "video"):  # side by side on the review page, from the media store
        media = world.call("reviewer", "GET", item[f"{which}_url"])
        assert media.status_code == 200 and media.headers["content-type"] == "video/mp4" and len(media.content) > 1000

    approved = world.call("reviewer", "POST", f"/api/consents/{consent_id}/approve")
    assert approved.status_code == 200, approved.text
    events = _audit(world, "consent.approved", consent_id)
    assert len(events) == 1
    assert events[0].data["reviewer_account_id"] == _account_id(world, "reviewer")
    assert events[0].data["reviewer_role"] == "reviewer"
    with session_scope(world.rt.engine) as s:
        assert s.get(Consent, consent_id).reviewed_by == _account_id(world, "reviewer")
    # Decided once: a second decision is refused, and the media are no longer the reviewer's to see.
    again = world.call("admin", "POST", f"/api/consents/{consent_id}/reject", json={"reason": "changed my mind"})
    assert again.status_code == 409 and "not pending review" in again.json()["detail"]
    assert world.call("reviewer", "GET", f"/api/consents/{consent_id}/media/video").status_code == 404


def test_a_rejected_consent_stays_unusable_and_the_creator_reads_why(world):
    consent_id = _pending(world, "rejected")
    with session_scope(world.rt.engine) as s:
        video_key = s.get(Consent, consent_id).video_path
    assert world.rt.store.exists(video_key)
    short = world.call("admin", "POST", f"/api/consents/{consent_id}/reject", json={"reason": "  "})
    assert short.status_code == 422
    reason = "The person in the consent video is not the person in the footage."
    res = world.call("admin", "POST", f"/api/consents/{consent_id}/reject", json={"reason": reason})
    assert res.status_code == 200, res.text
    assert res.json()["status"] == "rejected"

    mine = world.call("creator", "GET", f"/api/consents/{consent_id}").json()
    assert mine["status"] == "rejected" and mine["review_reason"] == reason
    events = _audit(world, "consent.rejected", consent_id)
    assert len(events) == 1 and events[0].data["reviewer_account_id"] == _account_id(world, "admin")
    assert events[0].data["reason"] == reason

    assert world.call("reviewer", "POST", f"/api/consents/{consent_id}/approve").status_code == 409
    assert _show(world, consent_id).status_code == 422
    seg = _render_under(world, consent_id)
    assert seg.state == "cancelled" and "rejected" in seg.error and seg.path is None
    assert not ChannelAir(world.rt, world.ids["channel"]).consent_holds(consent_id)
    # The consent video, a person's face and voice, is of no further use: deleted (its hash stays on the log).
    assert not world.rt.store.exists(video_key)
    assert world.call("admin", "GET", f"/api/consents/{consent_id}/media/video").status_code == 404


def test_a_creator_holds_at_most_max_open_phrases(world):
    limit = world.rt.settings.consent.max_open_phrases
    assert limit == 3
    with session_scope(world.rt.engine) as s:
        held = len(s.exec(select(ConsentPhrase).where(ConsentPhrase.used_at.is_(None),
                                                      ConsentPhrase.expires_at > utcnow())).all())
    try:
        for _ in range(limit - held):
            assert world.call("creator", "POST", f"/api/avatars/{world.avatar}/phrase").status_code == 201
        over = world.call("creator", "POST", f"/api/avatars/{world.avatar}/phrase")
        assert over.status_code == 429, over.text
        detail = over.json()["detail"]
        assert f"the limit is {limit}" in detail and "consent.max_open_phrases" in detail
        assert 0 < int(over.headers["Retry-After"]) <= 600
        with session_scope(world.rt.engine) as s:  # one of them expires: one more may be issued
            first = s.exec(select(ConsentPhrase).where(ConsentPhrase.used_at.is_(None),
                                                       ConsentPhrase.expires_at > utcnow())
                           .order_by(ConsentPhrase.issued_at)).first()
            s.exec(update(ConsentPhrase).where(ConsentPhrase.id == first.id)
                   .values(expires_at=utcnow() - timedelta(seconds=1)))
        assert world.call("creator", "POST", f"/api/avatars/{world.avatar}/phrase").status_code == 201
        assert world.call("creator", "POST", f"/api/avatars/{world.avatar}/phrase").status_code == 429
    finally:
        with session_scope(world.rt.engine) as s:  # leave no open phrase behind for the tests after this one
            s.exec(update(ConsentPhrase).where(ConsentPhrase.used_at.is_(None))
                   .values(expires_at=utcnow() - timedelta(seconds=1)))
