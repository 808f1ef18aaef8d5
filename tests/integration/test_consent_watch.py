"""The streamer's consent watch on a real Redis and both databases: on-air checks cost no query each, a
revocation pushed on Redis is seen at once, and the one-second poll catches one whose push was lost."""

from __future__ import annotations

import time

import pytest
from sqlmodel import Session

from studio.models import Consent, utcnow
from studio.tls import RedisEndpoint
from tests.conftest import db_show
from tests.integration.test_metrics_redis import redis_server  # noqa: F401  (fixture)
from workers.streamer.consent_watch import ConsentWatch, announce

pytestmark = pytest.mark.integration


def _revoke(engine, consent_id: str) -> None:
    with Session(engine) as s:
        c = s.get(Consent, consent_id)
        c.status = "revoked"
        s.add(c)
        s.commit()


def _until_refused(watch: ConsentWatch, consent_id: str, limit: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if watch.problem(consent_id, at=utcnow()):
            return time.monotonic() - start
        time.sleep(0.01)
    pytest.fail(f"consent {consent_id} still allowed {limit} s after its revocation")


def test_checks_cost_no_query_and_a_pushed_revocation_is_seen_at_once(fresh_db, redis_server):  # noqa: F811
    _, url = redis_server
    ids = db_show(fresh_db)
    watch = ConsentWatch(fresh_db, broker=RedisEndpoint(url), every=30.0).start()  # no poll in the way: push only
    try:
        watch.watch(ids["consent"])
        assert watch.problem(ids["consent"], at=utcnow()) is None
        before = watch.refreshes
        for _ in range(2000):  # 4 checks a second on 500 channels: not one query
            assert watch.problem(ids["consent"], at=utcnow()) is None
        assert watch.refreshes == before
        time.sleep(0.3)  # the subscriber is listening
        _revoke(fresh_db, ids["consent"])
        assert announce(RedisEndpoint(url), ids["consent"])
        seconds = _until_refused(watch, ids["consent"], 2.0)
        assert "revoked" in watch.problem(ids["consent"], at=utcnow())
        assert watch.pushes >= 1
        print(f"\npushed revocation seen after {seconds:.3f} s")
    finally:
        watch.stop()


def test_a_lost_push_is_caught_by_the_poll_within_two_seconds(fresh_db):
    ids = db_show(fresh_db)
    watch = ConsentWatch(fresh_db, broker=None, every=1.0).start()
    try:
        watch.watch(ids["consent"])
        assert watch.problem(ids["consent"], at=utcnow()) is None
        _revoke(fresh_db, ids["consent"])  # nobody announces it
        assert _until_refused(watch, ids["consent"], 2.0) <= 1.6
    finally:
        watch.stop()


def test_an_unwatched_or_stale_consent_is_never_allowed(fresh_db):
    ids = db_show(fresh_db)
    watch = ConsentWatch(fresh_db, every=60.0)  # not started: nothing refreshes after watch()
    assert "not watched" in watch.problem(ids["consent"], at=utcnow())
    watch.watch(ids["consent"])
    assert watch.problem(ids["consent"], at=utcnow()) is None
    watch._refreshed -= 10  # ten seconds without reaching the database
    assert "state unknown" in watch.problem(ids["consent"], at=utcnow())
    assert "no consent on record" in (watch.watch("missing") or watch.problem("missing", at=utcnow()))
