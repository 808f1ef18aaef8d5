"""Granting consent (POLICY C1-C4): a one-time code phrase, then a signed statement with its scope and term and
a consent video reading the phrase. The video is checked (phrase heard, same face as the footage, a live
recording) before any consent row exists; a refusal names every reason and leaves nothing behind but the
audit record of the attempt. A consent that passed the check is granted at once (`consent.review: auto`) or
waits for a reviewer (`required`: pending_review, workers.consent.review).

A grant has two steps: `accept_grant` refuses at once what needs no video and spends the phrase (the API does
it in the request), then `check_consent_direct` checks the video and records the consent (the API queues it on
the ingest queue: workers.tasks.consent_check_task). `grant_consent_direct` runs both, in-process, for
`studio consent grant` and the demo.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import update
from sqlmodel import select

from studio import audit, audit_keys
from studio.audit_keys import CONTROL
from studio.consent import CHECKED, GRANTED, status_after_check
from studio.consent_phrase import CodePhrase, issue_phrase, open_phrases_problem, phrase_problem
from studio.db import session_scope
from studio.models import Agency, Avatar, Consent, ConsentCreate, ConsentPhrase, Creator, utcnow
from studio.runtime import Runtime
from studio.storage import sha256_file
from workers.media.probe import probe

Progress = Callable[[str, int, int], None]


class ConsentRefused(ValueError):
    """The grant is refused; `problems` lists every reason, each naming the value and the rule."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class PhraseLimitReached(ConsentRefused):
    """The creator holds `consent.max_open_phrases` open phrases; `retry_after` seconds until the first expires."""

    def __init__(self, problem: str, retry_after: float):
        super().__init__([problem])
        self.retry_after = retry_after


def issue_phrase_direct(rt: Runtime, avatar_id: str, *, now: datetime | None = None,
                        valid_seconds: int = 600) -> ConsentPhrase:
    """A new code phrase for `avatar_id`'s consent video, valid for `valid_seconds` (10 minutes); refused with
    PhraseLimitReached while the creator holds `consent.max_open_phrases` open ones."""
    now = now or utcnow()
    with session_scope(rt.engine) as s:
        avatar = s.get(Avatar, avatar_id)
        if avatar is None or avatar.status != "ready":
            raise ConsentRefused([f"avatar {avatar_id!r} does not exist or is deleted"])
        # A no-op write on the creator's row first: it holds that row (PostgreSQL) or the database (SQLite) until
        # commit, so two requests at once cannot both count the same open phrases and pass the limit.
        s.exec(update(Creator).where(Creator.id == avatar.creator_id).values(name=Creator.name))
        expiries = s.exec(select(ConsentPhrase.expires_at).join(Avatar, Avatar.id == ConsentPhrase.avatar_id)
                          .where(Avatar.creator_id == avatar.creator_id, ConsentPhrase.used_at.is_(None),
                                 ConsentPhrase.expires_at > now)).all()
        if limited := open_phrases_problem(list(expiries), limit=rt.settings.consent.max_open_phrases, now=now):
            raise PhraseLimitReached(*limited)
        phrase = issue_phrase(now=now, valid_seconds=valid_seconds)
        row = ConsentPhrase(id=phrase.id, avatar_id=avatar_id, text=phrase.text, issued_at=phrase.issued_at,
                            expires_at=phrase.expires_at)
        s.add(row)
        audit.record(s, kind="consent.phrase_issued", subject_id=row.id,
                     data={"avatar_id": avatar_id, "expires_at": row.expires_at.isoformat()})
    return row


