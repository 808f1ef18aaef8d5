"""Render workers by capability, on real parts: `studio worker --queues render.cpu` on a real redis-server
renders a segment sent to the queue its avatar's backend names (render_queue) and registers what it serves
(host, pid, queues, renderers, device, concurrency); `studio worker --queues render.gpu` on a host without a
GPU refuses to start, saying why."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from sqlmodel import select

from studio.db import session_scope
from studio.models import Avatar, Segment, WorkerInfo
from tests.conftest import STUDIO
from tests.integration.conftest import ingested, plan_segment, segment_row, worker_on_redis, world_rows
from workers.queue_policy import render_queue
from workers.worker_report import probe_device

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def queue_world(tmp_path_factory, small_footage):
    return world_rows(*ingested(tmp_path_factory.mktemp("render-queues"), small_footage()))


def test_a_render_cpu_worker_renders_what_the_helper_sends_and_registers_itself(queue_world, tmp_path, monkeypatch):
    rt, ids = queue_world
    seg_id = plan_segment(rt, ids, 0)
    with session_scope(rt.engine) as s:
        avatar = s.get(Avatar, ids["avatar"])
        assert avatar.renderer == rt.settings.renderer.type == "footage"  # chosen at ingest from the config
        queue = render_queue(avatar)
    assert queue == "render.cpu"
    worker = [STUDIO, "worker", "--queues", "render.cpu", "--concurrency", "1", "--name", "cpu-test@%h"]
    with worker_on_redis(rt, tmp_path, monkeypatch, worker) as (client, log):
        result = client.send_task("studio.render_segment", args=[seg_id], queue=queue)
        deadline = time.monotonic() + 60
        while segment_row(rt, seg_id).state != "ready":
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.25)
        deadline = time.monotonic() + 10
        while result.state != "SUCCESS":
            assert time.monotonic() < deadline, result.state
            time.sleep(0.1)
        assert result.result == "ready"
        del result  # its redis subscription ends while redis is up
        with session_scope(rt.engine) as s:
            [row] = s.exec(select(WorkerInfo)).all()
            row = row.model_dump()
            assert s.get(Segment, seg_id).attempts == 1
    assert row["id"].startswith("cpu-test@") and row["host"] == row["id"].partition("@")[2]
    assert (row["queues"], row["renderers"], row["concurrency"], row["device"]) == (
        ["render.cpu"], ["footage"], 1, "cpu")
    assert row["pid"] and row["renders"] == 1  # the render was this worker's


def test_a_render_gpu_worker_refuses_to_start_without_a_gpu(tmp_path):
    if probe_device().is_gpu:
        pytest.skip("this host has a GPU: render.gpu is served here")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env["STUDIO_DATA_DIR"] = str(tmp_path / "data")
    started = time.monotonic()
    res = subprocess.run([STUDIO, "worker", "--queues", "render.gpu"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "worker cannot start: render.gpu needs a GPU, and this host has none that torch can use" in res.stdout
    assert "consume render.cpu here, or start this worker on a GPU host" in res.stdout
    assert time.monotonic() - started < 30 and "Traceback" not in res.stdout + res.stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything
