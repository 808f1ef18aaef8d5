"""Script edits (which drop the script's recorded voice-over), voice-over approvals by the creator whose voice it
is (POLICY C7), and each avatar's voice."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, select

from studio import audit
from studio.access import avatar_for, get_or_404, hidden, need_role, script_for
from studio.accounts import Principal, Role
from studio.admission import script_problems
from studio.consent import reaches_product
from studio.errors import Refused
from studio.models import Avatar, Consent, Creator, Product, Script, Voiceover, VoiceoverPublic, utcnow
from studio.runtime import Runtime
from studio.voiceover import VoiceError, creator_may_hear, parse_voice


def _public(vo: Voiceover) -> VoiceoverPublic:
    return VoiceoverPublic(id=vo.id, script_id=vo.script_id, speaker=vo.speaker, creator_id=vo.creator_id,
                           actor_name=vo.actor_name, approved_at=vo.approved_at,
                           needs_approval=vo.speaker == "creator" and vo.approved_at is None,
                           duration_s=vo.duration_s, matched=vo.matched, words=vo.words, parts=vo.parts,
                           upload_sha256=vo.upload_sha256, created_at=vo.created_at)


def creator_reaches(session: Session, creator_id: str, product: Product) -> bool:
    """The creator has a consent (granted or waiting) that concerns this product's agency."""
    return any(reaches_product(c, product) for c in session.exec(
        select(Consent).where(Consent.creator_id == creator_id, Consent.status.in_(["granted", "pending_review"]))))


def script_access(session: Session, who: Principal, script_id: str) -> tuple[Script, Product]:
    """The script and its product if `who` may handle its voice-over: its agency, an admin, or a creator one of
    whose consents reaches its product; anyone else gets the same 404 as for a script that does not exist."""
    script = get_or_404(session, Script, script_id, "script")
    product = session.get(Product, script.product_id)
    if product is not None:
        if who.owns_agency_item(product.agency_id):
            return script, product
        if who.role is Role.creator and who.creator_id and creator_reaches(session, who.creator_id, product):
            return script, product
    raise hidden("script", script_id)


def voiceover_of(session: Session, script: Script) -> Voiceover:
    """The script's voice-over, or a 404 refusal."""
    vo = session.exec(select(Voiceover).where(Voiceover.script_id == script.id)).first()
    if vo is None:
        raise Refused(404, f"the voice-over of script {script.id!r} does not exist")
    return vo


def visible_voiceover(session: Session, who: Principal, script: Script) -> Voiceover:
    """The script's voice-over as `who` may see it: a creator never gets another creator's own voice (the same 404
    as no recording: studio.voiceover.creator_may_hear)."""
    vo = voiceover_of(session, script)
    if who.role is Role.creator and not creator_may_hear(vo, who.creator_id):
        raise Refused(404, f"the voice-over of script {script.id!r} does not exist")
    return vo


class VoiceoverApprovalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signed_name: str = Field(min_length=1, max_length=200, description="The creator's name as on their consent.")


def approve_voiceover(session: Session, who: Principal, script_id: str, body: VoiceoverApprovalIn) -> VoiceoverPublic:
    """The creator approves a recording of their own voice (made by the agency) for airing."""
    script, _ = script_access(session, who, script_id)
    vo = visible_voiceover(session, who, script)
    if vo.speaker != "creator" or not who.owns_creator(vo.creator_id):
        raise Refused(403, "only the creator whose voice it is approves a voice-over")
    creator = session.get(Creator, vo.creator_id)
    if body.signed_name.strip().casefold() != creator.name.strip().casefold():
        raise Refused(403, f"the approval must be signed with the creator's name ({creator.name!r})")
    if vo.approved_at is None:
        vo.approved_at, vo.approved_name = utcnow(), body.signed_name.strip()
        audit.record(session, kind="voiceover.approved", subject_id=script.id,
                     data={"voiceover_id": vo.id, "creator_id": vo.creator_id, "sha256": vo.audio_sha256})
        session.commit()
        session.refresh(vo)
    return _public(vo)


class ScriptEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=5000)


def edit_script(session: Session, who: Principal, script_id: str, body: ScriptEdit, *, rt: Runtime) -> Script:
    """Change a script's text: linted like a new one; its recorded voice-over (which says the old text) is dropped,
    and creators' approvals of the old text no longer count."""
    from api.service.catalog import SCRIPT_REFUSED
    from workers.ingest.voiceover import drop_voiceover

    need_role(who, Role.agency)
    script = script_for(session, who, script_id)
    product = session.get(Product, script.product_id)
    if errors := script_problems(session, body.text, language=script.language, product=product):
        raise Refused(422, {"message": SCRIPT_REFUSED, "findings": errors})
    if body.text != script.text:
        script.text = body.text
        drop_voiceover(rt, session, script.id, reason="script edited")
        audit.record(session, kind="script.edited", subject_id=script.id, data={"by": who.account_id})
        session.commit()
        session.refresh(script)
    return script


class VoiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    voice: str = Field(max_length=200, description="tts | espeak:VOICE | recorded")


def set_avatar_voice(session: Session, who: Principal, avatar_id: str, body: VoiceIn) -> Avatar:
    """One voice per avatar: the configured speech (`tts`), an espeak-ng voice (`espeak:en-gb+f3`), or the
    scripts' recorded voice-overs (`recorded`). Its shows say every script in it."""
    avatar: Avatar = avatar_for(session, who, avatar_id, manage=True)
    try:
        kind, name = parse_voice(body.voice)
    except VoiceError as exc:
        raise Refused(422, str(exc)) from None
    if kind == "espeak":
        from workers.tts.espeak import EspeakTTS

        try:
            EspeakTTS(voice=name).synthesize("test")
        except Exception as exc:  # noqa: BLE001 - espeak-ng names what it lacks
            raise Refused(422, f"voice {body.voice!r}: espeak-ng cannot speak with it ({exc})") from None
    avatar.voice = body.voice.strip()
    audit.record(session, kind="avatar.voice", subject_id=avatar.id, data={"voice": avatar.voice})
    session.commit()
    session.refresh(avatar)
    return avatar