def precheck(rt: Runtime, body: ConsentCreate, *, now: datetime | None = None) -> list[str]:
    """What can be refused at once, before the video is looked at: the avatar, consent to use the face (its own field,
    apart from the voice: POLICY C1), the agency, the term and the phrase (unknown, for another avatar,
    already used or expired)."""
    now = now or utcnow()
    problems: list[str] = []
    with session_scope(rt.engine) as s:
        avatar = s.get(Avatar, body.avatar_id)
        if avatar is None or avatar.status != "ready":
            problems.append(f"avatar {body.avatar_id!r} does not exist or is deleted")
        elif s.get(Creator, avatar.creator_id) is None:
            problems.append(f"avatar {body.avatar_id!r} has no creator")
        if not body.face:
            problems.append("face is false: a talking-head clone cannot be made without consent to use the face")
        if body.agency_id is not None and s.get(Agency, body.agency_id) is None:
            problems.append(f"agency {body.agency_id!r} does not exist")
        if body.ends_at <= now:
            problems.append(f"the term ends in the past ({body.ends_at.isoformat()} UTC, now {now.isoformat()} UTC)")
        phrase = s.get(ConsentPhrase, body.phrase_id)
        if phrase is None:
            problems.append(f"code phrase {body.phrase_id!r} was never issued; ask for one first")
        elif phrase.avatar_id != body.avatar_id:
            problems.append(f"code phrase {phrase.id} was issued for avatar {phrase.avatar_id}, not {body.avatar_id}")
        elif phrase.used_at is not None:
            problems.append(f"code phrase {phrase.id} was already used at {phrase.used_at.isoformat()} UTC; "
                            f"each attempt needs a new phrase")
        elif expired := phrase_problem(_code(phrase), now=now):
            problems.append(expired)
    return problems


def _code(row: ConsentPhrase) -> CodePhrase:
    return CodePhrase(id=row.id, text=row.text, words=tuple(row.text.split()), issued_at=row.issued_at,
                      expires_at=row.expires_at)


def accept_grant(rt: Runtime, body: ConsentCreate, *, now: datetime) -> None:
    """Refuse at once what needs no video (`precheck`), then spend the phrase: the first step of a grant.

    The phrase is spent by this attempt whatever the check's outcome, so a refused video cannot be retried with
    a lucky second reading of the same words."""
    if problems := precheck(rt, body, now=now):
        _refused(rt, body, problems)
    with session_scope(rt.engine) as s:
        # Spent atomically: of two attempts racing with one phrase, only one goes on.
        spent = s.exec(update(ConsentPhrase).where(ConsentPhrase.id == body.phrase_id,
                                                   ConsentPhrase.used_at.is_(None)).values(used_at=now))
    if spent.rowcount != 1:
        _refused(rt, body, [f"code phrase {body.phrase_id} was already used; each attempt needs a new phrase"])


def release_phrase(rt: Runtime, phrase_id: str, *, spent_at: datetime) -> None:
    """Give back a phrase that `accept_grant` spent when its check could not even be queued (the broker was down):
    no video was looked at, so nothing was learnt from it."""
    with session_scope(rt.engine) as s:
        s.exec(update(ConsentPhrase).where(ConsentPhrase.id == phrase_id, ConsentPhrase.used_at == spent_at)
               .values(used_at=None))


