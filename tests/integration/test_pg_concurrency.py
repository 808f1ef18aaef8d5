"""Two schedulers and four render workers against one PostgreSQL: each segment planned once, claimed once,
rendered once, aired in order.

Real processes on loopback: a redis-server, 2 `python -m workers.plan.scheduler` (planning the same two shows and
queueing their renders), 4 Celery workers on the render queue (`-Q render -c 1`); 200 segments rendered for real
(espeak, the footage renderer, x264) at 128x224. The plan is made while no worker runs, so its length is the
pure planner's (`plan_horizon`), which the count is checked against; then the schedulers stop and the workers
render what they queued. Air: the
streamer's own selection (`ChannelAir.next_segment` / `verify` / `on_aired`) walks each channel's plan, without
a real-time RTMP push (200 segments of at least 2 s would take minutes to push in real time)."""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlmodel import Session, select

from studio import audit
from studio.config import DEFAULT_CONFIG, load_settings
from studio.db import session_scope
from studio.keys import init_audit_keys, init_key, init_provenance_keys, init_stream_key
from studio.models import AuditEvent, Channel, Consent, Creator, Product, Script, Segment, Show, utcnow
from studio.planner import estimate_seconds, plan_horizon
from studio.runtime import build_runtime
from studio.segments import SegmentState
from tests.conftest import FULL_SCOPE, require
from tests.media_helpers import free_port, stop_process
from workers.ingest.footage import ingest_direct
from workers.streamer.air import ChannelAir

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

S = SegmentState
PER_CHANNEL = 100
# Short lines: each estimate (words / wpm + 0.4 s) is under the 2 s a segment lasts at least, so a rendered
# segment never shortens the pending plan and no scheduler plans past the 100 counted here.
# Each line carries its disclosure (POLICY S1), or the scheduler would not plan it.
LINES = ["#ad Glow Serum today.", "#ad Light and fresh.", "#ad Made by Lumen.", "#ad Try it now."]


