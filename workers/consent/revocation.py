"""Revocation and expiry of a consent (POLICY C5): off air, work cancelled, biometric data deleted, a signed
deletion certificate issued.

Order matters. The consent is marked revoked first, in one transaction with the cancellation of every
segment not yet aired and not being rendered: from that commit on, the streamer refuses the clone's
segments, cuts the one on air within a quarter of a second (plus its write-ahead) and airs the plain card
instead of the clone's idle loop. Queued render tasks are revoked in Celery. A segment being rendered stays
RENDERING until its worker, which checks the consent four times a second, has killed its encoder,
removed its files and cancelled it; the deletion waits for that (bounded), so no render writes a file after
it. Only then are files hashed and deleted, and the certificate signed and stored; it lists what was kept
for audit (archived aired segments, recordings, the audit log) and why.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import select

from studio import audit
from studio.consent import reaches_product
from studio.db import session_scope
from studio.deletion import (
    DeletionCertificate,
    delete_files,
    delete_from_store,
    plan_deletion,
    plan_store_deletion,
    safe_id,
    sign_certificate,
)
from studio.keys import load_provenance_keys
from studio.models import (
    AuditEvent,
    Avatar,
    Consent,
    Creator,
    Product,
    Recording,
    Script,
    Segment,
    Show,
    Voiceover,
    new_id,
    utcnow,
)
from studio.runtime import Runtime
from studio.segments import TERMINAL, SegmentState, move
from studio.storage import atomic_path
from studio.stores import purge_host_caches
from workers.ingest.voiceover import voiceover_key
from workers.streamer.consent_watch import announce

S = SegmentState
log = logging.getLogger("studio.revocation")

# How long the deletion waits for running renders to stop. They check four times a second, so this is only
# reached when a worker died holding a segment (its redelivered task then finds it cancelled) or is stuck.
RENDER_STOP_TIMEOUT = 10.0


class RevocationError(LookupError):
    pass


@dataclass(frozen=True)
class Revocation:
    consent_id: str
    revoked_at_wall: float          # time.time() of the commit that took the clone off the plan
    cancelled: int                  # segments cancelled before they aired
    was_live: bool                  # a show of this consent was on its channel's schedule
    certificate_path: Path
    certificate: dict               # the signed certificate
    stopped_renders: int = 0        # of `cancelled`: renders that were running and stopped before the deletion


def revoke_consent_direct(rt: Runtime, consent_id: str, *, reason: str = "revoked") -> Revocation:
    """Revoke (or expire) a consent and everything built on it. Idempotent: a second call returns the
    certificate issued by the first."""
    with session_scope(rt.engine) as s:
        consent = s.get(Consent, consent_id)
        if consent is None:
            raise RevocationError(f"consent {consent_id!r} does not exist")
        cert_path = rt.data.root / "certificates" / f"{safe_id(consent_id, 'consent')}.json"
        if consent.status in ("revoked", "expired") and not cert_path.exists() and not rt.store_is_data_dir \
                and rt.store.exists(rt.key_of(cert_path)):  # issued on another host
            cert_path.parent.mkdir(parents=True, exist_ok=True)
            cert_path.write_bytes(rt.store.read(rt.key_of(cert_path)))
        if consent.status in ("revoked", "expired") and cert_path.exists():
            return Revocation(consent_id, consent.revoked_at.timestamp() if consent.revoked_at else 0.0, 0, False,
                              cert_path, json.loads(cert_path.read_text()))
        was_live = s.exec(select(Show).where(Show.consent_id == consent_id, Show.status == "scheduled")).first() \
            is not None
        consent.status = "revoked" if reason == "revoked" else "expired"
        consent.revoked_at = consent.revoked_at or utcnow()
        cancelled, rendering, queued_tasks = 0, [], []
        for seg in s.exec(select(Segment).where(Segment.consent_id == consent_id)).all():
            if seg.state == S.RENDERING:  # its worker cancels it (see the module docstring)
                rendering.append(seg.id)
            elif seg.state not in TERMINAL:
                if seg.task_id and seg.state in (S.PLANNED, S.FAILED):  # queued, or a retry waiting its turn
                    queued_tasks.append(seg.task_id)
                move(s, seg, S.CANCELLED, error=f"consent {consent_id} {consent.status}", event=None)
                cancelled += 1
        audit.record(s, kind=f"consent.{consent.status}", subject_id=consent_id,
                     data={"cancelled": cancelled, "rendering": len(rendering)})
    revoked_wall = time.time()
    announce(rt.settings.redis, consent_id)  # every streamer re-reads its consents now (POLICY C5)
    revoke_queued_tasks(queued_tasks)
    if was_live:  # let the streamer cut before the idle-loop slate and bundle are deleted under it
        wait_off_air(rt, consent_id, revoked_wall, timeout=3.0)
    stopped = _stop_renders(rt, consent_id, rendering, status=consent.status)
    certificate = _purge(rt, consent_id, reason=reason, cert_path=cert_path, revoked_wall=revoked_wall)
    # Again, now that the store holds nothing of the clone: every host's cache purger (workers.consent.cache_purge)
    # drops a copy filled between the first announcement and the deletion.
    announce(rt.settings.redis, consent_id)
    return Revocation(consent_id, revoked_wall, cancelled + len(rendering), was_live, cert_path, certificate,
                      stopped_renders=stopped)


def revoke_queued_tasks(task_ids: list[str]) -> None:
    """Ask the Celery workers to drop these queued render tasks. Best effort, and never a reason for a
    revocation to fail: the segments are cancelled already, so a worker that runs one anyway does nothing."""
    if not task_ids:
        return
    try:
        from workers.app import app

        with app.connection_for_write(connect_timeout=2) as conn:
            # A broker that is down answers within half a second here, not after kombu's default retries.
            conn.ensure_connection(max_retries=1, interval_start=0.2, interval_step=0.2, timeout=2)
            app.control.revoke(task_ids, connection=conn)
    except Exception as exc:
        log.warning("could not revoke %d queued render tasks (%s); their segments are cancelled, so a worker "
                    "that picks one up renders nothing", len(task_ids), exc)


def wait_renders_stopped(rt: Runtime, segment_ids: list[str], *, timeout: float) -> list[str]:
    """Wait until none of these segments is RENDERING any more; return those that still are at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(rt.engine) as s:
            still = [i for i in segment_ids if (row := s.get(Segment, i)) is not None and row.state == S.RENDERING]
        if not still or time.monotonic() > deadline:
            return still
        time.sleep(0.05)


