"""Failure behaviour on the real stack (issue 6): `studio up` on free loopback ports, over a data dir holding a
real avatar (mediapipe ingest of synthetic footage), a consent and two channels: one airing a show, one whose
show has nothing to plan. One stack serves the whole module; the tests run in file order and each leaves it
airing. Measured figures are printed (`pytest -rP` shows them).

- an empty queue airs the avatar's labelled idle loop;
- Redis serves renders by deadline (priority), and the workers report what they run on;
- a render worker process killed with SIGKILL mid-render: the task comes back, the segment airs once, in order;
- nginx (the RTMP ingest) restarted: the feeder is publishing again within 3 s of nginx being back;
- redis-server restarted: the channel airs on from its buffer throughout, and renders resume afterwards;
- the lease store (SQLite) locked past the lease: the channels stop, come back under the next token, and the
  status, /metrics and the ops view say the leases were lost and why.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from datetime import timedelta
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlmodel import select

from studio.db import session_scope
from studio.models import AuditEvent, Channel, Consent, Product, Script, Segment, Show, utcnow
from tests.conftest import FULL_SCOPE, STUDIO, ocr, require
from tests.integration.conftest import TEXT, ingested
from tests.media_helpers import free_port
from workers.streamer.nginx import accepts

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.serial]

HOST = "127.0.0.1"
SECOND_TEXT = "Paid partnership with Lumen Labs. Tap the cart below to see the Glow Serum bundle, today only."


# --- the processes of our `studio up` ----------------------------------------------------------------------------
def _stat(pid: int | str) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, ...]; empty when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _children(pid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").glob("[0-9]*") if (st := _stat(p.name)) and int(st[1]) == pid]


def _descendants(pid: int) -> dict[int, str]:
    """Every process under `pid`, with its start time (so a pid reused later is told apart)."""
    out, todo = {}, [pid]
    while todo:
        for kid in _children(todo.pop()):
            if st := _stat(kid):
                out[kid] = st[19]
                todo.append(kid)
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


class Stack:
    """The running `studio up` of this module, and what the tests look at."""

    def __init__(self, up: subprocess.Popen, rt, ports: dict[str, int], ids: dict[str, str], tmp: Path):
        self.up, self.rt, self.ports, self.ids, self.tmp = up, rt, ports, ids, tmp

    def service(self, what: str) -> int:
        """The pid of one direct child of `studio up`: "redis", "nginx" or "worker-QUEUE"."""
        for pid in _children(self.up.pid):
            cmd = _cmdline(pid)
            title = cmd[0] if cmd else ""  # redis and nginx rewrite theirs: "redis-server HOST:PORT", "nginx: master"
            if (what == "redis" and title.startswith("redis-server")) or \
                    (what == "nginx" and title.startswith("nginx")) or \
                    (what.startswith("worker-") and "--queues" in cmd and cmd[cmd.index("--queues") + 1] == what[7:]):
                return pid
        raise AssertionError(f"no {what} process under studio up (pid {self.up.pid})")

    def api(self, path: str):
        headers = {}
        if path.startswith("/api/"):  # the operator's key, which `studio up` writes beside the policy key
            key = (self.rt.data.keys / "operator-api.key").read_text().strip()
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(f"http://{HOST}:{self.ports['api']}{path}", headers=headers)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def status(self, channel: str) -> dict:
        path = self.rt.data.run / f"channel-{self.ids[channel]}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def segments(self, channel: str = "air") -> list[Segment]:
        with session_scope(self.rt.engine) as s:
            return s.exec(select(Segment).where(Segment.channel_id == self.ids[channel])
                          .order_by(Segment.seq)).all()

    def aired_seqs(self, channel: str = "air") -> list[int]:
        """Plan positions of the channel's `segment.aired` events, in the order they were recorded."""
        seq_of = {seg.id: seg.seq for seg in self.segments(channel)}
        with session_scope(self.rt.engine) as s:
            events = s.exec(select(AuditEvent).where(AuditEvent.kind == "segment.aired")
                            .order_by(AuditEvent.id)).all()
        return [seq_of[e.subject_id] for e in events if e.data.get("channel_id") == self.ids[channel]]

    def log(self, name: str) -> str:
        path = self.rt.data.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait(self, what: str, check, timeout: float, every: float = 0.25):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := check():
                return result
            if self.up.poll() is not None:
                raise AssertionError(f"studio up exited with {self.up.returncode} while waiting for {what}")
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _in_order_once(seqs: list[int]) -> bool:
    return all(b > a for a, b in zip(seqs, seqs[1:], strict=False))


