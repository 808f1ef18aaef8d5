"""Granting consent through the API (POLICY C1-C4): a code phrase, a signed statement with a complete scope,
and a consent video that is checked (on the ingest queue: redis-server and a Celery worker here) before anything
is recorded. What needs no video is refused at once (422); the video's refusals come as the job's result. Every
refusal path names its reason and leaves no consent row, no kept video and no upload behind; each attempt is on
the audit log. Review is `auto` here (tests/security/test_consent_review.py has the review step)."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from api.app import create_app
from studio.db import session_scope
from studio.models import AuditEvent, Avatar, Consent, ConsentPhrase, utcnow
from tests.conftest import as_admin
from tests.integration.conftest import celery_on_loopback, consent_form, ingested, wait_job
from workers.consent.grant import issue_phrase_direct
from workers.consent.video import CONSENT_REFERENCE, load_reference
from workers.media.consent_clip import make_consent_video

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCOPE = {"brands": [], "categories": ["beauty"], "excluded_categories": ["alcohol", "gambling", "medicine",
         "politics"], "platforms": ["youtube"], "territories": ["US"], "languages": ["en"], "max_hours_per_day": 6}


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_footage):
    tmp = tmp_path_factory.mktemp("grant")
    rt, _, avatar = ingested(tmp, small_footage())
    client = TestClient(create_app(rt))
    as_admin(client, rt.engine)
    with celery_on_loopback(rt, tmp, queue="ingest"):
        yield rt, client, avatar.id, tmp, small_footage()


def _body(avatar_id: str, phrase_id: str, **overrides) -> dict:
    now = utcnow()
    body = {"avatar_id": avatar_id, "phrase_id": phrase_id, "signed_name": "Ava",
            "statement": "I, Ava, consent to a digital clone of my face and voice for the scope below.",
            "starts_at": now.isoformat(), "ends_at": (now + timedelta(days=30)).isoformat(), "scope": SCOPE}
    return {**body, **overrides}


def _grant(client, body: dict, video) -> object:
    """The grant's answer: 422 for what is refused at once, else 202 with the job of the video's check."""
    return client.post("/api/consents", **consent_form(body, video))


def _checked(client, body: dict, video) -> dict:
    """Grant and wait for the check: the job's result (consent_id and status, or problems)."""
    res = _grant(client, body, video)
    assert res.status_code == 202, res.text
    job = wait_job(client, res.json()["job_id"])
    assert job["state"] == "SUCCESS", job
    return job["result"]


def _phrase(client, avatar_id: str) -> dict:
    res = client.post(f"/api/avatars/{avatar_id}/phrase")
    assert res.status_code == 201, res.text
    return res.json()


def _nothing_left(rt, before: int) -> None:
    with session_scope(rt.engine) as s:
        assert len(s.exec(select(Consent)).all()) == before, "a refused grant left a consent row"
    assert [p.name for p in rt.data.uploads.iterdir() if p.name.startswith("consent-")] == []
    kept = rt.data.root / "consents"
    assert not kept.exists() or len(list(kept.iterdir())) == before


def _consents(rt) -> int:
    with session_scope(rt.engine) as s:
        return len(s.exec(select(Consent)).all())


def test_ingest_keeps_the_footage_reference_in_the_bundle(world):
    rt, _, avatar_id, _, _ = world
    with session_scope(rt.engine) as s:
        bundle = rt.local_dir(s.get(Avatar, avatar_id).bundle_path)
    assert (bundle / CONSENT_REFERENCE).is_file()
    assert load_reference(bundle / CONSENT_REFERENCE).descriptor.size > 0


def test_genuine_grant_is_recorded_with_its_video_and_spends_the_phrase(world):
    """POLICY C1, C2: a signed statement with a consent video reading a fresh code phrase is granted, the video kept and
    its hash on the audit log; the phrase is then spent."""
    rt, client, avatar_id, tmp, _ = world
    phrase = _phrase(client, avatar_id)
    assert len(phrase["text"].split()) == 4
    video = make_consent_video(tmp / "genuine.mp4", text=phrase["text"], t0=1000.0)
    result = _checked(client, _body(avatar_id, phrase["id"]), video)
    assert result["status"] == "granted" and result["problems"] == [], result
    consent = client.get(f"/api/consents/{result['consent_id']}").json()
    assert consent["status"] == "granted" and consent["reviewed_at"] is None  # review: auto
    v = consent["verification"]
    assert v["phrase_score"] >= 0.5 and v["face_distance"] < 0.8
    assert consent["scope"]["territories"] == ["US"] and consent["phrase_id"] == phrase["id"]
    kept = rt.data.root / "consents" / consent["id"] / "video.mp4"
    assert kept.is_file() and consent["video_sha256"]
    with session_scope(rt.engine) as s:
        assert s.get(ConsentPhrase, phrase["id"]).used_at is not None
        granted = s.exec(select(AuditEvent).where(AuditEvent.kind == "consent.granted",
                                                  AuditEvent.subject_id == consent["id"])).one()
        assert granted.data["video_sha256"] == consent["video_sha256"]
    # The same phrase again: spent.
    before = _consents(rt)
    again = _grant(client, _body(avatar_id, phrase["id"]), video)
    assert again.status_code == 422 and "already used" in again.text
    _nothing_left(rt, before)


