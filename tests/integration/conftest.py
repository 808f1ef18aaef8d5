"""Shared by the integration tests: a data dir with a real avatar (ingested from synthetic footage with
mediapipe), a consent, a product, a script, a channel and a show; a redis-server with a Celery worker on it."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from studio.config import MediaProfile, Settings
from studio.db import session_scope, upgrade
from studio.keys import init_all_keys
from studio.models import Agency, Channel, Consent, Creator, Product, Script, Segment, Show, utcnow
from studio.runtime import build_runtime
from tests.conftest import FULL_SCOPE
from tests.media_helpers import free_port, stop_process
from workers.ingest.footage import ingest_direct
from workers.media.proc import FFmpegProcess
from workers.stack.embedded import wait_port
from workers.streamer.air import ChannelAir
from workers.streamer.feeder import ChannelFeeder
from workers.streamer.nginx import NginxRtmp

TEXT = "Paid partnership with Lumen Labs. Meet the Glow Serum, a light serum for everyday skin care."


def new_runtime(tmp: Path, **settings):
    """A data dir under `tmp` at 360x640 (other settings as given) with its keys and the newest schema, and the
    runtime on it."""
    config = Settings(data_dir=str(tmp / "data"), media=MediaProfile(width=360, height=640), **settings)
    init_all_keys(config)
    upgrade(config.db_url)
    return build_runtime(config)


def agency_script(rt, text: str, *, agency: str = "Lumen Agency",
                  product: tuple[str, str, str] = ("Serum", "Lumen", "beauty")) -> dict:
    """An agency with a product (name, brand, category) and a script of `text`, straight in the database: their
    ids."""
    name, brand, category = product
    with session_scope(rt.engine) as s:
        agency = Agency(name=agency)
        s.add(agency)
        s.flush()
        product = Product(name=name, brand=brand, category=category, agency_id=agency.id)
        s.add(product)
        s.flush()
        script = Script(product_id=product.id, text=text)
        s.add(script)
        s.flush()
        return {"agency": agency.id, "product": product.id, "script": script.id}


def ingested(tmp: Path, footage: Path, *, store: dict | None = None, review: str = "auto", renderer: str = "footage",
             renderer_settings: dict | None = None):
    """A data dir at 360x640 with keys and the newest schema, and one avatar built from `footage` through the
    real ingest: (runtime, creator, avatar). `store`: the media store settings (default: the data dir). Consents
    are granted once their check passes (`review`: auto) unless a test asks for review ("required"). `renderer`:
    the backend the config names, which builds the avatar; `renderer_settings`: its other renderer.* settings."""
    rt = new_runtime(tmp, store=store or {}, consent={"review": review},
                     renderer={"type": renderer, **(renderer_settings or {})})
    settings = rt.settings
    with session_scope(rt.engine) as s:
        creator = Creator(name="Ava")
        s.add(creator)
    avatar = ingest_direct(engine=rt.engine, data=rt.data, profile=settings.media, limits=settings.ingest,
                           creator_id=creator.id, name="Ava", footage=footage, renderer=settings.renderer,
                           publish_dir=rt.publish_dir)
    return rt, creator, avatar


@pytest.fixture(scope="module")
def avatar_world(tmp_path_factory, small_footage):
    return world_rows(*ingested(tmp_path_factory.mktemp("render"), small_footage()))


@contextmanager
def worker_on_redis(rt, tmp_path: Path, monkeypatch, worker: list[str]) -> Iterator[tuple[object, Path]]:
    """redis-server on loopback and a Celery worker (the command line `worker`) configured for `rt`'s data dir;
    the test process's Celery app (used to send tasks, and by a revocation to revoke them) points at the same
    redis. Yields (that app, the worker's log) once the worker answers a ping."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    config = tmp_path / "studio.yaml"
    config.write_text(yaml.safe_dump(rt.settings.model_dump(mode="json", exclude_none=True)))
    env = {**os.environ, "STUDIO_CONFIG": str(config), "STUDIO_REDIS_URL": url}
    env.pop("STUDIO_DATA_DIR", None)
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    procs = [subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=(logs / "redis.log").open("w"), stderr=subprocess.STDOUT)]
    try:
        assert wait_port("127.0.0.1", port, 10), "redis-server did not start"
        procs.append(subprocess.Popen(worker, env=env, stdout=(logs / "worker.log").open("w"),
                                      stderr=subprocess.STDOUT))
        monkeypatch.setenv("STUDIO_REDIS_URL", url)
        import workers.app

        client = workers.app.make_celery()
        monkeypatch.setattr(workers.app, "app", client)
        deadline = time.monotonic() + 60
        while not client.control.ping(timeout=1.0):
            assert procs[1].poll() is None and time.monotonic() < deadline, (logs / "worker.log").read_text()
        yield client, logs / "worker.log"
        # Results of the test's tasks unsubscribe from redis when collected: let them, while redis is up.
        gc.collect()
        client.backend.result_consumer.stop()
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def world_rows(rt, creator, avatar):
    """A consent of the avatar in term, a product, its script, a US channel and a show: (runtime, ids)."""
    now = utcnow()
    with session_scope(rt.engine) as s:
        consent = Consent(creator_id=creator.id, avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                          starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1), scope=FULL_SCOPE,
                          statement_sha256="-")
        product = Product(name="Serum", brand="Lumen", category="beauty")
        channel = Channel(name="c", territories=["US"])
        s.add_all([consent, product, channel])
        s.flush()
        script = Script(product_id=product.id, text=TEXT)
        s.add(script)
        s.flush()
        show = Show(channel_id=channel.id, avatar_id=avatar.id, consent_id=consent.id, name="s",
                    script_ids=[script.id])
        s.add(show)
    return rt, {"avatar": avatar.id, "consent": consent.id, "script": script.id, "channel": channel.id,
                "show": show.id}


