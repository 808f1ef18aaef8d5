"""Who is asking (API key or session cookie) and what they may see.

An API key comes as `Authorization: Bearer ecs_...` or `X-API-Key: ecs_...`; a browser carries the session
cookie set by `POST /api/auth/login` (HttpOnly, SameSite=Lax, so other sites cannot post with it). Another
tenant's resources answer 404, exactly as ids that do not exist, so ids cannot be probed; a verb the role may not
use at all answers 403 naming the roles that may.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlmodel import Session, select

from api.deps import SessionDep, get_or_404
from studio.accounts import Principal, Role, account_for_api_key, account_for_session, principal_of
from studio.models import Agency, Avatar, Channel, Consent, Product, Script, utcnow

SESSION_COOKIE = "studio_session"


def current_principal(request: Request, session: SessionDep) -> Principal:
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header[:7].lower() == "bearer " else request.headers.get("x-api-key", "").strip()
    if key:
        account = account_for_api_key(session, key)
        if account is None:
            raise HTTPException(401, "the API key is not valid (unknown, revoked, or its account is disabled)",
                                headers={"WWW-Authenticate": "Bearer"})
        return principal_of(account)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        account = account_for_session(session, token)
        if account is None:
            raise HTTPException(401, "the session has expired or was ended; sign in again",
                                headers={"WWW-Authenticate": "Bearer"})
        return principal_of(account)
    raise HTTPException(401, "sign in (session cookie from POST /api/auth/login) or send an API key as "
                             "'Authorization: Bearer ecs_...'", headers={"WWW-Authenticate": "Bearer"})


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def credentials_problem(engine, scope) -> str | None:
    """Why a request carries no valid session or API key, or None when it does: asked by api.limits before an
    upload's body is read, so an anonymous client cannot make the server read (and spool) hundreds of MB."""
    from starlette.concurrency import run_in_threadpool

    request = Request(scope)

    def check() -> str | None:
        with Session(engine) as session:
            try:
                current_principal(request, session)
            except HTTPException as exc:
                return str(exc.detail)
        return None

    return await run_in_threadpool(check)


def need_role(who: Principal, *roles: Role) -> None:
    """403 unless `who` has one of `roles` (admins always may)."""
    if who.role is Role.admin or who.role in roles:
        return
    allowed = ", ".join(r.value for r in (*roles, Role.admin))
    raise HTTPException(403, f"a {who.role.value} account may not do this; it needs one of: {allowed}")


def hidden(what: str, row_id: str) -> HTTPException:
    """The answer for a row that exists but belongs to someone else: the same as for one that does not."""
    return HTTPException(404, f"{what} {row_id!r} does not exist")


def granting_consents(session: Session, *, agency_id: str, avatar_id: str | None = None) -> list[Consent]:
    """Consents that grant `agency_id` and are in force now (granted, within their term)."""
    now = utcnow()
    q = select(Consent).where(Consent.agency_id == agency_id, Consent.status == "granted",
                              Consent.starts_at <= now, Consent.ends_at > now)
    if avatar_id is not None:
        q = q.where(Consent.avatar_id == avatar_id)
    return list(session.exec(q))


def creator_for(session: Session, who: Principal, creator_id: str) -> None:
    """Only the creator themself (or an admin) manages a creator's things."""
    from studio.models import Creator

    get_or_404(session, Creator, creator_id, "creator")
    if not who.owns_creator(creator_id):
        raise hidden("creator", creator_id)


def avatar_for(session: Session, who: Principal, avatar_id: str, *, manage: bool = False) -> Avatar:
    """The avatar if `who` may see it: its creator, an admin, or (to read) an agency that a consent in force
    grants it to."""
    avatar = get_or_404(session, Avatar, avatar_id, "avatar")
    if who.owns_creator(avatar.creator_id):
        return avatar
    if not manage and who.role is Role.agency and who.agency_id \
            and granting_consents(session, agency_id=who.agency_id, avatar_id=avatar_id):
        return avatar
    raise hidden("avatar", avatar_id)


def consent_for(session: Session, who: Principal, consent_id: str, *, manage: bool = False) -> Consent:
    """The consent if `who` may see it: the avatar's creator, an admin, or (to read) the agency it grants."""
    consent = get_or_404(session, Consent, consent_id, "consent")
    if who.owns_creator(consent.creator_id):
        return consent
    if not manage and who.role is Role.agency and who.agency_id and consent.agency_id == who.agency_id:
        return consent
    raise hidden("consent", consent_id)


def channel_for(session: Session, who: Principal, channel_id: str, *, manage: bool = False) -> Channel:
    """The channel if `who` may see it: its agency, an admin, or (to read its health) ops."""
    channel = get_or_404(session, Channel, channel_id, "channel")
    if who.owns_agency_item(channel.agency_id) or (not manage and who.role is Role.ops):
        return channel
    raise hidden("channel", channel_id)


def product_for(session: Session, who: Principal, product_id: str) -> Product:
    product = get_or_404(session, Product, product_id, "product")
    if who.owns_agency_item(product.agency_id):
        return product
    raise hidden("product", product_id)


def script_for(session: Session, who: Principal, script_id: str) -> Script:
    script = get_or_404(session, Script, script_id, "script")
    product = session.get(Product, script.product_id)
    if product is not None and who.owns_agency_item(product.agency_id):
        return script
    raise hidden("script", script_id)


def owner_agency(session: Session, who: Principal, asked: str | None) -> str | None:
    """The agency a new channel or product belongs to: an agency member's own (naming another is refused); an
    admin's choice, which must exist (None: the platform's own)."""
    if who.role is Role.agency:
        if asked is not None and asked != who.agency_id:
            raise HTTPException(403, f"an agency member creates things for their own agency, not {asked!r}")
        return who.agency_id
    if asked is not None and session.get(Agency, asked) is None:
        raise HTTPException(422, f"agency_id: agency {asked!r} does not exist")
    return asked