def test_expired_phrase_is_refused(world):
    rt, client, avatar_id, tmp, _ = world
    old = issue_phrase_direct(rt, avatar_id, now=utcnow() - timedelta(minutes=11))
    video = make_consent_video(tmp / "late.mp4", text=old.text, t0=1000.0)
    before = _consents(rt)
    res = _grant(client, _body(avatar_id, old.id), video)
    assert res.status_code == 422
    assert any("expired" in p and old.id in p for p in res.json()["problems"])
    _nothing_left(rt, before)


def _refused(world, name: str, **clip) -> list[str]:
    rt, client, avatar_id, tmp, _ = world
    phrase = _phrase(client, avatar_id)
    text = clip.pop("text", phrase["text"])
    video = clip.pop("video", None) or make_consent_video(tmp / f"{name}.mp4", text=text, t0=1000.0, **clip)
    before = _consents(rt)
    result = _checked(client, _body(avatar_id, phrase["id"]), video)
    assert result["status"] == "refused" and result["consent_id"] is None, result
    _nothing_left(rt, before)
    with session_scope(rt.engine) as s:
        refused = s.exec(select(AuditEvent).where(AuditEvent.kind == "consent.refused")).all()
        assert any(e.data["phrase_id"] == phrase["id"] for e in refused), "the refused attempt is not audited"
    return result["problems"]


def test_wrong_phrase_is_refused(world):
    """POLICY C2: a consent video that does not read the issued phrase is refused."""
    problems = _refused(world, "wrong", text="penguin volcano teapot harbor")
    assert any("the phrase was not heard" in p for p in problems), problems


def test_another_face_is_refused(world):
    """POLICY C2: a consent video of another face than the footage's is refused."""
    problems = _refused(world, "other", seed=11)
    assert any("does not match the avatar's footage" in p for p in problems), problems


def test_a_still_image_is_refused(world):
    problems = _refused(world, "still", still=True)
    assert any("a still image is not a consent recording" in p for p in problems), problems


def test_the_footage_replayed_is_refused(world):
    _, _, _, tmp, footage = world
    cut = tmp / "replay.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "3", "-i", str(footage), "-t", "6", "-c:v", "libx264",
                    "-crf", "26", "-c:a", "aac", str(cut)], check=True)
    problems = _refused(world, "replay", video=cut)
    assert any("replays the avatar's footage" in p for p in problems), problems


def test_a_grant_without_the_face_is_refused_before_the_video_is_read(world):
    """POLICY C1: consent to the face is its own field of the grant; one that withholds it is refused at once,
    before the video is read, and nothing is kept."""
    rt, client, avatar_id, tmp, _ = world
    unread = tmp / "unread.mp4"
    unread.write_bytes(b"never read: the grant is refused before the video is looked at")
    before = _consents(rt)
    res = _grant(client, _body(avatar_id, "cp-unused", face=False), unread)
    assert res.status_code == 422 and any(p.startswith("face is false") for p in res.json()["problems"]), res.text
    _nothing_left(rt, before)


@pytest.mark.parametrize("missing", ["platforms", "territories", "languages", "max_hours_per_day",
                                     "excluded_categories"])
def test_missing_scope_field_is_refused_before_the_video_is_read(world, missing):
    rt, client, avatar_id, tmp, _ = world
    scope = {k: v for k, v in SCOPE.items() if k != missing}
    before = _consents(rt)
    res = _grant(client, _body(avatar_id, "cp-unused", scope=scope), tmp / "genuine.mp4")
    assert res.status_code == 422
    assert any(p.startswith(f"scope.{missing}:") for p in res.json()["problems"]), res.text
    _nothing_left(rt, before)


def test_vague_scope_is_refused(world):
    rt, client, avatar_id, tmp, _ = world
    res = _grant(client, _body(avatar_id, "cp-unused", scope={**SCOPE, "categories": [], "brands": []}),
                 tmp / "genuine.mp4")
    assert res.status_code == 422 and "neither brands nor categories" in res.text


def test_term_in_the_past_is_refused(world):
    rt, client, avatar_id, tmp, _ = world
    phrase = _phrase(client, avatar_id)
    now = utcnow()
    body = _body(avatar_id, phrase["id"], starts_at=(now - timedelta(days=9)).isoformat(),
                 ends_at=(now - timedelta(days=2)).isoformat())
    before = _consents(rt)
    res = _grant(client, body, tmp / "genuine.mp4")
    assert res.status_code == 422 and any("the term ends in the past" in p for p in res.json()["problems"])
    _nothing_left(rt, before)
    with session_scope(rt.engine) as s:  # refused before the video was looked at: the phrase is not spent
        assert s.get(ConsentPhrase, phrase["id"]).used_at is None


def test_not_json_and_not_a_video_are_clear_errors(world, tmp_path):
    rt, client, avatar_id, _, _ = world
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    res = client.post("/api/consents", data={"grant": "{oops"}, files={"video": ("v.mp4", b"x", "video/mp4")})
    assert res.status_code == 422 and "grant is not JSON" in res.text
    problems = _refused(world, "junk", video=junk)
    assert any("not a readable video" in p for p in problems), problems


def test_phrase_for_a_missing_or_deleted_avatar_is_refused(world):
    rt, client, avatar_id, _, _ = world
    assert client.post("/api/avatars/nope/phrase").status_code == 404
    with session_scope(rt.engine) as s:
        gone = Avatar(creator_id=s.get(Avatar, avatar_id).creator_id, name="Old", status="deleted", bundle_path="-",
                      footage_sha256="-", width=360, height=640, fps=25, duration_s=30)
        s.add(gone)
    res = client.post(f"/api/avatars/{gone.id}/phrase")
    assert res.status_code == 422 and "deleted" in res.text
