"""Footage upload -> ingest job on the ingest queue."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, UploadFile
from pydantic import BaseModel

from api.deps import RuntimeDep, SessionDep, get_or_404
from studio.models import (
    Avatar,
    AvatarPublic,
    Creator,
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
