"""Consent lifecycle (POLICY C1-C6): code phrases, grants with a consent video, revocation and its certificate,
the creator's script approvals and claim attestations (S2), and the agencies a consent may grant."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from kombu.exceptions import OperationalError
from pydantic import BaseModel, Field, ValidationError
from sqlmodel import select

from api.auth import PrincipalDep, avatar_for, consent_for, creator_for, hidden, need_role
from api.deps import RuntimeDep, SessionDep, get_or_404
from api.nul_guard import nul_location, nul_problem
from api.pagination import PageDep
from api.routers.avatars import JobOut, broker_unreachable
from api.service import consents as service
from api.service.consents import ApprovalIn, AttestationIn, PhraseOut  # noqa: F401  (the bodies)
from studio.accounts import Role
from studio.models import (
    Agency,
    AgencyCreate,
    AgencyPublic,
    ApiModel,
    Attestation,
    Avatar,
    AvatarPublic,
    Consent,
    ConsentCreate,
    ConsentPublic,
    Product,
    Script,
    ScriptApproval,
    UploadJob,
    utcnow,
)
from studio.usage import text_sha256

router = APIRouter()
CHUNK = 1 << 20


# --- agencies ----------------------------------------------------------------------------------------
@router.post("/agencies", response_model=AgencyPublic, status_code=201, tags=["agencies"])
def create_agency(body: AgencyCreate, session: SessionDep, who: PrincipalDep):
    return service.create_agency(session, who, body)


@router.get("/agencies/{agency_id}/avatars", response_model=list[AvatarPublic], tags=["agencies"])
def agency_avatars(agency_id: str, session: SessionDep, who: PrincipalDep):
    """The avatars this agency may use: those with a consent granted to it that is in force now. An agency
    sees no other creator's clone."""
    get_or_404(session, Agency, agency_id, "agency")
    if not who.is_admin and who.agency_id != agency_id:
        raise hidden("agency", agency_id)
    now = utcnow()
    consents = session.exec(select(Consent).where(Consent.agency_id == agency_id, Consent.status == "granted",
                                                  Consent.starts_at <= now, Consent.ends_at > now)).all()
    ids = sorted({c.avatar_id for c in consents if c.avatar_id})
    return [a for a in (session.get(Avatar, i) for i in ids) if a is not None and a.status == "ready"]


# --- code phrase and grant ---------------------------------------------------------------------------
@router.post("/avatars/{avatar_id}/phrase", response_model=PhraseOut, status_code=201, tags=["consents"])
def issue_phrase(avatar_id: str, session: SessionDep, rt: RuntimeDep, who: PrincipalDep):
    """A one-time code phrase for this avatar's consent video, valid for 10 minutes (POLICY C2). A creator holds at
    most `consent.max_open_phrases` (3) issued, unused and unexpired phrases: one more is 429, with Retry-After
    the seconds until the first of them expires."""
    return service.issue_phrase(session, who, avatar_id, rt=rt)


