"""Granting consent (POLICY C1-C4): a one-time code phrase, then a signed statement with its scope and term and
a consent video reading the phrase. The video is checked (phrase heard, same face as the footage, a live
recording) before any consent row exists; a refusal names every reason and leaves nothing behind but the
audit record of the attempt.

`issue_phrase_direct` and `grant_consent_direct` are called by the API (through the ingest queue) and by
`studio consent phrase|grant` in-process.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import update

from studio import audit
from studio.consent_phrase import CodePhrase, issue_phrase, phrase_problem
from studio.db import session_scope
from studio.models import Agency, Avatar, Consent, ConsentCreate, ConsentPhrase, Creator, utcnow
from studio.storage import sha256_file
from workers.media.probe import probe
from workers.runtime import Runtime

Progress = Callable[[str, int, int], None]


class ConsentRefused(ValueError):
    """The grant is refused; `problems` lists every reason, each naming the value and the rule."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def issue_phrase_direct(rt: Runtime, avatar_id: str, *, now: datetime | None = None,
                        valid_seconds: int = 600) -> ConsentPhrase:
    """A new code phrase for `avatar_id`'s consent video, valid for `valid_seconds` (10 minutes)."""
    now = now or utcnow()
    with session_scope(rt.engine) as s:
        avatar = s.get(Avatar, avatar_id)
        if avatar is None or avatar.status != "ready":
            raise ConsentRefused([f"avatar {avatar_id!r} does not exist or is deleted"])
        phrase = issue_phrase(now=now, valid_seconds=valid_seconds)
        row = ConsentPhrase(id=phrase.id, avatar_id=avatar_id, text=phrase.text, issued_at=phrase.issued_at,
                            expires_at=phrase.expires_at)
        s.add(row)
        audit.record(s, kind="consent.phrase_issued", subject_id=row.id,
                     data={"avatar_id": avatar_id, "expires_at": row.expires_at.isoformat()})
    return row


def precheck(rt: Runtime, body: ConsentCreate, *, now: datetime | None = None) -> list[str]:
    """What can be refused at once, before the video is looked at: the avatar, the agency, the term and the
    phrase (unknown, for another avatar, already used or expired)."""
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


def grant_consent_direct(rt: Runtime, body: ConsentCreate, video: Path, *, now: datetime | None = None,
                         progress: Progress | None = None) -> Consent:
    """Check everything, then record the consent with its video; ConsentRefused lists every reason otherwise.

    The phrase is spent by this attempt whatever its outcome, so a refused video cannot be retried with a
    lucky second reading of the same words."""
    from workers.consent_video import CONSENT_REFERENCE, ConsentVideoError, load_reference, verify_consent_video

    now = now or utcnow()
    progress = progress or (lambda *_: None)
    video = Path(video)
    if problems := precheck(rt, body, now=now):
        _refused(rt, body, problems)
    with session_scope(rt.engine) as s:
        # Spent atomically: of two attempts racing with one phrase, only one goes on.
        spent = s.exec(update(ConsentPhrase).where(ConsentPhrase.id == body.phrase_id,
                                                   ConsentPhrase.used_at.is_(None)).values(used_at=now))
        phrase = _code(s.get(ConsentPhrase, body.phrase_id)) if spent.rowcount == 1 else None
        avatar = s.get(Avatar, body.avatar_id)
        bundle_key, creator_id = avatar.bundle_path, avatar.creator_id
    if phrase is None:
        _refused(rt, body, [f"code phrase {body.phrase_id} was already used; each attempt needs a new phrase"])
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

    consent = Consent(**body.model_dump(exclude={"scope"}), creator_id=creator_id, scope=body.scope.model_dump(),
                      statement_sha256=hashlib.sha256(body.statement.encode()).hexdigest(),
                      video_sha256=sha256_file(video), verification=verification)
    folder = rt.data.root / "consents" / consent.id
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    kept = folder / f"video{probe(video).suffix}"  # named for its probed container, never the client's name
    try:
        shutil.copyfile(video, kept)
        kept.chmod(0o600)  # a person's face and voice: for the stack's own user only, whatever the umask
        consent.video_path = rt.publish(kept)
        with session_scope(rt.engine) as s:
            s.add(consent)
            audit.record(s, kind="consent.granted", subject_id=consent.id, data={
                "avatar_id": body.avatar_id, "agency_id": body.agency_id, "statement_sha256": consent.statement_sha256,
                "video_sha256": consent.video_sha256, "phrase_id": body.phrase_id, "scope": consent.scope,
                "starts_at": body.starts_at.isoformat(), "ends_at": body.ends_at.isoformat(),
                "face": body.face, "voice": body.voice, "require_script_approval": body.require_script_approval,
                "verification": verification})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        rt.store.delete_prefix(f"consents/{consent.id}/")
        raise
    return consent


def _refused(rt: Runtime, body: ConsentCreate, problems: list[str], verification: dict | None = None) -> None:
    """Record the refused attempt (C6: every consent event) and raise."""
    with session_scope(rt.engine) as s:
        audit.record(s, kind="consent.refused", subject_id=body.avatar_id,
                     data={"phrase_id": body.phrase_id, "problems": problems, "verification": verification})
    raise ConsentRefused(problems)