def _world(rt, avatar, creator) -> dict[str, str]:
    """Consent, product, scripts, and two channels: `air` with a show of two scripts, `idle` with a show that
    has nothing to plan (its queue stays empty)."""
    now = utcnow()
    with session_scope(rt.engine) as s:
        consent = Consent(creator_id=creator.id, avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                          starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1), scope=FULL_SCOPE,
                          statement_sha256="-")
        product = Product(name="Serum", brand="Lumen", category="beauty")
        air, idle = Channel(name="air", territories=["US"]), Channel(name="idle", territories=["US"])
        s.add_all([consent, product, air, idle])
        s.flush()
        scripts = [Script(product_id=product.id, text=text) for text in (TEXT, SECOND_TEXT)]
        s.add_all(scripts)
        s.flush()
        s.add(Show(channel_id=air.id, avatar_id=avatar.id, consent_id=consent.id, name="air",
                   script_ids=[x.id for x in scripts]))
        s.add(Show(channel_id=idle.id, avatar_id=avatar.id, consent_id=consent.id, name="idle", script_ids=[]))
    return {"air": air.id, "idle": idle.id}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, small_footage):
    require("redis-server", "nginx", "ffmpeg", "espeak-ng", "tesseract")
    tmp = tmp_path_factory.mktemp("failures")
    rt, creator, avatar = ingested(tmp, small_footage())
    ids = _world(rt, avatar, creator)
    ports = {"api": free_port(), "redis": free_port(), "rtmp": free_port(), "http": free_port()}
    config = tmp / "stack.yaml"
    config.write_text(
        f"data_dir: {rt.settings.data_path}\nmedia:\n  width: 360\n  height: 640\n"
        f"services:\n  host: {HOST}\n  api_port: {ports['api']}\n  redis_port: {ports['redis']}\n"
        f"  rtmp_port: {ports['rtmp']}\n  http_port: {ports['http']}\n"
        "streamer:\n  buffer_target_seconds: 30\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    with open(tmp / "up.log", "wb") as out:
        up = subprocess.Popen([STUDIO, "up", "-c", str(config)], env=env, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    st = Stack(up, rt, ports, ids, tmp)
    try:
        st.wait("the API", lambda: _healthy(st), 120, every=0.5)
        st.wait("the first segment on air", lambda: st.aired_seqs(), 240, every=0.5)
        yield st
    finally:
        tree = _descendants(up.pid)
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        for pid, started in tree.items():  # only what our `studio up` started, should its stop leave any
            if (st := _stat(pid)) and st[19] == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _healthy(st: Stack) -> bool:
    try:
        return st.api("/healthz")["status"] == "ok"
    except OSError:  # 503 while a part is down is an HTTPError, an OSError too
        return False


class StreamWatch:
    """Plays the channel from the local ingest as a viewer would (an ffmpeg copying it to a pipe, flushed per
    packet) and notes when data arrives; started again whenever it stops, as a player retrying would."""

    def __init__(self, url: str):
        self.url = url
        self.arrivals: list[float] = []
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StreamWatch:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._proc = subprocess.Popen(
                ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-rw_timeout", "3000000",
                 "-fflags", "nobuffer", "-analyzeduration", "200000", "-probesize", "32768", "-i", self.url,
                 "-map", "0", "-c", "copy", "-f", "flv", "-flush_packets", "1", "pipe:1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            while self._proc.stdout.read1(65536):
                self.arrivals.append(time.monotonic())
                if self._stop.is_set():
                    break
            self._proc.kill()
            self._proc.wait()
            self._stop.wait(0.05)

    def longest_gap(self, start: float, end: float) -> tuple[float, float]:
        """The longest time without data between `start` and `end` (monotonic clock), and when it began."""
        times = [start, *(t for t in self.arrivals if start < t < end), end]
        return max((b - a, a) for a, b in zip(times, times[1:], strict=False))


def _frame(url: str, out: Path) -> np.ndarray:
    """One video frame of the stream, as a viewer joining now sees it (RGB)."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-rw_timeout", "10000000",
                    "-i", url, "-frames:v", "1", str(out)], check=True, timeout=60, capture_output=True)
    return cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)


def _rtmp(st: Stack, channel: str) -> str:
    return f"rtmp://{HOST}:{st.ports['rtmp']}/live/{st.ids[channel]}"


# --- the tests ----------------------------------------------------------------------------------------------------
def test_an_empty_queue_airs_the_labelled_idle_loop(stack):
    """The `idle` channel has nothing planned: it airs the avatar's idle loop, with its AI label, nonstop."""
    first = stack.wait("the idle channel on air", lambda: stack.status("idle").get("slates_aired", 0) >= 2 and
                       stack.status("idle"), 60)
    time.sleep(3)
    later = stack.status("idle")
    assert later["slates_aired"] >= first["slates_aired"] + 2 and later["segments_aired"] == 0
    assert later["aired_seconds"] > first["aired_seconds"]
    assert not stack.segments("idle")
    with session_scope(stack.rt.engine) as s:
        slates = s.exec(select(AuditEvent).where(AuditEvent.kind == "slate.rendered",
                                                 AuditEvent.subject_id == stack.ids["idle"])).all()
    assert any(e.data.get("avatar_id") for e in slates), "the idle loop is the avatar's, not only the plain card"
    # What a viewer of the channel sees: one frame off the local ingest carries the badge.
    frame = _frame(_rtmp(stack, "idle"), stack.tmp / "idle.png")
    h, w = frame.shape[:2]
    texts = ocr(frame[: int(h * 0.12), w // 2:], stack.tmp)
    assert any("AI avatar" in t for t in texts), f"no label read on the idle loop: OCR gave {texts!r}"


def test_renders_are_served_by_deadline_on_the_real_broker(stack, monkeypatch):
    """Priority by deadline through Celery and kombu into the real redis-server, read back in serving order."""
    from workers.app import make_celery
    from workers.queue_policy import render_priority

    password = (stack.rt.data.keys / "redis.password").read_text().strip()  # the embedded redis-server's
    monkeypatch.setenv("STUDIO_REDIS_URL", f"redis://:{password}@{HOST}:{stack.ports['redis']}/0")
    app = make_celery()
    now = utcnow()
    deadlines = {"late": now + timedelta(seconds=100), "due": now - timedelta(seconds=2), "none": None,
                 "soon": now + timedelta(seconds=40)}
    for name, deadline in deadlines.items():  # a queue nobody consumes
        app.send_task("studio.render_segment", args=[name], queue="priority-probe",
                      priority=render_priority(deadline, now=now))
    served = []
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue("priority-probe")
        for _ in deadlines:
            msg = queue.get(timeout=5)
            served.append(msg.payload[0][0])  # protocol 2 body: (args, kwargs, embed)
            msg.ack()
        queue.close()
    assert served == ["due", "soon", "late", "none"]


def test_workers_report_what_they_run_on(stack):
    render = stack.wait("the render worker's report", lambda: next(
        (w for w in stack.api("/api/workers") if w["queues"] == ["render.cpu"] and w["renders"] >= 1), None), 60)
    workers = {w["id"].split("@")[0]: w for w in stack.api("/api/workers")}
    assert set(workers) == {"ingest", "render.cpu", "publish"} and not any(w["stale"] for w in workers.values())
    assert render["renderers"] == ["footage"] and render["concurrency"] == 1 and render["host"] and render["pid"]
    assert render["device"] == "cpu" or render["device_memory_mb"] > 0, render
    assert render["cpu_count"] == os.cpu_count() and render["render_fps"] > 0 and render["realtime_factor"] > 0
    print(f"\nFIGURE render worker on {render['device']}: {render['render_fps']:.1f} frames/s, "
          f"{render['realtime_factor']:.2f}x real time over {render['renders']} renders")


def test_a_render_worker_killed_mid_render_is_redelivered_and_its_segment_airs_once_in_order(stack):
    main = stack.service("worker-render.cpu")
    def finished(seg_id: str) -> Segment | None:
        return next((x for x in stack.segments() if x.id == seg_id and x.state in ("ready", "aired", "failed",
                                                                                   "skipped")), None)

    def claimed(seg_id: str) -> Segment | None:
        return next((x for x in stack.segments() if x.id == seg_id and (x.attempts >= 2 or x.state != "rendering")),
                    None)

    for _ in range(3):  # a render is a few seconds: retry should the kill land just after one finished
        seg = stack.wait("a segment rendering", lambda: next(
            (x for x in stack.segments() if x.state == "rendering" and x.attempts == 1), None), 90, every=0.05)
        pool = _children(main)
        assert pool, "the render worker has no pool process"
        killed_at = time.monotonic()
        for pid in pool:
            os.kill(pid, signal.SIGKILL)
        again = stack.wait(f"segment {seg.seq} claimed again or rendered", partial(claimed, seg.id), 120,
                           every=0.05)
        redelivered_s = time.monotonic() - killed_at
        done = stack.wait(f"segment {seg.seq} rendered", partial(finished, seg.id), 120, every=0.05)
        if again.attempts >= 2:
            break
    else:
        pytest.fail("three kills in a row landed between renders")
    ready_s = time.monotonic() - killed_at
    assert done.state in ("ready", "aired") and done.attempts == 2, (done.state, done.attempts, done.error)
    assert done.path.endswith("-a2.mp4")
    assert "WorkerLostError" in stack.log("worker-render.cpu") or "signal 9" in stack.log("worker-render.cpu")
    assert _children(main), "the worker did not replace its killed pool process"
    stack.wait(f"segment {seg.seq} on air", lambda: seg.seq in stack.aired_seqs(), 180)
    seqs = stack.aired_seqs()
    assert seqs.count(seg.seq) == 1 and _in_order_once(seqs), seqs
    assert stack.service("worker-render.cpu") == main  # the pool process died, not the worker
    print(f"\nFIGURE kill -9 of the render pool process mid-render: segment {seg.seq} redelivered (attempt 2 "
          f"claimed) {redelivered_s:.1f} s after the kill, ready {ready_s:.1f} s after it; aired once, in order: "
          f"{seqs}")


def test_the_feeder_reconnects_within_3_s_of_the_rtmp_ingest_coming_back(stack):
    port = stack.ports["rtmp"]
    nginx = stack.service("nginx")
    aired_before = stack.aired_seqs()
    os.kill(nginx, signal.SIGTERM)  # nginx's fast shutdown; the stack's watchdog starts it again after its pause
    stack.wait("nginx down", lambda: not accepts(HOST, port), 10, every=0.01)
    down_at = time.monotonic()
    stack.wait("nginx back", lambda: accepts(HOST, port), 30, every=0.01)
    back_at = time.monotonic()
    with StreamWatch(_rtmp(stack, "air")) as watch:
        stack.wait("the channel's stream at the ingest again", lambda: watch.arrivals, 15, every=0.01)
        reconnect_s = watch.arrivals[0] - back_at
        time.sleep(4)
    assert stack.service("nginx") != nginx
    assert reconnect_s <= 3.0, f"first packet {reconnect_s:.2f} s after nginx was back"
    assert watch.longest_gap(watch.arrivals[0], watch.arrivals[-1])[0] < 1.0, "the stream stutters after reconnecting"
    assert stack.status("air")["state"] == "airing"
    stack.wait("a segment aired after the reconnect", lambda: len(stack.aired_seqs()) > len(aired_before), 60)
    seqs = stack.aired_seqs()
    assert len(seqs) == len(set(seqs)) and _in_order_once(seqs), seqs
    print(f"\nFIGURE nginx restart: down {back_at - down_at:.2f} s; first packet from the feeder at the ingest "
          f"{reconnect_s:.2f} s after nginx was back")


def test_channels_air_through_a_redis_restart_and_renders_resume(stack):
    """redis-server restarted: the `air` channel plays on from its buffer without a pause, and renders resume,
    including those of segments planned while Redis was down (the `idle` show gets a script during the outage,
    so the scheduler plans and queues for it then)."""
    port = stack.ports["redis"]
    stack.wait("a buffer of rendered segments", lambda: sum(x.state == "ready" for x in stack.segments()) >= 2, 90)
    redis = stack.service("redis")
    with StreamWatch(_rtmp(stack, "air")) as watch:
        stack.wait("the channel's stream", lambda: watch.arrivals, 15, every=0.05)
        before = stack.status("air")
        killed_at, killed_utc = time.monotonic(), utcnow()
        os.kill(redis, signal.SIGTERM)  # redis writes its append-only file and exits; the stack restarts it
        stack.wait("redis down", lambda: not accepts(HOST, port), 10, every=0.01)
        with session_scope(stack.rt.engine) as s:
            show = s.exec(select(Show).where(Show.channel_id == stack.ids["idle"])).one()
            show.script_ids = [s.exec(select(Script).where(Script.text == TEXT)).one().id]
        stack.wait("redis back", lambda: accepts(HOST, port), 30, every=0.05)
        back_at, back_utc = time.monotonic(), utcnow()
        # aired_seconds counts whole pieces (segments of about 6 s): the one airing across the outage ends.
        after = stack.wait("the piece on air during the outage to end", lambda: (
            st := stack.status("air"))["aired_seconds"] > before["aired_seconds"] and st, 15)
    assert stack.service("redis") != redis
    # The feeder writes lead_seconds ahead of the wall clock, so data pausing for less than that never starves
    # the ingest: nothing a viewer sees stops.
    (gap, gap_at), lead = watch.longest_gap(killed_at, back_at), stack.rt.settings.streamer.lead_seconds
    assert gap < lead, f"the stream paused {gap:.2f} s while redis was down (the feeder is {lead} s ahead)"
    assert after["airing_since"] == before["airing_since"], "the feeder restarted"

    def since_kill(channel: str) -> list[Segment]:
        return [x for x in stack.segments(channel) if x.planned_at >= killed_utc]

    first = stack.wait("a segment planned since the kill, rendered", lambda: next(
        (x for x in since_kill("air") + since_kill("idle") if x.state in ("ready", "aired")), None), 120, every=0.1)
    recovered_s = time.monotonic() - back_at
    stack.wait("the broker healthy again", lambda: _healthy(stack), 30)
    idle = stack.wait("segments planned for the idle show", lambda: since_kill("idle"), 30)
    during_outage = sum(x.planned_at < back_utc for x in idle)
    # Nothing planned around the outage is left unqueued: every such segment renders.
    planned = {x.id for x in since_kill("air") + idle}
    stack.wait("every segment planned around the restart rendered", lambda: all(
        x.state in ("ready", "aired") for x in since_kill("air") + since_kill("idle") if x.id in planned), 90)
    for channel in ("air", "idle"):
        seqs = stack.aired_seqs(channel)
        assert len(seqs) == len(set(seqs)) and _in_order_once(seqs), (channel, seqs)
    print(f"\nFIGURE redis restart: down {back_at - killed_at:.2f} s; longest pause of the stream {gap:.2f} s "
          f"({gap_at - killed_at:.2f} s after the kill); "
          f"first segment planned since the kill rendered {recovered_s:.1f} s after redis was back "
          f"({first.planned_at < back_utc and 'planned during the outage' or 'planned after it'}); "
          f"{during_outage} of {len(idle)} idle-show segments planned while redis was down, all rendered")


def test_a_lease_store_locked_past_the_lease_stops_the_channels_and_ops_see_why(stack):
    """Another writer holds SQLite's write lock for longer than a channel lease lasts (a long transaction, or a
    disk so busy that commits wait): the streamer's renewal waits behind it, its local deadline passes, and every
    channel it airs stops at once (the fence) and comes back under the next token once the store answers. The
    status counts the loss and shows the slow renewal; the ops view raises StudioLeaseRenewalSlow naming both."""
    import sqlite3

    lease_s = stack.rt.settings.streamer.lease_seconds
    before = stack.wait("the air channel on air", lambda: (st := stack.status("air")).get("airing") and st, 60)
    assert before["lease_losses"] == 0 and before["lease_seconds"] == lease_s
    assert before["lease_renewal_seconds"] < 0.25 * lease_s  # quick renewals
    db = sqlite3.connect(stack.rt.settings.db_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        time.sleep(lease_s + 1.5)
    finally:
        db.execute("ROLLBACK")
        db.close()
    after = stack.wait("the air channel back under a new token", lambda: (st := stack.status("air")).get("airing")
                       and st["lease_token"] > before["lease_token"] and st, 60)
    assert after["lease_losses"] == 1, after
    assert after["lease_renewal_seconds"] >= 0.8 * lease_s, after  # the renewal outlasted the local deadline
    assert "renewing channel leases took" in stack.log("streamer")
    view = stack.api("/api/ops/overview")
    [slow] = [a for a in view["alerts"] if a["alert"] == "StudioLeaseRenewalSlow" and a["channel"] == stack.ids["air"]]
    assert f"of the {lease_s:.0f} s they last" in slow["message"] and "lost 1 time(s)" in slow["message"], slow
    [air] = [c for c in view["channels"] if c["id"] == stack.ids["air"]]
    assert air["lease_losses"] == 1 and air["lease_renewal_seconds"] >= 0.8 * lease_s
    print(f"\nFIGURE lease store locked {lease_s + 1.5:.1f} s: slowest renewal {after['lease_renewal_seconds']:.1f} s "
          f"of {lease_s:.0f} s; token {before['lease_token']} -> {after['lease_token']}")
