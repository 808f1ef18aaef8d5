"""The tenancy matrix: every role against every resource and verb, on the real app and a real SQLite database.

Two agencies (A, B), two creators (1 granting A, 2 granting B), an ops account, an admin and nobody. Each row of
MATRIX is a request and, for each caller, the status it must get: 2xx where the role may act on that row, 403 where
the role may never use the verb, 404 where the row belongs to another tenant (exactly as an id that does not exist).
A request a caller is not listed for is not sent as that caller (one that would change the world for the rest,
such as a revocation, is sent only as callers that must be refused).
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.app import create_app_from_env
from studio.accounts import create_account
from studio.config import Settings
from studio.db import upgrade
from studio.keys import init_all_keys
from studio.models import (
    Agency,
    Avatar,
    Channel,
    Consent,
    Creator,
    Destination,
    Product,
    Script,
    Segment,
    Show,
    UploadJob,
    WorkerInfo,
    utcnow,
)
from tests.conftest import FULL_SCOPE, api_key

pytestmark = pytest.mark.integration

ROLES = ("admin", "ops", "reviewer", "agencyA", "agencyB", "creator1", "creator2", "nobody")
DISCLOSED = "Paid partnership with Lumen. Meet the Glow Serum, a light serum for everyday skin care."
RAW_KEY = "live_secret_key_9f8e7d"


def _world(engine) -> dict[str, str]:
    now = utcnow()
    ids: dict[str, str] = {}
    with Session(engine, expire_on_commit=False) as s:
        for tag in "AB":
            agency = Agency(name=f"Agency {tag}")
            s.add(agency)
            s.flush()
            ids[f"agency{tag}"] = agency.id
        for n, tag in (("1", "A"), ("2", "B")):
            creator = Creator(name=f"Creator {n}")
            s.add(creator)
            s.flush()
            avatar = Avatar(creator_id=creator.id, name=f"Clone {n}", bundle_path="-", footage_sha256="-",
                            width=360, height=640, fps=25, duration_s=30)
            s.add(avatar)
            s.flush()
            consent = Consent(creator_id=creator.id, avatar_id=avatar.id, agency_id=ids[f"agency{tag}"],
                              signed_name=f"Creator {n}", statement="I consent to a clone of my face and voice.",
                              starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=30), scope=FULL_SCOPE,
                              statement_sha256="-")
            product = Product(name=f"Serum {tag}", brand="Lumen", category="beauty", agency_id=ids[f"agency{tag}"])
            channel = Channel(name=f"channel {tag}", territories=["US"], agency_id=ids[f"agency{tag}"])
            s.add_all([consent, product, channel])
            s.flush()
            s.add(Destination(channel_id=channel.id, url=f"rtmp://ingest.example/live/{RAW_KEY}",
                              url_masked="rtmp://ingest.example/live/****"))
            script = Script(product_id=product.id, text=DISCLOSED)
            s.add(script)
            s.flush()
            show = Show(channel_id=channel.id, avatar_id=avatar.id, consent_id=consent.id, name=f"show {tag}",
                        script_ids=[script.id])
            s.add(show)
            s.flush()
            s.add(Segment(channel_id=channel.id, show_id=show.id, avatar_id=avatar.id, consent_id=consent.id,
                          script_id=script.id, text=DISCLOSED, seq=0, state="aired", aired_at=now))
            s.add(UploadJob(id=f"job-{n}", creator_id=creator.id))
            ids |= {f"creator{n}": creator.id, f"avatar{n}": avatar.id, f"consent{n}": consent.id,
                    f"product{tag}": product.id, f"channel{tag}": channel.id, f"script{tag}": script.id,
                    f"job{n}": f"job-{n}"}
        for n in "123":  # creator 2's consents waiting for review (consent.review: required)
            pending = Consent(creator_id=ids["creator2"], avatar_id=ids["avatar2"], signed_name="Creator 2",
                              statement="I consent to a clone of my face and voice.", status="pending_review",
                              starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=30), scope=FULL_SCOPE,
                              statement_sha256="-")
            s.add(pending)
            ids[f"pending{n}"] = pending.id
        ids["which"] = "video"  # of a consent's media: the consent video (or "footage")
        ids["upload"] = "upload-0001"  # a voice-over upload's progress id: none was made in this world
        s.add(WorkerInfo(id="render@gpu1", queues=["render"], device="cpu"))
        target = create_account(s, email="target@ops.test", name="Target", role="ops")  # what admins disable
        s.flush()
        ids["opsAccount"] = target.id
        s.commit()
    return ids


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tenancy")
    # A broker nobody listens on: /api/ops/overview must answer without one.
    settings = Settings(data_dir=str(tmp / "data"), services={"redis_url": "redis://127.0.0.1:9/0"})
    init_all_keys(settings)
    upgrade(settings.db_url)  # `studio db upgrade`: the API refuses a schema behind
    app = create_app_from_env(settings)
    engine = app.state.runtime.engine
    ids = _world(engine)
    keys = {"admin": api_key(engine), "ops": api_key(engine, role="ops"), "reviewer": api_key(engine, role="reviewer"),
            "agencyA": api_key(engine, role="agency", agency_id=ids["agencyA"]),
            "agencyB": api_key(engine, role="agency", agency_id=ids["agencyB"]),
            "creator1": api_key(engine, role="creator", creator_id=ids["creator1"]),
            "creator2": api_key(engine, role="creator", creator_id=ids["creator2"])}
    with TestClient(app) as client:
        yield client, ids, keys


def _call(app, role: str, method: str, path: str, body: dict | None = None):
    client, ids, keys = app
    headers = {"Authorization": f"Bearer {keys[role]}"} if role in keys else {}
    return client.request(method, path.format(**ids), json=body, headers=headers)


def _ok(*roles: str, status: int = 200) -> dict[str, int]:
    return dict.fromkeys(roles, status)


# (method, path, body, {caller: status}); "nobody" always gets 401 and is added below.
MATRIX = [
    ("GET", "/api/me", None, _ok("admin", "ops", "reviewer", "agencyA", "creator1")),
    ("GET", "/api/accounts", None, {"admin": 200, "ops": 403, "agencyA": 403, "creator1": 403}),
    ("POST", "/api/accounts", {"email": "x-{agencyA}@ex.com", "name": "X", "role": "ops", "password": "long enough pw"},
     {"admin": 201, "ops": 403, "agencyA": 403, "creator1": 403}),
    ("PATCH", "/api/accounts/{opsAccount}", {"disabled": False},
     {"admin": 200, "ops": 403, "agencyA": 403, "creator1": 403}),
    ("DELETE", "/api/accounts/{opsAccount}/sessions", None,
     {"admin": 204, "ops": 403, "agencyA": 403, "creator1": 403}),
    ("POST", "/api/creators", {"name": "New"}, {"admin": 201, "ops": 403, "agencyA": 403, "creator1": 403}),
    ("GET", "/api/creators/{creator1}", None,
     {"admin": 200, "creator1": 200, "creator2": 404, "agencyA": 404, "ops": 404}),
    ("GET", "/api/creators/{creator1}/aired", None,
     {"admin": 200, "creator1": 200, "creator2": 404, "agencyA": 404, "ops": 404}),
    ("POST", "/api/creators/{creator1}/attestations",
     {"product_id": "{productA}", "kind": "use", "statement": "I use it every day.", "signed_name": "Creator 1"},
     {"admin": 201, "creator1": 201, "creator2": 404, "agencyA": 404, "ops": 404}),
    ("GET", "/api/creators/{creator1}/attestations", None,
     {"admin": 200, "creator1": 200, "creator2": 404, "agencyA": 404, "ops": 404}),
    ("GET", "/api/avatars", None, {"admin": 200, "creator1": 200, "agencyA": 200, "ops": 403}),
    ("GET", "/api/avatars/{avatar1}", None,
     {"admin": 200, "creator1": 200, "creator2": 404, "agencyA": 200, "agencyB": 404, "ops": 404}),
    ("POST", "/api/avatars/{avatar1}/phrase", None,
     {"admin": 201, "creator1": 201, "creator2": 404, "agencyA": 404, "agencyB": 404, "ops": 404}),
    ("GET", "/api/jobs/{job1}", None, {"creator2": 404, "agencyA": 404, "ops": 404}),
    ("GET", "/api/consents", None, {"admin": 200, "creator1": 200, "agencyA": 200, "ops": 403}),
    ("GET", "/api/consents/{consent1}", None,
     {"admin": 200, "creator1": 200, "creator2": 404, "agencyA": 200, "agencyB": 404, "ops": 404}),
    ("GET", "/api/consents/{consent1}/approvals", None,
     {"admin": 200, "creator1": 200, "creator2": 404, "agencyA": 200, "agencyB": 404, "ops": 404}),
    ("POST", "/api/consents/{consent1}/approvals", {"script_id": "{scriptA}", "signed_name": "Creator 1"},
     {"admin": 201, "creator1": 201, "creator2": 404, "agencyA": 404, "agencyB": 404, "ops": 404}),
    ("GET", "/api/consents/{consent1}/scripts", None,
     {"admin": 200, "creator1": 200, "creator2": 404, "agencyA": 200, "agencyB": 404, "ops": 404}),
    ("POST", "/api/consents/{consent1}/revoke", None, {"creator2": 404, "agencyA": 404, "agencyB": 404, "ops": 404}),
    ("GET", "/api/consents/{consent1}/certificate", None, {"creator2": 404, "agencyA": 404, "ops": 404}),
    ("POST", "/api/agencies", {"name": "C"}, {"admin": 201, "ops": 403, "agencyA": 403, "creator1": 403}),
    ("GET", "/api/agencies/{agencyA}/avatars", None,
     {"admin": 200, "agencyA": 200, "agencyB": 404, "creator1": 404, "ops": 404}),
    ("GET", "/api/channels", None, {"admin": 200, "ops": 200, "agencyA": 200, "creator1": 403}),
    ("POST", "/api/channels", {"name": "new", "territories": ["US"]},
     {"admin": 201, "agencyA": 201, "ops": 403, "creator1": 403}),
    ("POST", "/api/channels", {"name": "theirs", "territories": ["US"], "agency_id": "{agencyB}"},
     {"admin": 201, "agencyA": 403}),
    ("GET", "/api/channels/{channelA}", None,
     {"admin": 200, "ops": 200, "agencyA": 200, "agencyB": 404, "creator1": 404}),
    ("GET", "/api/channels/{channelA}/status", None,
     {"admin": 200, "ops": 200, "agencyA": 200, "agencyB": 404, "creator1": 404}),
    ("GET", "/api/channels/{channelA}/segments", None,
     {"admin": 200, "ops": 200, "agencyA": 200, "agencyB": 404, "creator1": 404}),
    ("GET", "/api/channels/{channelA}/preview.jpg", None, {"agencyB": 404, "creator1": 404}),
    ("GET", "/api/products", None, {"admin": 200, "agencyA": 200, "ops": 403, "creator1": 403}),
    ("POST", "/api/products", {"name": "Gel", "brand": "Lumen", "category": "beauty"},
     {"admin": 201, "agencyA": 201, "ops": 403, "creator1": 403}),
    ("GET", "/api/scripts", None, {"admin": 200, "agencyA": 200, "ops": 403, "creator1": 403}),
    ("GET", "/api/scripts/{scriptA}", None, {"admin": 200, "agencyA": 200, "agencyB": 404, "ops": 404,
                                             "creator1": 404}),
    ("POST", "/api/scripts", {"product_id": "{productA}", "text": DISCLOSED},
     {"admin": 201, "agencyA": 201, "agencyB": 404, "ops": 403, "creator1": 403}),
    ("PATCH", "/api/scripts/{scriptA}", {"text": DISCLOSED},
     {"admin": 200, "agencyA": 200, "agencyB": 404, "ops": 403, "creator1": 403}),
    # This world has no voice-overs: 404 for all who may see the script (its agency, a creator whose consent
    # reaches it), and the same 404 for everyone else. Uploads (multipart): tests/integration/test_voiceover_flow.py.
    ("GET", "/api/scripts/{scriptA}/voiceover", None,
     {"admin": 404, "agencyA": 404, "agencyB": 404, "ops": 404, "creator1": 404, "creator2": 404}),
    ("GET", "/api/scripts/{scriptA}/voiceover/audio", None, {"agencyA": 404, "agencyB": 404, "creator2": 404}),
    ("GET", "/api/scripts/{scriptA}/voiceover/progress/{upload}", None,
     {"admin": 404, "agencyA": 404, "agencyB": 404, "ops": 404, "creator1": 404, "creator2": 404}),
    ("POST", "/api/scripts/{scriptA}/voiceover/approve", {"signed_name": "Creator 1"},
     {"creator1": 404, "agencyB": 404, "creator2": 404}),
    ("DELETE", "/api/scripts/{scriptA}/voiceover", None, {"agencyA": 404, "agencyB": 404, "creator2": 404}),
    ("PUT", "/api/avatars/{avatar1}/voice", {"voice": "tts"},
     {"admin": 200, "creator1": 200, "creator2": 404, "agencyA": 404, "ops": 404}),
    ("GET", "/api/shows", None, {"admin": 200, "ops": 200, "agencyA": 200, "creator1": 403}),
    ("POST", "/api/shows", {"channel_id": "{channelA}", "avatar_id": "{avatar1}", "consent_id": "{consent1}",
                            "script_ids": ["{scriptA}"], "name": "evening", "agency_id": "{agencyA}"},
     {"admin": 201, "agencyA": 201, "agencyB": 403, "ops": 403, "creator1": 403}),  # B may not act for A
    ("POST", "/api/shows", {"channel_id": "{channelB}", "avatar_id": "{avatar1}", "consent_id": "{consent1}",
                            "script_ids": ["{scriptA}"], "name": "poach"}, {"agencyA": 404}),
    ("GET", "/api/consents/pending", None,
     {"admin": 200, "reviewer": 200, "ops": 403, "agencyA": 403, "creator1": 403, "creator2": 403}),
    ("POST", "/api/consents/{pending1}/approve", None,
     {"reviewer": 200, "ops": 403, "agencyA": 403, "creator2": 403}),  # not even the creator approves their own
    ("POST", "/api/consents/{pending2}/reject", {"reason": "not the person in the footage"},
     {"admin": 200, "ops": 403, "agencyB": 403, "creator2": 403}),
    ("GET", "/api/consents/{pending3}/media/{which}", None,  # this world keeps no media: 404 for those who may see
     {"admin": 404, "reviewer": 404, "ops": 403, "agencyA": 403, "creator2": 403}),
    ("GET", "/api/workers", None, {"admin": 200, "ops": 200, "agencyA": 403, "creator1": 403}),
    ("GET", "/api/ops/overview", None, {"admin": 200, "ops": 200, "agencyA": 403, "creator1": 403}),
]


def _fill(value, ids):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


CASES = [pytest.param(method, path, body, role, status, id=f"{method} {path} as {role}")
         for method, path, body, expect in MATRIX
         for role, status in {**expect, "nobody": 401}.items()]


@pytest.mark.parametrize(("method", "path", "body", "role", "status"), CASES)
def test_matrix(app, method, path, body, role, status):
    _, ids, _ = app
    res = _call(app, role, method, path, _fill(body, ids))
    assert res.status_code == status, f"{method} {path} as {role}: {res.status_code} {res.text[:300]}"
    if status >= 400:
        problem = res.json()
        assert res.headers["content-type"].startswith("application/problem+json")
        assert problem["status"] == status and problem["detail"]
    if status == 404:  # another tenant's row reads exactly as a missing one: nothing to probe
        assert "does not exist" in res.json()["detail"] or "deletion certificate" in res.json()["detail"] \
            or "not airing" in res.json()["detail"]


def test_matrix_covers_every_route_and_every_role(app):
    routes = {(m, _shape(r.path)) for r in app[0].app.routes if r.path.startswith("/api/")
              for m in getattr(r, "methods", ()) if m != "HEAD"}
    covered = {(m, _shape(p)) for m, p, _, _ in MATRIX} | SELF_SERVICE
    assert routes - covered == set(), "routes missing from the tenancy matrix"
    assert {role for *_, expect in MATRIX for role in expect} | {"nobody"} == set(ROLES)


# The caller's own account and sign-in, the same for every role, and the uploads (multipart bodies: footage in
# tests/integration/test_api_accounts.py, voice-overs in tests/integration/test_voiceover_flow.py).
SELF_SERVICE = {("POST", "/api/auth/login"), ("POST", "/api/auth/logout"), ("POST", "/api/auth/signup"),
                ("GET", "/api/me/api-keys"), ("POST", "/api/me/api-keys"), ("DELETE", "/api/me/api-keys/{}"),
                ("POST", "/api/creators/{}/avatars"), ("POST", "/api/consents"), ("POST", "/api/scripts/{}/voiceover")}


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path.split("?")[0])


REVIEW_ROUTES = {"/api/me", "/api/consents/pending", "/api/consents/{}/approve", "/api/consents/{}/reject",
                 "/api/consents/{}/media/{}"}


@pytest.mark.parametrize(("method", "path", "body"), [
    pytest.param(m, p, b, id=f"{m} {p}") for m, p, b, _ in MATRIX if _shape(p) not in REVIEW_ROUTES])
def test_a_reviewer_reaches_nothing_but_consent_review(app, method, path, body):
    """A reviewer approves or rejects consents, sees what that needs, and nothing else: every other route refuses
    them (403 for a verb their role may not use, 404 for a row that is not theirs)."""
    _, ids, _ = app
    res = _call(app, "reviewer", method, path, _fill(body, ids))
    assert res.status_code in (403, 404), f"{method} {path} as reviewer: {res.status_code} {res.text[:300]}"


def test_lists_hold_only_the_callers_own_rows(app):
    _, ids, _ = app

    def listed(role, path, key="id"):
        res = _call(app, role, "GET", path)
        assert res.status_code == 200, res.text
        return {row[key] for row in res.json()}

    assert listed("creator1", "/api/avatars") == {ids["avatar1"]}
    assert listed("creator2", "/api/avatars") == {ids["avatar2"]}
    assert listed("agencyA", "/api/avatars") == {ids["avatar1"]}
    assert listed("agencyB", "/api/avatars") == {ids["avatar2"]}
    assert listed("creator1", "/api/consents") == {ids["consent1"]}
    assert listed("agencyB", "/api/consents") == {ids["consent2"]}
    assert ids["channelB"] not in listed("agencyA", "/api/channels")
    assert ids["channelA"] in listed("agencyA", "/api/channels")
    assert {ids["channelA"], ids["channelB"]} <= listed("ops", "/api/channels")
    assert ids["productB"] not in listed("agencyA", "/api/products")
    assert ids["scriptB"] not in listed("agencyA", "/api/scripts")
    assert listed("agencyA", "/api/shows", "channel_id") <= listed("agencyA", "/api/channels")
    assert listed("creator1", "/api/creators/{creator1}/aired", "channel_id") == {ids["channelA"]}
    assert listed("creator1", "/api/creators/{creator1}/aired", "channel_name") == {"channel A"}
    assert listed("creator1", "/api/consents/{consent1}/scripts", "script_id") == {ids["scriptA"]}
    aired = _call(app, "agencyA", "GET", "/api/channels/{channelA}/segments?state=aired&newest_first=true")
    assert [s["state"] for s in aired.json()] == ["aired"]
    assert _call(app, "agencyA", "GET", "/api/channels/{channelA}/segments?state=bogus").status_code == 422


def test_stream_keys_are_never_shown_to_any_role(app):
    for role in ("admin", "ops", "agencyA"):
        for path in ("/api/channels", "/api/channels/{channelA}", "/api/channels/{channelA}/status",
                     *(["/api/ops/overview"] if role != "agencyA" else [])):
            res = _call(app, role, "GET", path)
            assert res.status_code == 200 and RAW_KEY not in res.text, (role, path)


def test_pagination_headers(app):
    res = _call(app, "admin", "GET", "/api/channels?limit=1")
    assert res.status_code == 200 and len(res.json()) == 1
    total = int(res.headers["x-total-count"])
    assert total >= 2 and 'rel="next"' in res.headers["link"] and "offset=1" in res.headers["link"]
    last = _call(app, "admin", "GET", f"/api/channels?limit=1&offset={total - 1}")
    assert len(last.json()) == 1 and 'rel="next"' not in last.headers.get("link", "")
    assert 'rel="prev"' in last.headers["link"]
    bad = _call(app, "admin", "GET", "/api/channels?limit=0")
    assert bad.status_code == 422 and "limit" in bad.json()["detail"]