@router.post("/consents", response_model=JobOut, status_code=202, tags=["consents"])
def grant_consent(rt: RuntimeDep, session: SessionDep, who: PrincipalDep,
                  grant: Annotated[str, Form(description="The signed statement as JSON (ConsentCreate): "
                                             "signed_name, statement, face, voice, starts_at, ends_at, scope, "
                                             "phrase_id, optional agency_id and require_script_approval.")],
                  video: Annotated[UploadFile, File(description="The consent video: the creator, alone, reading "
                                                     "the code phrase aloud.")]):
    """Grant consent. The statement and what needs no video (avatar, agency, term, phrase) are checked at once: 422
    lists every reason. Then the phrase is spent and the consent video is checked on the ingest queue (phrase
    heard, the footage's face, a live recording): 202 with a job that `GET /api/jobs/{job_id}` follows. The job's
    result names the consent and its status (`granted`, or `pending_review` until an admin or reviewer approves
    it, where the deployment requires review), or `problems`, every reason for a refusal."""
    import workers.app
    from workers.app import BrokerUnreachable, require_broker
    from workers.consent.grant import ConsentRefused, accept_grant, release_phrase
    from workers.queue_policy import MOST_URGENT

    need_role(who, Role.creator)
    try:
        fields = json.loads(grant)
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"grant is not JSON: {exc.msg} at position {exc.pos}") from None
    if (loc := nul_location(fields, ("grant",))) is not None:  # a form field: api.nul_guard reads JSON bodies only
        raise HTTPException(422, nul_problem(loc))
    try:
        body = ConsentCreate.model_validate(fields)
    except ValidationError as exc:
        raise HTTPException(422, {"message": "the statement is incomplete or invalid", "problems": [
            f"{'.'.join(str(p) for p in e['loc']) or 'grant'}: {e['msg']}" for e in exc.errors()]}) from None
    avatar = avatar_for(session, who, body.avatar_id, manage=True)  # only the creator themself grants their clone
    limit = rt.settings.ingest.max_upload_mb * 1024 * 1024
    # A server-chosen name: the client's file name never decides how the video is read (workers.media.probe).
    dest = rt.data.uploads / f"consent-{uuid.uuid4().hex}.upload"
    key = rt.key_of(dest)
    try:
        size = 0
        with open(dest, "wb") as out:
            while chunk := video.file.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, "consent video exceeds the limit of "
                                             f"{rt.settings.ingest.max_upload_mb} MB")
                out.write(chunk)
        received_at = utcnow()  # the phrase must be valid when the video arrived, however long it waits queued
        require_broker()  # before the phrase is spent: a broker that is down spends nothing
        accept_grant(rt, body, now=received_at)
    except ConsentRefused as exc:
        dest.unlink(missing_ok=True)
        raise HTTPException(422, {"message": "consent refused", "problems": exc.problems}) from None
    except BrokerUnreachable as exc:
        dest.unlink(missing_ok=True)
        raise broker_unreachable(exc, "the consent video was not queued and nothing was kept") from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    job_id = uuid.uuid4().hex
    try:
        rt.publish(dest)  # into the media store: the ingest worker may be on another host
        # Ahead of footage ingests waiting on the same queue: a creator is waiting on this one.
        workers.app.app.send_task("studio.consent_check", kwargs={
            "grant": body.model_dump(mode="json"), "video": key, "received_at": received_at.isoformat()},
            queue="ingest", task_id=job_id, priority=MOST_URGENT)  # workers.tasks.consent_check_task
    except (BrokerUnreachable, OperationalError) as exc:
        release_phrase(rt, body.phrase_id, spent_at=received_at)
        dest.unlink(missing_ok=True)
        rt.store.delete(key)
        raise broker_unreachable(exc, "the consent video was not queued, nothing was kept and the code phrase "
                                      "may be used again") from None
    session.add(UploadJob(id=job_id, creator_id=avatar.creator_id, account_id=who.account_id))
    session.commit()
    return JobOut(job_id=job_id, state="PENDING")


@router.get("/consents/{consent_id}", response_model=ConsentPublic, tags=["consents"])
def read_consent(consent_id: str, session: SessionDep, who: PrincipalDep):
    return consent_for(session, who, consent_id)


@router.get("/consents", response_model=list[ConsentPublic], tags=["consents"])
def list_consents(session: SessionDep, who: PrincipalDep, page: PageDep, status: str | None = None):
    """A creator's own consents; an agency's, those that grant it; an admin's, all."""
    need_role(who, Role.creator, Role.agency)
    q = select(Consent).order_by(Consent.created_at.desc(), Consent.id)
    if who.role is Role.creator:
        q = q.where(Consent.creator_id == who.creator_id)
    elif who.role is Role.agency:
        q = q.where(Consent.agency_id == who.agency_id)
    if status is not None:
        q = q.where(Consent.status == status)
    return page.rows(session, q)


@router.post("/consents/{consent_id}/revoke", response_model=ConsentPublic, tags=["consents"])
def revoke_consent(consent_id: str, session: SessionDep, rt: RuntimeDep, who: PrincipalDep):
    """Revoke: off air within 2 s, queued and running renders cancelled, footage, bundles and derived files
    deleted, and a signed deletion certificate issued (`GET /api/consents/{id}/certificate`)."""
    from workers.consent.revocation import revoke_consent_direct

    consent_for(session, who, consent_id, manage=True)
    revoke_consent_direct(rt, consent_id)
    session.expire_all()
    return session.get(Consent, consent_id)


