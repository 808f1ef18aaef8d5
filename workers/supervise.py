"""One supervisor for every child the studio keeps running: the embedded stack's services, each channel's feeder
and each destination's relay.

A `Supervised` runs one child (a thread target or a process), watches that it is alive and, if it reports
progress, that the progress moves on (a child silent for `stall_after` seconds is ended), and starts it again
after a pause its pacer gives. The pacer (`Pacer`, from a `RestartPolicy`) pauses `pause` seconds for the first
failures, doubles the pause with each failure beyond, and either never gives up or leaves a crash loop stopped
instead of spinning. `status()` says what it is doing: state, restarts, last error, next retry.
"""

from __future__ import annotations

import contextvars
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("studio.supervise")

MIN_DOUBLING_PAUSE = 0.25  # the doubling starts from at least this, so a zero pause still slows a crash loop


@dataclass(frozen=True)
class RestartPolicy:
    """How long to wait before the next start after failures, and when to stop trying.

    The pause is `pause` for the first `steady` failures, then doubles with each one beyond, at most `cap`. With
    `patience` it is also at most that share of the outage so far, but never held below `fast_cap`: an endpoint
    back after a short outage is tried again within about `fast_cap`, one down for an hour every `cap`."""

    pause: float = 0.5
    steady: int = 1
    cap: float = 30.0
    patience: float | None = None
    fast_cap: float = 1.0
    window: float | None = 60.0       # failures count for this many seconds (None: until a healthy run)
    give_up_after: int | None = None  # more failures than this that count: a crash loop, left stopped; None: never
    healthy_after: float = 60.0       # a run this long forgets the failures before it

    def delay(self, failures: int, outage: float = 0.0) -> float:
        ceiling = self.cap if self.patience is None else min(self.cap, max(self.fast_cap, outage * self.patience))
        beyond = failures - self.steady
        if beyond <= 0:
            return min(self.pause, ceiling)
        return min(ceiling, max(self.pause, MIN_DOUBLING_PAUSE) * 2 ** beyond)

    def gives_up(self, failures: int) -> bool:
        return self.give_up_after is not None and failures > self.give_up_after


@dataclass(frozen=True)
class Exit:
    """How one run of a child ended."""

    ran: float                                 # seconds it ran
    error: str | None = None                   # why, when it did not end cleanly
    code: int | None = None                    # a process's exit status
    exception: BaseException | None = None     # a thread target's exception
    stalled: float | None = None               # ended after this many seconds without progress

    @property
    def clean(self) -> bool:
        return self.error is None


class Pacer:
    """One child's failures under `policy`: called with each failure's `Exit`, returns the pause before the next
    start, or None when the policy gives up."""

    def __init__(self, policy: RestartPolicy, *, clock: Callable[[], float] = time.monotonic):
        self.policy, self.clock = policy, clock
        self._failures: deque[float] = deque(maxlen=64)

    def failures(self) -> int:
        """Failures that count now: within the window, since the last healthy run."""
        if self.policy.window is None:
            return len(self._failures)
        now = self.clock()
        return sum(1 for t in self._failures if now - t < self.policy.window)

    def outage(self) -> float:
        """Seconds since the first failure that counts (0 with none)."""
        counted = self.failures()
        return self.clock() - self._failures[-counted] if counted else 0.0

    def __call__(self, exit: Exit) -> float | None:
        if exit.ran >= self.policy.healthy_after:
            self._failures.clear()
        self._failures.append(self.clock())
        failures = self.failures()
        if self.policy.gives_up(failures):
            return None
        return self.policy.delay(failures, self.outage())


class Child(Protocol):
    """One run of a supervised thing, as `Supervised` sees it."""

    def alive(self) -> bool: ...

    def progress(self) -> object:
        """Anything that changes while the child makes progress (a timestamp, a counter); None before the first.
        Called every tick while it runs, and only with `stall_after` set."""

    def end(self, timeout: float) -> None:
        """Make it end now: cooperatively for a thread; terminate, wait, kill for a process."""

    def result(self, ran: float, stalled: float | None) -> Exit:
        """How it ended (called once, after it did)."""


