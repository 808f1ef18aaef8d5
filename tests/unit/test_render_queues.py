"""Render queues by capability: an avatar's backend decides its renders' queue (render.cpu, render.gpu), a worker
asked for `render` serves the render queues its host can, one asked for render.gpu without a GPU refuses, and
each worker registers what it serves."""

from __future__ import annotations

import logging
import shutil
from types import SimpleNamespace

import pytest
from alembic import command
from sqlalchemy import text
from sqlmodel import select
from typer.testing import CliRunner

from studio.db import alembic_config, make_engine, session_scope
from studio.models import WorkerInfo
from tests.conftest import db_show
from tests.renderer_helpers import registered, tiny_backend
from workers.queue_policy import (
    QUEUES,
    RENDER_QUEUES,
    CannotServe,
    QueueError,
    expand_queues,
    queue_for_renderer,
    render_queue,
    renderer_devices,
    renderers_for,
)
from workers.renderers import backend_names
from workers.worker_report import CPU, Device, record_render, record_start


@pytest.fixture
def sqlite_db(migrated_db, tmp_path):
    shutil.copy(migrated_db, tmp_path / "studio.db")
    engine = make_engine(f"sqlite:///{tmp_path / 'studio.db'}")
    yield engine
    engine.dispose()


def test_an_avatars_renders_go_to_the_queue_of_its_backends_device():
    assert RENDER_QUEUES == ("render.cpu", "render.gpu") and set(RENDER_QUEUES) <= set(QUEUES)
    assert "render" not in QUEUES  # an alias for workers, never a queue a render is sent to
    assert render_queue(SimpleNamespace(renderer="footage")) == queue_for_renderer("footage") == "render.cpu"
    with pytest.raises(QueueError, match="unknown renderer backend 'nosuch'; known: footage, musetalk"):
        render_queue(SimpleNamespace(renderer="nosuch"))


def test_every_backend_has_a_device_class():
    devices = renderer_devices()
    assert set(devices) == set(backend_names()) and "footage" in devices
    assert {f"render.{device}" for device in devices.values()} <= set(RENDER_QUEUES)
    assert renderers_for(["render.cpu"]) == ["footage"] and renderers_for(["render.gpu", "ingest"]) == ["musetalk"]


@pytest.mark.parametrize(("asked", "gpu", "queues"), [
    (["render"], None, ["render.cpu"]),
    (["render"], "NVIDIA L4", ["render.cpu", "render.gpu"]),
    (["ingest", "render", "publish"], None, ["ingest", "render.cpu", "publish"]),
    (["render.cpu", "render"], "NVIDIA L4", ["render.cpu", "render.gpu"]),
    (["render.gpu"], "NVIDIA L4", ["render.gpu"]),
    (["render.cpu"], "NVIDIA L4", ["render.cpu"]),
])
def test_the_render_alias_means_every_render_queue_the_host_can_serve(asked, gpu, queues):
    assert expand_queues(asked, gpu=gpu) == queues


def test_render_gpu_without_a_gpu_is_refused_and_unknown_names_are_usage_errors():
    with pytest.raises(CannotServe, match="render.gpu needs a GPU, and this host has none that torch can use"):
        expand_queues(["ingest", "render.gpu"], gpu=None)
    for bad in (["rendr"], [], ["render.tpu"]):
        with pytest.raises(QueueError) as info:
            expand_queues(bad, gpu=None)
        assert not isinstance(info.value, CannotServe)
        assert "render.cpu" in str(info.value)


def test_a_render_sent_without_its_queue_is_refused():
    from workers.app import app

    route = app.amqp.router.route
    assert route({"queue": "render.gpu"}, "studio.render_segment", (), {})["queue"].name == "render.gpu"
    assert route({}, "studio.ingest", (), {})["queue"].name == "ingest"
    with pytest.raises(QueueError, match="render_queue"):
        route({}, "studio.render_segment", (), {})


@pytest.fixture
def worker_cli(monkeypatch):
    """`studio worker` up to the point where it would start Celery: the argv it would start it with."""
    import celery.apps.worker

    import api.cli_roles
    import workers.worker_report
    from workers.app import app as celery_app

    started: list[list[str]] = []
    from studio.config import Settings

    monkeypatch.setattr(api.cli_roles, "role_settings", lambda config, role, audit_roles, **_: Settings())
    monkeypatch.setattr(celery_app, "start", lambda argv: started.append(argv))
    # What the command sets for the process it becomes, put back for the tests after this one.
    monkeypatch.setattr(celery.apps.worker, "safe_say", celery.apps.worker.safe_say)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)

    def run(*args: str, device: Device = CPU):
        monkeypatch.setattr(workers.worker_report, "probe_device", lambda: device)
        res = CliRunner().invoke(api.cli_roles.app, ["worker", *args])
        return res, (started.pop() if started else None)

    return run