def plan_segment(rt, ids, seq: int, *, show_start: bool = False, channel: str | None = None,
                 show: str | None = None) -> str:
    with session_scope(rt.engine) as s:
        seg = Segment(channel_id=channel or ids["channel"], show_id=show or ids["show"], avatar_id=ids["avatar"],
                      consent_id=ids["consent"], script_id=ids["script"], text=TEXT, seq=seq, show_start=show_start)
        s.add(seg)
    return seg.id


def segment_row(rt, seg_id) -> Segment:
    with session_scope(rt.engine) as s:
        return s.get(Segment, seg_id)


def new_show(rt, ids, name: str) -> tuple[Channel, Show]:
    """A channel of its own with a show of the world's avatar, so a test's plan starts at seq 0."""
    with session_scope(rt.engine) as s:
        channel = Channel(name=name, territories=["US"])
        s.add(channel)
        s.flush()
        show = Show(channel_id=channel.id, avatar_id=ids["avatar"], consent_id=ids["consent"], name=name,
                    script_ids=[ids["script"]])
        s.add(show)
    return channel, show


def air_and_record(rt, channel_id: str, slate: Path, workdir: Path, *, seconds: float) -> Path:
    """Air the channel's plan through a real nginx-rtmp for `seconds` and return an ffmpeg recording of it."""
    air = ChannelAir(rt, channel_id)
    with NginxRtmp(workdir / "nginx", rtmp_port=free_port(), http_port=free_port(), hls=False) as nginx:
        url = f"{nginx.rtmp_url}/{channel_id}"
        recording = workdir / f"{channel_id}.flv"
        recorder = FFmpegProcess(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-y",
                                  "-rw_timeout", "4000000", "-i", url, "-c", "copy", "-f", "flv", str(recording)])
        feeder = ChannelFeeder(destinations=[url], next_segment=air.next_segment, slate=slate, verify=air.verify,
                               on_aired=air.on_aired, on_refused=air.on_refused, lead_seconds=0.5)
        time.sleep(0.3)
        feeder.run(threading.Event(), duration=seconds)
        for _ in range(100):
            if not recorder.alive:
                break
            time.sleep(0.1)
        recorder.stop(timeout=3)
    return recording


@contextmanager
def celery_on_loopback(rt, folder: Path, *, queue: str) -> Iterator[tuple[object, Path]]:
    """`worker_on_redis` with one Celery worker for `queue`: (the Celery app, the worker's log). Meanwhile this
    process's `workers.app.app` (what the API queues on and reads jobs from, and the revocation revokes through)
    is an app on the same redis."""
    with pytest.MonkeyPatch.context() as mp:
        name = f"{queue}-{uuid.uuid4().hex[:8]}@%h"
        with worker_on_redis(rt, folder, mp, [
                sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", queue, "-c", "1", "-n", name,
                "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]) as worker:
            yield worker


def consent_form(body: dict, video: Path) -> dict:
    """The multipart parts of `POST /api/consents`: the statement as JSON and the consent video."""
    import json

    return {"data": {"grant": json.dumps(body)}, "files": {"video": ("consent.mp4", video.read_bytes(), "video/mp4")}}


def wait_job(client, job_id: str, *, headers: dict | None = None, timeout: float = 180.0) -> dict:
    """Poll `GET /api/jobs/{job_id}` until the job ends (SUCCESS or FAILURE); its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        res = client.get(f"/api/jobs/{job_id}", headers=headers)
        assert res.status_code == 200, res.text
        job = res.json()
        if job["state"] in ("SUCCESS", "FAILURE"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']} after {timeout:.0f} s"
        time.sleep(0.2)
