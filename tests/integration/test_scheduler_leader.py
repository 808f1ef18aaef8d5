"""One scheduler at a time: real `studio scheduler` processes against one database (SQLite and PostgreSQL) and one
redis-server, planning a scheduled show that grows every pass and queueing its renders.

Two start at once: one leads, the other stands by. SIGKILL the leader: the standby leads within 10 s (the seconds
are printed). SIGSTOP that leader past its lease: a third takes over; SIGCONT: the old one logs that it lost the
lease and plans and queues nothing. A clean stop releases the lease: the standby leads at once. Throughout, the
plan has no duplicate or missing seq and no segment is queued twice (read from Redis itself)."""

from __future__ import annotations

import base64
import json
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from sqlalchemy import text
from sqlmodel import Session, select

from studio import audit
from studio.audit import verify_chain
from studio.config import load_settings
from studio.db import make_engine, session_scope
from studio.keys import init_all_keys
from studio.leader import current
from studio.models import AuditEvent, Segment, Show, utcnow
from studio.runtime import build_runtime
from tests.conftest import STUDIO, db_show
from tests.media_helpers import stop_process
from workers.provenance.audit_checkpoint import REDIS_KEY, checkpoint_places

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180), pytest.mark.serial]

TAKEOVER_S = 10.0
# Five words: each segment is estimated at 2.2 s, so the plan grows by about one segment per 2 s pass.
TEXT = "#ad Lumen Labs Glow Serum."


class Scheduler:
    """One `studio scheduler` process; its JSON log lines in a file."""

    def __init__(self, name: str, env: dict, logs: Path) -> None:
        self.name, self.log = name, logs / f"{name}.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen([STUDIO, "scheduler"], env=env, stdout=self._out, stderr=subprocess.STDOUT)

    def lines(self) -> list[str]:
        messages = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                messages.append(json.loads(line)["message"])
            except (ValueError, KeyError):
                messages.append(line)
        return messages

    def said(self, start: str, since: int = 0) -> bool:
        return any(m.startswith(start) for m in self.lines()[since:])

    def owns(self, lease) -> bool:
        return lease is not None and lease.owner.split(":")[1] == str(self.proc.pid)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            stop_process(self.proc)
        self._out.close()
        return self.proc.returncode


