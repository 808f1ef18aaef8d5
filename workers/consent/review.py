"""Consent review (POLICY C2: "a deployment can require a reviewer's approval before a consent takes effect; the
audit log records who approved"). With `consent.review: required`, a consent whose video passed the automated
check is pending_review and airs nothing (studio.consent.consent_problem). An admin or a reviewer looks at the
avatar's footage, the consent video and the check's figures side by side, then approves it (granted: it may air
from then on) or rejects it with a reason that the creator reads (it never airs, and its consent video, a
person's face and voice of no further use, is deleted; its SHA-256 stays on the audit log).

Why a person at all: the automated check cannot tell a dub made with a lip-sync model from a genuine reading
(workers/consent/video.py, SYNC_MIN_CORR), and its face comparison is a consistency check, not recognition.

`review_consent_direct` is called by the API (`POST /api/consents/{id}/approve|reject`) and by
`studio consent review approve|reject`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlmodel import select

from studio import audit
from studio.accounts import Principal, Role
from studio.consent import GRANTED, PENDING_REVIEW, REJECTED, review_problem
from studio.db import session_scope
from studio.deletion import safe_id
from studio.models import Consent, utcnow
from studio.runtime import Runtime
from studio.stores import purge_host_caches

REVIEWERS = (Role.admin, Role.reviewer)


class ReviewRefused(ValueError):
    """The review cannot be done; the message says why, with the value."""


def pending_consents(rt: Runtime) -> list[Consent]:
    """Consents waiting for review, oldest first (the order a reviewer works through them)."""
    with session_scope(rt.engine) as s:
        return list(s.exec(select(Consent).where(Consent.status == PENDING_REVIEW)
                           .order_by(Consent.created_at, Consent.id)).all())


def review_consent_direct(rt: Runtime, consent_id: str, *, reviewer: Principal, approve: bool,
                          reason: str | None = None, now: datetime | None = None) -> Consent:
    """Approve (granted) or reject (rejected, with `reason`) a consent waiting for review, as `reviewer`. Raises
    LookupError for a consent that does not exist and ReviewRefused for one that cannot be reviewed now."""
    if reviewer.role not in REVIEWERS:
        raise PermissionError(f"a {reviewer.role.value} account may not review consents; it needs one of: "
                              f"{', '.join(r.value for r in REVIEWERS)}")
    now = now or utcnow()
    reason = reason.strip() if reason is not None else None
    with session_scope(rt.engine) as s:
        consent = s.get(Consent, consent_id)
        if consent is None:
            raise LookupError(f"consent {consent_id!r} does not exist")
        if problem := review_problem(consent, approve=approve, reason=reason, at=now):
            raise ReviewRefused(problem)
        status = GRANTED if approve else REJECTED
        # Conditional on the status read above: of two reviewers deciding at once, only the first decides.
        moved = s.exec(update(Consent).where(Consent.id == consent_id, Consent.status == PENDING_REVIEW).values(
            status=status, reviewed_by=reviewer.account_id, reviewed_at=now,
            review_reason=None if approve else reason, video_path=consent.video_path if approve else None))
        if moved.rowcount != 1:
            raise ReviewRefused(f"consent {consent_id} was reviewed by someone else meanwhile; reload it")
        audit.record(s, kind="consent.approved" if approve else "consent.rejected", subject_id=consent_id, data={
            "reviewer_account_id": reviewer.account_id, "reviewer_role": reviewer.role.value,
            "avatar_id": consent.avatar_id, "video_sha256": consent.video_sha256,
            **({} if approve else {"reason": reason})})
    if not approve:
        _delete_video(rt, consent_id)
    with session_scope(rt.engine) as s:
        return s.get(Consent, consent_id)


def _delete_video(rt: Runtime, consent_id: str) -> None:
    """The rejected consent's video, from the store, this host's data directory and every cache on this host."""
    prefix = f"consents/{safe_id(consent_id, 'consent')}/"
    deleted, _ = rt.store.delete_prefix(prefix)
    local = rt.data.root / prefix
    for path in (local.iterdir() if local.is_dir() else []):
        path.unlink(missing_ok=True)
    if local.is_dir():
        local.rmdir()
    purge_host_caches(rt.settings, deleted)
