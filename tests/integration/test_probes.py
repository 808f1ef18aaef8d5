"""/livez and /readyz on the real app: readiness is a registry of named checks (the media store adds its own),
each answered with ok/failed and a category, never with the exception's text; X-Request-ID is echoed or made."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app_from_env
from api.health import ReadinessCheck
from studio.config import Settings
from studio.db import SchemaBehind, upgrade
from studio.keys import init_all_keys
from tests.media_helpers import free_port

pytestmark = pytest.mark.integration
SECRET_PATH = "/srv/secret-mount/bucket-credentials"


@pytest.fixture
def settings(tmp_path):
    # Nothing listens on the broker's port: readiness reports it at once.
    settings = Settings(data_dir=str(tmp_path / "data"), services={"redis_port": free_port()})
    init_all_keys(settings)
    return settings


def test_the_api_refuses_a_database_behind_the_newest_schema(settings):
    with pytest.raises(SchemaBehind, match="studio db upgrade"):
        create_app_from_env(settings)


def test_readiness_lists_each_check_without_exception_text(settings):
    upgrade(settings.db_url)
    app = create_app_from_env(settings)

    def store(_rt):
        raise FileNotFoundError(f"[Errno 2] No such file or directory: '{SECRET_PATH}'")

    app.state.readiness.append(ReadinessCheck("extra", store))
    with TestClient(app) as client:
        live = client.get("/livez", headers={"X-Request-ID": "probe-7"})
        assert live.status_code == 200 and live.headers["x-request-id"] == "probe-7"
        res = client.get("/readyz", headers={"X-Request-ID": "bad id with spaces"})
        assert res.status_code == 503
        assert res.json()["checks"] == {"database": {"status": "ok"},
                                        "broker": {"status": "failed", "category": "unreachable"},
                                        "store": {"status": "ok"},
                                        "extra": {"status": "failed", "category": "unreachable"}}
        assert len(res.headers["x-request-id"]) == 32  # an id that is not plain is replaced, not echoed
        for path in ("/readyz", "/healthz"):
            body = client.get(path).text
            assert SECRET_PATH not in body and "Errno" not in body and "refused" not in body.lower(), body
        app.state.readiness[:] = [c for c in app.state.readiness if c.name == "database"]
        assert client.get("/readyz").json() == {"status": "ready", "checks": {"database": {"status": "ok"}}}


@pytest.mark.parametrize(("bucket", "over", "category"), [
    ("made", {}, None),
    ("studio-no-such-bucket", {}, "missing"),
    ("made", {"secret_access_key": "wrong-secret-6f1c0d"}, "credentials refused"),
    ("made", {"endpoint_url": f"http://127.0.0.1:{free_port()}"}, "unreachable"),
], ids=["ok", "no-bucket", "bad-credentials", "unreachable"])
def test_readiness_checks_the_media_store(tmp_path, s3_server, s3_bucket, bucket, over, category):
    store = {"url": f"s3://{s3_bucket if bucket == 'made' else bucket}/media", "path_style": True,
             "endpoint_url": s3_server["endpoint_url"], "access_key_id": s3_server["access_key_id"],
             "secret_access_key": s3_server["secret_access_key"], "cache_dir": str(tmp_path / "cache")} | over
    settings = Settings(data_dir=str(tmp_path / "data"), services={"redis_port": free_port()}, store=store)
    init_all_keys(settings)
    upgrade(settings.db_url)
    with TestClient(create_app_from_env(settings)) as client:
        res = client.get("/readyz")
    want = {"status": "ok"} if category is None else {"status": "failed", "category": category}
    assert res.json()["checks"]["store"] == want
    assert res.status_code == 503  # the broker is down in every case; the store's own verdict is above
    for text in (store["secret_access_key"], s3_server["secret_access_key"], s3_server["endpoint_url"], bucket):
        assert text not in res.text
