"""Who may write which audit event (POLICY C6): each kind belongs to a role, and each role signs with a key of
its own, so a host holds only the keys of the roles it runs.

Render workers, streamers, ingest and archive workers append events too, so no single key can be kept off
those hosts; with a key per role a render host can still append events, but none that verifies as a consent,
account or show event: those are the control role's (API, scheduler, admin commands), whose key never leaves
the control hosts. `studio audit verify` runs there with every role's key.

A runtime binds the keyring of its process's roles to its database engine (`bind`); `studio.audit.record`
signs each event with the key of the role its kind belongs to, through the session's engine, and refuses an
unknown kind or one whose role's key the process does not hold.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from weakref import WeakKeyDictionary

from sqlalchemy.engine import Engine

CONTROL, RENDER, STREAM, INGEST, ARCHIVE = "control", "render", "stream", "ingest", "archive"
ROLES = (CONTROL, RENDER, STREAM, INGEST, ARCHIVE)
ROLE_HOSTS = {CONTROL: "the API, the scheduler and admin commands", RENDER: "render workers (queue render)",
              STREAM: "streamers", INGEST: "ingest workers (queue ingest)", ARCHIVE: "publish workers (queue publish)"}

# Every kind the platform records, and the role(s) whose key may sign it. Roles follow the process that writes
# the event (see the call sites of `audit.record`), not the subject it is about.
KIND_ROLES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    # consents, accounts and shows: the API, the scheduler (plans, expiry) and admin commands
    "consent.phrase_issued": (CONTROL,),
    "consent.granted": (CONTROL,),
    "consent.pending_review": (CONTROL,),
    "consent.approved": (CONTROL,),
    "consent.rejected": (CONTROL,),
    # A refused attempt grants nothing, and the check that refuses it runs on the ingest queue: ingest hosts may
    # record it (a forged refusal cannot put a clone on air). What the check found in a video that passed is the
    # ingest host's `consent.checked`; only the control side turns it into a grant (workers.consent.grant).
    "consent.refused": (CONTROL, INGEST),
    "consent.checked": (INGEST,),
    "consent.script_approved": (CONTROL,),
    "consent.revoked": (CONTROL,),
    "consent.expired": (CONTROL,),
    "consent.renders_stopped": (CONTROL,),
    "consent.deletion_certificate": (CONTROL,),
    "creator.attested": (CONTROL,),
    # voice-overs (POLICY C7) are taken in, approved, dropped (edit, deletion, revocation) by the control side
    "voiceover.added": (CONTROL,),
    "voiceover.approved": (CONTROL,),
    "voiceover.dropped": (CONTROL,),
    "script.edited": (CONTROL,),
    "avatar.voice": (CONTROL,),
    "account.disabled": (CONTROL,),
    "account.enabled": (CONTROL,),
    "account.sessions_ended": (CONTROL,),
    "show.created": (CONTROL,),
    "show.planned": (CONTROL,),
    "show.refused": (CONTROL,),
    "show.stopped": (CONTROL,),
    "scheduler.leader": (CONTROL,),
    # render workers: the outcome of a render, including a segment whose consent lapsed before it was done
    "segment.rendered": (RENDER,),
    "segment.failed": (RENDER,),
    "segment.requeued": (CONTROL,),
    "segment.cancelled": (RENDER,),
    # Two roles, each for its own reason: a render worker skips a segment that starts too late to air, a
    # streamer one that missed its turn on air. Neither is a consent event.
    "segment.skipped": (RENDER, STREAM),
    # streamers: air-time checks and what went out; the slate is rendered by the streamer that airs it
    "segment.aired": (STREAM,),
    "segment.refused": (STREAM,),
    "break.aired": (STREAM,),
    "idle.off_air": (STREAM,),  # the clone's idle loop cut to the card once its consent ended
    "stream.started": (STREAM,),
    "slate.rendered": (STREAM,),
    # ingest workers (and `studio avatar create`, an admin command holding every key)
    "avatar.created": (INGEST,),
    # publish workers (and `studio record`, an admin command holding every key)
    "segment.archived": (ARCHIVE,),
    "show.recorded": (ARCHIVE,),
    # every process with a local cache of the store purges a revoked clone's copies (workers.consent.cache_purge)
    "cache.purged": (RENDER, STREAM, INGEST, ARCHIVE, CONTROL),
})


class AuditKeyError(RuntimeError):
    """An event this process may not sign: an unknown kind, or a kind whose role's key it does not hold."""