def test_the_worker_command_expands_the_alias_by_the_hosts_gpu(worker_cli):
    def queues(argv):
        return argv[argv.index("-Q") + 1], argv[argv.index("-n") + 1]

    res, argv = worker_cli("--queues", "render")
    assert res.exit_code == 0 and queues(argv) == ("render.cpu", "render@%h")
    _, argv = worker_cli("--queues", "render", device=Device("NVIDIA L4", 23034))
    assert queues(argv) == ("render.cpu,render.gpu", "render@%h")
    _, argv = worker_cli()
    assert queues(argv) == ("ingest,render.cpu,publish", "ingest+render+publish@%h")
    res, argv = worker_cli("--queues", "rendr")
    assert res.exit_code == 2 and argv is None and "unknown queue 'rendr'" in res.output


def test_the_worker_command_refuses_render_gpu_without_a_gpu(worker_cli):
    res, argv = worker_cli("--queues", "render.gpu", device=Device("unknown"))
    assert res.exit_code == 2 and argv is None
    assert "worker cannot start: render.gpu needs a GPU" in res.output
    res, argv = worker_cli("--queues", "render.gpu", device=Device("NVIDIA H100", 81559))
    assert res.exit_code == 0 and argv[argv.index("-Q") + 1] == "render.gpu"


def test_a_retried_render_goes_back_to_its_avatars_queue(sqlite_db):
    from studio.models import Segment
    from workers.tasks import _retry_queue

    ids = db_show(sqlite_db)
    with session_scope(sqlite_db) as s:
        seg = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                      consent_id=ids["consent"], script_id=ids["script"], text="Hello.", seq=0)
        s.add(seg)
    rt = SimpleNamespace(engine=sqlite_db)
    assert _retry_queue(rt, seg.id, arrived_on="render.gpu") == "render.cpu"
    # The database cannot say (here: no such segment): the queue it came on.
    assert _retry_queue(rt, "gone", arrived_on="render.gpu") == "render.gpu"


def test_workers_register_what_they_serve(sqlite_db):
    record_start(sqlite_db, name="render@gpu1", queues=["render.gpu", "render.cpu"],
                 device=Device("NVIDIA H100", 81559), cpu_count=16, host="gpu1", pid=4242, concurrency=2)
    record_render(sqlite_db, name="ingest@cpu1", frames=25, seconds=1.0, fps=25, queue="render.cpu")
    with session_scope(sqlite_db) as s:
        gpu, cpu = s.get(WorkerInfo, "render@gpu1"), s.get(WorkerInfo, "ingest@cpu1")
        assert (gpu.host, gpu.pid, gpu.concurrency, gpu.queues, gpu.renderers, gpu.device) == (
            "gpu1", 4242, 2, ["render.cpu", "render.gpu"], ["footage", "musetalk"], "NVIDIA H100")
        assert (cpu.queues, cpu.renderers) == (["render.cpu"], ["footage"])


