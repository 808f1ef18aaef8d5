"""Queue depth on /metrics from a real redis-server: render tasks queued at several priorities through the project's
Celery app (kombu keeps one Redis list per priority level) with no worker to take them, read back per queue; then
redis stopped, and /metrics still answers at once with studio_broker_up 0."""

from __future__ import annotations

import subprocess
import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from studio.config import Settings
from tests.conftest import require
from tests.media_helpers import free_port
from workers.queue_policy import PRIORITY_STEPS
from workers.stack.embedded import wait_port

pytestmark = [pytest.mark.integration, pytest.mark.serial]

HOST = "127.0.0.1"
# Levels as render_priority gives them (the scheduler always sends one; note that app.send_task by name without a
# priority lands on level 0: only Task.apply_async applies task_default_priority).
PRIORITIES = [0, 0, 3, 5, 8, 9, 9]


TOKEN = "metrics-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

def samples(body: bytes) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


@pytest.fixture
def redis_server(tmp_path):
    require("redis-server")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=(tmp_path / "redis.log").open("w"),
                            stderr=subprocess.STDOUT)
    try:
        assert wait_port(HOST, port, 10), "redis-server did not start"
        yield proc, f"redis://{HOST}:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_queue_depth_from_a_real_broker_and_broker_down(redis_server, fresh_db, tmp_path, monkeypatch):
    from api.app import create_app
    from workers.app import make_celery

    proc, url = redis_server
    monkeypatch.setenv("STUDIO_REDIS_URL", url)
    app = make_celery()  # the project's queues and priority steps, on this redis
    for i, priority in enumerate(PRIORITIES):  # no worker consumes: they wait in redis
        app.send_task("studio.render_segment", args=[f"seg-{i}"], queue="render.cpu", priority=priority,
                      ignore_result=True)
    app.send_task("studio.archive_segment", args=["seg-0"], queue="publish", ignore_result=True)

    run = tmp_path / "run"
    run.mkdir()
    rt = SimpleNamespace(engine=fresh_db, settings=Settings(services={"redis_url": url}, metrics_token=TOKEN),
                         data=SimpleNamespace(run=run))
    with TestClient(create_app(rt)) as client:
        r = client.get("/metrics", headers=AUTH)
        assert r.status_code == 200
        m = samples(r.content)
        assert m[("studio_broker_up", frozenset())] == 1
        depth = {q: m[("studio_queue_depth", frozenset({("queue", q)}))]
                 for q in ("ingest", "render.cpu", "render.gpu", "publish")}
        assert depth == {"ingest": 0, "render.cpu": len(PRIORITIES), "render.gpu": 0, "publish": 1}
        by_level = {level: m[("studio_queue_depth_by_priority", frozenset({("queue", "render.cpu"),
                                                                          ("priority", str(level))}))]
                    for level in PRIORITY_STEPS}
        assert by_level == {0: 2, 1: 0, 2: 0, 3: 1, 4: 0, 5: 1, 6: 0, 7: 0, 8: 1, 9: 2}
        assert m[("studio_broker_unacked_messages", frozenset())] == 0

        proc.terminate()
        proc.wait(timeout=10)
        started = time.monotonic()
        r = client.get("/metrics", headers=AUTH)
        elapsed = time.monotonic() - started
    assert r.status_code == 200 and elapsed < 2, elapsed
    m = samples(r.content)
    assert m[("studio_broker_up", frozenset())] == 0
    assert not any(name.startswith("studio_queue_depth") for name, _ in m)
    app.close()
