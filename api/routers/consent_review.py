"""Consent review (workers.consent.review): the consents waiting for an admin's or reviewer's decision, what they
look at (the avatar's footage, the consent video, the check's figures) and the decision itself. Only admins and
reviewers reach these routes; the media route serves files by store key, never by a path a client names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlmodel import select

from api.auth import PrincipalDep, need_role
from api.deps import RuntimeDep, SessionDep, get_or_404
from api.pagination import PageDep
from studio.accounts import Role
from studio.consent import MIN_REJECT_REASON, PENDING_REVIEW
from studio.models import Avatar, Consent, ConsentPhrase, ConsentPublic, Creator
from studio.store import StoreKeyError

router = APIRouter()
FOOTAGE = "base.mp4"  # in each avatar bundle: the creator's own footage, cropped (the footage itself is not kept)
MEDIA_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm", ".mkv": "video/x-matroska"}


class Figure(BaseModel):
    name: str
    label: str
    value: float | None = Field(description="As measured; None where the check could not measure it.")
    limit: float
    rule: str = Field(description="min: the value must reach the limit; max: stay under it; near 0: within it.")
    ok: bool | None


class ReviewItem(ConsentPublic):
    creator_name: str
    avatar_name: str | None
    phrase_text: str | None = Field(description="The code phrase the creator was to read aloud.")
    figures: list[Figure] = Field(description="The automated check's figures against their limits.")
    footage_url: str = Field(description="The avatar's reference footage (admin and reviewer only).")
    video_url: str = Field(description="The consent video (admin and reviewer only).")


class RejectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=MIN_REJECT_REASON, max_length=2000)] \
        = Field(description="Why, in words the creator reads.")


def _item(session, consent: Consent) -> ReviewItem:
    from workers.consent.video import report_figures

    creator = session.get(Creator, consent.creator_id)
    avatar = session.get(Avatar, consent.avatar_id) if consent.avatar_id else None
    phrase = session.get(ConsentPhrase, consent.phrase_id) if consent.phrase_id else None
    base = f"/api/consents/{consent.id}/media"
    return ReviewItem(**ConsentPublic.model_validate(consent, from_attributes=True).model_dump(),
                      creator_name=creator.name if creator else "?", avatar_name=avatar.name if avatar else None,
                      phrase_text=phrase.text if phrase else None, figures=report_figures(consent.verification),
                      footage_url=f"{base}/footage", video_url=f"{base}/video")


@router.get("/consents/pending", response_model=list[ReviewItem], tags=["consent review"])
def pending_consents(session: SessionDep, who: PrincipalDep, page: PageDep):
    """Consents that passed the automated check and wait for review, oldest first, with what a reviewer weighs:
    the statement, scope and term, the phrase, the check's figures and links to the footage and the video."""
    need_role(who, Role.reviewer)
    rows = page.rows(session, select(Consent).where(Consent.status == PENDING_REVIEW)
                     .order_by(Consent.created_at, Consent.id))
    return [_item(session, c) for c in rows]


def _decide(rt, session, who, consent_id: str, *, approve: bool, reason: str | None = None) -> ReviewItem:
    from workers.consent.review import ReviewRefused, review_consent_direct

    need_role(who, Role.reviewer)
    get_or_404(session, Consent, consent_id, "consent")
    try:
        review_consent_direct(rt, consent_id, reviewer=who, approve=approve, reason=reason)
    except ReviewRefused as exc:
        raise HTTPException(409, str(exc)) from None
    session.expire_all()
    return _item(session, session.get(Consent, consent_id))


@router.post("/consents/{consent_id}/approve", response_model=ReviewItem, tags=["consent review"])
def approve_consent(consent_id: str, rt: RuntimeDep, session: SessionDep, who: PrincipalDep):
    """Approve a consent waiting for review: it is granted and may air from now on. The audit log records
    `consent.approved` with the approver's account id. 409 for a consent that is not waiting for review."""
    return _decide(rt, session, who, consent_id, approve=True)


@router.post("/consents/{consent_id}/reject", response_model=ReviewItem, tags=["consent review"])
def reject_consent(consent_id: str, body: RejectIn, rt: RuntimeDep, session: SessionDep, who: PrincipalDep):
    """Reject a consent waiting for review, with a reason the creator reads: it never airs and its consent video
    is deleted. The audit log records `consent.rejected` with the reviewer's account id and the reason."""
    return _decide(rt, session, who, consent_id, approve=False, reason=body.reason)


@router.get("/consents/{consent_id}/media/{which}", tags=["consent review"],
            responses={200: {"content": {"video/mp4": {}, "video/webm": {}}}})
def review_media(consent_id: str, which: Literal["footage", "video"], rt: RuntimeDep, session: SessionDep,
                 who: PrincipalDep):
    """The avatar's reference footage (`footage`) or the consent video (`video`) of a consent, from the media
    store, for the review: a reviewer's only while the consent waits for review, an admin's while it is kept."""
    need_role(who, Role.reviewer)
    consent = get_or_404(session, Consent, consent_id, "consent")
    if who.role is Role.reviewer and consent.status != PENDING_REVIEW:
        raise HTTPException(404, f"the {which} of consent {consent_id!r} does not exist for review: the consent is "
                                 f"{consent.status}, not waiting for review")
    if which == "video":
        key = consent.video_path
    else:
        avatar = session.get(Avatar, consent.avatar_id) if consent.avatar_id else None
        key = f"{avatar.bundle_path}/{FOOTAGE}" if avatar is not None and avatar.status == "ready" else None
    try:
        path = rt.local(key) if key else None
    except (FileNotFoundError, StoreKeyError):
        path = None
    if path is None or not path.is_file():
        raise HTTPException(404, f"the {which} of consent {consent_id!r} does not exist (deleted, or never kept)")
    return FileResponse(path, media_type=MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream"),
                        headers={"Cache-Control": "no-store", "Content-Disposition": "inline",
                                 "X-Content-Type-Options": "nosniff"})