def test_the_migration_gives_existing_avatars_the_footage_backend(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0008")
    engine = make_engine(url)
    try:
        ids = db_show_raw(engine)
        command.upgrade(alembic_config(url), "head")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT renderer FROM avatar WHERE id = :id"), {"id": ids}).scalar() == "footage"
            assert conn.execute(text("SELECT renderers FROM workerinfo")).scalar() == "[]"
    finally:
        engine.dispose()


def db_show_raw(engine) -> str:
    """An avatar and a worker row written as a release before the migration would: plain SQL, no new columns."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO creator (id, name, created_at) VALUES ('c1', 'Ava', '2026-01-01')"))
        conn.execute(text("INSERT INTO avatar (id, creator_id, name, status, bundle_path, footage_sha256, width, "
                          "height, fps, duration_s, created_at) VALUES ('a1', 'c1', 'Ava', 'ready', '-', '-', 360, "
                          "640, 25, 30, '2026-01-01')"))
        conn.execute(text("INSERT INTO workerinfo (id, queues, device, renders, started_at, last_seen) VALUES "
                          "('render@old', '[\"render\"]', 'cpu', 0, '2026-01-01', '2026-01-01')"))
    return "a1"


# --- ops: workers by host, and renders that no worker serves ------------------------------------------------------
def test_ops_shows_workers_by_host_and_names_a_queue_no_worker_serves(sqlite_db, tmp_path, monkeypatch):
    from sqlmodel import Session

    from api.metrics import metric_families, snapshot
    from api.ops_view import overview
    from studio.config import Settings
    from studio.models import Avatar, Segment, Show, utcnow

    # A GPU backend as a later release brings one: its avatars' renders go to render.gpu.
    registered(monkeypatch, tiny_backend("gpu-backend", "gpu"))
    ids = db_show(sqlite_db)
    with session_scope(sqlite_db) as s:
        show = s.get(Show, ids["show"])
        gpu_avatar = Avatar(creator_id=s.get(Avatar, ids["avatar"]).creator_id, name="Ava GPU", bundle_path="-",
                            footage_sha256="-", width=360, height=640, fps=25, duration_s=30, renderer="gpu-backend")
        s.add(gpu_avatar)
        s.flush()
        for seq, avatar_id in enumerate([ids["avatar"], gpu_avatar.id, gpu_avatar.id]):
            s.add(Segment(channel_id=show.channel_id, show_id=show.id, avatar_id=avatar_id, consent_id=show.consent_id,
                          script_id=ids["script"], text="Hello.", seq=seq, task_id=f"render-{seq}"))
    record_start(sqlite_db, name="render@cpu1", queues=["render.cpu"], device=CPU, cpu_count=2, host="cpu1",
                 pid=7, concurrency=1)
    rt = SimpleNamespace(engine=sqlite_db, settings=Settings(), data=SimpleNamespace(run=tmp_path))
    with Session(sqlite_db) as s:
        view = overview(snapshot(metric_families(s, rt, now=utcnow())))

    assert view["queues"]["render.cpu"] == {"workers": 1, "oldest_seconds": pytest.approx(0, abs=5)}
    assert view["queues"]["render.gpu"]["workers"] == 0 and view["queues"]["render.gpu"]["unserved_segments"] == 2
    [channel] = view["channels"]
    assert channel["unserved"] == [{"queue": "render.gpu", "segments": 2, "status": "no worker serves render.gpu"}]
    [alert] = [a for a in view["alerts"] if a["alert"] == "StudioRenderQueueUnserved"]
    assert alert["queue"] == "render.gpu" and alert["message"].startswith("no worker serves render.gpu: 2 segment(s)")
    assert "studio worker --queues render.gpu" in alert["message"]
    worker = view["workers"]["render@cpu1"]
    assert (worker["host"], worker["queues"], worker["renderers"], worker["device"], worker["up"]) == (
        "cpu1", "render.cpu", "footage", "cpu", 1)
    with session_scope(sqlite_db) as s:  # waiting, not failed
        assert {seg.state for seg in s.exec(select(Segment)).all()} == {"planned"}

    # A GPU worker starts: nothing is unserved any more.
    record_start(sqlite_db, name="render@gpu1", queues=["render.cpu", "render.gpu"],
                 device=Device("NVIDIA L4", 23034), cpu_count=8, host="gpu1")
    with Session(sqlite_db) as s:
        view = overview(snapshot(metric_families(s, rt, now=utcnow())))
    assert view["queues"]["render.gpu"]["workers"] == 1 and "unserved_segments" not in view["queues"]["render.gpu"]
    assert view["channels"][0]["unserved"] == [] and not [a for a in view["alerts"] if "queue" in a]
    assert view["workers"]["render@gpu1"]["renderers"] == "footage,gpu-backend,musetalk"


def test_a_gpu_worker_runs_its_renders_as_threads_sharing_the_gpu(worker_cli):
    """render.gpu: renders are threads of one process (renderer.gpu_renders of them), so their frames share one
    batching GPU thread; a CPU-only worker keeps Celery's process pool."""
    _, argv = worker_cli("--queues", "render.gpu", device=Device("NVIDIA H100", 81559))
    assert argv[argv.index("--pool") + 1] == "threads" and argv[argv.index("-c") + 1] == "4"
    _, argv = worker_cli("--queues", "render.gpu", "--concurrency", "6", device=Device("NVIDIA H100", 81559))
    assert argv[argv.index("-c") + 1] == "6"
    _, argv = worker_cli("--queues", "render.cpu")
    assert "--pool" not in argv and argv[argv.index("-c") + 1] == "1"


def test_a_gpu_backends_avatar_is_built_on_its_gpu_queue():
    """The musetalk bundle's face latents are made on the GPU at ingest: its footage goes to render.gpu, whose
    workers hold the ingest role's audit key too; a CPU backend's goes to the ingest queue."""
    from workers.app import QUEUE_AUDIT_ROLES
    from workers.queue_policy import ingest_queue

    assert ingest_queue("footage") == "ingest" and ingest_queue("musetalk") == "render.gpu"
    assert set(QUEUE_AUDIT_ROLES["render.gpu"].split(",")) == {"render", "ingest"}
    with pytest.raises(QueueError, match="unknown renderer backend 'nosuch'"):
        ingest_queue("nosuch")
