"""Channel leases at fleet size (issue 16): 1,000 channels on 20 simulated streamers, leases only, no media.

Each simulated streamer is a process with an engine of its own (forked from a server that imported the studio
once), running two threads: the real `LeaseKeeper` renewing every second (heartbeat + every lease in one
statement), and a pass like `Streamer.step` without runners (live_holders, live_streamers, pending hand-overs,
`plan`, claim, ask; a hand-over asked of it is released at once, there is no segment to finish). A lease that
lapses while the database is saturated is counted, and the fleet takes it again before the next phase.
Measured, PostgreSQL 15 and a redis-server started here (loopback; fsync off and no persistence, as in the
tests) and SQLite (WAL) in the same run, each through its `studio.lease_store.LeaseStore` backend:

1. renew passes/s the store sustains with every streamer renewing back-to-back, against the same renewals as
   single-row UPDATEs (one per lease, `UPDATE channellease SET expires_at=... WHERE channel_id=...`), on Redis
   as one script per lease (a round trip each); claims/s while the channels are first spread;
2. seconds until every channel of a streamer that stopped renewing is held by the others (PostgreSQL, Redis);
3. the balance then: most and fewest channels per live streamer, against `shares`;
4. what the air-time consent check costs at fleet size: `ChannelAir.still_allowed` asked every
   CUT_CHECK_SECONDS per airing channel, computed, and measured on a sample of channels as threads of one process
   (one engine, as in a streamer): before, a query per check; after, answered by the streamer's `ConsentWatch`
   (one query a second for all its consents, refreshed at once by a revocation pushed on Redis).

`python -m bench fleet`, or `python -m bench.fleet --channels 40 --streamers 4 --seconds 2` for a small run.
Writes bench/out/fleet.json."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import event, text

from bench.common import Figure, report

CHANNELS = 1000
STREAMERS = 20
CAPACITY = 60
SECONDS = 5.0       # each measured phase
LEASE_SECONDS = 2.0
SAMPLE = 50         # channels whose consent checks run for real (one streamer's engine)
SETTLE_SECONDS = 30.0  # after a failover, how long to wait for every live streamer to reach its share
PASS_SECONDS = 1.0  # the supervisor's pass and the keeper's renewal, as in workers.streamer.supervisor


@dataclass
class Options:
    channels: int = CHANNELS
    streamers: int = STREAMERS
    seconds: float = SECONDS
    capacity: int = CAPACITY
    lease_seconds: float = LEASE_SECONDS
    sample: int = SAMPLE


def parse(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.splitlines()[0])
    p.add_argument("--channels", type=int, default=CHANNELS)
    p.add_argument("--streamers", type=int, default=STREAMERS)
    p.add_argument("--seconds", type=float, default=SECONDS, help="length of each measured phase")
    p.add_argument("--capacity", type=int, default=CAPACITY)
    p.add_argument("--lease-seconds", type=float, default=LEASE_SECONDS)
    p.add_argument("--sample", type=int, default=SAMPLE, help="channels whose consent checks run for real")
    a = p.parse_args(argv)
    if a.channels > a.streamers * a.capacity:
        p.error("more channels than the streamers' capacity")
    return Options(a.channels, a.streamers, a.seconds, a.capacity, a.lease_seconds, min(a.sample, a.channels))


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else (values or [0.0])[0]


def _busy(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of (start, end) intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


@dataclass(frozen=True)
class Target:
    """Where the leases live: `kind` a `streamer.lease_backend` ("database" or "redis"), `url` its URL."""

    name: str
    kind: str
    url: str


def _open_store(target: Target):
    """The lease store of `target`, and the engine it owns (None for Redis)."""
    if target.kind == "redis":
        from studio.leases_redis import RedisLeases

        return RedisLeases.from_url(target.url), None
    from studio.db import make_engine
    from studio.lease_store import DatabaseLeases

    engine = make_engine(target.url)
    return DatabaseLeases(engine), engine


class SimStreamer:
    """One `studio streamer` without media, in a process of its own: the real LeaseKeeper renewing every second on
    its own thread, and the lease part of `Streamer.step` on another."""

    def __init__(self, target: Target, host: str, live: list[str], *, capacity: int, ttl: float):
        from workers.streamer.leasing import LeaseKeeper, new_owner_id

        self.target = target
        self.store, self.engine = _open_store(target)
        owner = f"{host}:{new_owner_id().split(':', 1)[1]}"  # as a real streamer's: host:pid:random
        self.keeper = LeaseKeeper(self.store, owner=owner, host=host, capacity=capacity, ttl=ttl)
        self.live = live
        self.asked: dict[str, float] = {}
        self.claims: list[tuple[float, float, bool]] = []  # (start, end, won) on the monotonic clock
        self.asks: list[float] = []  # hand-overs asked, when (monotonic)
        self.errors = 0
        self.stop = threading.Event()      # set: the passes stop
        self.renewing = threading.Event()  # set: the renewals stop
        self.wake = threading.Event()
        self.threads: list[threading.Thread] = []

    @property
    def owner(self) -> str:
        return self.keeper.owner

    def start(self) -> None:
        self.stop.clear()
        self.renewing.clear()
        self.threads = [threading.Thread(target=self._loop, name=f"pass-{self.owner}", daemon=True),
                        self.keeper.renew_every(PASS_SECONDS, self.renewing, on_change=self.wake.set)]
        self.threads[0].start()

    def stop_passes(self) -> None:
        self.stop.set()
        self.wake.set()
        for t in self.threads[:1]:
            t.join()

    def stop_renewals(self) -> None:
        self.renewing.set()
        for t in self.threads[1:]:
            t.join()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - as the supervisor: a failed pass is retried on the next
                self.errors += 1
            self.wake.wait(0.2 if self.asked else PASS_SECONDS)
            self.wake.clear()

    def close(self) -> None:
        self.store.close()
        if self.engine is not None:
            self.engine.dispose()

    def step(self) -> None:
        from studio import leases

        held = self.keeper.held()
        for cid, lease in list(held.items()):
            if lease.handover_to:  # no segment to finish: hand over at once
                self.keeper.release(cid, lease.token)
                held.pop(cid)
        holders = self.store.live_holders()
        caps = self.store.live_streamers(ttl=self.keeper.ttl)
        pending = self.store.handovers(self.live)
        todo = leases.plan(self.owner, live=self.live, holders=holders, capacities=caps, pending=pending)
        for cid in todo.drop:
            if cid in held:
                self.keeper.release(cid, held.pop(cid).token)
        for cid in todo.claim + [c for c in self.asked if c not in holders]:
            if cid in held:
                continue
            t = time.monotonic()
            token = self.keeper.claim(cid)
            self.claims.append((t, time.monotonic(), token is not None))
            if token is not None:
                held[cid] = leases.Held(token)
                self.asked.pop(cid, None)
        now = time.monotonic()
        for cid, owner in todo.ask:
            if self.store.ask_handover(channel_id=cid, owner=owner, to=self.owner):
                self.asked[cid] = now
                self.asks.append(now)
        for cid in [c for c, t in self.asked.items() if now - t > 60]:
            self.asked.pop(cid)


def renew_row_by_row(streamer: SimStreamer) -> int:
    """The peer's renew pass: the same heartbeat, then one single-row UPDATE per lease held (on Redis: one script
    per lease, a round trip each, extending it as `RedisLeases.renew` does but without the owner check, as the
    UPDATE has none); returns how many leases it renewed."""
    from studio import leases
    from studio.db import session_scope

    k = streamer.keeper
    ids = list(k.held())
    if streamer.engine is None:
        store = streamer.store
        store.heartbeat(owner=k.owner, host=k.host, capacity=k.capacity)
        ttl_ms = round(k.ttl * 1000)
        return sum(_RENEW_ONE(keys=[f"{store.prefix}lease:{cid}"], args=[ttl_ms], client=store.client)
                   for cid in ids)
    with session_scope(streamer.engine) as s:
        leases.heartbeat(s, owner=k.owner, host=k.host, capacity=k.capacity)
        expires = leases.db_now(s) + timedelta(seconds=k.ttl)
        conn = s.connection()
        stmt = text("UPDATE channellease SET expires_at = :expires WHERE channel_id = :channel_id")
        return sum(conn.execute(stmt, {"expires": expires, "channel_id": cid}).rowcount for cid in ids)


class _RenewOne:
    """The Redis peer's renewal of one lease (a script registered on first use, per process)."""

    LUA = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local ttl = tonumber(ARGV[1])
    if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
    redis.call('HSET', KEYS[1], 'expires', now + ttl)
    redis.call('PEXPIREAT', KEYS[1], now + 2 * ttl)
    return 1
    """

    def __init__(self) -> None:
        self.script = None

    def __call__(self, *, keys: list[str], args: list[object], client) -> int:
        if self.script is None:
            self.script = client.register_script(self.LUA)
        return self.script(keys=keys, args=args, client=client)


_RENEW_ONE = _RenewOne()


def _back_to_back(fn: Callable[[], object], barrier, seconds: float) -> list[float]:
    barrier.wait(timeout=120)
    deadline = time.monotonic() + seconds
    took = []
    while (t := time.monotonic()) < deadline:
        fn()
        took.append(time.monotonic() - t)
    return took


def _serve(conn, barrier, target: Target, host: str, live: list[str], capacity: int, ttl: float) -> None:
    """A simulated streamer's process: runs the parent's commands one at a time, answers ("ok"|"error", value)."""
    import traceback

    st = SimStreamer(target, host, live, capacity=capacity, ttl=ttl)
    ops: dict[str, Callable[[object], object]] = {
        "renew": lambda _: len(st.keeper.renew()),
        "start": lambda _: st.start(),
        "stop_passes": lambda _: st.stop_passes(),
        "stop_renewals": lambda _: st.stop_renewals(),
        "hammer": lambda arg: _back_to_back((lambda: renew_row_by_row(st)) if arg[0] else st.keeper.renew,
                                            barrier, arg[1]),
        "report": lambda _: (st.claims, st.errors, st.asks),
        "owner": lambda _: st.owner,
    }
    try:
        while (msg := conn.recv())[0] != "quit":
            try:
                conn.send(("ok", ops[msg[0]](msg[1])))
            except Exception:  # noqa: BLE001 - told to the parent, which stops the run
                conn.send(("error", traceback.format_exc()))
    finally:
        st.stop_passes()
        st.stop_renewals()
        st.close()


class Fleet:
    """The simulated streamers, a process each (forked from a server that imported the studio once)."""

    def __init__(self, target: Target, opts: Options, live: list[str]):
        import multiprocessing

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["studio.db", "studio.leases", "studio.leases_redis", "workers.streamer.leasing",
                                    "psycopg", "redis"])
        self.barrier = ctx.Barrier(opts.streamers + 1)
        self.owners = [f"host-{i:02d}" for i in range(opts.streamers)]
        self.pipes, self.procs = [], []
        for host in self.owners:
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(there, self.barrier, target, host, live, opts.capacity,
                                                    opts.lease_seconds), name=host, daemon=True)
            proc.start()
            self.pipes.append(here)
            self.procs.append(proc)
        self.owners = self.ask("owner")

    def ask(self, cmd: str, arg: object = None, *, only: list[int] | None = None) -> list:
        which = range(len(self.pipes)) if only is None else only
        for i in which:
            self.pipes[i].send((cmd, arg))
        out = []
        for i in which:
            status, value = self.pipes[i].recv()
            if status != "ok":
                raise RuntimeError(f"{self.owners[i]} failed at {cmd!r}:\n{value}")
            out.append(value)
        return out

    def halt(self, only: list[int] | None = None) -> None:
        """Stop passes, then renewals (of all of them first, so no lease lapses while the others stop)."""
        self.ask("stop_passes", only=only)
        self.ask("stop_renewals", only=only)

    def hammer(self, *, peer: bool, seconds: float) -> tuple[int, list[float], float]:
        """Every streamer renewing back-to-back for `seconds`: (passes, latencies, wall)."""
        for pipe in self.pipes:
            pipe.send(("hammer", (peer, seconds)))
        self.barrier.wait(timeout=120)
        t0 = time.monotonic()
        took: list[float] = []
        for name, pipe in zip(self.owners, self.pipes, strict=True):
            status, value = pipe.recv()
            if status != "ok":
                raise RuntimeError(f"{name} failed renewing back-to-back:\n{value}")
            took += value
        return len(took), took, time.monotonic() - t0

    def close(self) -> None:
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            try:
                pipe.send(("quit", None))
            except OSError:
                pass
            proc.join(timeout=15)
            if proc.is_alive():
                proc.terminate()


def _hammer(fns: list[Callable[[], object]], seconds: float) -> tuple[int, list[float], float]:
    """Run every fn back-to-back on a thread of its own for `seconds`: (calls, latencies, wall)."""
    barrier = threading.Barrier(len(fns) + 1)
    took: list[list[float]] = [[] for _ in fns]

    def loop(fn, out: list[float]) -> None:
        barrier.wait()
        deadline = time.perf_counter() + seconds
        while (t := time.perf_counter()) < deadline:
            fn()
            out.append(time.perf_counter() - t)

    threads = [threading.Thread(target=loop, args=(fn, out), daemon=True) for fn, out in zip(fns, took, strict=True)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    flat = [x for out in took for x in out]
    return len(flat), flat, time.perf_counter() - t0


def _wait(cond: Callable[[], bool], timeout: float, every: float = 0.05) -> float | None:
    """Seconds until `cond()` holds, polled every `every` s; None after `timeout`."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if cond():
            return time.perf_counter() - t0
        time.sleep(every)
    return None


