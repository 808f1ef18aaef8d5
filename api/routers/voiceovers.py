"""Recorded voice-overs of scripts (POLICY C7), script edits (which drop them), and each avatar's voice.

Who may do what:
- an agency uploads a recording for its own script: a voice actor's (needs no approval) or the creator's own voice
  (needs the creator's approval before it airs);
- a creator uploads their own voice for a script of an agency one of their consents grants; uploading it is the
  approval;
- the creator whose voice it is approves it; the agency (or that creator) deletes it;
- the creator chooses their avatar's voice.

The upload is decoded, checked and force-aligned to the script before anything is kept (workers.ingest.voiceover); a
refusal answers 422 with the reason and, when the recording does not say the script, the words that did not match.
"""

from __future__ import annotations

import logging
import os
import unicodedata
import uuid
from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Path, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from api.auth import PrincipalDep, need_role
from api.deps import RuntimeDep, SessionDep, receive_upload
from api.service import voiceovers as service
from api.service.voiceovers import (  # noqa: F401  (the request bodies)
    ScriptEdit,
    VoiceIn,
    VoiceoverApprovalIn,
    _public,
    creator_reaches,
    script_access,
    voiceover_of,
)
from api.work_progress import PROGRESS_ID, VOICEOVER_STAGES, ProgressBoard
from studio.accounts import Role
from studio.models import (
    AvatarPublic,
    Creator,
    Script,
    ScriptPublic,
    Voiceover,
    VoiceoverPublic,
)
from studio.voiceover import SPEAKERS, not_theirs

log = logging.getLogger("studio.api")
router = APIRouter()


@router.post("/scripts/{script_id}/voiceover", response_model=VoiceoverPublic, status_code=201, tags=["voiceovers"])
async def upload_voiceover(
    script_id: str, file: UploadFile, request: Request, rt: RuntimeDep, session: SessionDep, who: PrincipalDep,
    speaker: Annotated[str | None, Form(description="creator (the creator's own voice) or actor (a voice actor); "
                                       "a creator's upload is always their own voice.")] = None,
    creator_id: Annotated[str | None, Form(description="speaker creator, uploaded by the agency: whose voice.")] = None,
    actor_name: Annotated[str | None, Form(max_length=200, description="speaker actor: the actor's name.")] = None,
    progress_id: Annotated[str | None, Form(pattern=PROGRESS_ID, description=(
        "an id of the client's choosing (8-64 letters, digits, '-', '_'): while the upload is checked, "
        "GET /api/scripts/{script_id}/voiceover/progress/{progress_id} says how far it is"))] = None,
):
    """Record a script: WAV, MP3, M4A, Ogg/WebM Opus (a browser's recording), 1-120 s. It is checked to say the
    script (forced alignment; the words that did not match are named) and cut at word boundaries into 2-10 s
    parts; captions and lips follow the alignment. Replaces the script's earlier voice-over. A creator's own voice
    airs once the creator approved it and only under a consent granted with voice ticked (POLICY C7). With a
    `progress_id`, the check's progress can be polled while this request runs."""
    for field, value in (("speaker", speaker), ("creator_id", creator_id), ("actor_name", actor_name)):
        if (bad := next((ch for ch in value or "" if unicodedata.category(ch) == "Cc"), None)) is not None:
            raise HTTPException(422, f"{field} holds a control character (U+{ord(bad):04X}); send the text "
                                     "without it")
    script, product = script_access(session, who, script_id)
    approved_name = None
    if who.role is Role.creator:
        if speaker not in (None, "creator"):
            raise HTTPException(422, f"a creator uploads their own voice only; speaker {speaker!r} is for agencies")
        speaker, creator_id, actor_name = "creator", who.creator_id, None
        approved_name = session.get(Creator, who.creator_id).name
    else:
        need_role(who, Role.agency)
        if speaker not in SPEAKERS:
            raise HTTPException(422, f"speaker {speaker!r} is not one of {', '.join(SPEAKERS)}")
        if speaker == "creator":
            if not creator_id or session.get(Creator, creator_id) is None \
                    or not creator_reaches(session, creator_id, product):
                raise HTTPException(422, f"creator_id {creator_id!r}: no creator with a consent for this agency's "
                                         "products; name the creator whose voice this is")
        elif not (actor_name or "").strip():
            raise HTTPException(422, "actor_name is required for a voice actor's recording")
    by_creator = who.creator_id if who.role is Role.creator else None
    if by_creator and not_theirs(session, script.id, by_creator) is not None:
        raise HTTPException(409, f"script {script.id!r} has a recording by another speaker already; a creator "
                                 "replaces only their own recording (the script's agency can delete that one)")
    script_id, text, language = script.id, script.text, script.language
    # The check takes seconds to minutes: give the request's database connection back for it (the store step opens
    # its own). Held, 16 uploads at once took the pool's 15 and every other request waited 30 s for a 500.
    session.close()
    rt.data.uploads.mkdir(parents=True, exist_ok=True)
    received = rt.data.uploads / f"{uuid.uuid4().hex}.voiceover"  # the client's name never reaches ffmpeg
    report = _board(request).reporter(who.account_id, script_id, progress_id, VOICEOVER_STAGES)
    state = "refused"
    slot = _checks.enter(who.account_id, script_id)  # left in the `finally` below, whatever happens in between
    try:
        await run_in_threadpool(report, "decode", 0.0, 1.0)  # polls find the work from here on
        await receive_upload(file, received, max_mb=rt.settings.ingest.max_upload_mb)
        row = await run_in_threadpool(_take, rt, script_id, text, language, received,
                                      speaker=speaker, creator_id=creator_id, actor_name=actor_name,
                                      uploaded_by=who.account_id, approved_name=approved_name, by_creator=by_creator,
                                      shown=file.filename or "recording", progress=report)
        state = "done"
    finally:
        _checks.leave(slot)
        received.unlink(missing_ok=True)
        await run_in_threadpool(report.end, state)
    return _public(row)