class ThreadChild:
    """`target(cancel)` in a thread of its own (with the caller's log context); it should return soon after
    `cancel` is set. An exception it raises is the run's failure."""

    def __init__(self, target: Callable[[threading.Event], None], *, name: str,
                 progress: Callable[[], object] | None = None):
        self.cancel = threading.Event()
        self._progress = progress
        self.exception: BaseException | None = None
        ctx = contextvars.copy_context()
        self.thread = threading.Thread(target=ctx.run, args=(self._run, target), name=name, daemon=True)
        self.thread.start()

    def _run(self, target: Callable[[threading.Event], None]) -> None:
        try:
            target(self.cancel)
        except BaseException as exc:  # noqa: BLE001 (handed to the supervisor, which decides)
            self.exception = exc

    def alive(self) -> bool:
        return self.thread.is_alive()

    def progress(self) -> object:
        return self._progress() if self._progress is not None else None

    def end(self, timeout: float) -> None:
        self.cancel.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            log.warning("%s did not end within %.0f s of being asked; left behind", self.thread.name, timeout)

    def result(self, ran: float, stalled: float | None) -> Exit:
        exc = self.exception
        if stalled is not None:
            return Exit(ran, f"no progress for {stalled:.0f} s", exception=exc, stalled=stalled)
        return Exit(ran, None if exc is None else str(exc) or type(exc).__name__, exception=exc)