@dataclass
class FleetResult:
    spread_s: float
    claim_calls: int
    claims_won: int
    claims_per_s: float
    renew_passes_per_s: float
    renew_p95_ms: float
    peer_passes_per_s: float
    peer_p95_ms: float
    leases_per_pass: float
    lapsed: int = 0
    peer_lapsed: int = 0
    errors: int = 0
    failover_s: float | None = None
    moved: int = 0
    most: int = 0
    fewest: int = 0
    ideal_most: int = 0
    ideal_fewest: int = 0
    settle_s: float | None = None  # after the failover, until every live streamer is at its share (None: not then)
    settled_most: int = 0
    settled_fewest: int = 0
    failover_claims: int = 0
    failover_won: int = 0
    failover_asks: int = 0


def fleet(target: Target, opts: Options, *, failover: bool) -> FleetResult:
    from studio import leases
    from tests.conftest import db_channels

    store, engine = _open_store(target)
    # Channels are rows in the database (a lease row refers to one); Redis leases need only their ids.
    live = db_channels(engine, opts.channels, prefix="fleet-") if engine is not None else \
        [f"fleet-{i:04d}" for i in range(opts.channels)]
    streamers = Fleet(target, opts, live)

    def _holders() -> dict[str, str]:
        return store.live_holders()

    try:
        streamers.ask("renew")  # every streamer is live (heartbeat) before the first plan: a fleet started together
        t0 = time.monotonic()
        streamers.ask("start")
        if _wait(lambda: len(_holders()) == opts.channels, 60 + 10 * opts.lease_seconds) is None:
            raise SystemExit(f"the channels were not all claimed in time: {len(_holders())}/{opts.channels}")
        spread = time.monotonic() - t0
        streamers.halt()
        claims = [c for cs, *_ in streamers.ask("report") for c in cs]

        def lapsed() -> int:
            return opts.channels - len(_holders())

        def run_until_all_held() -> None:
            streamers.ask("renew")
            streamers.ask("start")
            if _wait(lambda: lapsed() == 0, 60 + 10 * opts.lease_seconds) is None:
                raise SystemExit(f"{target.name}: {lapsed()} channel(s) not taken again in time")

        def respread() -> None:  # a saturated database let leases lapse: let the fleet take them again
            run_until_all_held()
            streamers.halt()

        def hammer(peer: bool) -> tuple[int, list[float], float, int]:
            """The streamers renewing back-to-back, and the most leases expired at once meanwhile (a streamer
            starved of the database for longer than a lease), polled from here."""
            if lapsed():
                respread()
            most, done = [0], threading.Event()

            def poll() -> None:
                while not done.wait(0.1):
                    most[0] = max(most[0], lapsed())

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            try:
                n, took, wall = streamers.hammer(peer=peer, seconds=opts.seconds)
            finally:
                done.set()
                poller.join()
            return n, took, wall, max(most[0], lapsed())

        # 1. renew passes back-to-back: ours (one statement for all of a streamer's leases), then row by row.
        n, took, wall, lost = hammer(False)
        pn, ptook, pwall, peer_lost = hammer(True)
        out = FleetResult(spread_s=spread, claim_calls=len(claims), claims_won=sum(w for *_, w in claims),
                          claims_per_s=len(claims) / max(_busy([(a, b) for a, b, _ in claims]), 1e-9),
                          renew_passes_per_s=n / wall, renew_p95_ms=1000 * _p95(took), peer_passes_per_s=pn / pwall,
                          peer_p95_ms=1000 * _p95(ptook), leases_per_pass=opts.channels / opts.streamers,
                          lapsed=lost, peer_lapsed=peer_lost)
        if failover:
            # 2. one streamer stops renewing; the others take its channels once its leases and heartbeat lapse.
            run_until_all_held()
            ideal = leases.shares(opts.channels, {o: opts.capacity for o in streamers.owners})

            def channels_of(owners: list[str], holders: dict[str, str] | None = None) -> dict[str, int]:
                counts = Counter((holders if holders is not None else _holders()).values())
                return {o: counts[o] for o in owners}

            if _wait(lambda: channels_of(streamers.owners) == ideal, 60 + 10 * opts.lease_seconds, every=0.2) is None:
                raise SystemExit(f"{target.name}: the fleet did not reach its shares in time")
            dead, alive = streamers.owners[0], streamers.owners[1:]
            streamers.halt(only=[0])
            t0 = time.monotonic()
            theirs = {c for c, o in _holders().items() if o == dead}
            if not theirs:
                raise SystemExit(f"{target.name}: the streamer to stop held no channel")
            last: dict[str, str] = {}

            def moved() -> bool:
                last.clear()
                last.update(_holders())
                return all(last.get(c) not in (None, dead) for c in theirs)

            if _wait(moved, 60 + 10 * opts.lease_seconds, every=0.02) is None:
                raise SystemExit(f"the dead streamer's channels were not all taken over: {theirs - set(last)}")
            out.failover_s, out.moved = time.monotonic() - t0, len(theirs)
            # 3. the balance at that moment, against the shares by capacity, and once the live ones reach them
            counts = channels_of(alive, last)
            ideal = leases.shares(opts.channels, {o: opts.capacity for o in alive})
            out.most, out.fewest = max(counts.values()), min(counts.values())
            out.ideal_most, out.ideal_fewest = max(ideal.values()), min(ideal.values())
            settled = _wait(lambda: channels_of(alive) == ideal, SETTLE_SECONDS, every=0.2)
            out.settle_s = settled
            counts = channels_of(alive)
            out.settled_most, out.settled_fewest = max(counts.values()), min(counts.values())
            streamers.halt(only=list(range(1, opts.streamers)))
        reports = streamers.ask("report")
        out.errors = sum(e for _, e, _ in reports)
        if failover:
            after = [c for cs, *_ in reports for c in cs if c[0] >= t0]
            out.failover_claims, out.failover_won = len(after), sum(w for *_, w in after)
            out.failover_asks = sum(1 for *_, asks in reports for t in asks if t >= t0)
        return out
    finally:
        streamers.close()
        store.close()
        if engine is not None:
            engine.dispose()