class ChecksInFlight:
    """The voice-over uploads this API process is checking, bounded before any work: one script's recording at a
    time (409), `per_account` of one account's (429), and `most` in all (503; the checks themselves run one per core,
    workers.ingest.voiceover_apart, so the rest wait, each holding one of the API's worker threads). Only the event
    loop's thread enters and leaves, so no lock is needed."""

    def __init__(self, *, per_account: int = 2, most: int | None = None):
        self.per_account, self.most = per_account, most or 4 * (os.cpu_count() or 1)
        self.scripts: set[str] = set()
        self.accounts: Counter[str] = Counter()

    def enter(self, account: str, script_id: str) -> tuple[str, str]:
        if script_id in self.scripts:
            raise HTTPException(409, f"a recording of script {script_id!r} is being checked already; send this one "
                                     "again once that upload has been answered", headers={"Retry-After": "10"})
        if self.accounts[account] >= self.per_account:
            raise HTTPException(429, f"{self.per_account} voice-over uploads of this account are being checked "
                                     "already; send the next when one has been answered", headers={"Retry-After": "10"})
        if len(self.scripts) >= self.most:
            raise HTTPException(503, f"this API process is checking {len(self.scripts)} voice-over uploads, its most; "
                                     "try again shortly", headers={"Retry-After": "10"})
        self.scripts.add(script_id)
        self.accounts[account] += 1
        return account, script_id

    def leave(self, slot: tuple[str, str]) -> None:
        account, script_id = slot
        self.scripts.discard(script_id)
        self.accounts[account] -= 1
        if self.accounts[account] <= 0:
            del self.accounts[account]


_checks = ChecksInFlight()


class ProgressOut(BaseModel):
    stage: str
    done: float
    total: float
    fraction: float
    state: str


@router.get("/scripts/{script_id}/voiceover/progress/{progress_id}", response_model=ProgressOut, tags=["voiceovers"],
            responses={404: {"description": "no upload of this account for this script under that id (or it "
                                            "ended more than 10 minutes ago)"}})
def voiceover_progress(script_id: str, request: Request, session: SessionDep, who: PrincipalDep,
                       progress_id: Annotated[str, Path(pattern=PROGRESS_ID)]):
    """How far the check of this account's upload under `progress_id` is: its stage (decode, align, store), the
    stage's done and total (align: seconds of audio decoded over its three passes), the fraction of the whole
    check, and its state: running, then done or refused (the upload's own answer says why)."""
    script_access(session, who, script_id)
    report = _board(request).read(who.account_id, script_id, progress_id)
    if report is None:
        raise HTTPException(404, f"voice-over upload {progress_id!r} does not exist: none of yours for script "
                                 f"{script_id!r} is in progress under that id or ended in the last 10 minutes")
    return report


def _board(request: Request) -> ProgressBoard:
    return request.app.state.progress_board