@router.get("/consents/{consent_id}/certificate", tags=["consents"])
def deletion_certificate(consent_id: str, session: SessionDep, rt: RuntimeDep, who: PrincipalDep) -> dict:
    """The signed deletion certificate of a revoked or expired consent."""
    consent_for(session, who, consent_id, manage=True)
    try:  # from the media store: the revocation may have run on another host
        return json.loads(rt.store.read(f"certificates/{consent_id}.json"))
    except FileNotFoundError:
        raise HTTPException(404, f"consent {consent_id!r} has no deletion certificate (it has not been revoked)") \
            from None


# --- script approvals (creator) ------------------------------------------------------------------------
class ApprovalOut(ApiModel):
    id: str
    consent_id: str
    script_id: str
    text_sha256: str
    signed_name: str
    approved_at: datetime


@router.post("/consents/{consent_id}/approvals", response_model=ApprovalOut, status_code=201, tags=["consents"])
def approve_script(consent_id: str, body: ApprovalIn, session: SessionDep, who: PrincipalDep):
    """The creator approves one script's exact text for this consent; an edited script needs a new approval."""
    return service.approve_script(session, who, consent_id, body)


@router.get("/consents/{consent_id}/approvals", response_model=list[ApprovalOut], tags=["consents"])
def list_approvals(consent_id: str, session: SessionDep, who: PrincipalDep, page: PageDep):
    consent_for(session, who, consent_id)
    return page.rows(session, select(ScriptApproval).where(ScriptApproval.consent_id == consent_id)
                     .order_by(ScriptApproval.approved_at, ScriptApproval.id))


class ConsentScriptOut(BaseModel):
    script_id: str
    text: str
    language: str
    product: str
    brand: str
    approved: bool = Field(description="The creator approved this exact text for this consent.")


@router.get("/consents/{consent_id}/scripts", response_model=list[ConsentScriptOut], tags=["consents"])
def consent_scripts(consent_id: str, session: SessionDep, who: PrincipalDep, page: PageDep):
    """The scripts that shows under this consent would have the clone say, with their text and whether the
    creator approved that exact text: what the creator reads before approving."""
    from studio.models import Show

    consent = consent_for(session, who, consent_id)
    approved = {(a.script_id, a.text_sha256) for a in session.exec(
        select(ScriptApproval).where(ScriptApproval.consent_id == consent.id))}
    ids: dict[str, None] = {}
    for show in session.exec(select(Show).where(Show.consent_id == consent.id).order_by(Show.starts_at, Show.id)):
        ids |= dict.fromkeys(show.script_ids or [])
        for presenter in ((show.schedule or {}).get("rotation") or []):
            ids[presenter.get("script_id")] = None
    out = []
    for sid in ids:
        script = session.get(Script, sid) if sid else None
        product = session.get(Product, script.product_id) if script else None
        if script is not None and product is not None:
            out.append(ConsentScriptOut(script_id=script.id, text=script.text, language=script.language,
                                        product=product.name, brand=product.brand,
                                        approved=(script.id, text_sha256(script.text)) in approved))
    return page.of(out)


# --- attestations (S2) ---------------------------------------------------------------------------------
class AttestationOut(ApiModel):
    id: str
    creator_id: str
    product_id: str
    kind: str
    statement: str
    signed_name: str
    attested_at: datetime


@router.post("/creators/{creator_id}/attestations", response_model=AttestationOut, status_code=201,
             tags=["creators"])
def attest(creator_id: str, body: AttestationIn, session: SessionDep, who: PrincipalDep):
    """The creator attests a first-person fact about one product, so scripts may say it in their voice (S2)."""
    return service.attest(session, who, creator_id, body)


@router.get("/creators/{creator_id}/attestations", response_model=list[AttestationOut], tags=["creators"])
def list_attestations(creator_id: str, session: SessionDep, who: PrincipalDep, page: PageDep):
    creator_for(session, who, creator_id)
    return page.rows(session, select(Attestation).where(Attestation.creator_id == creator_id)
                     .order_by(Attestation.attested_at, Attestation.id))