@dataclass
class ConsentResult:
    statements_per_check: float
    sample_checks_per_s: float
    sample_statements_per_s: float
    sample_p95_ms: float
    peak_checks_per_s: float
    watch_checks_per_s: float = 0.0
    watch_statements_per_s: float = 0.0
    watch_p95_ms: float = 0.0


def _paced(airs: list, refs: list, seconds: float, statements: list[int]) -> tuple[float, float, float]:
    """Every channel asks `still_allowed` every CUT_CHECK_SECONDS for `seconds`, a thread each, as feeders do:
    (checks/s, statements/s, p95 s of one check)."""
    from workers.streamer.feeder import CUT_CHECK_SECONDS

    barrier = threading.Barrier(len(refs) + 1)
    took: list[list[float]] = [[] for _ in refs]

    def channel(air, ref, out: list[float]) -> None:
        barrier.wait()
        start = time.perf_counter()
        k = 0
        while (t := time.perf_counter()) < start + seconds:
            if not air.still_allowed(ref):
                raise RuntimeError(f"consent check refused: {air.last_refusal}")
            out.append(time.perf_counter() - t)
            k += 1
            time.sleep(max(0.0, start + k * CUT_CHECK_SECONDS - time.perf_counter()))

    threads = [threading.Thread(target=channel, args=a, daemon=True) for a in zip(airs, refs, took, strict=True)]
    for t in threads:
        t.start()
    barrier.wait()
    before, t0 = statements[0], time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    flat = [x for out in took for x in out]
    return len(flat) / wall, (statements[0] - before) / wall, _p95(flat)