def _take(rt, script_id: str, text: str, language: str, received, *, shown: str, progress, **kw) -> Voiceover:
    """Check the upload in a process of its own (pocketsphinx would hold this process's interpreter lock through
    every pass: workers.ingest.voiceover_apart), then store it as the script's voice-over in one short transaction."""
    from studio.db import session_scope
    from workers.ingest.voiceover import VoiceoverRefused, VoiceoverTaken, take_voiceover
    from workers.ingest.voiceover_apart import check_voiceover_apart

    try:
        checked = check_voiceover_apart(received, text, language=language, progress=progress)
        with session_scope(rt.engine) as s:
            script = s.get(Script, script_id)
            if script is None:
                raise HTTPException(404, f"script {script_id!r} was deleted while its recording was checked")
            row = take_voiceover(rt, s, script, received, checked=checked, progress=progress, **kw)
            s.flush()
            s.expunge(row)
    except IntegrityError:
        raise HTTPException(409, f"another recording of script {script_id!r} was stored while this one was checked "
                                 "(by another API process); send this one again to replace it") from None
    except VoiceoverTaken as exc:
        raise HTTPException(409, str(exc)) from None
    except VoiceoverRefused as exc:
        detail = {"message": str(exc).replace(str(received), shown).replace(received.name, shown)}
        if exc.missing or exc.extra:
            detail |= {"missing": exc.missing, "extra": exc.extra}
        raise HTTPException(422, detail) from None
    return row


@router.get("/scripts/{script_id}/voiceover", response_model=VoiceoverPublic, tags=["voiceovers"])
def read_voiceover(script_id: str, session: SessionDep, who: PrincipalDep):
    """The script's recording: to its agency, to the creator whose voice it is, and (a voice actor's) to creators
    whose consents reach the script. Another creator's own voice is theirs alone: the same 404 as none."""
    script, _ = script_access(session, who, script_id)
    return _public(service.visible_voiceover(session, who, script))


@router.get("/scripts/{script_id}/voiceover/audio", tags=["voiceovers"],
            response_class=FileResponse, responses={200: {"content": {"audio/wav": {}}}})
def voiceover_audio(script_id: str, session: SessionDep, who: PrincipalDep, rt: RuntimeDep):
    """The stored recording (16 kHz mono WAV), to listen to before approving it."""
    script, _ = script_access(session, who, script_id)
    vo = service.visible_voiceover(session, who, script)
    return FileResponse(rt.local(vo.audio_path), media_type="audio/wav", filename=f"voiceover-{script.id}.wav")


@router.post("/scripts/{script_id}/voiceover/approve", response_model=VoiceoverPublic, tags=["voiceovers"])
def approve_voiceover(script_id: str, body: VoiceoverApprovalIn, session: SessionDep, who: PrincipalDep):
    """The creator approves a recording of their own voice (made by the agency) for airing."""
    return service.approve_voiceover(session, who, script_id, body)


@router.delete("/scripts/{script_id}/voiceover", status_code=204, tags=["voiceovers"])
def delete_voiceover(script_id: str, session: SessionDep, who: PrincipalDep, rt: RuntimeDep):
    from workers.ingest.voiceover import drop_voiceover

    script, product = script_access(session, who, script_id)
    vo = service.visible_voiceover(session, who, script)
    if not (who.owns_agency_item(product.agency_id) or who.owns_creator(vo.creator_id)):
        raise HTTPException(403, "only the script's agency or the creator whose voice it is deletes a voice-over")
    drop_voiceover(rt, session, script.id, reason=f"deleted by {who.role.value} {who.account_id}")
    session.commit()


@router.patch("/scripts/{script_id}", response_model=ScriptPublic, tags=["scripts"])
def edit_script(script_id: str, body: ScriptEdit, session: SessionDep, who: PrincipalDep, rt: RuntimeDep):
    """Change a script's text: linted like a new one; its recorded voice-over (which says the old text) is dropped,
    and creators' approvals of the old text no longer count."""
    return service.edit_script(session, who, script_id, body, rt=rt)


@router.put("/avatars/{avatar_id}/voice", response_model=AvatarPublic, tags=["avatars"])
def set_avatar_voice(avatar_id: str, body: VoiceIn, session: SessionDep, who: PrincipalDep):
    """One voice per avatar: the configured speech (`tts`), an espeak-ng voice (`espeak:en-gb+f3`), or the
    scripts' recorded voice-overs (`recorded`). Its shows say every script in it."""
    return service.set_avatar_voice(session, who, avatar_id, body)
