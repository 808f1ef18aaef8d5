"""The Celery app: queues ingest (CPU), render (GPU when there is one) and publish.

Start one worker per queue on any host that can reach Redis and the database:
    celery -A workers.app worker -Q render -c 1
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

QUEUES = ("ingest", "render", "publish")


def broker_url() -> str:
    if url := os.environ.get("STUDIO_REDIS_URL"):
        return url
    from studio.config import load_settings

    svc = load_settings().services
    return svc.redis_url or f"redis://{svc.host}:{svc.redis_port}/0"


def make_celery() -> Celery:
    url = broker_url()
    app = Celery("studio", broker=url, backend=url, include=["workers.tasks"])
    app.conf.update(
        task_queues=[Queue(q) for q in QUEUES],
        task_default_queue="render",
        task_routes={
            "studio.ingest": {"queue": "ingest"},
            "studio.render_segment": {"queue": "render"},
            "studio.archive_segment": {"queue": "publish"},
        },
        # Long media tasks: acknowledge after the work, one task at a time per process, so a worker
        # killed mid-task hands its task back instead of losing it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": 900},
        result_expires=24 * 3600,
        task_track_started=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    return app


app = make_celery()