def consent_checks(url: str, opts: Options) -> ConsentResult:
    """`ChannelAir.still_allowed` as the feeder asks it, `opts.sample` channels on one engine (one streamer process)
    for `opts.seconds`: a query per check (no ConsentWatch, the design before), then back-to-back; then answered
    by the streamer's `ConsentWatch` (one query a second for all its consents; no Redis here, so no pushes)."""
    from sqlmodel import Session

    from studio.config import Settings
    from studio.db import make_engine
    from studio.models import Segment
    from tests.conftest import db_show
    from workers.streamer.air import ChannelAir
    from workers.streamer.consent_watch import ConsentWatch
    from workers.streamer.feeder import SegmentRef

    engine = make_engine(url)
    statements = [0]

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_a) -> None:
        statements[0] += 1

    watch = ConsentWatch(engine)
    try:
        ids = db_show(engine)
        with Session(engine) as s:
            rows = [Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                            consent_id=ids["consent"], script_id=ids["script"], text="Paid partnership.", seq=i)
                    for i in range(opts.sample)]
            s.add_all(rows)
            s.commit()
            refs = [SegmentRef(r.id, Path(f"{r.id}.mp4")) for r in rows]
        rt = SimpleNamespace(engine=engine, settings=Settings())
        airs = [ChannelAir(rt, ids["channel"]) for _ in refs]

        before = statements[0]
        for _ in range(20):
            assert airs[0].still_allowed(refs[0])
        per_check = (statements[0] - before) / 20
        rate, per_s, p95 = _paced(airs, refs, opts.seconds, statements)
        peak, _, peak_wall = _hammer([lambda a=a, r=r: a.still_allowed(r) for a, r in zip(airs, refs, strict=True)
                                      ][:opts.streamers], max(0.5, opts.seconds / 2))
        out = ConsentResult(per_check, rate, per_s, 1000 * p95, peak / peak_wall)

        watched = [ChannelAir(rt, ids["channel"], consents=watch, consent_id=ids["consent"]) for _ in refs]
        for _ in watched:  # each runner watches its show's consent (supervisor.ChannelRunner)
            watch.watch(ids["consent"])
        watch.start()
        # a refresh a second: a window of a few seconds at least, so that one more or less does not dominate
        out.watch_checks_per_s, out.watch_statements_per_s, p95 = _paced(watched, refs, max(opts.seconds, 2.0),
                                                                         statements)
        out.watch_p95_ms = 1000 * p95
        return out
    finally:
        watch.stop()
        engine.dispose()


