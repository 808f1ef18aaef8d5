"""GET /api/jobs/{id} reads a job's state and what goes with it in one go, from a real Redis result store: a job
that ends between two reads is never answered PROGRESS with its result for progress."""

from __future__ import annotations

from celery.exceptions import CeleryError

from api.routers.avatars import job_meta
from studio.config import WorkerPoolConfig
from studio.tls import RedisEndpoint
from workers.app import make_celery

PROGRESS = {"stage": "faces", "done": 30, "total": 60}
RESULT = {"avatar_id": "av-1", "status": "ready"}


def _app(redis_url):
    return make_celery(RedisEndpoint(redis_url), pool=WorkerPoolConfig())


def test_a_job_that_ends_between_reads_is_answered_in_one_state(redis_url):
    app = _app(redis_url)
    backend = app.backend
    backend.store_result("job-1", PROGRESS, "PROGRESS")
    read = backend.get_task_meta

    def then_it_ends(task_id, *args, **kwargs):
        meta = read(task_id, *args, **kwargs)
        backend.store_result(task_id, RESULT, "SUCCESS")  # the worker finishes right after this read
        return meta

    backend.get_task_meta = then_it_ends
    assert job_meta(app, "job-1") == ("PROGRESS", PROGRESS)
    assert job_meta(app, "job-1") == ("SUCCESS", RESULT)
    # AsyncResult's state then info, as the route read it before: the state of one read, the value of the next
    backend.store_result("job-2", PROGRESS, "PROGRESS")
    res = app.AsyncResult("job-2")
    assert (res.state, res.info) == ("PROGRESS", RESULT)


def test_unknown_failed_and_running_jobs(redis_url):
    app = _app(redis_url)
    assert job_meta(app, "never-sent") == ("PENDING", None)
    app.backend.mark_as_failure("job-3", CeleryError("the footage has no face"))
    state, error = job_meta(app, "job-3")
    assert state == "FAILURE" and isinstance(error, CeleryError) and "no face" in str(error)
    app.backend.store_result("job-4", PROGRESS, "PROGRESS")
    assert job_meta(app, "job-4") == ("PROGRESS", PROGRESS)