def check_consent_direct(rt: Runtime, body: ConsentCreate, video: Path, *, now: datetime,
                         progress: Progress | None = None) -> Consent:
    """Check the consent video of a grant whose phrase `accept_grant` spent, as at `now` (when the video was
    received), then record the consent with its video: granted, or pending_review when `consent.review` is
    required. ConsentRefused lists every reason otherwise.

    Idempotent: run again for the same phrase (a task redelivered after its worker died), it answers the consent
    that the first run recorded."""
    from workers.consent.video import CONSENT_REFERENCE, ConsentVideoError, load_reference, verify_consent_video

    progress = progress or (lambda *_: None)
    video = Path(video)
    with session_scope(rt.engine) as s:
        done = s.exec(select(Consent).where(Consent.phrase_id == body.phrase_id)).first()
        if done is not None:
            return done
        row = s.get(ConsentPhrase, body.phrase_id)
        phrase = _code(row) if row is not None and row.used_at is not None else None
        avatar = s.get(Avatar, body.avatar_id)
        ready = avatar is not None and avatar.status == "ready"
        bundle_key, creator_id = (avatar.bundle_path, avatar.creator_id) if ready else (None, None)
    if phrase is None:
        _refused(rt, body, [f"code phrase {body.phrase_id} was not spent for this attempt; ask for a new phrase"])
    if not ready:
        _refused(rt, body, [f"avatar {body.avatar_id!r} does not exist or was deleted while its consent video "
                            f"waited to be checked"])
    progress("checking the consent video: phrase, face, liveness", 0, 1)
    try:
        reference = load_reference(rt.local_dir(bundle_key) / CONSENT_REFERENCE)
    except ConsentVideoError as exc:
        _refused(rt, body, [f"avatar {body.avatar_id} has no footage reference for the consent check ({exc}); "
                            f"rebuild the avatar from its footage"])
    report = verify_consent_video(video, reference=reference, phrase=phrase, now=now)
    progress("checking the consent video: phrase, face, liveness", 1, 1)
    verification = {"phrase_score": round(report.phrase_score, 3), "phrase_heard": report.phrase_heard,
                    "face_distance": None if report.face_distance != report.face_distance
                    else round(report.face_distance, 3), "liveness": report.liveness}
    if not report.ok:
        _refused(rt, body, report.problems, verification)

    # The grant itself is the control side's (it alone holds the key of consent events): a process that holds
    # it (the API's own in-process path, `studio consent grant`, the demo) decides at once; an ingest worker
    # records the check as passed, and the API or the scheduler decides (`finalize_checked`).
    control = CONTROL in audit_keys.bound(rt.engine).roles
    status = status_after_check(rt.settings.consent.review) if control else CHECKED
    # ConsentCreate.voice defaults to False: True here was ticked in the grant (POLICY C7, the creator's own voice).
    consent = Consent(**body.model_dump(exclude={"scope"}), creator_id=creator_id, scope=body.scope.model_dump(),
                      voice_explicit=body.voice,
                      statement_sha256=hashlib.sha256(body.statement.encode()).hexdigest(),
                      video_sha256=sha256_file(video), verification=verification, status=status)
    folder = rt.data.root / "consents" / consent.id
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    kept = folder / f"video{probe(video).suffix}"  # named for its probed container, never the client's name
    try:
        shutil.copyfile(video, kept)
        kept.chmod(0o600)  # a person's face and voice: for the stack's own user only, whatever the umask
        consent.video_path = rt.publish(kept)
        with session_scope(rt.engine) as s:
            s.add(consent)
            # Granted at once, or recorded to wait for review (consent.approved / consent.rejected follow).
            audit.record(s, kind={GRANTED: "consent.granted", CHECKED: "consent.checked"}.get(
                status, "consent.pending_review"), subject_id=consent.id, data={
                "avatar_id": body.avatar_id, "agency_id": body.agency_id, "statement_sha256": consent.statement_sha256,
                "video_sha256": consent.video_sha256, "phrase_id": body.phrase_id, "scope": consent.scope,
                "starts_at": body.starts_at.isoformat(), "ends_at": body.ends_at.isoformat(),
                "face": body.face, "voice": body.voice, "require_script_approval": body.require_script_approval,
                "verification": verification, "status": status})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        rt.store.delete_prefix(f"consents/{consent.id}/")
        raise
    return consent


def finalize_checked(rt: Runtime, consent_id: str | None = None) -> list[Consent]:
    """The control side's half of a grant checked on the ingest queue: each consent whose video passed the check
    (status `checked`) becomes granted (`consent.review: auto`) or pending_review, with the control key's event.
    Run by the API when a job's result is read and by the scheduler's every pass; `consent_id`: that one only."""
    done = []
    with session_scope(rt.engine) as s:
        q = select(Consent).where(Consent.status == CHECKED)
        if consent_id is not None:
            q = q.where(Consent.id == consent_id)
        for consent in s.exec(q.with_for_update(skip_locked=True)).all():
            consent.status = status_after_check(rt.settings.consent.review)
            audit.record(s, kind="consent.granted" if consent.status == GRANTED else "consent.pending_review",
                         subject_id=consent.id, data={"avatar_id": consent.avatar_id, "status": consent.status,
                                                      "statement_sha256": consent.statement_sha256,
                                                      "video_sha256": consent.video_sha256,
                                                      "verification": consent.verification})
            done.append(consent)
    return done


def grant_consent_direct(rt: Runtime, body: ConsentCreate, video: Path, *, now: datetime | None = None,
                         progress: Progress | None = None) -> Consent:
    """Both steps in-process (`studio consent grant`, the demo): accept, then check and record."""
    now = now or utcnow()
    accept_grant(rt, body, now=now)
    return check_consent_direct(rt, body, video, now=now, progress=progress)


def _refused(rt: Runtime, body: ConsentCreate, problems: list[str], verification: dict | None = None) -> None:
    """Record the refused attempt (C6: every consent event) and raise."""
    with session_scope(rt.engine) as s:
        audit.record(s, kind="consent.refused", subject_id=body.avatar_id,
                     data={"phrase_id": body.phrase_id, "problems": problems, "verification": verification})
    raise ConsentRefused(problems)
