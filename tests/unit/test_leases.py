"""Channel leases (studio.leases): claim, renew, expiry, fencing tokens, hand-over, and the balance plan.

The database functions run on SQLite and PostgreSQL (`fresh_db`); `shares` and `plan` are pure."""

from __future__ import annotations

import threading
import time

import pytest
from sqlmodel import Session

from studio import leases
from tests.conftest import db_channels as _channels


def _do(engine, fn, **kw):
    with Session(engine) as s:
        out = fn(s, **kw)
        s.commit()
        return out


def test_a_channel_is_claimed_once_and_its_token_grows_on_every_new_owner(fresh_db):
    (cid,) = _channels(fresh_db, 1)
    t1 = _do(fresh_db, leases.claim, channel_id=cid, owner="a", host="ha", ttl=30)
    assert t1 == 1
    assert _do(fresh_db, leases.claim, channel_id=cid, owner="b", host="hb", ttl=30) is None  # a holds it
    assert _do(fresh_db, leases.holds, channel_id=cid, owner="a", token=1)
    assert not _do(fresh_db, leases.holds, channel_id=cid, owner="b", token=1)
    assert _do(fresh_db, leases.release, channel_id=cid, owner="a", token=1)
    assert not _do(fresh_db, leases.holds, channel_id=cid, owner="a", token=1)  # released: the fence is down
    assert _do(fresh_db, leases.claim, channel_id=cid, owner="b", host="hb", ttl=30) == 2
    assert not _do(fresh_db, leases.release, channel_id=cid, owner="a", token=1)  # a stale holder cannot release


def test_an_expired_lease_is_lost_even_to_its_owner_and_taken_with_a_new_token(fresh_db):
    (cid,) = _channels(fresh_db, 1)
    assert _do(fresh_db, leases.claim, channel_id=cid, owner="a", host="ha", ttl=0.3) == 1
    assert _do(fresh_db, leases.renew, owner="a", ttl=0.3) == {cid: leases.Held(1)}
    time.sleep(0.5)
    assert _do(fresh_db, leases.renew, owner="a", ttl=30) == {}  # too late: renewing does not bring it back
    assert not _do(fresh_db, leases.holds, channel_id=cid, owner="a", token=1)
    assert _do(fresh_db, leases.claim, channel_id=cid, owner="b", host="hb", ttl=30) == 2
    assert _do(fresh_db, leases.renew, owner="a", ttl=30) == {}


def test_two_streamers_claiming_at_once_get_one_lease_between_them(fresh_db):
    cids = _channels(fresh_db, 6)
    won: dict[str, list[str]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def grab(owner: str) -> None:
        barrier.wait()
        for cid in cids:
            if _do(fresh_db, leases.claim, channel_id=cid, owner=owner, host=owner, ttl=30) is not None:
                won[owner].append(cid)

    threads = [threading.Thread(target=grab, args=(o,)) for o in won]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won["a"] + won["b"]) == cids  # every channel once, none twice
    assert set(_do(fresh_db, leases.live_holders).values()) <= {"a", "b"}


def test_a_hand_over_goes_only_to_the_asker(fresh_db):
    (cid,) = _channels(fresh_db, 1)
    _do(fresh_db, leases.claim, channel_id=cid, owner="a", host="ha", ttl=30)
    assert _do(fresh_db, leases.ask_handover, channel_id=cid, owner="a", to="b")
    assert not _do(fresh_db, leases.ask_handover, channel_id=cid, owner="a", to="c")  # one request at a time
    assert _do(fresh_db, leases.renew, owner="a", ttl=30)[cid].handover_to == "b"
    _do(fresh_db, leases.release, channel_id=cid, owner="a", token=1)
    assert _do(fresh_db, leases.claim, channel_id=cid, owner="c", host="hc", ttl=30) is None  # promised to b
    assert _do(fresh_db, leases.claim, channel_id=cid, owner="b", host="hb", ttl=30) == 2
    assert _do(fresh_db, leases.renew, owner="b", ttl=30)[cid].handover_to is None


def test_streamers_are_live_while_they_beat(fresh_db):
    _do(fresh_db, leases.heartbeat, owner="a", host="ha", capacity=3)
    _do(fresh_db, leases.heartbeat, owner="b", host="hb", capacity=5)
    assert _do(fresh_db, leases.live_streamers, ttl=30) == {"a": 3, "b": 5}
    time.sleep(0.3)
    _do(fresh_db, leases.heartbeat, owner="b", host="hb", capacity=5)
    assert _do(fresh_db, leases.live_streamers, ttl=0.2) == {"b": 5}
    assert _do(fresh_db, leases.prune_streamers, older_than=0.2) == 1


@pytest.mark.parametrize(("n", "caps", "want"), [
    (4, {"a": 10, "b": 10}, {"a": 2, "b": 2}),
    (5, {"a": 10, "b": 10}, {"a": 3, "b": 2}),
    (6, {"a": 1, "b": 2}, {"a": 1, "b": 2}),          # by capacity
    (9, {"a": 10, "b": 20}, {"a": 3, "b": 6}),
    (10, {"a": 2, "b": 3}, {"a": 2, "b": 3}),         # more channels than room: each full, none above
    (0, {"a": 2}, {"a": 0}),
    (3, {"a": 0, "b": 4}, {"a": 0, "b": 3}),
])
def test_shares_follow_capacity_and_never_exceed_it(n, caps, want):
    assert leases.shares(n, caps) == want


def test_a_new_streamer_takes_free_channels_first_then_asks_for_its_share():
    live = ["c1", "c2", "c3", "c4"]
    caps = {"a": 10, "b": 10}
    # b starts while a airs three and one is free: b claims the free one and asks a for one more.
    p = leases.plan("b", live=live, holders={"c1": "a", "c2": "a", "c3": "a"}, capacities=caps)
    assert p.claim == ["c4"] and p.ask == [("c1", "a")] and p.drop == []
    # With the ask pending, b asks nothing more; a (at its share) claims nothing.
    pend = {"c1": "b"}
    holders = {"c1": "a", "c2": "a", "c3": "a", "c4": "b"}
    assert leases.plan("b", live=live, holders=holders, capacities=caps, pending=pend).ask == []
    assert leases.plan("a", live=live, holders=holders, capacities=caps, pending=pend).claim == []


def test_a_dead_streamers_channels_are_free_once_its_leases_expire():
    # a died: its leases expired (no longer in holders), it left the live streamers; b takes everything.
    p = leases.plan("b", live=["c1", "c2", "c3"], holders={"c3": "b"}, capacities={"b": 10})
    assert sorted(p.claim) == ["c1", "c2"]


def test_a_channel_that_is_no_longer_live_is_dropped():
    p = leases.plan("a", live=["c1"], holders={"c1": "a", "c9": "a"}, capacities={"a": 5})
    assert p.drop == ["c9"] and p.claim == [] and p.ask == []


def test_capacity_caps_what_a_streamer_claims():
    p = leases.plan("a", live=["c1", "c2", "c3"], holders={}, capacities={"a": 2})
    assert len(p.claim) == 2
