"""Agencies, code phrases for the consent video (POLICY C2), the creator's script approvals and claim
attestations (S2)."""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, select

from studio import audit
from studio.access import avatar_for, consent_for, creator_for, get_or_404, hidden, need_role
from studio.accounts import Principal
from studio.consent import consent_problem, reaches_product, scope_problem
from studio.errors import Refused
from studio.models import (
    Agency,
    AgencyCreate,
    ApiModel,
    Attestation,
    Consent,
    Creator,
    Product,
    Script,
    ScriptApproval,
    utcnow,
)
from studio.runtime import Runtime
from studio.usage import text_sha256


def create_agency(session: Session, who: Principal, body: AgencyCreate) -> Agency:
    need_role(who)
    row = Agency.model_validate(body)
    session.add(row)
    session.commit()
    return row


class PhraseOut(ApiModel):
    id: str
    avatar_id: str
    text: str = Field(description="Read these words aloud, in order, in the consent video.")
    issued_at: datetime
    expires_at: datetime


def issue_phrase(session: Session, who: Principal, avatar_id: str, *, rt: Runtime) -> PhraseOut:
    """A one-time code phrase for this avatar's consent video, valid for 10 minutes (POLICY C2). A creator holds at
    most `consent.max_open_phrases` issued, unused and unexpired phrases: one more is refused (429) with
    Retry-After the seconds until the first of them expires."""
    from workers.consent.grant import ConsentRefused, PhraseLimitReached, issue_phrase_direct

    avatar_for(session, who, avatar_id, manage=True)
    try:
        row = issue_phrase_direct(rt, avatar_id)
    except PhraseLimitReached as exc:
        raise Refused(429, str(exc), headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))}) from None
    except ConsentRefused as exc:
        raise Refused(422, str(exc)) from None
    return PhraseOut(id=row.id, avatar_id=row.avatar_id, text=row.text, issued_at=row.issued_at,
                     expires_at=row.expires_at)


class ApprovalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    script_id: str
    signed_name: str = Field(min_length=1, max_length=200, description="The creator's name as on the consent.")


def approve_script(session: Session, who: Principal, consent_id: str, body: ApprovalIn) -> ScriptApproval:
    """The creator approves one script's exact text for this consent; an edited script needs a new approval."""
    consent = consent_for(session, who, consent_id, manage=True)
    script = get_or_404(session, Script, body.script_id, "script")
    product = session.get(Product, script.product_id)
    if product is None or not reaches_product(consent, product):
        raise hidden("script", script.id)  # another agency's script: as if it did not exist
    if problem := consent_problem(consent, at=utcnow()):
        raise Refused(422, problem)
    if body.signed_name.strip().casefold() != consent.signed_name.strip().casefold():
        raise Refused(403, f"approvals must be signed by the creator named on consent {consent.id}")
    if problem := scope_problem(consent, product, language=script.language):
        raise Refused(422, f"script {script.id} cannot be approved: {problem}")
    digest = text_sha256(script.text)
    row = session.exec(select(ScriptApproval).where(ScriptApproval.consent_id == consent.id,
                                                    ScriptApproval.script_id == script.id,
                                                    ScriptApproval.text_sha256 == digest)).first()
    if row is None:
        row = ScriptApproval(consent_id=consent.id, script_id=script.id, text_sha256=digest,
                             signed_name=body.signed_name.strip())
        session.add(row)
        audit.record(session, kind="consent.script_approved", subject_id=consent.id,
                     data={"script_id": script.id, "text_sha256": digest})
        session.commit()
    return row


class AttestationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product_id: str
    kind: str = Field(description="use | opinion | results: the kind of first-person claim now true of the product.")
    statement: str = Field(min_length=10, max_length=2000, description="In the creator's words, e.g. "
                           "'I have used the Glow Serum daily since March'.")
    signed_name: str = Field(min_length=1, max_length=200)

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        from studio.script_lint import CLAIM_KINDS

        if v.strip().lower() not in CLAIM_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CLAIM_KINDS)}")
        return v.strip().lower()


def attest(session: Session, who: Principal, creator_id: str, body: AttestationIn) -> Attestation:
    """The creator attests a first-person fact about one product, so scripts may say it in their voice (S2)."""
    creator_for(session, who, creator_id)
    creator = get_or_404(session, Creator, creator_id, "creator")
    product = get_or_404(session, Product, body.product_id, "product")
    consents = session.exec(select(Consent).where(Consent.creator_id == creator_id,
                                                  Consent.status == "granted")).all()
    if not any(reaches_product(c, product) for c in consents):
        raise hidden("product", product.id)  # a product none of the creator's consents reaches
    if body.signed_name.strip().casefold() != creator.name.strip().casefold():
        raise Refused(403, f"attestations must be signed by the creator ({creator.name!r})")
    row = session.exec(select(Attestation).where(Attestation.creator_id == creator_id,
                                                 Attestation.product_id == body.product_id,
                                                 Attestation.kind == body.kind)).first()
    if row is None:
        row = Attestation(creator_id=creator_id, **body.model_dump())
        session.add(row)
        audit.record(session, kind="creator.attested", subject_id=creator_id,
                     data={"product_id": body.product_id, "kind": body.kind})
        session.commit()
    return row

