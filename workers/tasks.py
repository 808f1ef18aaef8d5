"""Celery tasks: thin wrappers that name their queue and limits and call the *_direct functions."""

from __future__ import annotations

import logging
from pathlib import Path

from workers.app import app
from workers.queue_policy import (
    ARCHIVE_LIMITS,
    ARCHIVE_ORDER_WAIT_S,
    ARCHIVE_ORDER_WAITS,
    CONSENT_CHECK_LIMITS,
    INGEST_LIMITS,
    RENDER_LIMITS,
    RENDER_MAX_RETRIES,
    render_queue,
    render_retry_countdown,
)
from workers.runtime import runtime

log = logging.getLogger("studio.tasks")


@app.task(name="studio.ingest", bind=True, acks_late=True, time_limit=INGEST_LIMITS.hard_s,
          soft_time_limit=INGEST_LIMITS.soft_s)
def ingest_task(self, *, creator_id: str, name: str, footage: str, delete_upload: bool = True,
                renderer: str | None = None) -> dict:
    """`renderer`: the backend chosen for this avatar at its creation; None: the config's renderer.type."""
    from workers.ingest.footage import ingest_direct
    from workers.renderers import chosen_renderer

    rt = runtime()

    def progress(stage: str, done: int, total: int) -> None:
        if done % 25 == 0 or done == total:
            self.update_state(state="PROGRESS", meta={"stage": stage, "done": done, "total": total})

    # `footage` is the upload's store key (an absolute path from an older API is still read).
    try:
        avatar = ingest_direct(engine=rt.engine, data=rt.data, profile=rt.settings.media,
                               limits=rt.settings.ingest, creator_id=creator_id, name=name,
                               footage=rt.local(footage), renderer=chosen_renderer(rt.settings.renderer, renderer),
                               progress=progress,
                               publish_dir=rt.publish_dir)
    finally:
        if delete_upload:
            _drop_upload(rt, footage)
    return {"avatar_id": avatar.id}


@app.task(name="studio.consent_check", bind=True, acks_late=True, time_limit=CONSENT_CHECK_LIMITS.hard_s,
          soft_time_limit=CONSENT_CHECK_LIMITS.soft_s)
def consent_check_task(self, *, grant: dict, video: str, received_at: str) -> dict:
    """Check a consent video whose grant the API accepted (its phrase spent) and record the consent. The result
    names the consent and its status (granted, or pending_review), or the reasons for a refusal."""
    from datetime import datetime

    from studio.models import ConsentCreate
    from workers.consent.grant import ConsentRefused, check_consent_direct

    rt = runtime()

    def progress(stage: str, done: int, total: int) -> None:
        self.update_state(state="PROGRESS", meta={"stage": stage, "done": done, "total": total})

    try:
        consent = check_consent_direct(rt, ConsentCreate.model_validate(grant), rt.local(video),
                                       now=datetime.fromisoformat(received_at), progress=progress)
    except ConsentRefused as exc:
        return {"consent_id": None, "status": "refused", "problems": exc.problems}
    finally:
        _drop_upload(rt, video)
    return {"consent_id": consent.id, "status": consent.status, "problems": []}


def _drop_upload(rt, footage: str) -> None:
    if footage.startswith("/"):
        Path(footage).unlink(missing_ok=True)
        return
    rt.store.delete(footage)
    if rt.store.cache is not None:
        rt.store.cache.purge([footage])


@app.task(name="studio.render_segment", bind=True, acks_late=True, time_limit=RENDER_LIMITS.hard_s,
          soft_time_limit=RENDER_LIMITS.soft_s, max_retries=RENDER_MAX_RETRIES)
def render_segment_task(self, segment_id: str) -> str:
    """A render that stops because its segment is no longer wanted returns normally ("cancelled"), as does one
    that starts too late for its air time ("skipped"): no retry. Send it with `priority=render_priority(...)`."""
    from workers.render.segment import render_segment_direct
    from workers.worker_report import record_render

    rt = runtime()

    def rendered(frames: int, seconds: float) -> None:
        record_render(rt.engine, name=self.request.hostname, frames=frames, seconds=seconds,
                      fps=rt.settings.media.fps, queue=(self.request.delivery_info or {}).get("routing_key"))

    try:
        # The task id goes on the segment, so a revocation can revoke the task while it is still queued.
        return render_segment_direct(rt, segment_id, task_id=self.request.id, on_rendered=rendered,
                                     node=self.request.hostname)
    except LookupError:
        raise
    except Exception as exc:
        arrived_on = (self.request.delivery_info or {}).get("routing_key")
        raise self.retry(exc=exc, countdown=render_retry_countdown(self.request.retries),
                         queue=_retry_queue(rt, segment_id, arrived_on)) from exc


def _retry_queue(rt, segment_id: str, arrived_on: str | None) -> str | None:
    """The render queue of the segment's avatar (render_queue); the queue the task came on when the database
    cannot say, since what failed may be the database."""
    from studio.db import session_scope
    from studio.models import Avatar, Segment

    try:
        with session_scope(rt.engine) as s:
            return render_queue(s.get(Avatar, s.get(Segment, segment_id).avatar_id))
    except Exception:
        log.warning("segment %s: its avatar's render queue could not be read; retried on %s", segment_id,
                    arrived_on, exc_info=True)
        return arrived_on


@app.task(name="studio.archive_segment", bind=True, acks_late=True, time_limit=ARCHIVE_LIMITS.hard_s,
          soft_time_limit=ARCHIVE_LIMITS.soft_s, max_retries=5, default_retry_delay=5)
def archive_segment_task(self, segment_id: str) -> str | None:
    """Keep an aired segment for audit, signed with C2PA and chained to the show's previous one (POLICY M4, C6). In seq
    order: a segment whose predecessor is not archived yet waits for it, ARCHIVE_ORDER_WAITS times at most."""
    from workers.provenance.archive import ArchiveNotReady, archive_segment_direct

    try:
        path = archive_segment_direct(runtime(), segment_id)
    except ArchiveNotReady as exc:
        raise self.retry(exc=exc, countdown=ARCHIVE_ORDER_WAIT_S, max_retries=ARCHIVE_ORDER_WAITS) from exc
    except Exception as exc:
        raise self.retry(exc=exc, countdown=5 * 2 ** self.request.retries) from exc
    return str(path) if path else None
