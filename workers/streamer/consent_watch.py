"""Consent state at air time for every channel of one streamer, for the cost of one query a second.

A segment on air is checked a few times a second (POLICY C5: a revoked clone is off air within 2 s). Asking the
database each time costs 4 queries a second per channel: 4,000 a second at 1,000 channels. `ConsentWatch` keeps
the status and term of the consents this streamer airs under, refreshed for all of them in one query a second,
and at once when a revocation is pushed on Redis (`CHANNEL`, published by `announce` after the revocation's
commit). The push makes it immediate; the poll is the fallback when a push is lost or Redis is down. A watch
that could not refresh for `STALE_S` answers "unknown", and the feeder cuts to the slate: a clone stays on air
only on a consent known to hold.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import select

from studio.consent import consent_problem
from studio.db import session_scope
from studio.models import Consent
from studio.tls import RedisEndpoint

log = logging.getLogger("studio.streamer")
CHANNEL = "studio:consent-changed"
STALE_S = 3.0


@dataclass(frozen=True)
class _Known:
    id: str
    status: str
    starts_at: datetime
    ends_at: datetime


def announce(broker: RedisEndpoint | None, consent_id: str) -> bool:
    """Tell every streamer that a consent changed (after the change is committed); False when Redis could not
    be told (the streamers' one-second poll still catches it)."""
    if broker is None:
        return False
    import redis

    try:
        client = broker.client(timeout=2, connect_timeout=2)
        try:
            client.publish(CHANNEL, consent_id)
        finally:
            client.close()
        return True
    except redis.RedisError as exc:
        log.warning("consent %s changed, but the streamers could not be told at once (%s); they poll", consent_id,
                    type(exc).__name__)
        return False


class ConsentWatch:
    def __init__(self, engine, *, broker: RedisEndpoint | None = None, every: float = 1.0):
        self.engine, self.broker, self.every = engine, broker, every
        self._watched: dict[str, int] = {}  # consent id -> channels airing under it
        self._known: dict[str, _Known | None] = {}
        self._refreshed = 0.0  # monotonic time of the last refresh that reached the database
        self._lock = threading.Lock()
        self._now = threading.Event()
        self._stop = threading.Event()
        self.refreshes = 0  # queries made, for the benchmark and the tests
        self.pushes = 0

    # -- what the feeders ask -------------------------------------------------------------------------------
    def watch(self, consent_id: str) -> None:
        """Watch a consent from now on; its state is read before this returns (when the database answers)."""
        with self._lock:
            self._watched[consent_id] = self._watched.get(consent_id, 0) + 1
        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - the poll retries; until then the answer is "unknown"
            log.warning("consent watch could not read consent %s (%s)", consent_id, type(exc).__name__)

    def unwatch(self, consent_id: str) -> None:
        with self._lock:
            left = self._watched.get(consent_id, 0) - 1
            if left > 0:
                self._watched[consent_id] = left
            else:
                self._watched.pop(consent_id, None)
                self._known.pop(consent_id, None)

    def problem(self, consent_id: str, *, at: datetime) -> str | None:
        """Why the consent does not allow airing now, by the last refresh; None when it does."""
        with self._lock:
            age = time.monotonic() - self._refreshed
            watched, have, known = consent_id in self._watched, consent_id in self._known, self._known.get(consent_id)
        if not watched:
            return f"consent {consent_id} is not watched"
        if not have or age > STALE_S:
            return f"consent {consent_id}: state unknown (not refreshed for {age:.1f} s)"
        return consent_problem(known, at=at)

    # -- refreshing -----------------------------------------------------------------------------------------
    def refresh(self) -> None:
        with self._lock:
            ids = sorted(self._watched)
        rows: dict[str, _Known | None] = dict.fromkeys(ids)
        if ids:
            with session_scope(self.engine) as s:
                for c in s.exec(select(Consent).where(Consent.id.in_(ids))).all():
                    rows[c.id] = _Known(c.id, c.status, c.starts_at, c.ends_at)
            self.refreshes += 1
        with self._lock:
            for cid, known in rows.items():
                if cid in self._watched:
                    self._known[cid] = known
            self._refreshed = time.monotonic()

    def start(self) -> ConsentWatch:
        threading.Thread(target=self._poll, name="consent-watch", daemon=True).start()
        if self.broker is not None:
            threading.Thread(target=self._listen, name="consent-push", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._now.set()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the database is away: answers go stale, feeders cut
                log.warning("consent watch could not refresh (%s); retrying", type(exc).__name__)
            self._now.wait(self.every)
            self._now.clear()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                client = self.broker.client(timeout=None, connect_timeout=5)
                sub = client.pubsub(ignore_subscribe_messages=True)
                sub.subscribe(CHANNEL)
                for msg in sub.listen():
                    if self._stop.is_set():
                        break
                    if msg.get("type") == "message":
                        self.pushes += 1
                        self._now.set()  # refresh at once (one query for every watched consent)
            except Exception as exc:  # noqa: BLE001 - Redis away: the poll covers; listen again
                log.warning("consent push channel lost (%s); the one-second poll covers", type(exc).__name__)
                self._stop.wait(2.0)
