"""Exposure (issue 15, Low): /metrics only to its bearer token, files for the stack's own user only (umask 077), and
no answer that tells an agency or a creator about another tenant's ids."""

from __future__ import annotations

import stat
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.app import create_app_from_env
from studio.config import Settings
from studio.db import upgrade
from studio.keys import init_all_keys
from studio.models import Agency, Avatar, Channel, Consent, Creator, Product, Script, utcnow
from tests.conftest import FULL_SCOPE, api_key, studio_env

STUDIO = str(Path(__import__("sys").executable).with_name("studio"))
TOKEN = "a-metrics-token-for-the-tests-0123"


def _app(tmp_path, **settings):
    settings = Settings(data_dir=str(tmp_path / "data"), **settings)
    init_all_keys(settings)
    upgrade(settings.db_url, data_dir=settings.data_path)
    return create_app_from_env(settings)


# --- /metrics -------------------------------------------------------------------------------------------------
def test_metrics_answers_401_without_the_bearer_token(tmp_path):
    with TestClient(_app(tmp_path, metrics_token=TOKEN)) as client:
        res = client.get("/metrics")
        assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in res.text
        assert client.get("/metrics", headers={"Authorization": "Bearer not-the-token"}).status_code == 401
        admin = {"Authorization": f"Bearer {api_key(client.app.state.runtime.engine)}"}
        assert client.get("/metrics", headers=admin).status_code == 401  # an API key is not the metrics token
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and b"studio_segments" in ok.content


def test_the_cli_makes_a_private_metrics_token_that_metrics_accepts(tmp_path):
    data = tmp_path / "data"
    done = subprocess.run([STUDIO, "keys", "init"], env=studio_env(data), capture_output=True, text=True,
                          timeout=120)  # what `studio up` does first (api.cli._runtime)
    assert done.returncode == 0, done.stderr
    path = data / "keys" / "metrics.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with TestClient(_app(tmp_path)) as client:
        assert client.get("/metrics").status_code == 401
        token = path.read_text().strip()
        assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200


# --- umask 077 ------------------------------------------------------------------------------------------------
def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]
            if not p.is_symlink()}


def test_what_the_real_ingest_writes_is_not_world_readable(tmp_path, small_footage):
    data = tmp_path / "data"
    config = tmp_path / "studio.yaml"
    config.write_text("media:\n  width: 360\n  height: 640\n")
    made = subprocess.run([STUDIO, "keys", "init", "-c", str(config)], env=studio_env(data), capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    done = subprocess.run([STUDIO, "avatar", "create", "--name", "Ava", "--footage", str(small_footage()), "--json",
                           "-c", str(config)], env=studio_env(data), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    modes = _modes(data)
    assert modes["studio.db"] == 0o600
    assert any(name.startswith("bundles") for name in modes), sorted(modes)
    # The C2PA certificates are public by design (readers are given them): studio.keys sets them 0644 itself.
    public = {"keys/c2pa-root.pem", "keys/c2pa-signer.pem"}
    loose = {name: oct(mode) for name, mode in modes.items() if mode & 0o077 and name not in public}
    assert loose == {}, loose  # nothing readable by group or others: database, bundles, keys, folders


# --- other tenants' ids ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    app = _app(tmp_path_factory.mktemp("tenants"))
    now = utcnow()
    with TestClient(app) as client:
        engine = app.state.runtime.engine
        with Session(engine, expire_on_commit=False) as s:
            ours, theirs = Agency(name="Ours"), Agency(name="Theirs")
            ava = Creator(name="Ava")
            s.add_all([ours, theirs, ava])
            s.flush()
            avatar = Avatar(creator_id=ava.id, name="Ava", bundle_path="-", footage_sha256="-", width=360,
                            height=640, fps=25, duration_s=30)
            s.add(avatar)
            s.flush()
            consent = Consent(creator_id=ava.id, avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                              statement_sha256="-", starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=1),
                              scope=FULL_SCOPE, agency_id=theirs.id)
            our_product = Product(name="Glow Serum", brand="Lumen", category="beauty", agency_id=ours.id)
            their_product = Product(name="Tent", brand="Camp", category="outdoor", agency_id=theirs.id)
            channel = Channel(name="ours", territories=["US"], agency_id=ours.id)
            s.add_all([consent, our_product, their_product, channel])
            s.flush()
            our_script = Script(product_id=our_product.id, text="Paid partnership with Lumen Labs. A light serum.")
            s.add(our_script)
            s.commit()
        client.ids = {"ours": ours.id, "theirs": theirs.id, "ava": ava.id, "avatar": avatar.id, "consent": consent.id,
                      "our_product": our_product.id, "their_product": their_product.id, "channel": channel.id,
                      "our_script": our_script.id}
        client.as_ours = {"Authorization": f"Bearer {api_key(engine, role='agency', agency_id=ours.id)}"}
        client.as_ava = {"Authorization": f"Bearer {api_key(engine, role='creator', creator_id=ava.id)}"}
        yield client


def test_a_show_under_another_agencys_consent_answers_404_like_a_missing_one(world):
    ids = world.ids
    show = {"channel_id": ids["channel"], "avatar_id": ids["avatar"], "name": "s", "script_ids": [ids["our_script"]]}
    theirs = world.post("/api/shows", json={**show, "consent_id": ids["consent"]}, headers=world.as_ours)
    missing = world.post("/api/shows", json={**show, "consent_id": "no-such-consent"}, headers=world.as_ours)
    assert theirs.status_code == missing.status_code == 404, theirs.text
    assert theirs.json()["detail"] == f"consent {ids['consent']!r} does not exist"
    assert ids["theirs"] not in theirs.text


def test_an_approval_only_for_scripts_the_consent_reaches(world):
    ids = world.ids
    # The consent grants "Theirs"; the script is of "Ours"' product: not the creator's to approve here.
    res = world.post(f"/api/consents/{ids['consent']}/approvals", json={"script_id": ids["our_script"],
                                                                        "signed_name": "Ava"}, headers=world.as_ava)
    missing = world.post(f"/api/consents/{ids['consent']}/approvals", json={"script_id": "no-such-script",
                                                                            "signed_name": "Ava"}, headers=world.as_ava)
    assert res.status_code == missing.status_code == 404, res.text
    assert res.json()["detail"] == f"script {ids['our_script']!r} does not exist"


def test_an_attestation_only_for_products_the_creators_consents_reach(world):
    ids = world.ids
    body = {"kind": "use", "statement": "I have used it daily since March", "signed_name": "Ava"}
    res = world.post(f"/api/creators/{ids['ava']}/attestations", json={**body, "product_id": ids["our_product"]},
                     headers=world.as_ava)
    assert res.status_code == 404 and res.json()["detail"] == f"product {ids['our_product']!r} does not exist"
    ok = world.post(f"/api/creators/{ids['ava']}/attestations", json={**body, "product_id": ids["their_product"]},
                    headers=world.as_ava)
    assert ok.status_code == 201, ok.text
