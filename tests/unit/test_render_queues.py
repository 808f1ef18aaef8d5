"""Render queues by capability: an avatar's backend decides its renders' queue (render.cpu, render.gpu), a worker
asked for `render` serves the render queues its host can, one asked for render.gpu without a GPU refuses, and
each worker registers what it serves."""

from __future__ import annotations

import shutil
import typing
from types import SimpleNamespace

import pytest
from alembic import command
from sqlalchemy import text

from studio.config import RendererConfig
from studio.db import alembic_config, make_engine, session_scope
from tests.conftest import db_show
from workers.queue_policy import (
    QUEUES,
    RENDER_QUEUES,
    RENDERER_DEVICES,
    CannotServe,
    QueueError,
    expand_queues,
    queue_for_renderer,
    render_queue,
    renderers_for,
)


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
    with pytest.raises(QueueError, match="unknown renderer backend 'nosuch'; known: footage"):
        render_queue(SimpleNamespace(renderer="nosuch"))


def test_every_backend_has_a_device_class():
    from workers.renderers import RENDERERS

    configurable = set(typing.get_args(RendererConfig.model_fields["type"].annotation))
    assert set(RENDERERS) == set(RENDERER_DEVICES) and configurable <= set(RENDERER_DEVICES)
    assert {f"render.{device}" for device in RENDERER_DEVICES.values()} <= set(RENDER_QUEUES)
    assert renderers_for(["render.cpu"]) == ["footage"] and renderers_for(["render.gpu", "ingest"]) == []


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


def test_the_migration_gives_existing_avatars_the_footage_backend(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0008")
    engine = make_engine(url)
    try:
        ids = db_show_raw(engine)
        command.upgrade(alembic_config(url), "head")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT renderer FROM avatar WHERE id = :id"), {"id": ids}).scalar() == "footage"
    finally:
        engine.dispose()


def db_show_raw(engine) -> str:
    """An avatar written as a release before the migration would: plain SQL, no renderer column."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO creator (id, name, created_at) VALUES ('c1', 'Ava', '2026-01-01')"))
        conn.execute(text("INSERT INTO avatar (id, creator_id, name, status, bundle_path, footage_sha256, width, "
                          "height, fps, duration_s, created_at) VALUES ('a1', 'c1', 'Ava', 'ready', '-', '-', 360, "
                          "640, 25, 30, '2026-01-01')"))
    return "a1"
