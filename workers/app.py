"""The Celery app: queues ingest (CPU), render.cpu and render.gpu (renders by their avatar's backend, see
workers.queue_policy.render_queue) and publish.

Start one worker per queue on any host that can reach Redis and the database:
    studio worker --queues render --concurrency 1     # render.cpu, and render.gpu where torch sees a GPU
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun
from kombu import Queue

from studio.tls import RedisEndpoint, certificate_problem
from workers.queue_policy import LEAST_URGENT, PRIORITY_STEPS, QUEUES, VISIBILITY_TIMEOUT_S, QueueError

# The audit role (studio.audit_keys) of each queue's tasks: a worker loads the audit keys of the queues it consumes.
# render.gpu also builds the avatars of GPU backends (their face latents are made on the GPU at ingest), so it signs
# what an ingest records as well.
QUEUE_AUDIT_ROLES = {"ingest": "ingest", "render.cpu": "render", "render.gpu": "render,ingest", "publish": "archive"}


def broker() -> RedisEndpoint:
    """The settings' Redis (STUDIO_REDIS_URL or services.redis_url, with the password from
    services.redis_password or the secrets directory when the URL carries none; TLS by services.redis_tls)."""
    from studio.config import load_settings

    return load_settings().redis


def _render_names_its_queue(name, args, kwargs, options, task=None, **_) -> None:
    """A render goes to the queue of its avatar's backend, which only its sender knows (render_queue): one sent
    without a queue is refused rather than left in a queue that no worker of that backend reads."""
    if name == "studio.render_segment" and "queue" not in options:
        raise QueueError("a render must be sent to its avatar's queue: apply_async(..., "
                         "queue=workers.queue_policy.render_queue(avatar))")


def make_celery(redis: RedisEndpoint | None = None) -> Celery:
    """The app on `redis` (default: the settings'); over rediss:// the broker and the result backend both verify
    the server's certificate with the same options as every other client (studio.tls.redis_ssl_options)."""
    redis = redis or broker()
    app = Celery("studio", broker=redis.url, backend=redis.url,
                 include=["workers.tasks", "workers.worker_report", "workers.consent.cache_purge"])
    if redis.ssl:
        app.conf.update(broker_use_ssl=dict(redis.ssl), redis_backend_use_ssl=dict(redis.ssl))
    app.conf.update(
        task_queues=[Queue(q) for q in QUEUES],
        task_routes=[_render_names_its_queue, {
            "studio.ingest": {"queue": "ingest"},
            "studio.consent_check": {"queue": "ingest"},
            "studio.archive_segment": {"queue": "publish"},
        }],
        # Long media tasks: acknowledge after the work, and take one task at a time per process, so a task
        # waits in the queue (in deadline order) rather than behind a busy process.
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        # A pool process killed mid-task (OOM, kill -9) gives its task back to the queue at once instead of
        # failing it; renders are idempotent, and one that kills its worker every time is failed after
        # MAX_RENDER_ATTEMPTS (workers.render.segment) rather than looping.
        task_reject_on_worker_lost=True,
        # On a lost broker connection let running renders finish: with Redis their messages could not go back
        # before the visibility timeout anyway, and the finished segment is what the channel is waiting for.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_transport_options={
            # Longer than any task holds its message (the render's time limit, and the ingest's, which is
            # longer); see workers.queue_policy.
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            # Priority by deadline: one Redis list per level, level 0 popped first.
            "priority_steps": list(PRIORITY_STEPS),
            "queue_order_strategy": "priority",
        },
        # A task sent without a priority (a render without a deadline too) waits behind every render due sooner.
        task_default_priority=LEAST_URGENT,
        result_expires=24 * 3600,
        task_track_started=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    return app


app = make_celery()

# Tasks whose first argument is a segment id: their log lines carry it.
_SEGMENT_TASKS = {"studio.render_segment", "studio.archive_segment"}


@setup_logging.connect
def _json_logs(**_) -> None:
    """A worker logs JSON lines like every role (connecting here keeps Celery from installing its own)."""
    from workers.logs import configure_logging

    configure_logging(os.environ.get("STUDIO_ROLE", "worker"))


@task_prerun.connect
def _task_context(task_id=None, task=None, args=None, **_) -> None:
    from workers.logs import set_context

    segment = args[0] if args and task is not None and task.name in _SEGMENT_TASKS else None
    set_context(task_id=task_id, segment=segment)


@task_postrun.connect
def _task_context_end(**_) -> None:
    from workers.logs import set_context

    set_context(task_id=None, segment=None)


class BrokerUnreachable(RuntimeError):
    """Redis, the queues' broker and result store, did not answer."""


def require_broker(timeout: float = 2.0) -> None:
    """Raise BrokerUnreachable within about `timeout` seconds when Redis does not answer. For a caller someone
    waits on (the API) before it publishes: `apply_async` to a Redis that is down retries the result backend's
    subscription to the task (its retry policy: 20 tries a second apart) before it fails."""
    try:
        with app.connection_for_write(connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.2, timeout=timeout)
    except Exception as exc:  # kombu's OperationalError, or the socket's own error
        ca_file = (app.conf.broker_use_ssl or {}).get("ssl_ca_certs")
        why = certificate_problem(exc, section="services.redis_tls", ca_file=ca_file) or exc
        raise BrokerUnreachable(f"the queue's broker (Redis at {_safe_url(app.conf.broker_url)}) is unreachable: "
                                f"{why}") from None


def _safe_url(url: str) -> str:
    """The broker URL without its password."""
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url)