class ProcessChild:
    """A started process (`subprocess.Popen`); ended with terminate, wait, kill.

    A child started in its own session (`start_new_session=True`, as the stack starts its services) leads a
    process group; when it ends, by itself or by `end()`, whatever it left in its group is killed too: an nginx
    master's workers, a celery worker's pool, a streamer's relays and feeders. Left running, those would keep
    ports, keep pushing a channel to its destinations and keep a receiver waiting. The leader is not reaped until
    its group is killed, so the group id cannot have been handed to another process meanwhile."""

    def __init__(self, proc: subprocess.Popen, *, name: str, progress: Callable[[], object] | None = None):
        self.proc, self.name = proc, name
        self._progress = progress
        try:
            self._group = proc.pid if os.getpgid(proc.pid) == proc.pid else None
        except ProcessLookupError:  # already gone and reaped: nothing of its group can be told apart
            self._group = None

    def alive(self) -> bool:
        return not self._ended()

    def progress(self) -> object:
        return self._progress() if self._progress is not None else None

    def _ended(self) -> bool:
        """Whether the leader exited; if it did, its group is killed before it is reaped."""
        if self.proc.returncode is not None:
            return True
        try:
            exited = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere
            return self.proc.poll() is not None
        if exited is None:
            return False
        self._kill_group()
        self.proc.wait()
        return True

    def _kill_group(self) -> None:
        if self._group is None:
            return
        try:
            os.killpg(self._group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def end(self, timeout: float) -> None:
        if self._ended():
            return
        self.proc.terminate()
        deadline = time.monotonic() + timeout
        while not self._ended():
            if time.monotonic() >= deadline:
                log.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
                self._kill_group()
                self.proc.kill()
                self.proc.wait()
                return
            time.sleep(0.05)

    def result(self, ran: float, stalled: float | None) -> Exit:
        self._ended()
        rc = self.proc.returncode
        if stalled is not None:
            return Exit(ran, f"no progress for {stalled:.0f} s", code=rc, stalled=stalled)
        return Exit(ran, None if rc == 0 else f"exited with code {rc}", code=rc)


class Supervised:
    """Keeps one child running until stopped: `launch()` starts a run, and a run that ends is started again after
    the pause `pace(exit)` gives (None: give up, state "failed").

    It is not started again when it ended cleanly (unless `restart_clean_exit`: a service that should never end)
    or raised one of `final`; then the state is "ended". `stop` may be an event the owner sets; `running` a child
    already started (the first run). With `stall_after`, a child whose `progress()` stays the same that long (or
    gives nothing within `first_progress_within`) is ended and counts as a failure."""

    def __init__(self, name: str, launch: Callable[[], Child], *, pace: Callable[[Exit], float | None],
                 final: tuple[type[BaseException], ...] = (), restart_clean_exit: bool = False,
                 stall_after: float | None = None, first_progress_within: float | None = None,
                 every: float = 0.2, stop_timeout: float = 10.0, stop: threading.Event | None = None,
                 running: Child | None = None):
        self.name, self._launch, self._pace = name, launch, pace
        self.final, self.restart_clean_exit = final, restart_clean_exit
        self.stall_after = stall_after
        self.first_progress_within = first_progress_within if first_progress_within is not None else stall_after
        self.every, self.stop_timeout = every, stop_timeout
        self._stop = stop if stop is not None else threading.Event()
        self._first = running
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.state = "starting"
        self.restarts = 0
        self.last_error: str | None = None
        self.retry_at: float | None = None   # wall clock of the next start while "restarting"
        self.running_since: float | None = None
        self.exit: Exit | None = None         # how the last run ended

    # -- control ------------------------------------------------------------------------------------
    def start(self) -> Supervised:
        """Supervise in a thread of its own."""
        self._thread = threading.Thread(target=self.run, name=f"supervise-{self.name}", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self, timeout: float | None = None) -> None:
        self.request_stop()
        self.join(timeout)

    @property
    def alive(self) -> bool:
        return self.state == "running"

    def status(self) -> dict:
        with self._lock:
            return {"name": self.name, "state": self.state, "restarts": self.restarts, "last_error": self.last_error,
                    "retry_at": self.retry_at, "running_since": self.running_since}

    def _set(self, **fields) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(self, key, value)

    # -- the loop -----------------------------------------------------------------------------------
    def run(self) -> Exit | None:
        """Supervise in this thread until stopped, ended or given up; returns how the last run ended."""
        child, self._first = self._first, None
        exit = self.exit
        while True:
            started = time.monotonic()
            if child is None and not self._stop.is_set():
                try:
                    child = self._launch()
                except Exception as exc:  # noqa: BLE001 (a failed start is a failure like any other)
                    exit = Exit(0.0, f"could not start: {exc}", exception=exc)
            if child is not None:  # watched even when stopped already: _watch ends it
                self._set(state="running", running_since=time.time(), retry_at=None)
                exit = self._watch(child, started)
                child = None
            self.exit = exit
            if self._stop.is_set():
                break
            if isinstance(exit.exception, self.final) or (exit.clean and not self.restart_clean_exit):
                self._set(state="ended", running_since=None, last_error=exit.error or self.last_error)
                return exit
            delay = self._pace(exit)
            if delay is None:
                self._set(state="failed", running_since=None, last_error=exit.error)
                log.error("%s: %s; it keeps failing, so it is left stopped", self.name, exit.error or "exited")
                return exit
            self._set(state="restarting", running_since=None, last_error=exit.error, restarts=self.restarts + 1,
                      retry_at=round(time.time() + delay, 3))
            log.warning("%s: %s; restarting in %.1f s", self.name, exit.error or "exited", delay)
            if self._stop.wait(delay):
                break
        self._set(state="stopped", running_since=None, retry_at=None)
        return exit

    def _watch(self, child: Child, started: float) -> Exit:
        """Until the child ends, is stopped, or stalls."""
        seen, moved = None, started
        while child.alive():
            if self._stop.wait(self.every):
                child.end(self.stop_timeout)
                break
            if self.stall_after is None:
                continue
            now, mark = time.monotonic(), child.progress()
            if mark is not None and mark != seen:
                seen, moved = mark, now
            allowed = self.stall_after if seen is not None else self.first_progress_within
            if now - moved > allowed:
                child.end(self.stop_timeout)
                return child.result(now - started, now - moved)
        return child.result(time.monotonic() - started, None)
