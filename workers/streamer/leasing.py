"""This streamer's channel leases, as the supervisor, the feeders and the ingest see them.

`LeaseKeeper` works on a `studio.lease_store.LeaseStore` (the database, or Redis: `streamer.lease_backend`). It
renews every lease in one statement (one script on Redis) per pass and keeps, per channel, the fencing token and a
local deadline on the monotonic clock: the renewal's start plus the lease length, less a margin. The local
check (`valid`) costs nothing, so the feeder asks it before every packet; a streamer paused (SIGSTOP) or cut
off past its deadline fails it at the first packet after it wakes, before it learns anything from the
store. Before every segment airs the feeder's air check also asks the store that holds the lease (`holds`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import deque

from studio import leases
from studio.lease_store import LeaseStore

log = logging.getLogger("studio.streamer")
MARGIN_S = 1.0  # the local deadline runs out this long before the lease does in the database
SLOW_RENEWAL = 0.25  # a renewal that takes this share of the lease is logged: channels drop when it reaches 80 %
RENEWAL_WINDOW_S = 60.0  # slowest_renewal looks this far back (what the status files and /metrics show)


def new_owner_id() -> str:
    """Unique per streamer process: host, pid and a random part (a restarted process is a new owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LeaseKeeper:
    def __init__(self, store: LeaseStore, *, owner: str | None = None, host: str | None = None, capacity: int = 50,
                 ttl: float = 5.0):
        self.store = store
        self.owner = owner or new_owner_id()
        self.host = host or socket.gethostname()
        self.capacity, self.ttl = capacity, ttl
        self._held: dict[str, leases.Held] = {}
        self._deadline: dict[str, float] = {}
        self._lock = threading.Lock()
        self._renewals: deque[tuple[float, float]] = deque()  # (when it ended, seconds it took), monotonic

    # -- local view (cheap, thread-safe) ---------------------------------------------------------------------
    def token(self, channel_id: str) -> int | None:
        with self._lock:
            held = self._held.get(channel_id)
            return held.token if held is not None and time.monotonic() < self._deadline[channel_id] else None

    def valid(self, channel_id: str, token: int) -> bool:
        """Held with this token and not past the local deadline (no database call)."""
        return self.token(channel_id) == token

    def held(self) -> dict[str, leases.Held]:
        with self._lock:
            return dict(self._held)

    def _set(self, channel_id: str, held: leases.Held, started: float) -> None:
        self._held[channel_id] = held
        self._deadline[channel_id] = started + self.ttl - MARGIN_S

    def _drop(self, channel_id: str) -> None:
        self._held.pop(channel_id, None)
        self._deadline.pop(channel_id, None)

    # -- the lease store -------------------------------------------------------------------------------------
    def renew(self) -> dict[str, leases.Held]:
        """Heartbeat and renew; returns what is held now (a channel missing from it was lost)."""
        started = time.monotonic()
        try:
            self.store.heartbeat(owner=self.owner, host=self.host, capacity=self.capacity)
            held = self.store.renew(owner=self.owner, ttl=self.ttl)
        finally:  # a renewal that failed after a long wait was slow too
            self._took(started)
        with self._lock:
            for cid in list(self._held):
                if cid not in held:
                    self._drop(cid)
            for cid, h in held.items():
                self._set(cid, h, started)
            return dict(self._held)

    def _took(self, started: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._renewals.append((now, now - started))
            while self._renewals and self._renewals[0][0] < now - RENEWAL_WINDOW_S:
                self._renewals.popleft()

    def last_renewal(self) -> float | None:
        """Seconds the latest renewal took (None before the first)."""
        with self._lock:
            return self._renewals[-1][1] if self._renewals else None

    def slowest_renewal(self) -> float:
        """Seconds the slowest renewal of the last minute took (0 when none ended in it): past 80 % of the lease
        (`ttl` less the local margin) every channel's fence closes before the renewal returns, and they all stop."""
        now = time.monotonic()
        with self._lock:
            return max((took for at, took in self._renewals if at >= now - RENEWAL_WINDOW_S), default=0.0)

    def claim(self, channel_id: str) -> int | None:
        started = time.monotonic()
        token = self.store.claim(channel_id=channel_id, owner=self.owner, host=self.host, ttl=self.ttl)
        if token is not None:
            with self._lock:
                self._set(channel_id, leases.Held(token), started)
        return token

    def release(self, channel_id: str, token: int) -> None:
        with self._lock:
            if self._held.get(channel_id, leases.Held(-1)).token == token:
                self._drop(channel_id)
        self.store.release(channel_id=channel_id, owner=self.owner, token=token)

    def lost(self, channel_id: str, token: int) -> None:
        """The store says the lease is gone: forget it here too, so the local fence fails at once."""
        with self._lock:
            if self._held.get(channel_id, leases.Held(-1)).token == token:
                self._drop(channel_id)

    def holds(self, channel_id: str, token: int) -> bool:
        """The fence by the store that holds the lease (the air check before each segment)."""
        return self.valid(channel_id, token) and self.store.holds(channel_id=channel_id, owner=self.owner,
                                                                  token=token)

    def renew_every(self, seconds: float, stop: threading.Event, on_change=None) -> threading.Thread:
        """Renew on a thread of its own, so that a slow supervisor pass (stopping a feeder, starting one) never
        lets a lease lapse; `on_change()` when a lease was lost or a hand-over asked."""
        def loop() -> None:
            before: dict[str, leases.Held] = {}
            while not stop.is_set():
                try:
                    now = self.renew()
                    took = self.last_renewal() or 0.0
                    if took > SLOW_RENEWAL * self.ttl:  # what comes before a lapse: a slow or locked lease store
                        log.warning("renewing channel leases took %.1f s of the %.0f s they last", took, self.ttl)
                    if on_change is not None and now != before:
                        on_change()
                    before = now
                except Exception:  # noqa: BLE001 - a store hiccup: the local deadlines run out if it lasts
                    log.exception("renewing channel leases failed; retrying")
                stop.wait(seconds)

        thread = threading.Thread(target=loop, name="lease-renewal", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """A clean stop: release whatever is still held and leave the streamer list."""
        for cid, held in self.held().items():
            self.release(cid, held.token)
        self.store.forget_streamer(self.owner)