def _wait(what: str, check, procs: list[Scheduler], timeout: float = 30.0) -> float:
    """Seconds until `check()` holds, or fail with the processes' logs."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.1)
    logs = "\n".join(f"--- {p.name}\n" + "\n".join(p.lines()[-30:]) for p in procs)
    pytest.fail(f"{what}: not within {timeout:.0f} s\n{logs}")


def _freeze_between_transactions(proc: Scheduler, engine) -> None:
    """SIGSTOP `proc` at a moment when it holds no database lock (not mid-pass), as a paused process usually is:
    a process frozen inside a transaction holds its locks (SQLite: the one write lock) until it wakes."""
    for _ in range(50):
        proc.proc.send_signal(signal.SIGSTOP)
        if engine.dialect.name == "sqlite":
            con = sqlite3.connect(engine.url.database, timeout=0.2, isolation_level=None)
            try:
                con.execute("BEGIN IMMEDIATE")
                con.execute("ROLLBACK")
                return
            except sqlite3.OperationalError:
                pass
            finally:
                con.close()
        else:
            with engine.connect() as conn:
                busy = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                         "AND pid <> pg_backend_pid() AND state <> 'idle'")).scalar_one()
            if not busy:
                return
        proc.proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    pytest.fail("the scheduler was always inside a transaction")


def _claimed(engine) -> set[str]:
    """Segments a scheduler has claimed for dispatch (their task id is written, in a fenced transaction)."""
    with Session(engine) as s:
        return set(s.exec(select(Segment.id).where(Segment.task_id.is_not(None))).all())


def _queued_renders(url: str) -> list[str]:
    """The segment id of every render task waiting in Redis (every priority list of every render queue)."""
    client = redis.Redis.from_url(url)
    ids = []
    for key in client.keys("render*"):
        if client.type(key) != b"list":
            continue
        for raw in client.lrange(key, 0, -1):
            message = json.loads(raw)
            args = json.loads(base64.b64decode(message["body"]))[0]
            ids.append(args[0])
    client.close()
    return ids


def _air(engine, channel_id: str, stop: threading.Event) -> None:
    """What the streamer does to the plan: a row whose air time has come has aired, so the rolling plan grows."""
    while not stop.wait(0.3):
        with session_scope(engine) as s:
            for row in s.exec(select(Segment).where(Segment.channel_id == channel_id, Segment.air_at <= utcnow(),
                                                    Segment.state.in_(["planned", "ready"]))).all():
                row.state, row.aired_at = "aired", utcnow()


def _takeovers(engine) -> list[tuple[str, int]]:
    """(owner, token) of every `scheduler.leader` audit event, in order."""
    with session_scope(engine) as s:
        return [(e.subject_id, e.data["token"]) for e in s.exec(select(AuditEvent).order_by(AuditEvent.id)).all()
                if e.kind == "scheduler.leader"]


def _lease(engine):
    with session_scope(engine) as s:
        return current(s, "scheduler")


def test_one_scheduler_leads_and_a_standby_takes_over(db_url, tmp_path, redis_url):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("STUDIO_")}
    env.update(STUDIO_DATA_DIR=str(tmp_path / "data"), STUDIO_DATABASE_URL=db_url, STUDIO_REDIS_URL=redis_url,
               STUDIO_SCHEDULER__HORIZON_SECONDS="60", STUDIO_SCHEDULER__START_LEAD_SECONDS="0",
               STUDIO_STREAMER__BUFFER_TARGET_SECONDS="3600", PYTHONUNBUFFERED="1")
    settings = load_settings(env=env)
    assert settings.scheduler.lease_seconds == 5  # the default is what is measured
    init_all_keys(settings)
    engine = make_engine(db_url)
    ids = db_show(engine, text=TEXT)
    with session_scope(engine) as s:
        s.get(Show, ids["show"]).schedule = {"rotation": [{"script_id": ids["script"]}],
                                             "avatars": [{"avatar_id": ids["avatar"], "consent_id": ids["consent"]}]}

    def planned() -> int:
        with session_scope(engine) as s:
            return len(s.exec(select(Segment.id).where(Segment.channel_id == ids["channel"])).all())

    a, b = Scheduler("a", env, tmp_path), Scheduler("b", env, tmp_path)
    procs, airing = [a, b], threading.Event()
    air = threading.Thread(target=_air, args=(engine, ids["channel"], airing))
    air.start()
    try:
        # Both start at once: exactly one leads.
        _wait("both schedulers report a role", lambda: all(p.said("leading") or p.said("standby") for p in (a, b)),
              procs, timeout=60)
        first, second = (a, b) if a.owns(_lease(engine)) else (b, a)
        assert first.said("leading") and not first.said("standby")
        assert second.said("standby") and not second.said("leading")
        _wait("the leader plans and queues", lambda: planned() >= 3 and first.said("queued the render"), procs)
        n = planned()
        _wait("the plan grows", lambda: planned() > n, procs)

        # SIGKILL the leader: the standby takes over within the lease plus a second.
        first.proc.send_signal(signal.SIGKILL)
        seconds = _wait("the standby takes over from a killed leader", lambda: second.owns(_lease(engine)), procs)
        print(f"\n[{engine.dialect.name}] takeover after SIGKILL: {seconds:.1f} s")
        assert seconds < TAKEOVER_S
        assert not any(m.startswith(("planned", "queued")) for m in second.lines()[:_first(second, "leading")])
        third = Scheduler("c", env, tmp_path)
        procs.append(third)
        _wait("the new leader plans", lambda: second.said("queued the render"), procs)
        _wait("a third stands by", lambda: third.said("standby"), procs, timeout=60)

        # SIGSTOP the leader past its lease: the third takes over; SIGCONT: the old one does nothing.
        _freeze_between_transactions(second, engine)
        claimed = _claimed(engine)  # what the frozen leader may still report: its claims committed before the freeze
        seconds = _wait("a standby takes over from a frozen leader", lambda: third.owns(_lease(engine)), procs)
        print(f"[{engine.dialect.name}] takeover after SIGSTOP: {seconds:.1f} s")
        assert seconds < TAKEOVER_S
        n = planned()
        _wait("the third plans", lambda: planned() > n and third.said("queued the render"), procs)
        woke = len(second.lines())
        second.proc.send_signal(signal.SIGCONT)
        _wait("the woken leader sees it lost the lease", lambda: second.said("lost the scheduler lease", woke), procs)
        time.sleep(3)  # a pass or two of its own, were it still planning
        after = second.lines()[woke:]
        lost = next(i for i, m in enumerate(after) if m.startswith("lost the scheduler lease"))
        # The pass it was frozen in may finish what it committed before the freeze (a render whose claim, fenced by
        # its term, was already in the database is handed to Celery and logged); it starts nothing new.
        tail = [m for m in after[:lost] if m.startswith(("planned", "queued", "leading"))]
        late = [m for m in tail if m.startswith("leading")
                or m.startswith("queued") and m.rsplit(" ", 1)[-1] not in claimed]
        assert not late, (late, sorted(claimed))
        assert not [m for m in after[lost:] if m.startswith(("planned", "queued", "leading"))], after
        assert third.owns(_lease(engine))

        # A clean stop releases the lease: the standby leads at once, not a lease later.
        stopped = time.monotonic()
        assert third.stop() == 0
        seconds = _wait("the standby takes over a released lease", lambda: second.owns(_lease(engine)), procs)
        print(f"[{engine.dialect.name}] takeover after a clean stop: {time.monotonic() - stopped:.1f} s")
        assert seconds < 2.5 and third.said("released the scheduler lease")
        _wait("the old leader leads again", lambda: second.said("leading", woke), procs)
        _wait("its new term is audited", lambda: len(_takeovers(engine)) == 4, procs)
    finally:
        codes = [p.stop() for p in procs]
        airing.set()
        air.join()
    assert codes[procs.index(second)] == 0 and second.said("released the scheduler lease")

    # One plan: every seq once, none missing; every queued render queued once, and only planned rows queued.
    with session_scope(engine) as s:
        rows = s.exec(select(Segment).where(Segment.channel_id == ids["channel"]).order_by(Segment.seq)).all()
        events = s.exec(select(AuditEvent).order_by(AuditEvent.id)).all()
    takeovers = _takeovers(engine)
    assert [r.seq for r in rows] == list(range(len(rows))) and len(rows) > 10
    queued = _queued_renders(redis_url)
    duplicates = [seg for seg, k in Counter(queued).items() if k > 1]
    assert not duplicates, f"queued twice: {duplicates}"
    assert set(queued) == {r.id for r in rows if r.task_id}
    assert [t for _, t in takeovers] == [1, 2, 3, 4]
    assert [owner.split(":")[1] for owner, _ in takeovers] == \
        [str(p.proc.pid) for p in (first, second, third, second)]
    assert not verify_chain(events)
    # Each leader in turn moved the audit checkpoint in Redis (and its copy in the store); it verifies, from there.
    rt = build_runtime(settings)
    with Session(rt.engine) as s:
        report = audit.verify_log(s, keyring=rt.audit_keys, places=checkpoint_places(rt))
    assert report.ok and report.checkpoint_from == f"Redis key {REDIS_KEY}" and not report.warnings, report
    assert json.loads(redis.Redis.from_url(redis_url).get(REDIS_KEY))["last_id"] >= _last_takeover_id(engine)
    rt.engine.dispose()
    engine.dispose()


def _last_takeover_id(engine) -> int:
    """The id of the last takeover event: the pass that recorded it checkpointed it right after."""
    with session_scope(engine) as s:
        return s.exec(select(AuditEvent.id).where(AuditEvent.kind == "scheduler.leader")
                      .order_by(AuditEvent.id.desc())).first()


def _first(proc: Scheduler, start: str) -> int:
    return next(i for i, m in enumerate(proc.lines()) if m.startswith(start))


def test_the_ops_overview_names_the_leading_host_and_since_when(tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app_from_env
    from studio.config import Settings
    from studio.db import upgrade
    from studio.leader import LEADER, claim
    from studio.leases import db_now
    from tests.conftest import api_key

    settings = Settings(data_dir=str(tmp_path / "data"), services={"redis_url": "redis://127.0.0.1:9/0"})
    init_all_keys(settings)
    upgrade(settings.db_url)
    app = create_app_from_env(settings)
    engine = app.state.runtime.engine
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {api_key(engine, role='ops')}"
        assert client.get("/api/ops/overview").json()["scheduler"]["leading"] is False  # none ever ran
        with session_scope(engine) as s:
            lease = claim(s, name="scheduler", owner="sched-1:42:abcdef", host="sched-1", seconds=5)
        shown = client.get("/api/ops/overview").json()["scheduler"]
        assert shown == {"leading": True, "host": "sched-1", "owner": "sched-1:42:abcdef", "token": 1,
                         "since": f"{lease.since.isoformat()}Z", "expires_at": f"{lease.expires_at.isoformat()}Z"}
        with session_scope(engine) as s:
            s.execute(LEADER.update().values(expires_at=db_now(s)))
        shown = client.get("/api/ops/overview").json()["scheduler"]
        assert shown["leading"] is False and shown["host"] == "sched-1"
