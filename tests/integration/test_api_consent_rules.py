"""Shows, scripts, approvals, attestations and agencies through the API on a real SQLite database: what a
consent allows (POLICY C3, C4, S1, S2, S4, D1), each refusal naming its rule."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import create_app_from_env
from studio.config import Settings
from studio.db import session_scope, upgrade
from studio.keys import init_all_keys
from studio.models import Avatar, Consent, utcnow
from tests.conftest import FULL_SCOPE, as_admin

pytestmark = pytest.mark.integration

DISCLOSED = "Paid partnership with Lumen. Meet the Glow Serum, a light serum for everyday skin care."
FIRST_PERSON = "Paid partnership with Lumen. I use the Glow Serum every morning and it feels light."


@pytest.fixture
def api(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    init_all_keys(settings)
    upgrade(settings.db_url)  # `studio db upgrade`: the API refuses a schema behind
    app = create_app_from_env(settings)
    with TestClient(app) as c:
        c.rt = app.state.runtime
        as_admin(c, c.rt.engine)
        yield c


def _world(api, *, agency: str | None = None, approval: bool = False, scope: dict | None = None) -> dict:
    creator = api.post("/api/creators", json={"name": "Ava"}).json()["id"]
    with session_scope(api.rt.engine) as s:
        avatar = Avatar(creator_id=creator, name="Ava", bundle_path="-", footage_sha256="-", width=720,
                        height=1280, fps=25, duration_s=60)
        s.add(avatar)
        s.flush()
        now = utcnow()
        consent = Consent(creator_id=creator, avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                          starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=30),
                          scope=scope or FULL_SCOPE, statement_sha256="-", agency_id=agency,
                          require_script_approval=approval)
        s.add(consent)
    product = api.post("/api/products", json={"name": "Glow Serum", "brand": "Lumen", "category": "beauty"}).json()
    script = api.post("/api/scripts", json={"product_id": product["id"], "text": DISCLOSED}).json()
    channel = api.post("/api/channels", json={"name": "main", "territories": ["US"]}).json()
    return {"creator": creator, "avatar": avatar.id, "consent": consent.id, "product": product["id"],
            "script": script["id"], "channel": channel["id"]}


def _show(api, w: dict, **overrides):
    body = {"channel_id": w["channel"], "avatar_id": w["avatar"], "consent_id": w["consent"], "name": "s",
            "script_ids": [w["script"]], **overrides}
    return api.post("/api/shows", json=body)


def test_a_show_within_the_consent_is_created(api):
    w = _world(api)
    res = _show(api, w)
    assert res.status_code == 201, res.text
    assert res.json()["awaiting_approval"] == []


def test_channel_territory_outside_the_scope_is_refused(api):
    w = _world(api)
    de = api.post("/api/channels", json={"name": "de", "territories": ["DE"]}).json()
    res = _show(api, w, channel_id=de["id"])
    assert res.status_code == 422
    assert any(f["rule"] == "C3" and "territory DE" in f["message"] for f in res.json()["findings"])


def test_destination_platform_outside_the_scope_is_refused(api):
    w = _world(api)
    tw = api.post("/api/channels", json={"name": "tw", "territories": ["US"], "destinations": [
        {"url": "rtmp://live.twitch.tv/app/KEY123", "platform": "twitch"}]}).json()
    res = _show(api, w, channel_id=tw["id"])
    assert res.status_code == 422
    assert any("platform twitch" in f["message"] for f in res.json()["findings"]), res.text


def test_channel_without_territories_is_refused_with_the_field_named(api):
    res = api.post("/api/channels", json={"name": "nowhere"})
    assert res.status_code == 422 and res.json()["errors"][0]["loc"] == ["body", "territories"]
    res = api.post("/api/channels", json={"name": "bad", "territories": ["USA"]})
    assert res.status_code == 422 and "ISO 3166-1 alpha-2" in res.text


def test_script_outside_the_scope_is_refused_at_show_time(api):
    w = _world(api, scope={**FULL_SCOPE, "categories": ["outdoor"]})
    res = _show(api, w)
    assert res.status_code == 422
    assert any(f["rule"] == "S4.category" for f in res.json()["findings"]), res.text


def test_script_without_disclosure_is_refused_at_save(api):
    w = _world(api)
    res = api.post("/api/scripts", json={"product_id": w["product"], "text": "Meet the Glow Serum, so light."})
    assert res.status_code == 422
    finding = res.json()["findings"][0]
    assert finding["rule"] == "S1.disclosure" and finding["fix"]


def test_unattested_first_person_claim_is_refused_until_the_creator_attests_it(api):
    w = _world(api)
    res = api.post("/api/scripts", json={"product_id": w["product"], "text": FIRST_PERSON})
    assert res.status_code == 422
    assert any(f["rule"] == "S2.first_person" and "use" in f["words"].lower()
               for f in res.json()["findings"]), res.text
    # Someone other than the creator cannot attest for them.
    res = api.post(f"/api/creators/{w['creator']}/attestations", json={
        "product_id": w["product"], "kind": "use", "statement": "I use it daily.", "signed_name": "Agency Bob"})
    assert res.status_code == 403
    res = api.post(f"/api/creators/{w['creator']}/attestations", json={
        "product_id": w["product"], "kind": "use", "statement": "I have used it every morning since March.",
        "signed_name": "Ava"})
    assert res.status_code == 201, res.text
    script = api.post("/api/scripts", json={"product_id": w["product"], "text": FIRST_PERSON})
    assert script.status_code == 201, script.text
    assert _show(api, w, script_ids=[script.json()["id"]]).status_code == 201


def test_another_creators_attestation_does_not_cover_this_creator_at_show_time(api):
    w = _world(api)
    # Another creator whose own consent reaches the product (attestations are tied to the creator's consents).
    other = _world(api)["creator"]
    assert api.post(f"/api/creators/{other}/attestations", json={
        "product_id": w["product"], "kind": "use", "statement": "I use it every day, honestly.",
        "signed_name": "Ava"}).status_code == 201
    script = api.post("/api/scripts", json={"product_id": w["product"], "text": FIRST_PERSON})
    assert script.status_code == 201  # some creator attested it: the script may be saved
    res = _show(api, w, script_ids=[script.json()["id"]])  # but Ava never did
    assert res.status_code == 422
    assert any(f["rule"] == "S2.first_person" for f in res.json()["findings"]), res.text


def test_scripts_await_the_creators_approval_when_the_consent_requires_it(api):
    w = _world(api, approval=True)
    res = _show(api, w)
    assert res.status_code == 201 and res.json()["awaiting_approval"] == [w["script"]]
    wrong = api.post(f"/api/consents/{w['consent']}/approvals", json={"script_id": w["script"],
                                                                     "signed_name": "Agency Bob"})
    assert wrong.status_code == 403
    ok = api.post(f"/api/consents/{w['consent']}/approvals", json={"script_id": w["script"], "signed_name": "ava"})
    assert ok.status_code == 201
    assert [a["script_id"] for a in api.get(f"/api/consents/{w['consent']}/approvals").json()] == [w["script"]]
    assert _show(api, w).json()["awaiting_approval"] == []


def test_an_agency_sees_only_avatars_granted_to_it_and_must_name_itself(api):
    acme = api.post("/api/agencies", json={"name": "Acme"}).json()["id"]
    other = api.post("/api/agencies", json={"name": "Other"}).json()["id"]
    w = _world(api, agency=acme)
    _world(api)  # a second creator's clone, granted to no agency
    assert [a["id"] for a in api.get(f"/api/agencies/{acme}/avatars").json()] == [w["avatar"]]
    assert api.get(f"/api/agencies/{other}/avatars").json() == []
    assert _show(api, w).status_code == 403  # the consent grants Acme; the show must name it
    res = _show(api, w, agency_id=other)
    assert res.status_code == 403 and acme in res.text
    assert _show(api, w, agency_id=acme).status_code == 201


def test_a_show_ending_after_the_consent_is_refused(api):
    w = _world(api)
    res = _show(api, w, ends_at=(utcnow() + timedelta(days=90)).isoformat())
    assert res.status_code == 422 and "C4" in res.text
