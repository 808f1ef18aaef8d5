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


def test_the_idle_loops_check_queries_once_per_interval_and_sees_a_revocation_at_once(fresh_db):
    """While a channel airs its clone's idle loop the feeder asks four times a second whether the loop may stay on.
    The full check (scope, territories, daily cap) went to the database every time: 4,000 checks a second at 1,000
    idle channels, where a segment on air costs none. With the streamer's watch it queries once per IDLE_CHECK_S;
    a revocation still turns the answer at the watch's next refresh, without a query of its own."""
    from types import SimpleNamespace

    from sqlalchemy import event

    from studio.config import Settings
    from workers.streamer.air import IDLE_CHECK_S, ChannelAir

    ids = db_show(fresh_db)
    watch = ConsentWatch(fresh_db, every=60.0)  # refreshed by hand below
    watch.watch(ids["consent"])
    air = ChannelAir(SimpleNamespace(engine=fresh_db, settings=Settings()), ids["channel"], consents=watch,
                     consent_id=ids["consent"])
    statements: list[str] = []

    def count(conn, cursor, statement, *_):
        statements.append(statement)

    event.listen(fresh_db, "before_cursor_execute", count)
    try:
        assert all(air.consent_holds(ids["consent"]) for _ in range(40))  # ten seconds of asking, in a moment
        assert air.idle_queries == 1 and statements
        per_check = len(statements)
        at, consent, holds = air._idle_check
        air._idle_check = (at - IDLE_CHECK_S - 0.1, consent, holds)  # the interval has passed
        assert air.consent_holds(ids["consent"]) and air.idle_queries == 2 and len(statements) == 2 * per_check
        _revoke(fresh_db, ids["consent"])
        watch.refresh()
        statements.clear()
        assert not air.consent_holds(ids["consent"])  # at once, from the watch
        assert statements == [] and air.idle_queries == 2
        # A consent the watch does not hold for this show is asked of the database every time.
        assert not air.consent_holds("another") and not air.consent_holds("another")
        assert air.idle_queries == 4
    finally:
        event.remove(fresh_db, "before_cursor_execute", count)
