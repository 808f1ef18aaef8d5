"""Footage upload -> ingest job on the ingest queue."""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, HTTPException, UploadFile
from kombu.exceptions import OperationalError
from pydantic import BaseModel
from sqlmodel import select

from api.auth import PrincipalDep, avatar_for, creator_for, hidden, need_role
from api.deps import RuntimeDep, SessionDep, receive_upload
from api.pagination import PageDep
from studio.accounts import Role
from studio.models import Avatar, AvatarPublic, Channel, Consent, Segment, SegmentPublic, UploadJob
from workers.media.probe import FootageError, probe

log = logging.getLogger("studio.api")
router = APIRouter()


class JobOut(BaseModel):
    job_id: str
    state: str
    progress: dict | None = None
    result: dict | None = None
    error: str | None = None


@router.post("/creators/{creator_id}/avatars", response_model=JobOut, status_code=202, tags=["avatars"])
async def upload_footage(creator_id: str, name: str, file: UploadFile, rt: RuntimeDep,
                         session: SessionDep, who: PrincipalDep, renderer: str | None = None):
    """Upload reference footage; quick checks answer at once, face analysis runs on the ingest queue
    (`GET /api/jobs/{job_id}` follows it). Bodies over `ingest.max_upload_mb` are refused with 413 before they
    are read (api.limits). `renderer`: the backend this avatar is built for (footage, musetalk, ...), the config's
    renderer.type by default; one this deployment cannot run (no weights) is refused with 422."""
    need_role(who, Role.creator)
    creator_for(session, who, creator_id)
    if renderer is not None:
        _check_renderer(rt, renderer)
    # A server-chosen name with no suffix until the content is probed: the name the client gave never decides how
    # FFmpeg reads the file (workers.media.probe allows MP4/MOV and Matroska/WebM only, as files only).
    received = rt.data.uploads / f"{uuid.uuid4().hex}.upload"
    dest = received
    try:
        await receive_upload(file, received, max_mb=rt.settings.ingest.max_upload_mb)
        info = probe(received)
        if not info.has_audio:
            raise FootageError(f"{file.filename}: no audio track; the footage must include the creator's voice")
        lim = rt.settings.ingest
        if not lim.min_seconds <= info.duration <= lim.max_seconds:
            raise FootageError(f"{file.filename}: {info.duration:.1f} s long, must be {lim.min_seconds:.0f}–"
                               f"{lim.max_seconds:.0f} s")
        dest = received.rename(received.with_suffix(info.suffix))
    except FootageError as exc:
        received.unlink(missing_ok=True)
        shown = file.filename or received.name  # the name the creator gave, never the server's path
        raise HTTPException(422, str(exc).replace(str(received), shown).replace(received.name, shown)) from None
    except BaseException:
        received.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)
        raise
    from workers.app import BrokerUnreachable, require_broker
    from workers.queue_policy import ingest_queue
    from workers.tasks import ingest_task

    # Queued first, recorded after: a broker that is down leaves neither the upload nor a job behind.
    job_id = uuid.uuid4().hex
    key = rt.key_of(dest)
    try:
        require_broker()
        rt.publish(dest)  # into the media store: the ingest worker may be on another host
        res = ingest_task.apply_async(kwargs={"creator_id": creator_id, "name": name, "footage": key,
                                              **({"renderer": renderer} if renderer is not None else {})},
                                      queue=ingest_queue(renderer or rt.settings.renderer.type), task_id=job_id)
    except (BrokerUnreachable, OperationalError) as exc:
        dest.unlink(missing_ok=True)
        rt.store.delete(key)
        raise broker_unreachable(exc, "the footage was not queued and nothing was kept") from None
    session.add(UploadJob(id=job_id, creator_id=creator_id, account_id=who.account_id))
    session.commit()
    return JobOut(job_id=res.id, state="PENDING")


def _check_renderer(rt, name: str) -> None:
    """422 for a backend no one registered (naming the known ones) or one this deployment cannot run; what stops
    it (a weights path on the server) goes to the log, not to the client."""
    from workers.renderers import BundleError, backend_names, chosen_renderer

    try:
        chosen_renderer(rt.settings.renderer, name)
    except BundleError:
        raise HTTPException(422, f"unknown renderer {name[:40]!r}; choose one of {', '.join(backend_names())}") \
            from None
    except ValueError as exc:
        log.warning("%s", exc)
        raise HTTPException(422, f"renderer {name!r} is not set up on this deployment (its weights are missing or "
                                 "unusable; an operator's `studio config check` says why)") from None


