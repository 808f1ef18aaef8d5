"""Footage upload -> ingest job on the ingest queue; consents."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, UploadFile
from pydantic import BaseModel

from api.deps import RuntimeDep, SessionDep, get_or_404
from studio import audit
from studio.models import (
    Avatar,
    AvatarPublic,
    Consent,
    ConsentCreate,
    ConsentPublic,
    Creator,
    utcnow,
)
from workers.media.probe import FootageError, probe

router = APIRouter()
CHUNK = 1 << 20


class JobOut(BaseModel):
    job_id: str
    state: str
    progress: dict | None = None
    result: dict | None = None
    error: str | None = None


@router.post("/creators/{creator_id}/avatars", response_model=JobOut, status_code=202, tags=["avatars"])
async def upload_footage(creator_id: str, name: str, file: UploadFile, request: Request, rt: RuntimeDep,
                         session: SessionDep):
    """Upload reference footage; quick checks answer at once, face analysis runs on the ingest queue."""
    get_or_404(session, Creator, creator_id, "creator")
    limit = rt.settings.ingest.max_upload_mb * 1024 * 1024
    declared = int(request.headers.get("content-length") or 0)
    if declared > limit + 64 * 1024:
        raise HTTPException(413, f"upload of {declared} bytes exceeds the limit of "
                                 f"{rt.settings.ingest.max_upload_mb} MB")
    suffix = Path(file.filename or "footage").suffix[:8] or ".bin"
    dest = rt.data.uploads / f"{uuid.uuid4().hex}{suffix}"
    size = 0
    try:
        with open(dest, "wb") as out:
            while chunk := await file.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"upload exceeds the limit of {rt.settings.ingest.max_upload_mb} MB")
                out.write(chunk)
        info = probe(dest)
        if not info.has_audio:
            raise FootageError(f"{file.filename}: no audio track; the footage must include the creator's voice")
        lim = rt.settings.ingest
        if not lim.min_seconds <= info.duration <= lim.max_seconds:
            raise FootageError(f"{file.filename}: {info.duration:.1f} s long, must be {lim.min_seconds:.0f}–"
                               f"{lim.max_seconds:.0f} s")
    except FootageError as exc:
        dest.unlink(missing_ok=True)
        raise HTTPException(422, str(exc).replace(dest.name, file.filename or dest.name)) from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    from workers.tasks import ingest_task

    res = ingest_task.apply_async(kwargs={"creator_id": creator_id, "name": name, "footage": str(dest)},
                                  queue="ingest")
    return JobOut(job_id=res.id, state="PENDING")


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["avatars"])
def read_job(job_id: str):
    from workers.app import app as celery_app

    res = celery_app.AsyncResult(job_id)
    state = res.state
    if state == "PROGRESS":
        return JobOut(job_id=job_id, state=state, progress=res.info)
    if state == "SUCCESS":
        return JobOut(job_id=job_id, state=state, result=res.result)
    if state == "FAILURE":
        return JobOut(job_id=job_id, state=state, error=str(res.result))
    return JobOut(job_id=job_id, state=state)


@router.get("/avatars/{avatar_id}", response_model=AvatarPublic, tags=["avatars"])
def read_avatar(avatar_id: str, session: SessionDep):
    return get_or_404(session, Avatar, avatar_id, "avatar")


@router.post("/consents", response_model=ConsentPublic, status_code=201, tags=["consents"])
def grant_consent(body: ConsentCreate, session: SessionDep):
    avatar = get_or_404(session, Avatar, body.avatar_id, "avatar")
    if body.ends_at <= utcnow():
        raise HTTPException(422, f"consent term ends in the past ({body.ends_at.isoformat()})")
    data = body.model_dump(exclude={"scope"})
    row = Consent(**data, creator_id=avatar.creator_id, scope=body.scope.model_dump(),
                  statement_sha256=hashlib.sha256(body.statement.encode()).hexdigest())
    session.add(row)
    audit.record(session, kind="consent.granted", subject_id=row.id,
                 data={"avatar_id": avatar.id, "statement_sha256": row.statement_sha256})
    session.commit()
    return row


@router.post("/consents/{consent_id}/revoke", response_model=ConsentPublic, tags=["consents"])
def revoke_consent(consent_id: str, session: SessionDep, rt: RuntimeDep):
    """Revoke: off air within 2 s, queued and running renders cancelled, footage, bundles and derived files
    deleted, and a signed deletion certificate issued (`GET /api/consents/{id}/certificate`)."""
    from workers.revocation import revoke_consent_direct

    get_or_404(session, Consent, consent_id, "consent")
    revoke_consent_direct(rt, consent_id)
    session.expire_all()
    return session.get(Consent, consent_id)


@router.get("/consents/{consent_id}/certificate", tags=["consents"])
def deletion_certificate(consent_id: str, session: SessionDep, rt: RuntimeDep) -> dict:
    """The signed deletion certificate of a revoked or expired consent."""
    get_or_404(session, Consent, consent_id, "consent")
    path = rt.data.root / "certificates" / f"{consent_id}.json"
    if not path.exists():
        raise HTTPException(404, f"consent {consent_id!r} has no deletion certificate (it has not been revoked)")
    return json.loads(path.read_text())


