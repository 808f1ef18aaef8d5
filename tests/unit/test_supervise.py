"""The one supervisor (workers/supervise.py): restart pacing, crash-loop stop, stall restart, status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from workers.supervise import Exit, Pacer, ProcessChild, RestartPolicy, Supervised, ThreadChild

QUICK = RestartPolicy(pause=0.01, cap=0.01)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _crash(ran: float = 0.1) -> Exit:
    return Exit(ran, "boom")


def _wait(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(0.01)
    raise AssertionError("timed out")


# --- pacing -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("failures", "want"), [(1, 2.0), (5, 2.0), (6, 4.0), (7, 8.0), (9, 32.0), (12, 60.0)])
def test_the_pause_holds_for_steady_failures_then_doubles_up_to_the_cap(failures, want):
    assert RestartPolicy(pause=2.0, steady=5, cap=60.0).delay(failures) == want


def test_a_zero_pause_still_slows_a_crash_loop():
    policy = RestartPolicy(pause=0.0, steady=2, cap=10.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.0, 0.0, 0.5, 1.0, 2.0]


def test_with_patience_the_pause_is_quick_in_a_short_outage_and_patient_in_a_long_one():
    policy = RestartPolicy(pause=0.5, cap=30.0, patience=0.1, fast_cap=1.0)
    assert [policy.delay(n, outage=5.0) for n in range(1, 6)] == [0.5, 1.0, 1.0, 1.0, 1.0]
    assert policy.delay(10, outage=100.0) == 10.0
    assert policy.delay(20, outage=3600.0) == 30.0
    assert policy.delay(1, outage=3600.0) == 0.5


def test_failures_count_within_the_window_only():
    clock = FakeClock()
    pace = Pacer(RestartPolicy(pause=2.0, steady=2, cap=60.0, window=60.0), clock=clock)
    assert [pace(_crash()) for _ in range(4)] == [2.0, 2.0, 4.0, 8.0]
    clock.now += 61  # the four are out of the window: paced like a first failure again
    assert pace(_crash()) == 2.0 and pace.failures() == 1


def test_a_crash_loop_is_left_stopped_and_a_policy_without_a_limit_never_gives_up():
    clock = FakeClock()
    stops = Pacer(RestartPolicy(pause=1.0, steady=3, give_up_after=3, window=60.0), clock=clock)
    assert [stops(_crash()) for _ in range(4)] == [1.0, 1.0, 1.0, None]
    never = Pacer(RestartPolicy(pause=1.0, steady=3, cap=60.0), clock=clock)
    assert all(never(_crash()) is not None for _ in range(100))


def test_a_healthy_run_forgets_the_failures_before_it():
    clock = FakeClock()
    pace = Pacer(RestartPolicy(pause=1.0, cap=60.0, window=None, healthy_after=30.0), clock=clock)
    assert [pace(_crash()) for _ in range(3)] == [1.0, 2.0, 4.0]
    clock.now += 3600  # no window: still counted after an hour down
    assert pace(_crash(ran=5.0)) == 8.0
    assert pace(_crash(ran=30.0)) == 1.0 and pace.outage() == 0.0


def test_the_outage_runs_from_the_first_failure_that_counts():
    clock = FakeClock()
    pace = Pacer(RestartPolicy(window=None), clock=clock)
    pace(_crash())
    clock.now += 42
    pace(_crash())
    assert pace.outage() == 42.0


# --- the runner ---------------------------------------------------------------------------------------
def _thread(target, **kw) -> Supervised:
    return Supervised("t", lambda: ThreadChild(target, name="t-run"), pace=Pacer(QUICK), every=0.01, **kw)


def test_a_crashing_thread_is_restarted_until_it_ends_cleanly():
    runs = []

    def target(cancel):
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError(f"crash {len(runs)}")

    sup = _thread(target)
    exit = sup.run()
    assert len(runs) == 3 and exit.clean
    assert sup.status() | {"running_since": None} == {"name": "t", "state": "ended", "restarts": 2,
                                                       "last_error": "crash 2", "retry_at": None,
                                                       "running_since": None}


class Final(Exception):
    pass


def test_a_final_error_ends_it_without_a_restart():
    def target(cancel):
        raise Final("lease lost")

    sup = _thread(target, final=(Final,))
    exit = sup.run()
    assert isinstance(exit.exception, Final)
    assert (sup.state, sup.restarts, sup.last_error) == ("ended", 0, "lease lost")


def test_a_crash_loop_is_left_failed():
    def target(cancel):
        raise RuntimeError("always")

    sup = Supervised("t", lambda: ThreadChild(target, name="t-run"), every=0.01,
                     pace=Pacer(RestartPolicy(pause=0.01, give_up_after=3)))
    sup.run()
    assert (sup.state, sup.restarts, sup.last_error) == ("failed", 3, "always")


def test_a_failed_start_counts_as_a_failure():
    def launch():
        raise OSError("no such program")

    sup = Supervised("t", launch, pace=Pacer(RestartPolicy(pause=0.01, give_up_after=1)))
    sup.run()
    assert (sup.state, sup.restarts) == ("failed", 1) and "no such program" in sup.last_error


def test_a_stalled_thread_is_ended_and_restarted():
    """Progress must move within stall_after; the target is asked to end (cancel) and started again."""
    runs: list[int] = []
    beats = {"n": 0}

    def target(cancel):
        runs.append(1)
        if len(runs) == 1:
            for _ in range(3):
                beats["n"] += 1
                time.sleep(0.02)
            cancel.wait(5)  # stuck: no more progress until asked to end
            return
        beats["n"] += 1  # the second run is healthy and ends cleanly

    sup = Supervised("t", lambda: ThreadChild(target, name="t-run", progress=lambda: beats["n"] or None),
                     pace=Pacer(QUICK), every=0.01, stall_after=0.2, first_progress_within=1.0)
    started = time.monotonic()
    exit = sup.run()
    assert len(runs) == 2 and exit.clean and sup.restarts == 1
    assert sup.last_error.startswith("no progress for")
    assert time.monotonic() - started < 3


def test_no_first_progress_within_the_grace_is_a_stall():
    def target(cancel):
        cancel.wait(5)

    sup = Supervised("t", lambda: ThreadChild(target, name="t-run", progress=lambda: None),
                     pace=Pacer(RestartPolicy(pause=0.01, give_up_after=0)), every=0.01, stall_after=0.05,
                     first_progress_within=0.1)
    exit = sup.run()
    assert exit.stalled is not None and exit.stalled >= 0.1 and sup.state == "failed"


def test_stop_ends_the_running_child_and_a_pending_restart():
    started = threading.Event()

    def target(cancel):
        started.set()
        cancel.wait(10)

    sup = _thread(target).start()
    assert started.wait(5)
    assert _wait(lambda: sup.alive)
    sup.stop(timeout=5)
    assert sup.state == "stopped" and not sup.alive

    slow = Supervised("t", lambda: ThreadChild(lambda c: 1 / 0, name="t-run"),
                      pace=Pacer(RestartPolicy(pause=30.0)), every=0.01).start()
    _wait(lambda: slow.state == "restarting")
    assert slow.retry_at > time.time() + 25
    t0 = time.monotonic()
    slow.stop(timeout=5)
    assert slow.state == "stopped" and slow.retry_at is None and time.monotonic() - t0 < 2


def _process(code: int) -> ProcessChild:
    return ProcessChild(subprocess.Popen([sys.executable, "-c", f"import sys; sys.exit({code})"]), name="p")


def test_a_process_that_exits_is_restarted_and_a_clean_exit_too_for_a_service():
    starts = []

    def launch():
        starts.append(1)
        return _process(0 if len(starts) % 2 else 3)

    sup = Supervised("p", launch, pace=Pacer(RestartPolicy(pause=0.01, steady=10, give_up_after=3)),
                     restart_clean_exit=True, every=0.01, running=launch())
    exit = sup.run()
    assert sup.state == "failed" and len(starts) == 4 and sup.restarts == 3
    assert exit.code == 3 and sup.last_error == "exited with code 3"


def test_stop_terminates_a_running_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    sup = Supervised("p", lambda: None, pace=Pacer(QUICK), every=0.01, running=ProcessChild(proc, name="p")).start()
    assert _wait(lambda: sup.alive)
    sup.stop(timeout=10)
    assert proc.poll() is not None and sup.state == "stopped"


def _leader_with_a_child(tmp_path, *, then: str) -> tuple[subprocess.Popen, int]:
    """A process in its own session (as the stack starts its services) that starts a child which outlives it,
    then runs `then`; returns it and the child's pid."""
    pidfile = tmp_path / "child.pid"
    code = (f"import subprocess, sys, time, signal\n"
            f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n{then}\n")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    assert _wait(pidfile.exists, timeout=20) and pidfile.read_text()
    return proc, int(pidfile.read_text())


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie not yet reaped by init counts as gone
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def test_what_a_stopped_service_left_in_its_group_is_killed(tmp_path):
    """An nginx master's workers or a streamer's relays must not outlive it: a service that ignores SIGTERM is
    killed after the timeout, with its whole process group."""
    proc, child = _leader_with_a_child(tmp_path, then="signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                                       "time.sleep(120)")
    ProcessChild(proc, name="stubborn").end(timeout=0.5)
    assert proc.returncode == -signal.SIGKILL
    assert _wait(lambda: _gone(child), timeout=10), "the service's child outlived it"


def test_what_a_crashed_service_left_in_its_group_is_killed(tmp_path):
    proc, child = _leader_with_a_child(tmp_path, then="sys.exit(3)")
    pc = ProcessChild(proc, name="crashes")
    assert _wait(lambda: not pc.alive(), timeout=20)
    assert pc.result(1.0, None).code == 3
    assert _wait(lambda: _gone(child), timeout=10), "the crashed service's child kept running"


def test_a_process_not_in_its_own_group_is_ended_alone():
    """A child sharing our process group (tests, tools) is terminated by itself: never a killpg of our own."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child = ProcessChild(proc, name="p")
    assert child._group is None
    child.end(timeout=5)
    assert proc.returncode == -signal.SIGTERM


# --- a user: the channel runner's feeder loop (workers/streamer/supervisor.py) ------------------------
class FakeFeeder:
    """Stands in for ChannelFeeder: each run takes the next step, an exception to raise or "air" (until asked
    to stop or the boundary of a hand-over)."""

    steps: list = []

    def __init__(self, **_):
        self.boundary = threading.Event()
        self.aired_seconds, self.segments_aired, self.slates_aired, self.refused, self.underruns = 0.0, 0, 0, 0, 0

    def run(self, stop: threading.Event) -> None:
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        while not stop.is_set() and not self.boundary.is_set():
            time.sleep(0.01)


@pytest.fixture
def runner(fresh_db, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from sqlmodel import Session

    from studio.config import Settings, StreamerConfig
    from studio.models import Channel, Show
    from tests.conftest import db_show
    from workers.streamer import supervisor

    ids = db_show(fresh_db)
    with Session(fresh_db, expire_on_commit=False) as s:
        channel, show = s.get(Channel, ids["channel"]), s.get(Show, ids["show"])
    settings = Settings(streamer=StreamerConfig(restart_pause_seconds=0.0))
    rt = SimpleNamespace(engine=fresh_db, settings=settings, key=None, data=SimpleNamespace(run=tmp_path))
    monkeypatch.setattr(supervisor, "ChannelFeeder", FakeFeeder)
    monkeypatch.setattr(supervisor, "aigc_metadata", lambda *a, **k: {})
    monkeypatch.setattr(supervisor.ChannelRunner, "_slates", lambda self: (tmp_path / "s.mp4",) * 2)
    made = supervisor.ChannelRunner(rt, channel, ["rtmp://127.0.0.1:1/live/c"], show)
    yield made
    made.stop.set()
    made.thread.join(5)


def test_the_feeder_is_restarted_after_a_crash_and_a_lost_lease_ends_it(runner):
    from workers.streamer.feeder import LeaseLost, StreamError

    FakeFeeder.steps = [StreamError("push ffmpeg exited with code 1"), StreamError("again"), LeaseLost("lease gone")]
    runner.thread.start()
    runner.thread.join(10)
    status = runner.status()
    assert (status["state"], status["restarts"], status["last_error"]) == ("lease lost", 2, "lease gone")
    assert not FakeFeeder.steps


def test_a_hand_over_ends_the_feeder_loop_cleanly(runner):
    from workers.streamer.feeder import StreamError

    FakeFeeder.steps = [StreamError("push ffmpeg exited with code 1"), "air"]
    runner.thread.start()
    _wait(lambda: runner.status()["state"] == "airing" and runner.status()["restarts"] == 1)
    runner.hand_over()
    runner.thread.join(10)
    status = runner.status()
    assert (status["state"], status["restarts"], status["last_error"]) == ("handed over", 1,
                                                                           "push ffmpeg exited with code 1")


# --- a user: a destination's relay (workers/streamer/relay.py) ---------------------------------------
def test_a_relay_paces_the_ingest_not_publishing_apart_from_its_destination_failing():
    from workers.streamer.relay import EXIT_SOURCE, DestinationRelay, RelayTarget

    relay = DestinationRelay(RelayTarget(id="d1", stored="x", shown="rtmp://a/live/****"),
                             source="rtmp://127.0.0.1:1/live/c", open_url=lambda: "rtmp://unused/app/k")
    source = Exit(11.0, "the local ingest gave no stream within 15 s", code=EXIT_SOURCE, stalled=15.0)
    assert [relay._pace(source) for _ in range(3)] == [0.25, 0.5, 1.0]
    assert (relay.state, relay.failures, relay.source_failures) == ("waiting_for_source", 0, 3)
    assert relay._pace(Exit(2.0, "Connection refused", code=1)) == 0.5
    assert (relay.state, relay.failures, relay.source_failures) == ("backing_off", 1, 0)
    status = relay.status()
    assert status["last_error"] == "Connection refused" and status["retry_at"] > time.time()
