"""Who is asking (API key or session cookie) and what they may see.

An API key comes as `Authorization: Bearer ecs_...` or `X-API-Key: ecs_...`; a browser carries the session
cookie set by `POST /api/auth/login` (HttpOnly, SameSite=Lax, so other sites cannot post with it). Another
tenant's resources answer 404, exactly as ids that do not exist, so ids cannot be probed; a verb the role may not
use at all answers 403 naming the roles that may.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlmodel import Session

from api.deps import SessionDep
from studio.access import (  # noqa: F401  (re-exported: the routers' tenancy checks)
    avatar_for,
    channel_for,
    consent_for,
    creator_for,
    get_or_404,
    granting_consents,
    hidden,
    need_role,
    owner_agency,
    product_for,
    script_for,
)
from studio.accounts import Principal, account_for_api_key, account_for_session, principal_of

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
