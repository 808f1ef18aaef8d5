"""The OpenAPI schema against the real app, in process (ASGI): schemathesis generates requests for every operation
(valid and invalid parameters and bodies, made-up ids and the ids of real rows) as an admin, then with fewer
examples as a creator, an agency, ops and nobody; no answer may be a server error, and every status it answers must
be one the OpenAPI declares.

Redis is not running here. The operations that need it answer 503, a problem that says the queue's broker is
unreachable, and only those: the footage upload and the consent grant (which queue a task on the ingest queue), a
job's state (the result store), and /healthz (which reports Redis down). The second test takes an upload that passes
every check before the queue to a broker that is down: 503 within seconds (not kombu's retries, about 20 s), and
neither the upload nor a job left behind.
"""

from __future__ import annotations

import time

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance
from sqlmodel import Session, select

from api.app import create_app_from_env
from studio.config import IngestLimits, MediaProfile, Settings
from studio.db import upgrade
from studio.keys import init_all_keys
from studio.models import Agency, Creator, Script, UploadJob
from tests.conftest import api_key, db_show
from tests.media_helpers import free_port, make_test_segment

pytestmark = pytest.mark.integration

# Per operation, for the fuzzing phase (the examples and coverage phases add their own few); 44 operations in
# about a minute on two cores.
MAX_EXAMPLES = 20
ROLE_EXAMPLES = 5  # each other role: 4 roles x 47 operations within the 5-minute budget
JOB_ID = "0" * 32
# Operations that need Redis, and what they answer while it is down.
NEEDS_REDIS = {
    "POST /api/creators/{creator_id}/avatars": "broker (Redis) is unreachable",
    "POST /api/consents": "broker (Redis) is unreachable",
    "GET /api/jobs/{job_id}": "broker (Redis) is unreachable",
    "GET /healthz": "degraded",
    "GET /readyz": "not ready",
}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    # Footage from 1 s, so the second test's upload is a small, quick file.
    settings = Settings(data_dir=str(tmp / "data"), ingest=IngestLimits(max_upload_mb=1, min_seconds=1.0))
    init_all_keys(settings)
    upgrade(settings.db_url)  # `studio db upgrade`: the API refuses a schema behind
    return create_app_from_env(settings)


@pytest.fixture(scope="module")
def world(app) -> dict[str, str]:
    """Real rows for ids to hit: a show's avatar, consent, channel and script, their creator and product, an
    agency, and an upload job (its Celery task was never queued)."""
    engine = app.state.runtime.engine
    ids = db_show(engine)
    with Session(engine, expire_on_commit=False) as s:
        agency = Agency(name="Lumen Agency")
        s.add(agency)
        creator_id = s.exec(select(Creator.id)).one()
        product_id = s.get(Script, ids["script"]).product_id
        s.add(UploadJob(id=JOB_ID, creator_id=creator_id))
        s.commit()
    return {**ids, "creator": creator_id, "product": product_id, "agency": agency.id, "job": JOB_ID}


@pytest.fixture(scope="module")
def admin(app) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key(app.state.runtime.engine)}"}


@pytest.fixture(scope="module")
def callers(app, world) -> dict[str, dict[str, str]]:
    """Headers of every other role over the same seeded rows (the creator owns them; the agency is another
    tenant), and of nobody signed in."""
    engine = app.state.runtime.engine
    tenant = {"creator": {"creator_id": world["creator"]}, "agency": {"agency_id": world["agency"]}}
    return {role: {"Authorization": f"Bearer {api_key(engine, role=role, **tenant.get(role, {}))}"}
            for role in ("creator", "agency", "ops")} | {"nobody": {}}


@pytest.fixture(scope="module")
def api_schema(app, world):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)

    def with_real_ids(context, values):
        """Each `<kind>_id` path or query parameter or body field: the generated value, or the id of the seeded
        row of that kind."""
        if not isinstance(values, dict):
            return st.just(values)
        return st.fixed_dictionaries({
            name: st.sampled_from([value, world[name[:-3]]])
            if isinstance(name, str) and name.endswith("_id") and name[:-3] in world else st.just(value)
            for name, value in values.items()})

    for where in ("path_parameters", "query", "body"):
        schema.hook(f"flatmap_{where}")(with_real_ids)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_a_server_error(case, admin):
    response = case.call(headers=dict(admin))
    expected = NEEDS_REDIS.get(case.operation.label)
    if response.status_code == 503 and expected is not None:
        assert expected in response.text, response.text
        assert response.elapsed < 5, f"{case.operation.label} took {response.elapsed:.1f} s to answer 503"
        return
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance], headers=dict(admin))


@schema.parametrize()
@settings(max_examples=ROLE_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_a_server_error_to_any_role(case, callers):
    """The same for creators, agencies, ops and callers without credentials, with fewer examples: their refusals
    (401, 403, 404) must be declared too, and nothing may fail as a 500."""
    for headers in callers.values():
        response = case.call(headers=dict(headers))
        expected = NEEDS_REDIS.get(case.operation.label)
        if response.status_code == 503 and expected is not None:
            assert expected in response.text, response.text
            continue
        case.validate_response(response, checks=[not_a_server_error, status_code_conformance], headers=dict(headers))


def test_upload_to_a_broker_that_is_down_is_refused_with_503_and_leaves_nothing(app, world, admin, tmp_path,
                                                                              monkeypatch):
    from workers.app import app as celery_app

    # A port nothing listens on, whatever Redis this machine runs.
    monkeypatch.setitem(celery_app.conf, "broker_url", f"redis://127.0.0.1:{free_port()}/0")
    footage = make_test_segment(tmp_path / "clip.mp4", seconds=2.0, profile=MediaProfile(width=64, height=64))
    rt = app.state.runtime
    with TestClient(app) as client, Session(rt.engine) as s:
        jobs_before = len(s.exec(select(UploadJob)).all())
        started = time.monotonic()
        res = client.post(f"/api/creators/{world['creator']}/avatars", params={"name": "Ava"}, headers=admin,
                          files={"file": ("clip.mp4", footage.read_bytes(), "video/mp4")})
        took = time.monotonic() - started
        assert res.status_code == 503, res.text
        assert res.headers["content-type"] == "application/problem+json"
        assert res.headers["retry-after"] == "30"
        body = res.json()
        assert body["status"] == 503 and "broker (Redis) is unreachable" in body["detail"], body
        assert took < 5, f"the API took {took:.1f} s to give up on the broker"
        assert list(rt.data.uploads.iterdir()) == []
        assert len(s.exec(select(UploadJob)).all()) == jobs_before
