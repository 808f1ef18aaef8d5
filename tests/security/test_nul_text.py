"""NUL characters in untrusted text: PostgreSQL text cannot hold U+0000, so a name, script, id or query value carrying
one (`\\u0000` in JSON, `%00` in the URL) failed in the database as a 500 after the route had begun its work. The
API refuses it first with 422 naming where it is (api.nul_guard). On a real PostgreSQL (the fleet's database), where
the 500 happened; SQLite stores the NUL silently."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from api.app import create_app_from_env
from studio.config import Settings
from studio.keys import init_all_keys
from studio.models import Creator, Product, Script
from tests.conftest import FULL_SCOPE, api_key, db_show
from tests.integration.conftest import agency_script

pytestmark = pytest.mark.integration

DISCLOSED = "Paid partnership with Lumen. Meet the Glow Serum, a light serum for everyday skin care."


@pytest.fixture(scope="module")
def client(pg_server, tmp_path_factory):
    """The app on a database of its own on the run's PostgreSQL, with a show's rows (db_show), an agency with a
    product and a script, and API keys of an admin, that agency and the show's creator."""
    settings = Settings(data_dir=str(tmp_path_factory.mktemp("nul") / "data"),
                        database_url=pg_server.create_database())
    init_all_keys(settings)
    app = create_app_from_env(settings)
    engine = app.state.runtime.engine
    with TestClient(app, raise_server_exceptions=False) as c:
        c.world = db_show(engine)
        made = agency_script(app.state.runtime, DISCLOSED, product=("Glow Serum", "Lumen", "beauty"))
        with Session(engine) as s:
            creator_id = s.exec(select(Creator.id)).one()
        c.world |= {"product": made["product"], "agency_script": made["script"], "creator": creator_id}
        c.keys = {"admin": api_key(engine), "agency": api_key(engine, role="agency", agency_id=made["agency"]),
                  "creator": api_key(engine, role="creator", creator_id=creator_id)}
        c.engine = engine
        yield c


def _as(client, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.keys[role]}"}


def _refused(res, where: str, loc: list) -> None:
    assert res.status_code == 422, res.text
    assert res.headers["content-type"] == "application/problem+json"
    body = res.json()
    assert body["detail"].startswith(f"{where} holds a NUL character"), body
    assert body["errors"] == [{"loc": loc, "msg": "holds a NUL character", "type": "nul_character"}], body


def test_a_nul_in_a_json_field_is_refused_and_nothing_is_stored(client):
    res = client.post("/api/products", headers=_as(client, "agency"),
                      json={"name": "Se\0rum", "brand": "NulBrand", "category": "beauty"})
    _refused(res, "body.name", ["body", "name"])
    with Session(client.engine) as s:
        assert s.exec(select(Product).where(Product.brand == "NulBrand")).all() == []


def test_a_nul_in_a_nested_json_field_is_refused_naming_its_place(client):
    w = client.world
    res = client.post("/api/shows", headers=_as(client, "admin"),
                      json={"channel_id": w["channel"], "avatar_id": w["avatar"], "consent_id": w["consent"],
                            "name": "nul show", "script_ids": [w["script"], "x\0"]})
    _refused(res, "body.script_ids[1]", ["body", "script_ids", 1])


def test_a_nul_in_an_edited_script_is_refused_and_the_text_is_kept(client):
    sid = client.world["agency_script"]
    with Session(client.engine) as s:
        before = s.get(Script, sid).text
    res = client.patch(f"/api/scripts/{sid}", headers=_as(client, "agency"), json={"text": DISCLOSED + " \0"})
    _refused(res, "body.text", ["body", "text"])
    with Session(client.engine) as s:
        assert s.get(Script, sid).text == before


def test_a_nul_in_a_path_id_is_refused_naming_the_parameter(client):
    res = client.get(f"/api/scripts/{client.world['agency_script']}%00", headers=_as(client, "agency"))
    _refused(res, "path parameter 'script_id'", ["path", "script_id"])


def test_a_nul_in_a_query_parameter_is_refused_naming_it(client):
    res = client.get("/api/scripts?product_id=a%00b", headers=_as(client, "agency"))
    _refused(res, "query parameter 'product_id'", ["query", "product_id"])


def test_a_nul_in_the_footage_name_is_refused_before_the_upload_is_read(client):
    res = client.post(f"/api/creators/{client.world['creator']}/avatars?name=Ava%00", headers=_as(client, "creator"),
                      files={"file": ("clip.mp4", b"\0" * 1024, "video/mp4")})
    _refused(res, "query parameter 'name'", ["query", "name"])
    assert list(client.app.state.runtime.data.uploads.iterdir()) == []


def test_a_nul_in_the_consent_grant_form_field_is_refused_naming_it(client):
    w = client.world
    grant = {"signed_name": "Ava", "statement": "I consent to a clone of my face and voice.", "face": True,
             "starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-02-01T00:00:00Z", "avatar_id": w["avatar"] + "\0",
             "scope": FULL_SCOPE, "phrase_id": "p"}
    res = client.post("/api/consents", headers=_as(client, "creator"), data={"grant": json.dumps(grant)},
                      files={"video": ("consent.mp4", b"\0" * 1024, "video/mp4")})
    _refused(res, "grant.avatar_id", ["grant", "avatar_id"])
    assert list(client.app.state.runtime.data.uploads.iterdir()) == []


def test_an_escaped_backslash_before_u0000_is_text_and_is_stored(client):
    """`"\\\\u0000"` in JSON is a backslash and `u0000`, not a NUL: stored as sent, in a product and a script."""
    res = client.post("/api/products", headers=_as(client, "agency"),
                      json={"name": "Se\\u0000rum", "brand": "Lumen", "category": "beauty"})
    assert res.status_code == 201, res.text
    assert b'"Se\\\\u0000rum"' in res.request.content
    assert res.json()["name"] == "Se\\u0000rum"
    sid = client.world["agency_script"]
    res = client.patch(f"/api/scripts/{sid}", headers=_as(client, "agency"), json={"text": DISCLOSED + " \\u0000"})
    assert res.status_code == 200, res.text
    with Session(client.engine) as s:
        assert s.get(Script, sid).text == DISCLOSED + " \\u0000"