def run(opts: Options, *, pg_url: str, sqlite_url: str, redis_url: str) -> Path:
    """Measure on the two (migrated, empty) databases and the (empty) Redis; write bench/out/fleet.json."""
    from workers.streamer.feeder import CUT_CHECK_SECONDS

    pg = fleet(Target("PostgreSQL", "database", pg_url), opts, failover=True)
    lite = fleet(Target("SQLite", "database", sqlite_url), opts, failover=False)
    rd = fleet(Target("Redis", "redis", redis_url), opts, failover=True)
    pg_consent_url = pg_url  # the same database: its channels and leases are there as in a real fleet
    cc = consent_checks(pg_consent_url, opts)

    n, s = opts.channels, opts.streamers
    per_s = 1 / CUT_CHECK_SECONDS
    checks = n * per_s
    single = "single-row UPDATEs"
    after = "after: ConsentWatch, one query a second per streamer"
    figures = [
        Figure(f"renew passes/s, {s} streamers back-to-back, PostgreSQL", pg.renew_passes_per_s, "passes/s",
               f"{single}, PostgreSQL", pg.peer_passes_per_s),
        Figure("renew pass p95, PostgreSQL", pg.renew_p95_ms, "ms", f"{single}, PostgreSQL", pg.peer_p95_ms),
        Figure(f"renew passes/s, {s} streamers back-to-back, SQLite", lite.renew_passes_per_s, "passes/s",
               f"{single}, SQLite", lite.peer_passes_per_s),
        Figure("renew pass p95, SQLite", lite.renew_p95_ms, "ms", f"{single}, SQLite", lite.peer_p95_ms),
        Figure(f"renew passes/s, {s} streamers back-to-back, Redis (one Lua script each)", rd.renew_passes_per_s,
               "passes/s", "one script per lease, Redis", rd.peer_passes_per_s),
        Figure("renew pass p95, Redis", rd.renew_p95_ms, "ms", "one script per lease, Redis", rd.peer_p95_ms),
        Figure("renew passes/s, Redis against PostgreSQL", rd.renew_passes_per_s, "passes/s", "PostgreSQL",
               pg.renew_passes_per_s),
        Figure("most leases expired at once while renewing back-to-back, PostgreSQL", pg.lapsed, "leases",
               f"{single}, PostgreSQL", pg.peer_lapsed),
        Figure("most leases expired at once while renewing back-to-back, SQLite", lite.lapsed, "leases",
               f"{single}, SQLite", lite.peer_lapsed),
        Figure("most leases expired at once while renewing back-to-back, Redis", rd.lapsed, "leases",
               "one script per lease, Redis", rd.peer_lapsed),
        Figure(f"claims/s spreading {n} channels, Redis", rd.claims_per_s, "claims/s", "PostgreSQL",
               pg.claims_per_s),
        Figure(f"seconds until all {n} channels are held, Redis", rd.spread_s, "s", "PostgreSQL", pg.spread_s),
        Figure(f"claims/s spreading {n} channels, PostgreSQL", pg.claims_per_s, "claims/s", "SQLite",
               lite.claims_per_s),
        Figure(f"seconds until all {n} channels are held, PostgreSQL", pg.spread_s, "s", "SQLite", lite.spread_s),
        Figure(f"failover: seconds until a dead streamer's {pg.moved} channels are held by others "
               f"(leases of {opts.lease_seconds:g} s)", pg.failover_s, "s"),
        Figure(f"balance after failover: most channels on one of {s - 1} live streamers", pg.most, "channels",
               "shares by capacity", pg.ideal_most),
        Figure("balance after failover: fewest channels on a live streamer", pg.fewest, "channels",
               "shares by capacity", pg.ideal_fewest),
        Figure("then seconds until every live streamer is at its share"
               + ("" if pg.settle_s is not None else f" (not within {SETTLE_SECONDS:g} s)"),
               SETTLE_SECONDS if pg.settle_s is None else pg.settle_s, "s"),
        Figure("balance then: most channels on a live streamer", pg.settled_most, "channels", "shares by capacity",
               pg.ideal_most),
        Figure("balance then: fewest channels on a live streamer", pg.settled_fewest, "channels",
               "shares by capacity", pg.ideal_fewest),
        Figure(f"failover on Redis: seconds until a dead streamer's {rd.moved} channels are held by others",
               rd.failover_s, "s", "PostgreSQL", pg.failover_s),
        Figure("balance after failover on Redis: most channels on a live streamer", rd.most, "channels",
               "shares by capacity", rd.ideal_most),
        Figure("balance after failover on Redis: fewest channels on a live streamer", rd.fewest, "channels",
               "shares by capacity", rd.ideal_fewest),
        Figure("then seconds until every live streamer is at its share, Redis"
               + ("" if rd.settle_s is not None else f" (not within {SETTLE_SECONDS:g} s)"),
               SETTLE_SECONDS if rd.settle_s is None else rd.settle_s, "s", "PostgreSQL",
               SETTLE_SECONDS if pg.settle_s is None else pg.settle_s),
        Figure("balance then on Redis: most channels on a live streamer", rd.settled_most,
               "channels", "shares by capacity", rd.ideal_most),
        Figure("balance then on Redis: fewest channels on a live streamer", rd.settled_fewest, "channels",
               "shares by capacity", rd.ideal_fewest),
        Figure(f"consent checks/s at {n} channels airing (every {CUT_CHECK_SECONDS:g} s per channel)", checks,
               "checks/s"),
        Figure(f"database statements/s those cost, before: a query per check (x {cc.statements_per_check:g}), "
               "computed", checks * cc.statements_per_check, "statements/s", f"{after}, computed", float(s)),
        Figure(f"the same measured on {opts.sample} channels of one engine, scaled to {n} channels on {s} streamers",
               cc.sample_statements_per_s * n / opts.sample, "statements/s", f"{after}, measured",
               cc.watch_statements_per_s * s),
        Figure(f"consent checks/s those {opts.sample} channels made (goal {opts.sample * per_s:g}), before",
               cc.sample_checks_per_s, "checks/s", after, cc.watch_checks_per_s),
        Figure("one consent check p95, before (PostgreSQL)", cc.sample_p95_ms, "ms", after, cc.watch_p95_ms),
        Figure(f"consent checks/s one streamer process gets back-to-back, before ({min(s, opts.sample)} threads)",
               cc.peak_checks_per_s, "checks/s"),
    ]
    errors = (f"; failed passes: PostgreSQL {pg.errors}, SQLite {lite.errors}, Redis {rd.errors}"
              if pg.errors or lite.errors or rd.errors else "")
    notes = (f"{n} channels, {s} simulated streamers (a process each with its engine, capacity "
             f"{opts.capacity}), leases of {opts.lease_seconds:g} s, {opts.seconds:g} s per measured phase; a real "
             f"streamer needs 1 renew pass/s ({s}/s for the fleet), each renewing {pg.leases_per_pass:g} leases "
             f"(heartbeat + one UPDATE + one SELECT; the peer: heartbeat + one UPDATE per lease); ours never renews an "
             f"expired lease (it is lost, and claimed again with a new token), the peer's UPDATE by channel_id "
             f"renews it anyway (no fence); spreading made "
             f"{pg.claim_calls} claims on PostgreSQL ({pg.claims_won} won), claims/s over the time claims were in "
             f"flight; from the failover on: {pg.failover_claims} claims ({pg.failover_won} won), "
             f"{pg.failover_asks} hand-overs asked; on Redis (a pass: heartbeat and renew, one script each; the "
             f"peer: the heartbeat, then one script per lease) {rd.claim_calls} claims spreading "
             f"({rd.claims_won} won), from the failover on "
             f"{rd.failover_claims} claims ({rd.failover_won} won), {rd.failover_asks} hand-overs asked; "
             f"consent checks: ChannelAir.still_allowed, "
             f"{cc.statements_per_check:g} statements each, "
             f"{checks:,.0f} checks/s at {n} channels = {checks / max(cc.peak_checks_per_s, 1e-9):.1f}x what one "
             f"process (one engine) got back-to-back here; after: workers.streamer.consent_watch.ConsentWatch "
             f"polling once a second (no Redis here: a pushed revocation adds one refresh, not exercised); "
             f"PostgreSQL 15 local, "
             f"fsync off; redis-server local, no persistence; {os.cpu_count()} cores, "
             f"load {os.getloadavg()[0]:.1f} at the end{errors}")
    return report("fleet", figures, notes=notes)


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A redis-server of the bench's own on loopback (no persistence, as in the tests); yields its URL."""
    from tests.media_helpers import free_port, stop_process
    from workers.stack.embedded import wait_port

    port = free_port()
    with (folder / "redis.log").open("w") as log:
        proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                 "--appendonly", "no", "--dir", str(folder)], stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_port("127.0.0.1", port, 10):
            raise SystemExit(f"redis-server did not start; see {folder / 'redis.log'}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)


def main(argv: list[str] | None = None) -> None:
    from studio.db import upgrade
    from tests.pg import PgServer

    opts = parse(argv or [])
    server = PgServer.start()
    try:
        server.migrate_template()
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as td, redis_server(Path(td)) as redis_url:
            sqlite_url = f"sqlite:///{Path(td) / 'studio.db'}"
            upgrade(sqlite_url)
            run(opts, pg_url=server.create_database(), sqlite_url=sqlite_url, redis_url=redis_url)
    finally:
        server.stop()


if __name__ == "__main__":
    from bench.fleet import main as _main  # the streamers' processes find their code in bench.fleet, not __main__

    _main(sys.argv[1:])
