"""The scheduler's lease (studio.leader) kept by this process: renewed every second by a heartbeat thread, so a
long planning pass does not lose it; taken over when the leader's runs out; released on a clean stop. Every change
of leadership is a log line ("leading", "standby", "lost the lease"), and a takeover is an audit event.

`term` is the fencing token this process leads with, None while it stands by. A planning pass runs under the term
it began with and fences its writes on it (`fence`), so a pass that outlives its term rolls back.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from studio import audit
from studio.db import session_scope
from studio.leader import Lease, claim, fence, release

log = logging.getLogger("studio.scheduler")
RENEW_S = 1.0  # how often the lease is renewed, and how often a standby tries to take it


class Leadership:
    def __init__(self, engine: Engine, *, seconds: float, name: str = "scheduler", host: str | None = None,
                 on_takeover=lambda: None):
        self.engine, self.seconds, self.name, self.on_takeover = engine, seconds, name, on_takeover
        self.host = host or socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{secrets.token_hex(3)}"  # new at every start, as a streamer's
        self.term: int | None = None
        self._audited: int | None = None
        self._renewed = time.monotonic()
        self._seen: tuple[str, int] | None = None  # the leader last logged while standing by
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        """Renew or take the lease; log any change; return the term this process leads with (None: standby)."""
        with self._lock:
            try:
                with session_scope(self.engine) as s:
                    lease = claim(s, name=self.name, owner=self.owner, host=self.host, seconds=self.seconds)
            except SQLAlchemyError as exc:
                stale = time.monotonic() - self._renewed
                if self.term is not None and stale > self.seconds:
                    log.warning("lost the %s lease: not renewed for %.0f s (%s); standby", self.name, stale,
                                type(exc.orig or exc).__name__)
                    self.term = None
                else:
                    log.warning("%s lease not renewed (%s); trying again", self.name, type(exc.orig or exc).__name__)
                return self.term
            self._renewed = time.monotonic()
            self._follow(lease)
            return self.term

    def _follow(self, lease: Lease) -> None:
        mine = lease.owner == self.owner
        if mine and self.term != lease.token:
            log.info("leading: took the %s lease (token %d, lease %.0f s, renewed every %.0f s)", self.name,
                     lease.token, self.seconds, RENEW_S)
            self.on_takeover()
        elif not mine and self.term is not None:
            log.warning("lost the %s lease: %s took it (token %d, owner %s); standby", self.name, lease.host,
                        lease.token, lease.owner)
        if not mine and self._seen != (lease.owner, lease.token):
            log.info("standby: %s leads the %s since %s UTC (token %d, owner %s)", lease.host, self.name,
                     f"{lease.since:%Y-%m-%d %H:%M:%S}", lease.token, lease.owner)
        self._seen = None if mine else (lease.owner, lease.token)
        self.term = lease.token if mine else None

    def keep(self, stop: threading.Event) -> None:
        """The heartbeat: poll every RENEW_S until `stop`."""
        while not stop.wait(RENEW_S):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the heartbeat outlives a bad pass; the next renews
                log.exception("%s lease: heartbeat failed; retrying", self.name)

    def fence(self, session: Session, term: int) -> None:
        """Raise studio.leader.LeaseLost unless this process still leads with `term` (see studio.leader.fence)."""
        fence(session, name=self.name, owner=self.owner, token=term)

    def record_takeover(self, term: int) -> None:
        """The audit event of a term, once, fenced on it (a deposed process records nothing)."""
        if self._audited == term:
            return
        with session_scope(self.engine) as s:
            audit.record(s, kind=f"{self.name}.leader", subject_id=self.owner, data={"token": term, "host": self.host})
            self.fence(s, term)
        self._audited = term

    def release(self) -> None:
        """End the lease on a clean stop, so a standby takes over at its next try instead of after the lease."""
        with self._lock:
            if self.term is None:
                return
            try:
                with session_scope(self.engine) as s:
                    released = release(s, name=self.name, owner=self.owner, token=self.term)
            except SQLAlchemyError as exc:
                log.warning("%s lease not released (%s): a standby takes over when it runs out", self.name,
                            type(exc.orig or exc).__name__)
                return
            if released:
                log.info("released the %s lease (token %d)", self.name, self.term)
            self.term = None