def roles_for(kind: str) -> tuple[str, ...]:
    """The roles that may sign `kind`; AuditKeyError for a kind not in the table."""
    try:
        return KIND_ROLES[kind]
    except KeyError:
        raise AuditKeyError(f"unknown audit event kind {kind!r}: add it to KIND_ROLES in studio/audit_keys.py with "
                            "the role whose process writes it") from None


def parse_roles(text: str) -> tuple[str, ...]:
    """`"render,ingest"` as roles, in ROLES order; ValueError naming an unknown one."""
    wanted = {r.strip() for r in text.split(",") if r.strip()}
    if unknown := sorted(wanted - set(ROLES)):
        raise ValueError(f"unknown audit role(s) {', '.join(unknown)}; choose from {', '.join(ROLES)}")
    return tuple(r for r in ROLES if r in wanted)


def event_mac(key: bytes, event_hash: str) -> str:
    """The MAC of an event: over its hash, which covers its content and the hash of the event before it, so a
    MAC also pins the event's place in the chain."""
    return hmac.new(key, b"studio audit event v1\x00" + event_hash.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuditKeyring:
    """The audit keys a process holds, by role."""

    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if unknown := sorted(set(self.keys) - set(ROLES)):
            raise ValueError(f"unknown audit role(s) {', '.join(unknown)}")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    @classmethod
    def generate(cls, roles: Iterable[str] = ROLES) -> AuditKeyring:
        """Fresh random keys, kept nowhere: for a throwaway database that nobody verifies."""
        return cls({role: secrets.token_bytes(32) for role in roles})

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(r for r in ROLES if r in self.keys)

    def key(self, role: str) -> bytes:
        try:
            return self.keys[role]
        except KeyError:
            raise AuditKeyError(f"this process holds no {role} audit key (audit-{role}.key); it holds "
                                f"{', '.join(self.roles) or 'none'}") from None

    def signer(self, kind: str) -> str:
        """The role this process signs `kind` as; AuditKeyError naming the kind and role when it may not."""
        allowed = roles_for(kind)
        for role in allowed:
            if role in self.keys:
                return role
        needed = " or ".join(allowed)
        raise AuditKeyError(f"cannot record {kind}: only the {needed} role may write it, and this process holds the "
                            f"audit key of {', '.join(self.roles) or 'no role'}; {kind} is recorded by "
                            f"{' or '.join(ROLE_HOSTS[r] for r in allowed)}")

    def sign(self, kind: str, event_hash: str) -> tuple[str, str]:
        """(role, MAC) for an event of `kind` whose hash is `event_hash`."""
        role = self.signer(kind)
        return role, event_mac(self.keys[role], event_hash)


# --- which engine signs with which keys ---------------------------------------------------------------------
# Bound per engine rather than once per process: a process has one runtime and so one engine, but a test run or
# `studio eval lipsync` (a throwaway database) has several, and each must sign with its own keys.
_BOUND: WeakKeyDictionary[Engine, AuditKeyring] = WeakKeyDictionary()


def bind(engine: Engine, keyring: AuditKeyring) -> None:
    """Sign every event recorded through `engine` with `keyring` (the runtime does this for its engine)."""
    _BOUND[engine] = keyring


def bound(engine: Engine) -> AuditKeyring:
    """The keyring bound to `engine`; AuditKeyError when none is (so nothing is recorded unsigned)."""
    try:
        return _BOUND[engine]
    except KeyError:
        raise AuditKeyError("no audit keys are bound to this database engine: record audit events through a "
                            "runtime (studio.runtime.build_runtime), which loads its role's audit keys") from None
