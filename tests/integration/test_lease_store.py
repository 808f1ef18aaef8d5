"""Channel leases behind `studio.lease_store.LeaseStore`: one spec that the database backend (SQLite and
PostgreSQL, through `DatabaseLeases`) and the Redis backend (`studio.leases_redis.RedisLeases`, a real
redis-server on loopback) both satisfy; then what only Redis has (one round trip per renewal, counted by
MONITOR; keys that expire away), and the wiring: the setting, the streamer's air check and the API status."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import redis
from pydantic import ValidationError

from studio import leases
from studio.config import Settings
from studio.lease_store import DatabaseLeases, LeaseStore, lease_store
from studio.leases_redis import RedisLeases
from tests.conftest import db_channels
from tests.integration.test_metrics_redis import redis_server  # noqa: F401  (fixture)


@dataclass
class Backend:
    store: LeaseStore
    channels: Callable[[int], list[str]]  # n channels that may be leased (rows in the database: a foreign key)
    name: str


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def backend(request, migrated_db, tmp_path):
    if request.param == "redis":
        _, url = request.getfixturevalue("redis_server")
        store = RedisLeases.from_url(url)
        count = iter(range(10**6))
        yield Backend(store, lambda n: sorted(f"ch-{next(count)}" for _ in range(n)), "redis")
        store.close()
        return
    from studio.db import make_engine

    if request.param == "sqlite":
        import shutil

        shutil.copy(migrated_db, tmp_path / "studio.db")
        url = f"sqlite:///{tmp_path / 'studio.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    engine = make_engine(url)
    yield Backend(DatabaseLeases(engine), lambda n: db_channels(engine, n), request.param)
    engine.dispose()


# --- the spec, on every backend ----------------------------------------------------------------------------------

def test_claim_renew_release_and_the_token_grows_on_every_claim(backend):
    st, (cid,) = backend.store, backend.channels(1)
    assert st.claim(channel_id=cid, owner="a", host="ha", ttl=30) == 1
    assert st.claim(channel_id=cid, owner="b", host="hb", ttl=30) is None  # a holds it
    assert st.holds(channel_id=cid, owner="a", token=1)
    assert not st.holds(channel_id=cid, owner="b", token=1)
    assert not st.holds(channel_id=cid, owner="a", token=2)
    assert st.renew(owner="a", ttl=30) == {cid: leases.Held(1)}
    assert st.release(channel_id=cid, owner="a", token=1)
    assert not st.holds(channel_id=cid, owner="a", token=1)  # released: the fence is down
    assert st.renew(owner="a", ttl=30) == {}
    assert st.claim(channel_id=cid, owner="b", host="hb", ttl=30) == 2
    assert not st.release(channel_id=cid, owner="a", token=1)  # a stale holder cannot release
    assert not st.release(channel_id=cid, owner="b", token=1)  # nor the owner with an old token
    assert st.holds(channel_id=cid, owner="b", token=2)
    tokens = []
    for owner in "cdc":
        assert st.release(channel_id=cid, owner=st.live_holders()[cid], token=tokens[-1] if tokens else 2)
        tokens.append(st.claim(channel_id=cid, owner=owner, host=owner, ttl=30))
    assert tokens == [3, 4, 5]


def test_an_expired_lease_is_lost_to_its_owner_and_a_stale_owner_fails_renew_release_and_holds(backend):
    st, (cid, other) = backend.store, backend.channels(2)
    assert st.claim(channel_id=cid, owner="a", host="ha", ttl=0.4) == 1
    assert st.claim(channel_id=other, owner="a", host="ha", ttl=30) == 1
    assert set(st.renew(owner="a", ttl=0.4)) == {cid, other}  # renewing shortens `other` to 0.4 s too
    assert st.renew(owner="a", ttl=0.4) and st.holds(channel_id=cid, owner="a", token=1)
    time.sleep(0.7)
    assert st.renew(owner="a", ttl=30) == {}  # too late: renewing does not bring them back
    assert not st.holds(channel_id=cid, owner="a", token=1)
    assert st.live_holders() == {}
    assert st.claim(channel_id=cid, owner="b", host="hb", ttl=30) == 2  # taken over, with a new token
    assert st.renew(owner="a", ttl=30) == {}
    assert not st.holds(channel_id=cid, owner="a", token=1)
    assert not st.release(channel_id=cid, owner="a", token=1)
    assert st.holds(channel_id=cid, owner="b", token=2)  # the stale owner's release left the new owner's lease
    assert st.renew(owner="b", ttl=30) == {cid: leases.Held(2)}
    assert st.claim(channel_id=other, owner="a", host="ha", ttl=30) == 2  # its owner again, but a new token


def test_renewing_keeps_every_lease_of_the_owner_alive_past_its_first_expiry(backend):
    st, cids = backend.store, backend.channels(20)
    for cid in cids:
        assert st.claim(channel_id=cid, owner="a", host="ha", ttl=0.6) == 1
    for _ in range(4):  # 1.2 s: twice the lease
        time.sleep(0.3)
        assert set(st.renew(owner="a", ttl=0.6)) == set(cids)
    assert st.live_holders() == {cid: "a" for cid in cids}
    assert all(st.claim(channel_id=cid, owner="b", host="hb", ttl=30) is None for cid in cids)


def test_two_streamers_claiming_at_once_get_one_lease_between_them(backend):
    st, cids = backend.store, backend.channels(8)
    won: dict[str, list[str]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def grab(owner: str) -> None:
        barrier.wait()
        for cid in cids:
            if st.claim(channel_id=cid, owner=owner, host=owner, ttl=30) is not None:
                won[owner].append(cid)

    threads = [threading.Thread(target=grab, args=(o,)) for o in won]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won["a"] + won["b"]) == cids  # every channel won exactly once
    assert Counter(st.live_holders().values()) == {o: len(c) for o, c in won.items() if c}


def test_a_handover_is_asked_once_promised_to_the_asker_and_lapses_with_time(backend):
    st, (cid,) = backend.store, backend.channels(1)
    st.claim(channel_id=cid, owner="a", host="ha", ttl=0.5)
    assert st.ask_handover(channel_id=cid, owner="a", to="b")
    assert not st.ask_handover(channel_id=cid, owner="a", to="c")  # one request at a time
    assert not st.ask_handover(channel_id=cid, owner="z", to="c")  # only of its owner
    assert st.handovers([cid]) == {cid: "b"}
    assert st.renew(owner="a", ttl=0.5)[cid].handover_to == "b"
    assert st.release(channel_id=cid, owner="a", token=1)
    assert st.claim(channel_id=cid, owner="c", host="hc", ttl=0.5) is None  # promised to b
    assert st.claim(channel_id=cid, owner="b", host="hb", ttl=0.5) == 2
    assert st.renew(owner="b", ttl=0.5)[cid].handover_to is None
    assert st.handovers([cid]) == {}
    # A promise to a streamer that never claims lapses one lease length after the release.
    assert st.ask_handover(channel_id=cid, owner="b", to="d")
    assert st.release(channel_id=cid, owner="b", token=2)
    assert st.claim(channel_id=cid, owner="c", host="hc", ttl=0.5) is None
    time.sleep(0.7)
    assert st.claim(channel_id=cid, owner="c", host="hc", ttl=0.5) == 3


def test_heartbeats_capacities_and_what_the_api_shows(backend):
    st, (cid,) = backend.store, backend.channels(1)
    st.heartbeat(owner="a", host="ha", capacity=3)
    st.heartbeat(owner="b", host="hb", capacity=5)
    assert st.live_streamers(ttl=30) == {"a": 3, "b": 5}
    time.sleep(0.4)
    st.heartbeat(owner="b", host="hb", capacity=7)
    assert st.live_streamers(ttl=0.3) == {"b": 7}  # a stopped beating
    st.forget_streamer("b")
    assert st.live_streamers(ttl=30) == {"a": 3}
    assert st.lease_of(cid) is None
    st.claim(channel_id=cid, owner="a", host="stream-a", ttl=30)
    view = st.lease_of(cid)
    assert (view.owner, view.host, view.token) == ("a", "stream-a", 1)
    assert 29 <= (view.expires - view.since).total_seconds() <= 31
    assert st.leases_of([cid, "no-such-channel"]) == {cid: view}
    st.release(channel_id=cid, owner="a", token=1)
    assert st.lease_of(cid) is None
    assert st.leases_of([cid]) == {}


def test_streamers_planning_on_the_store_fill_their_shares_and_never_exceed_capacity(backend):
    """Three streamers doing the supervisor's lease pass (`plan` over the store) until nothing changes: every
    channel held once, each streamer at its share by capacity, none above its capacity."""
    st, live = backend.store, backend.channels(9)
    caps = {"a": 2, "b": 3, "c": 6}
    for owner, cap in caps.items():
        st.heartbeat(owner=owner, host=owner, capacity=cap)
    for _ in range(20):
        changed = False
        for owner in caps:
            held = st.renew(owner=owner, ttl=30)
            for cid, lease in held.items():
                if lease.handover_to:  # no segment to finish: hand over at once
                    st.release(channel_id=cid, owner=owner, token=lease.token)
                    changed = True
            todo = leases.plan(owner, live=live, holders=st.live_holders(), capacities=st.live_streamers(ttl=30),
                               pending=st.handovers(live))
            for cid in todo.claim + [c for c, to in st.handovers(live).items() if to == owner]:
                changed |= st.claim(channel_id=cid, owner=owner, host=owner, ttl=30) is not None
            for cid, other in todo.ask:
                changed |= st.ask_handover(channel_id=cid, owner=other, to=owner)
        if not changed:
            break
    counts = Counter(st.live_holders().values())
    assert sum(counts.values()) == len(live)
    assert all(counts[o] <= cap for o, cap in caps.items())
    assert dict(counts) == {o: n for o, n in leases.shares(len(live), caps).items() if n}


# --- only Redis ----------------------------------------------------------------------------------------------------

def _commands_of(url: str, action: Callable[[], object]) -> list[str]:
    """The commands clients sent to the server while `action` ran (not those that scripts ran), by MONITOR."""
    watcher = redis.Redis.from_url(url)
    done = f"done-{time.monotonic_ns()}"
    seen: list[str] = []
    with watcher.monitor() as m:
        action()
        watcher.echo(done)
        while True:
            cmd = m.next_command()
            if done in cmd["command"]:
                break
            if cmd.get("client_type") != "lua":
                seen.append(cmd["command"])
    watcher.close()
    return seen


def test_renewing_n_leases_on_redis_is_one_round_trip(redis_server):  # noqa: F811
    _, url = redis_server
    st = RedisLeases.from_url(url)
    st.renew(owner="a", ttl=5)  # the script is loaded on first use (NOSCRIPT, SCRIPT LOAD): not what is counted
    for n in (1, 50):
        for i in range(n):
            st.claim(channel_id=f"n{n}-{i}", owner="a", host="ha", ttl=5)
        sent = _commands_of(url, lambda: st.renew(owner="a", ttl=5))
        assert len(sent) == 1 and sent[0].startswith("EVALSHA"), sent
    assert len(st.renew(owner="a", ttl=5)) == 51
    st.close()


def test_redis_expiry_is_by_the_server_clock_and_dead_leases_leave_no_keys_but_the_token(redis_server):  # noqa: F811
    _, url = redis_server
    st, raw = RedisLeases.from_url(url, prefix="t:"), redis.Redis.from_url(url)
    server_ms = int(raw.time()[0]) * 1000
    st.claim(channel_id="x", owner="a", host="ha", ttl=0.3)
    assert abs(int(raw.hget("t:lease:x", "since")) - server_ms) < 2000  # the server's clock, in ms
    assert 0 < raw.pttl("t:lease:x") <= 600
    time.sleep(0.8)
    assert st.live_holders() == {}
    assert raw.exists("t:lease:x") == 0 and raw.smembers("t:channels") == set()
    assert st.renew(owner="a", ttl=0.3) == {} and raw.exists("t:owned:a") == 0
    assert raw.get("t:token:x") == b"1"  # the fencing token stays: the next claim is 2, never 1 again
    assert st.claim(channel_id="x", owner="a", host="ha", ttl=0.3) == 2
    st.close()
    raw.close()


# --- wiring ---------------------------------------------------------------------------------------------------------

def test_the_backend_is_chosen_by_the_setting_and_a_wrong_one_is_named():
    with pytest.raises(ValidationError, match="lease_backend"):
        Settings(streamer={"lease_backend": "zookeeper"})
    engine = object()
    assert isinstance(lease_store(Settings(), engine), DatabaseLeases)
    redis_backed = lease_store(Settings(services={"redis_url": "redis://127.0.0.1:9/0"},
                                        streamer={"lease_backend": "redis"}), engine)
    assert isinstance(redis_backed, RedisLeases)
    redis_backed.close()


@pytest.mark.parametrize("kind", ["database", "redis"])
def test_the_air_check_asks_the_lease_store_for_the_fence_and_marks_the_segment_in_the_database(
        kind, redis_server, avatar_world):  # noqa: F811
    from sqlalchemy import update

    from studio.db import session_scope
    from studio.models import ChannelLease
    from tests.integration.conftest import new_show, plan_segment, segment_row
    from workers.render.segment import render_segment_direct
    from workers.streamer.air import ChannelAir
    from workers.streamer.leasing import LeaseKeeper

    _, url = redis_server
    rt, ids = avatar_world
    channel, show = new_show(rt, ids, f"fenced-{kind}")
    seg = plan_segment(rt, ids, 0, channel=channel.id, show=show.id)
    assert render_segment_direct(rt, seg) == "ready"
    store = lease_store(Settings(services={"redis_url": url}, streamer={"lease_backend": kind}), rt.engine)
    keeper = LeaseKeeper(store, owner="stream-a:1:x", host="stream-a", ttl=10)
    token = keeper.claim(channel.id)
    air = ChannelAir(rt, channel.id, lease=keeper, token=token)
    ref = air.next_segment()
    assert ref is not None and ref.id == seg
    assert air.verify(ref), air.last_refusal
    assert segment_row(rt, seg).air_token == token  # the mark is in the database whichever store holds the lease
    with session_scope(rt.engine) as s:
        row = s.get(ChannelLease, channel.id)
        assert (row is not None) == (kind == "database")  # with Redis the fence came from Redis alone

    # The lease runs out by the store's clock (this streamer was paused) and another streamer takes it. The
    # local deadline has not passed yet, so only the store can tell.
    if kind == "redis":
        redis.Redis.from_url(url).hset(f"studio:leases:lease:{channel.id}", "expires", 0)
    else:
        with session_scope(rt.engine) as s:
            s.exec(update(ChannelLease).where(ChannelLease.channel_id == channel.id)
                   .values(expires_at=row.since))
    assert store.claim(channel_id=channel.id, owner="stream-b:1:y", host="stream-b", ttl=10) == token + 1
    assert keeper.valid(channel.id, token)
    assert not air.verify(ref)
    assert "no longer holds" in air.last_refusal
    assert not keeper.valid(channel.id, token)  # the feeder's fence is down at once
    store.close()


def test_the_api_status_names_the_host_from_the_redis_leases(redis_server, fresh_db, tmp_path):  # noqa: F811
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.conftest import as_admin, db_show

    _, url = redis_server
    cid = db_show(fresh_db)["channel"]
    st = RedisLeases.from_url(url)
    st.claim(channel_id=cid, owner="stream-b:7:z", host="stream-b", ttl=30)
    rt = SimpleNamespace(engine=fresh_db, settings=Settings(services={"redis_url": url},
                                                            streamer={"lease_backend": "redis"}),
                         data=SimpleNamespace(run=tmp_path, root=tmp_path))
    with TestClient(create_app(rt)) as client:
        as_admin(client, fresh_db)
        status = client.get(f"/api/channels/{cid}/status").json()
        assert status["aired_by"] == "stream-b" and status["lease_token"] == 1
        assert status["aired_since"].endswith("Z")
        # The ops page: the channel's streamer host, and each streamer with the channels it holds.
        ops = client.get("/api/ops/overview").json()
        [channel] = [c for c in ops["channels"] if c["id"] == cid]
        assert (channel["aired_by"], channel["lease_token"]) == ("stream-b", 1)
        assert ops["streamers"] == [{"owner": "stream-b:7:z", "host": "stream-b", "channels": [cid]}]
        st.release(channel_id=cid, owner="stream-b:7:z", token=1)
        status = client.get(f"/api/channels/{cid}/status").json()
        assert status["aired_by"] is None and status["lease_token"] is None
    st.close()


def test_a_slow_renewal_is_logged_before_the_leases_run_out(migrated_db, tmp_path, caplog):
    """SQLite on a busy disk: another writer holds the database's write lock, the renewal waits behind it, and the
    streamer says so (how long, of how long the lease lasts) before any channel drops. A CI run of test_demo_channels
    once saw two channels reconnect at once; a renewal took 6.3 s of 5 s here with a disk-filling writer beside it."""
    import logging
    import shutil
    import sqlite3

    from studio.db import make_engine
    from workers.streamer.leasing import LeaseKeeper

    shutil.copy(migrated_db, tmp_path / "studio.db")
    engine = make_engine(f"sqlite:///{tmp_path / 'studio.db'}")
    (cid,) = db_channels(engine, 1)
    keeper = LeaseKeeper(DatabaseLeases(engine), owner="stream-a:1:x", host="stream-a", ttl=4.0)
    token = keeper.claim(cid)
    stop = threading.Event()
    caplog.set_level(logging.WARNING, logger="studio.streamer")
    renewing = keeper.renew_every(0.1, stop)
    try:
        time.sleep(0.5)
        assert not [r for r in caplog.records if "renewing" in r.getMessage()]  # quick renewals say nothing
        other = sqlite3.connect(tmp_path / "studio.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the write lock, as a long transaction or a slow fsync holds it
        time.sleep(1.6)
        other.execute("ROLLBACK")
        other.close()
        deadline = time.monotonic() + 10
        while not [r for r in caplog.records if "renewing" in r.getMessage()] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        renewing.join(5)
        engine.dispose()
    (slow,) = [r for r in caplog.records if "renewing" in r.getMessage()]
    assert slow.levelno == logging.WARNING
    took = float(slow.getMessage().split(" took ")[1].split(" s")[0])
    assert 1.0 <= took < 4.0 and "of the 4 s they last" in slow.getMessage(), slow.getMessage()
    assert keeper.valid(cid, token)  # renewed in time: the channel stayed on air
