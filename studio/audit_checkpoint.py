"""Where the audit log's checkpoint lives: outside the database it guards, shared by every host.

The checkpoint (the head of the hash chain, MACed with the control key; studio.audit) is one JSON document kept in
several places (`CheckpointPlaces`): Redis first (workers.provenance.audit_checkpoint), written by whoever holds the
scheduler lease, with a compare-and-set that accepts a document only if its last id is not below the stored one, so
a deposed leader waking up with an older view cannot move it back; then a durable copy in the media store (`StoreSlot`),
because Redis may run without persistence. `studio audit verify` on any host reads every place and uses the newest
valid document; a document whose MAC does not match is reported wherever it lies.

Releases before the fleet kept the checkpoint in a local file of the scheduler's host (`DataDir.audit_checkpoint`);
that file is still read while no shared checkpoint exists, with a warning saying how to move it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from studio.store import MediaStore

STORE_KEY = "audit/checkpoint.json"


class AuditError(RuntimeError):
    pass


class CheckpointRefused(RuntimeError):
    """The places hold a later checkpoint than the one this process made, so it was not written. Not a fault of
    the log: another process (the scheduler that leads now) checkpointed a newer head meanwhile."""


class CheckpointUnavailable(RuntimeError):
    """A place the checkpoint is kept cannot be reached; the message names the setting, never a secret."""


@dataclass(frozen=True)
class Checkpoint:
    last_id: int | None
    last_hash: str
    count: int
    at: str
    legacy: bool = field(default=False, compare=False)  # MACed with the policy key, before the role keys

    def body(self) -> bytes:
        fields = {"last_id": self.last_id, "last_hash": self.last_hash, "count": self.count, "at": self.at}
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def mac(self, key: bytes) -> str:
        return hmac.new(key, self.body(), hashlib.sha256).hexdigest()

    def document(self, key: bytes) -> bytes:
        """The document every place keeps: the fields and their MAC with `key` (the control key)."""
        return json.dumps({**json.loads(self.body()), "mac": self.mac(key)}, sort_keys=True, indent=2).encode()

    @property
    def position(self) -> int:
        """What orders checkpoints: the last event id (0 for a log that was empty)."""
        return self.last_id or 0


def parse_checkpoint(raw: bytes | str, *, where: str, key: bytes, legacy_key: bytes | None = None) -> Checkpoint:
    """The checkpoint document `raw` found in `where`, MACed with `key` (the control key) or, marked `legacy`, with
    `legacy_key` (the policy key, as before the role keys); AuditError when it cannot be read or its MAC matches
    neither."""
    try:
        doc = json.loads(raw)
        cp = Checkpoint(last_id=doc["last_id"], last_hash=doc["last_hash"], count=doc["count"], at=doc["at"])
        mac = doc["mac"]
    except (ValueError, KeyError, TypeError) as exc:
        raise AuditError(f"audit checkpoint in {where}: unreadable ({exc.__class__.__name__}: {exc})") from None
    if not (isinstance(cp.last_id, int | None) and isinstance(cp.last_hash, str) and isinstance(cp.count, int)
            and isinstance(cp.at, str) and isinstance(mac, str)):
        raise AuditError(f"audit checkpoint in {where}: a field has the wrong type (edited)")
    if hmac.compare_digest(mac.encode(), cp.mac(key).encode()):
        return cp
    if legacy_key is not None and hmac.compare_digest(mac.encode(), cp.mac(legacy_key).encode()):
        return replace(cp, legacy=True)
    raise AuditError(f"audit checkpoint in {where}: MAC does not match the control key (forged, edited or made "
                     "with another key)")


def document_position(raw: bytes) -> int | None:
    """The last id a document claims, unchecked (None when it cannot be read): only for ordering copies."""
    try:
        last_id = json.loads(raw)["last_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return (last_id or 0) if isinstance(last_id, int | None) else None


# --- places -----------------------------------------------------------------------------------------------------
class CheckpointSlot(Protocol):
    """One place that keeps the checkpoint document."""

    where: str  # for messages: "Redis key studio:audit:checkpoint", never a URL (it may carry a password)

    def get(self) -> bytes | None:
        """The document, None when there is none; CheckpointUnavailable when the place cannot be reached."""

    def put(self, document: bytes, position: int) -> bool:
        """Keep `document` unless the place holds one at a later position or one it cannot read; False then."""


class StoreSlot:
    """The checkpoint as a key of the media store, the durable copy. The store has no compare-and-set, so `put`
    compares and then writes: two writers at once may leave the older one, which `CheckpointPlaces.write` mends
    from the first place."""

    def __init__(self, store: MediaStore, key: str = STORE_KEY) -> None:
        self.store, self.key = store, key
        self.where = f"store key {key}"

    def get(self) -> bytes | None:
        try:
            return self.store.read(self.key)
        except FileNotFoundError:
            return None

    def put(self, document: bytes, position: int) -> bool:
        current = self.get()
        if current is not None and (document_position(current) is None or document_position(current) > position):
            return False
        self.store.put_bytes(self.key, document)
        return True


@dataclass(frozen=True)
class Found:
    """What the places hold: the newest valid checkpoint and where it was read (None: no checkpoint), the
    problems (a document with a bad MAC or unreadable) and warnings."""

    checkpoint: Checkpoint | None
    where: str | None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CheckpointPlaces:
    """The shared places, the first one deciding (its `put` is a compare-and-set), and the local file of older
    releases, read only while no shared place holds a checkpoint."""

    shared: tuple[CheckpointSlot, ...]
    legacy_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.shared:
            raise ValueError("CheckpointPlaces: at least one shared place is needed")

    def names(self) -> str:
        return " and ".join(slot.where for slot in self.shared)

    def read(self, *, key: bytes, legacy_key: bytes | None = None) -> Found:
        """Every shared place's document, each checked; the newest valid one wins (on a tie, the first place's).
        Only the local file may be MACed with `legacy_key`: the shared places came after the role keys, so a
        policy-key document there was forged by a host holding that key."""
        valid: list[tuple[Checkpoint, str]] = []
        problems, empty, away = [], [], []
        for slot in self.shared:
            try:
                raw = slot.get()
            except CheckpointUnavailable as exc:  # Redis down (a stopped `studio up`): the others still answer
                away.append(exc)
                continue
            if raw is None:
                empty.append(slot.where)
                continue
            try:
                valid.append((parse_checkpoint(raw, where=slot.where, key=key), slot.where))
            except AuditError as exc:
                problems.append(str(exc))
        if len(away) == len(self.shared):
            raise CheckpointUnavailable("; ".join(str(exc) for exc in away))
        unreached = [f"{exc}: the audit checkpoint was read from the other places only" for exc in away]
        if valid:
            cp, where = max(valid, key=lambda found: found[0].position)
            warnings = [f"no audit checkpoint in {w} (Redis restarted without persistence, or a copy failed); read "
                        f"the one in {where}; the next leader pass writes it there again" for w in empty]
            return Found(cp, where, problems, unreached + warnings)
        if problems:  # a shared checkpoint exists but is bad: an older local file must not stand in for it
            return Found(None, None, problems, unreached)
        found = self._read_legacy(key=key, legacy_key=legacy_key)
        return Found(found.checkpoint, found.where, found.problems, unreached + found.warnings)

    def _read_legacy(self, *, key: bytes, legacy_key: bytes | None) -> Found:
        if self.legacy_file is None or not self.legacy_file.exists():
            return Found(None, None, warnings=[f"no audit checkpoint in {self.names()}: cannot check for deleted "
                                               "tail events"])
        where = f"local file {self.legacy_file}"
        try:
            cp = parse_checkpoint(self.legacy_file.read_bytes(), where=where, key=key, legacy_key=legacy_key)
        except OSError as exc:
            return Found(None, None, [f"audit checkpoint in {where}: unreadable ({exc.__class__.__name__})"])
        except AuditError as exc:
            return Found(None, None, [str(exc)])
        return Found(cp, where, warnings=[
            f"audit checkpoint read from {where}, where releases before the fleet kept it; the next leader pass of "
            f"the scheduler, or `studio audit checkpoint`, writes it to {self.names()}"])

    def write(self, document: bytes, position: int) -> bool:
        """Keep `document` in every place, unless the first holds a later one: False then (nothing written). The
        copies follow the first place: should another writer have moved it on meanwhile, its document is copied."""
        first, *copies = self.shared
        if not first.put(document, position):
            return False
        for slot in copies:
            slot.put(document, position)
        latest = first.get()
        if latest is not None and latest != document and (latest_position := document_position(latest)) is not None:
            for slot in copies:
                slot.put(latest, latest_position)
        return True
