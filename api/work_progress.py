"""How far along work is that a request does while its client waits: checking and aligning an uploaded voice-over
takes up to about 8 s for 120 s of speech, and the pages show a bar that moves, not a spinner.

The client names the work with a progress id of its own choosing in the request (`progress_id`, 8-64 letters,
digits, '-' or '_') and polls for it while the request runs. Each report is kept for TTL_S under the account that
started the work and the thing it is about (a script), so another account's poll, or a poll about another script,
finds nothing (404). It is kept in Redis, so that any API process behind a balancer answers the poll, and in a
bounded table of this process while Redis does not answer (as api.login_guard's counters are): a single API
process then still shows its own work's progress.

A report is {"stage", "done", "total", "fraction" (0..1 over the whole work), "state"}: state is "running" until
the request ends, then "done" or "refused" (the request's own answer says why).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import OrderedDict

import redis

from api.redis_first import RedisFirst

TTL_S = 600
MEMORY_MAX_KEYS = 2_000
MIN_INTERVAL_S = 0.1  # reports closer than this are dropped (a stage's first and last never are): pages poll at 0.4 s
PROGRESS_ID = r"^[A-Za-z0-9_-]{8,64}$"
STATES = ("running", "done", "refused")
_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")  # PROGRESS_ID, whole: fullmatch (a '$' would let a trailing newline by)

# A voice-over's stages (workers.ingest.voiceover.take_voiceover) as shares of the whole: decoding is quick,
# alignment (three passes over the audio) is nearly all of it, storing the parts is quick.
VOICEOVER_STAGES = {"decode": (0.0, 0.05), "align": (0.05, 0.95), "store": (0.95, 1.0)}


def valid_id(progress_id: str) -> bool:
    return bool(_ID.fullmatch(progress_id or ""))


def _key(account_id: str, about: str, progress_id: str) -> str:
    """Account and subject are hashed: the keys hold no identifiers in the clear."""
    owner = hashlib.sha256(f"{account_id}\0{about}".encode()).hexdigest()[:24]
    return f"progress:{owner}:{progress_id}"


class _Memory:
    def __init__(self, max_keys: int = MEMORY_MAX_KEYS) -> None:
        self._rows: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._max = max_keys
        self._lock = threading.Lock()

    def set(self, key: str, value: str, ttl: int) -> None:
        with self._lock:
            self._rows[key] = (time.monotonic() + ttl, value)
            self._rows.move_to_end(key)
            while len(self._rows) > self._max:
                self._rows.popitem(last=False)

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._rows.get(key)
            if row is None or row[0] <= time.monotonic():
                self._rows.pop(key, None)
                return None
            return row[1]


class _Redis:
    def __init__(self, client: redis.Redis) -> None:
        self._r = client

    def set(self, key: str, value: str, ttl: int) -> None:
        self._r.set(key, value, ex=ttl)

    def get(self, key: str) -> str | None:
        value = self._r.get(key)
        return value.decode() if isinstance(value, bytes) else value


class ProgressBoard:
    def __init__(self, redis_client: redis.Redis | None = None) -> None:
        self._call = RedisFirst(_Redis(redis_client) if redis_client is not None else None, _Memory())

    def put(self, account_id: str, about: str, progress_id: str, report: dict) -> None:
        self._call("set", _key(account_id, about, progress_id), json.dumps(report), TTL_S)

    def read(self, account_id: str, about: str, progress_id: str) -> dict | None:
        """The last report on this work for this account, or None (unknown, another account's, or expired)."""
        if not valid_id(progress_id):
            return None
        raw = self._call("get", _key(account_id, about, progress_id))
        return json.loads(raw) if raw else None

    def reporter(self, account_id: str, about: str, progress_id: str | None,
                 stages: dict[str, tuple[float, float]]) -> Reporter:
        return Reporter(self, account_id, about, progress_id, stages)


class Reporter:
    """`progress(stage, done, total)` for the work, writing at most one report every MIN_INTERVAL_S (a stage's
    first and last always); `end(state)` when the request ends. Without a progress id it does nothing."""

    def __init__(self, board: ProgressBoard, account_id: str, about: str, progress_id: str | None,
                 stages: dict[str, tuple[float, float]]) -> None:
        self._board, self._owner, self._id, self._stages = board, (account_id, about), progress_id, stages
        self._last = ("", 0.0, 0.0, 0.0)  # stage, done, total, fraction
        self._written = 0.0

    def _write(self, state: str) -> None:
        stage, done, total, fraction = self._last
        self._board.put(*self._owner, self._id, {"stage": stage, "done": round(done, 3), "total": round(total, 3),
                                                 "fraction": round(fraction, 4), "state": state})
        self._written = time.monotonic()

    def __call__(self, stage: str, done: float, total: float) -> None:
        if self._id is None:
            return
        lo, hi = self._stages.get(stage, (self._last[3], self._last[3]))
        share = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        fraction = max(self._last[3], lo + share * (hi - lo))  # never goes back
        new_stage = stage != self._last[0]
        self._last = (stage, float(done), float(total), fraction)
        if new_stage or share >= 1.0 or time.monotonic() - self._written >= MIN_INTERVAL_S:
            self._write("running")

    def end(self, state: str) -> None:
        if self._id is None:
            return
        if state not in STATES[1:]:
            raise ValueError(f"state must be one of {', '.join(STATES[1:])}, got {state!r}")
        if state == "done":
            self._last = (*self._last[:3], 1.0)
        self._write(state)