def broker_unreachable(exc: Exception, consequence: str) -> HTTPException:
    """503 for a Redis that is down (the ingest queue's broker and result store); the particulars go to the log."""
    log.warning("ingest queue unavailable: %s", exc)
    return HTTPException(503, f"the ingest queue's broker (Redis) is unreachable, so {consequence}; try again "
                              "later", headers={"Retry-After": "30"})


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["avatars"])
def read_job(job_id: str, session: SessionDep, who: PrincipalDep, rt: RuntimeDep):
    """A job on the ingest queue: its state and progress (stage, fraction), and when done its result (a footage
    ingest: the avatar; a consent check: the consent and its status, or the refusal's problems), or why it failed."""
    from workers.app import app as celery_app

    job = session.get(UploadJob, job_id)
    if job is None or not who.owns_creator(job.creator_id):
        raise hidden("job", job_id)

    try:
        state, value = job_meta(celery_app, job_id)
        if state == "SUCCESS":
            return JobOut(job_id=job_id, state=state, result=_granted(rt, value))
    except (*celery_app.backend.connection_errors, OperationalError) as exc:
        raise broker_unreachable(exc, "the job's state cannot be read") from None
    if state == "PROGRESS":
        return JobOut(job_id=job_id, state=state, progress=value if isinstance(value, dict) else None)
    if state == "FAILURE":
        return JobOut(job_id=job_id, state=state, error=str(value))
    return JobOut(job_id=job_id, state=state)


def job_meta(celery_app, job_id: str) -> tuple[str, object]:
    """A job's state and what goes with it (progress, result or exception), read in one go from the result store:
    read as AsyncResult's state and then its info, a job that ended in between answered PROGRESS with its result
    for progress (the same race that ended `studio demo`, workers.stack.demo)."""
    meta = celery_app.backend.get_task_meta(job_id)
    return meta.get("status", "PENDING"), meta.get("result")


def _granted(rt, result):
    """A consent check's result as the control side decides it: a consent whose video passed on the ingest
    worker (`checked`) is granted or held for review here, with the control key (workers.consent.grant)."""
    if isinstance(result, dict) and result.get("status") == "checked" and result.get("consent_id"):
        from studio.db import session_scope
        from workers.consent.grant import finalize_checked

        finalize_checked(rt, result["consent_id"])
        with session_scope(rt.engine) as s:
            consent = s.get(Consent, result["consent_id"])
            result = {**result, "status": consent.status if consent is not None else "checked"}
    return result


@router.get("/avatars/{avatar_id}", response_model=AvatarPublic, tags=["avatars"])
def read_avatar(avatar_id: str, session: SessionDep, who: PrincipalDep):
    return avatar_for(session, who, avatar_id)


@router.get("/avatars", response_model=list[AvatarPublic], tags=["avatars"])
def list_avatars(session: SessionDep, who: PrincipalDep, page: PageDep):
    """A creator's own avatars; an agency's, those a consent in force grants it; an admin's, all."""
    from api.auth import granting_consents

    need_role(who, Role.creator, Role.agency)
    q = select(Avatar).order_by(Avatar.created_at, Avatar.id)
    if who.role is Role.creator:
        q = q.where(Avatar.creator_id == who.creator_id)
    elif who.role is Role.agency:
        ids = sorted({c.avatar_id for c in granting_consents(session, agency_id=who.agency_id) if c.avatar_id})
        q = q.where(Avatar.id.in_(ids), Avatar.status == "ready")
    return page.rows(session, q)


class AiredOut(SegmentPublic):
    channel_name: str
    consent_id: str


@router.get("/creators/{creator_id}/aired", response_model=list[AiredOut], tags=["creators"])
def aired_history(creator_id: str, session: SessionDep, who: PrincipalDep, page: PageDep):
    """Where and when the creator's clones aired: every aired segment under their consents, newest first, with
    the channel's name."""
    creator_for(session, who, creator_id)
    q = (select(Segment, Channel.name).join(Consent, Consent.id == Segment.consent_id)
         .join(Channel, Channel.id == Segment.channel_id)
         .where(Consent.creator_id == creator_id, Segment.state == "aired")
         .order_by(Segment.aired_at.desc(), Segment.id))
    return [AiredOut(**SegmentPublic.model_validate(seg, from_attributes=True).model_dump(), channel_name=name,
                     consent_id=seg.consent_id) for seg, name in page.rows(session, q)]