def _stop_renders(rt: Runtime, consent_id: str, rendering: list[str], *, status: str) -> int:
    """Wait for the renders running at the revocation to stop, then cancel whatever of the consent is still not
    final (a render that outlived the wait, or one that failed meanwhile). Returns how many stopped in time."""
    if not rendering:
        return 0
    started = time.monotonic()
    overdue = wait_renders_stopped(rt, rendering, timeout=RENDER_STOP_TIMEOUT)
    if overdue:
        log.warning("consent %s: renders of segments %s did not stop within %.0f s; cancelling them here (the "
                    "worker discards its output when it finishes)", consent_id, overdue, RENDER_STOP_TIMEOUT)
    with session_scope(rt.engine) as s:
        for seg in s.exec(select(Segment).where(Segment.consent_id == consent_id)).all():
            if seg.state not in TERMINAL:
                move(s, seg, S.CANCELLED, error=f"consent {consent_id} {status}", event=None)
        audit.record(s, kind="consent.renders_stopped", subject_id=consent_id,
                     data={"stopped": len(rendering) - len(overdue), "overdue": overdue,
                           "seconds": round(time.monotonic() - started, 3)})
    return len(rendering) - len(overdue)


def _purge(rt: Runtime, consent_id: str, *, reason: str, cert_path: Path, revoked_wall: float) -> dict:
    """Delete the clone's biometric data and derived files; sign and store the certificate."""
    with session_scope(rt.engine) as s:
        consent = s.get(Consent, consent_id)
        creator = s.get(Creator, consent.creator_id)
        avatars = [a for a in s.exec(select(Avatar).where(Avatar.id == consent.avatar_id)).all()] \
            if consent.avatar_id else []
        avatar_ids = [a.id for a in avatars]
        # Keys are derived from ids, never taken from a stored path: a row pointing elsewhere deletes nothing else.
        keys: list[str] = [f"bundles/{safe_id(a.id, 'avatar')}/" for a in avatars]
        retained: list[dict] = []
        channels: set[str] = set()
        stems: dict[str, set[str]] = {}  # channel -> "<seq>-<produce_id>-a" of each of the clone's segments
        for seg in s.exec(select(Segment).where(Segment.avatar_id.in_(avatar_ids))).all():
            channels.add(safe_id(seg.channel_id, "channel"))
            stem = f"{seg.seq:08d}-{safe_id(seg.produce_id, 'produce_id')}-a"
            stems.setdefault(seg.channel_id, set()).add(stem)
            if seg.path and _is_attempt(seg.path, seg.channel_id, stem):  # looked for, so a gone one is missing
                keys += [seg.path, seg.path.removesuffix(".mp4") + ".vtt"]
            if seg.archive_path:
                retained.append({"kind": "archived segment", "produce_id": seg.produce_id,
                                 "path": _rel(rt, Path(seg.archive_path)),
                                 "why": "aired content kept for audit for 3 years (POLICY C6)"})
        shows = s.exec(select(Show).where(Show.avatar_id.in_(avatar_ids))).all()
        for show in shows:
            channels.add(show.channel_id)
            if show.consent_id == consent_id and show.status == "scheduled":
                show.status = "stopped"
                audit.record(s, kind="show.stopped", subject_id=show.id, data={"reason": f"consent {reason}"})
            for rec in s.exec(select(Recording).where(Recording.show_id == show.id)).all():
                retained.append({"kind": "show recording", "produce_id": rec.produce_id,
                                 "path": _rel(rt, Path(rec.path)),
                                 "why": "aired content kept for audit for 3 years (POLICY C6)"})
        # The idle-loop slate is the clone's face: it goes too (the streamer has switched to the card).
        keys += [f"segments/{ch}/{name}" for ch in sorted(channels) for name in ("slate.mp4", "slate.mp4.stamp.json")]
        keys.append(f"consents/{safe_id(consent_id, 'consent')}/")
        # The creator's own recorded voice (C7), for the scripts this consent concerns: deleted like the face.
        for vo in s.exec(select(Voiceover).where(Voiceover.creator_id == consent.creator_id)).all():
            script = s.get(Script, vo.script_id)
            product = s.get(Product, script.product_id) if script is not None else None
            if product is None or reaches_product(consent, product):
                keys.append(voiceover_key(vo.script_id, vo.id))
                audit.record(s, kind="voiceover.dropped", subject_id=vo.script_id,
                             data={"voiceover_id": vo.id, "reason": f"consent {reason}", "sha256": vo.audio_sha256})
                s.delete(vo)
        for a in avatars:
            a.status = "deleted"
    signing = load_provenance_keys(rt.settings)  # before anything is deleted: no deletion without a certificate
    for ch, wanted in stems.items():  # every attempt of each segment (a retry leaves a-1, a-2 ...)
        keys += [k for k in rt.store.list(f"segments/{ch}/") if k.rsplit("/", 1)[1].startswith(tuple(wanted))]
    keys = list(dict.fromkeys(keys))
    deleted, missing = delete_from_store(rt.store, plan_store_deletion(rt.store, keys))
    if not rt.store_is_data_dir:  # what this host made or kept locally under the same keys (the slate, scratch)
        local = [rt.data.root / k for k in keys if (rt.data.root / k).exists() or (rt.data.root / k).is_symlink()]
        done = {f.path for f in deleted}
        extra = [f for f in delete_files(plan_deletion(local, root=rt.data.root)) if not f.missing]
        deleted += [f for f in extra if f.path not in done]
        missing = [k for k in missing if not any(f.path == k or f.path.startswith(k) for f in extra)]
    purged = purge_host_caches(rt.settings, keys)  # this host's; the others purge on the announcement
    retained.append({"kind": "audit log", "why": "consent events and aired segments, append-only (POLICY C6)"})
    with session_scope(rt.engine) as s:
        consent = s.get(Consent, consent_id)
        off_air = _off_air_seconds(s, consent_id, revoked_wall)
        cert = DeletionCertificate(
            id=new_id(), issued_at=utcnow(), creator_id=creator.id, creator_name=creator.name,
            avatar_ids=avatar_ids, consent_id=consent_id, reason=reason, deleted=deleted, retained=retained,
            revoked_at=consent.revoked_at, off_air_seconds=off_air, missing=missing)
        signed = sign_certificate(cert, private_key_pem=signing.private_key_pem, chain_pem=signing.chain_pem)
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cert_path) as tmp:
            tmp.write_text(json.dumps(signed, indent=2, ensure_ascii=False))
        if not rt.store_is_data_dir:
            rt.store.put(rt.key_of(cert_path), cert_path)
        audit.record(s, kind="consent.deletion_certificate", subject_id=consent_id,
                     data={"certificate_id": cert.id, "files": len(deleted), "missing": len(missing),
                           "cache_files_purged": len(purged),
                           "bytes": sum(f.size or 0 for f in deleted), "path": _rel(rt, cert_path)})
    return signed


