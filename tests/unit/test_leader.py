"""The leader lease (studio.leader) on SQLite and PostgreSQL: one holder at a time, takeover only after expiry or
release (token + 1), renewal keeps the token, and a write fenced on a lost lease rolls back."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlmodel import select

from studio.db import session_scope
from studio.leader import LEADER, LeaseLost, claim, current, fence, release
from studio.leases import db_now
from studio.models import Channel, utcnow

NAME = "scheduler"


def _claim(engine, owner: str, seconds: float = 5.0):
    with session_scope(engine) as s:
        return claim(s, name=NAME, owner=owner, host=owner.split("/")[0], seconds=seconds)


def _expire(engine) -> None:
    """Make the lease run out now (as if its holder had stopped renewing a lease ago)."""
    with session_scope(engine) as s:
        s.execute(update(LEADER).values(expires_at=db_now(s) - timedelta(seconds=1)))


def test_first_claim_leads_and_a_second_stands_by(fresh_db):
    a = _claim(fresh_db, "host-a/1")
    assert (a.owner, a.host, a.token) == ("host-a/1", "host-a", 1)
    b = _claim(fresh_db, "host-b/2")
    assert b.owner == "host-a/1" and b.token == 1, "a standby took a live lease"
    renewed = _claim(fresh_db, "host-a/1")
    assert renewed.token == 1 and renewed.since == a.since and renewed.expires_at >= a.expires_at


def test_a_lease_that_ran_out_is_taken_over_with_the_next_token(fresh_db):
    _claim(fresh_db, "host-a/1")
    _expire(fresh_db)
    b = _claim(fresh_db, "host-b/2")
    assert (b.owner, b.token) == ("host-b/2", 2)
    with session_scope(fresh_db) as s:
        now = db_now(s)
        assert b.live(now) and b.expires_at <= now + timedelta(seconds=5.5)
    # The old holder's renewal does not win it back; it sees who leads.
    assert _claim(fresh_db, "host-a/1").owner == "host-b/2"


def test_release_hands_over_at_once_and_only_by_the_holder(fresh_db):
    _claim(fresh_db, "host-a/1")
    with session_scope(fresh_db) as s:
        assert not release(s, name=NAME, owner="host-b/2", token=1)
        assert not release(s, name=NAME, owner="host-a/1", token=7)
    assert _claim(fresh_db, "host-b/2").owner == "host-a/1"
    with session_scope(fresh_db) as s:
        assert release(s, name=NAME, owner="host-a/1", token=1)
    b = _claim(fresh_db, "host-b/2")
    assert (b.owner, b.token) == ("host-b/2", 2)


def test_the_lease_runs_out_by_itself(fresh_db):
    _claim(fresh_db, "host-a/1", seconds=0.2)
    assert _claim(fresh_db, "host-b/2").owner == "host-a/1"
    time.sleep(0.4)
    assert _claim(fresh_db, "host-b/2").owner == "host-b/2"


def test_a_write_fenced_on_a_lost_lease_rolls_back(fresh_db):
    """A pass begun as leader whose lease another took before it committed: its rows never land."""
    a = _claim(fresh_db, "host-a/1")
    with session_scope(fresh_db) as s:  # the holder's own fenced write commits
        s.add(Channel(name="kept"))
        fence(s, name=NAME, owner=a.owner, token=a.token)
    with pytest.raises(LeaseLost, match=r"held by host-b/2 \(token 2\), not by host-a/1 \(token 1\)"):
        with session_scope(fresh_db) as s:
            s.add(Channel(name="deposed"))  # begun as leader...
            _expire(fresh_db)
            assert _claim(fresh_db, "host-b/2").owner == "host-b/2"  # ...another takes over meanwhile
            fence(s, name=NAME, owner=a.owner, token=a.token)
    with session_scope(fresh_db) as s:
        assert [c.name for c in s.exec(select(Channel)).all()] == ["kept"]
    # Winning the lease back is a new term: a write fenced on the old token still rolls back.
    _expire(fresh_db)
    again = _claim(fresh_db, "host-a/1")
    assert (again.owner, again.token) == ("host-a/1", 3)
    with pytest.raises(LeaseLost), session_scope(fresh_db) as s:
        fence(s, name=NAME, owner=a.owner, token=a.token)


def test_a_takeover_waits_for_a_fenced_write_to_commit(fresh_db):
    """Between a fence and its commit no takeover lands: the claim waits on the lease's row."""
    a = _claim(fresh_db, "host-a/1", seconds=0.1)
    time.sleep(0.2)  # run out: a claim could take it now
    order = []
    with session_scope(fresh_db) as s:
        fence(s, name=NAME, owner=a.owner, token=a.token)
        taker = threading.Thread(target=lambda: order.append(_claim(fresh_db, "host-b/2").token))
        taker.start()
        time.sleep(0.5)
        order.append("commit")
    taker.join(timeout=30)
    assert order == ["commit", 2]


def test_claims_at_once_make_one_leader(fresh_db):
    owners = [f"host-{i}/{i}" for i in range(6)]
    results, barrier = {}, threading.Barrier(len(owners))

    def run(owner):
        barrier.wait()
        results[owner] = _claim(fresh_db, owner)

    threads = [threading.Thread(target=run, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    leaders = {r.owner for r in results.values()}
    assert len(results) == len(owners) and len(leaders) == 1
    with session_scope(fresh_db) as s:
        assert current(s, NAME).token == 1


def test_the_database_clock_is_naive_utc(fresh_db):
    with session_scope(fresh_db) as s:
        now = db_now(s)
    assert abs((now - utcnow()).total_seconds()) < 5 and now.tzinfo is None


def test_a_scheduler_pass_that_outlives_its_term_plans_and_queues_nothing(fresh_db, caplog):
    """workers.plan.scheduler.tick fenced on a term that another took before the pass committed: the plan rolls back
    and nothing is queued; the process logs that it lost the lease and stands by. The new leader's pass commits."""
    from types import SimpleNamespace

    from studio.config import Settings
    from studio.models import Segment, Show
    from tests.conftest import db_show
    from workers.plan.leadership import Leadership
    from workers.plan.scheduler import tick

    ids = db_show(fresh_db, text="#ad Lumen Labs Glow Serum.")
    with session_scope(fresh_db) as s:
        s.get(Show, ids["show"]).schedule = {"rotation": [{"script_id": ids["script"]}],
                                             "avatars": [{"avatar_id": ids["avatar"], "consent_id": ids["consent"]}]}
    rt = SimpleNamespace(engine=fresh_db, settings=Settings(), store_is_data_dir=True)
    old, new = Leadership(fresh_db, seconds=5, host="host-a"), Leadership(fresh_db, seconds=5, host="host-b")
    term = old.poll()
    old.record_takeover(term)
    _expire(fresh_db)  # paused past its lease...
    assert new.poll() == term + 1  # ...while another took over
    queued = []
    with pytest.raises(LeaseLost):
        tick(rt, queued.append, lambda s: old.fence(s, term))
    with session_scope(fresh_db) as s:
        assert s.exec(select(Segment)).all() == [] and queued == []
    assert old.poll() is None
    assert f"lost the scheduler lease: host-b took it (token {term + 1}, owner {new.owner})" in caplog.text
    assert tick(rt, queued.append, lambda s: new.fence(s, term + 1)) > 0 and queued