class Procs:
    """Child processes with their output in files; stopped as a supervisor would: terminate, wait, kill."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env, self.running = logs, env, []

    def start(self, name: str, argv: list[str], *, new_session: bool = False) -> subprocess.Popen:
        """`new_session`: its own process group, so that it and its children can be killed at once."""
        out = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115  (closed with the process)
        proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=new_session)
        self.running.append((name, proc, out))
        return proc

    def stop(self, prefix: str = "") -> None:
        for name, proc, out in [r for r in self.running if r[0].startswith(prefix)]:
            stop_process(proc)
            out.close()
            self.running.remove((name, proc, out))

    def tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in self.logs.glob("*.log"))


def _wait(what: str, check, timeout: float, procs: Procs, every: float = 1.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(every)
    pytest.fail(f"{what} not reached within {timeout:.0f} s\n{procs.tails()}")


def test_two_schedulers_four_workers_one_postgresql(tmp_path, pg_server, small_footage):
    require("redis-server", "ffmpeg", "espeak-ng")
    started = time.monotonic()
    wpm = 165
    estimates = [estimate_seconds(line, wpm) for line in LINES]
    target = sum(estimates[i % len(LINES)] for i in range(PER_CHANNEL)) - 0.01
    config = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    config["media"].update(width=128, height=224)
    config["tts"]["words_per_minute"] = wpm
    config["streamer"]["buffer_target_seconds"] = target
    (tmp_path / "studio.yaml").write_text(yaml.safe_dump(config))
    redis_port = free_port()
    env = {**__import__("os").environ, "STUDIO_CONFIG": str(tmp_path / "studio.yaml"),
           "STUDIO_DATA_DIR": str(tmp_path / "data"), "STUDIO_DATABASE_URL": pg_server.create_database(),
           "STUDIO_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "PYTHONUNBUFFERED": "1"}
    settings = load_settings(tmp_path / "studio.yaml", env=env)
    assert settings.db_url.startswith("postgresql") and settings.media.width == 128
    init_key(settings)
    init_provenance_keys(settings)
    init_stream_key(settings)
    init_audit_keys(settings)
    rt = build_runtime(settings)

    # The world: one avatar (real ingest of synthetic footage), two channels with a show each.
    with session_scope(rt.engine) as s:
        creator = Creator(name="Ava")
        s.add(creator)
    avatar = ingest_direct(engine=rt.engine, data=rt.data, profile=settings.media, limits=settings.ingest,
                           creator_id=creator.id, name="Ava", footage=small_footage(), renderer=settings.renderer.type)
    now = utcnow()
    with session_scope(rt.engine) as s:
        consent = Consent(creator_id=creator.id, avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                          starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1), scope=FULL_SCOPE,
                          statement_sha256="-")
        product = Product(name="Glow Serum", brand="Lumen", category="beauty")
        s.add_all([consent, product])
        s.flush()
        scripts = [Script(product_id=product.id, text=line) for line in LINES]
        s.add_all(scripts)
        s.flush()
        channels = []
        for name in ("north", "south"):
            channel = Channel(name=name, territories=["US"])
            s.add(channel)
            s.flush()
            s.add(Show(channel_id=channel.id, avatar_id=avatar.id, consent_id=consent.id, name=name,
                       script_ids=[sc.id for sc in scripts], starts_at=now - timedelta(seconds=1)))
            channels.append(channel.id)
        text_of = {sc.id: sc.text for sc in scripts}

    # What one scheduler alone plans for an empty channel: the pure planner, pass after pass.
    expected, pending = [], 0.0
    while new := plan_horizon(parts=[(sc, text_of[sc]) for sc in text_of], planned_count=len(expected),
                              pending_seconds=pending, target_seconds=target, words_per_minute=wpm):
        expected += new
        pending += sum(estimate_seconds(p.text, wpm) for p in new)
    assert len(expected) == PER_CHANNEL

    def rows() -> list[Segment]:
        with Session(rt.engine) as s:
            return list(s.exec(select(Segment).order_by(Segment.channel_id, Segment.seq)))

    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    procs = Procs(tmp_path, env)
    try:
        procs.start("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                              "--appendonly", "no", "--dir", str(redis_dir)])
        for i in range(2):
            procs.start(f"scheduler-{i}", [sys.executable, "-m", "workers.plan.scheduler"])
        # Planning and queueing, both schedulers at it, until the plan holds still for three passes.
        last = {"n": -1, "since": time.monotonic()}

        def plan_settled() -> bool:
            n = len(rows())
            if n != last["n"]:
                last.update(n=n, since=time.monotonic())
            return n > 0 and time.monotonic() - last["since"] > 6.5

        _wait("a settled plan", plan_settled, 120, procs)
        planned = rows()
        assert len(planned) == 2 * PER_CHANNEL, procs.tails()
        assert all(r.task_id for r in planned), "every segment queued"
        # The schedulers' work is done (planned and queued); stopped, so that a rendered segment shorter than its
        # estimate cannot make them plan more while the workers render (that is the buffer working, not a race).
        procs.stop("scheduler")
        planned_at = time.monotonic()
        for i in range(4):
            procs.start(f"worker-{i}", [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q",
                                        "render.cpu", "-c", "1", "-n", f"render{i}@%h", "--without-gossip",
                                        "--without-mingle", "--loglevel", "INFO"])
        _wait("200 segments rendered",
              lambda: all(r.state in (S.READY, S.FAILED, S.CANCELLED, S.SKIPPED) for r in rows()), 300, procs, 2.0)
        render_done = time.monotonic()
    finally:
        procs.stop("worker")
        procs.stop("scheduler")
        procs.stop("redis")
    final = rows()
    logs = procs.tails()

    # Planned once: 100 rows per channel, seqs 0..99, the rotation followed without a repeat or a gap.
    by_channel = collections.defaultdict(list)
    for r in final:
        by_channel[r.channel_id].append(r)
    assert sorted(by_channel) == sorted(channels)
    for channel_id, plan in by_channel.items():
        assert [r.seq for r in plan] == list(range(PER_CHANNEL)), channel_id
        assert [(r.script_id, r.text, r.show_start) for r in plan] == \
               [(p.script_id, p.text, p.show_start) for p in expected], f"channel {channel_id}: a duplicated plan"
    # Claimed and rendered once: one attempt, one task, one render event, one file each.
    assert collections.Counter(r.state for r in final) == {S.READY: 2 * PER_CHANNEL}, \
        f"{collections.Counter(r.state for r in final)}\n{logs}"
    assert {r.attempts for r in final} == {1}
    assert len({r.task_id for r in final}) == len(final)
    with Session(rt.engine) as s:
        events = list(s.exec(select(AuditEvent).order_by(AuditEvent.id)))
    rendered = collections.Counter(e.subject_id for e in events if e.kind == "segment.rendered")
    assert set(rendered) == {r.id for r in final} and set(rendered.values()) == {1}
    assert len({r.path for r in final}) == len(final) and all(rt.store.exists(r.path) for r in final)  # store keys
    assert not [e for e in events if e.kind in ("segment.cancelled", "segment.failed", "segment.skipped")]
    # Every process appended to one chain: no fork, no broken link.
    assert audit.verify_chain(events) == []
    assert len({e.prev_hash for e in events}) == len(events)
    # More than one worker took part (the claims really were concurrent).
    workers_used = sum("succeeded" in (tmp_path / f"worker-{i}.log").read_text() for i in range(4))
    assert workers_used >= 2, logs

    # Aired in order: the streamer's own selection, check and record, per channel.
    aired = {}
    for channel_id in channels:
        air, order = ChannelAir(rt, channel_id, max_wait_seconds=0), []
        while (ref := air.next_segment()) is not None:
            assert air.verify(ref), air.last_refusal
            air.on_aired(ref, time.time(), 0.0, 2.0)
            order.append(ref.id)
        aired[channel_id] = order
        assert order == [r.id for r in by_channel[channel_id]]
    with Session(rt.engine) as s:
        assert set(s.exec(select(Segment.state))) == {S.AIRED}
        aired_events = s.exec(select(AuditEvent).where(AuditEvent.kind == "segment.aired")).all()
    assert len(aired_events) == 2 * PER_CHANNEL

    print(f"\npg concurrency: planned {len(final)} segments ({PER_CHANNEL} per channel, seqs unique and gapless) "
          f"by 2 schedulers in {planned_at - started:.0f} s; claimed {sum(r.attempts for r in final)} times, "
          f"rendered {sum(rendered.values())} "
          f"times by {workers_used} of 4 workers in {render_done - planned_at:.0f} s; aired {len(aired_events)} in "
          f"seq order; {len(events) + len(aired_events)} audit events, one chain; "
          f"total {time.monotonic() - started:.0f} s")