def _off_air_seconds(s, consent_id: str, revoked_at: float) -> float | None:
    """From the revocation to the last frame of the clone on air, from the streamer's own record of what it
    aired (a segment cut or ended, or its idle loop cut to the card); None when nothing of this consent was on
    air at the time. Only events recorded since the revocation are read (a cut is recorded when it happens), not
    the whole log."""
    since = datetime.fromtimestamp(revoked_at, UTC).replace(tzinfo=None) - timedelta(seconds=1)
    ends = []
    kinds = ("segment.aired", "idle.off_air")
    recent = select(AuditEvent).where(AuditEvent.kind.in_(kinds), AuditEvent.at >= since) \
        .order_by(AuditEvent.id.desc()).limit(500)  # newest first along the kind index: cheap on a long log
    for ev in s.exec(recent).all():
        if ev.data.get("consent_id") == consent_id and "air_start" in ev.data:
            end = ev.data["air_start"] + ev.data.get("seconds", 0.0)
            if end > revoked_at:
                ends.append(end)
    return round(max(ends) - revoked_at, 3) if ends else None


def _is_attempt(key: str, channel_id: str, stem: str) -> bool:
    """`key` is one of the files an attempt of this segment is written to: segments/<channel>/<stem><n>.mp4."""
    head, _, attempt = key.removeprefix(f"segments/{channel_id}/").removesuffix(".mp4").partition(stem)
    return key.startswith(f"segments/{channel_id}/") and head == "" and attempt.isdigit()


def _rel(rt: Runtime, path: Path) -> str:
    if not path.is_absolute():
        return path.as_posix()  # a store key already
    try:
        return str(path.resolve().relative_to(rt.data.root.resolve()))
    except ValueError:
        return str(path)


def wait_off_air(rt: Runtime, consent_id: str, revoked_at: float, *, timeout: float = 3.0) -> float | None:
    """Seconds from `revoked_at` to the end of the clone's last frame on air, once the streamer has recorded
    the cut; None when nothing of it was on air within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(rt.engine) as s:
            off = _off_air_seconds(s, consent_id, revoked_at)
        if off is not None or time.monotonic() > deadline:
            return off
        time.sleep(0.1)
