"""Sign-in, accounts and API keys."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import select

from api import problems
from api.auth import SESSION_COOKIE, PrincipalDep, need_role
from api.deps import SessionDep
from api.login_guard import LoginGuard
from api.pagination import PageDep
from api.service import accounts as service
from api.service.accounts import AccountIn, AccountOut, _account_out  # noqa: F401  (the bodies)
from studio import audit
from studio.accounts import (
    SESSION_TTL,
    AccountError,
    Role,
    check_password,
    create_account,
    end_session,
    end_sessions,
    issue_api_key,
    set_disabled,
    start_session,
)
from studio.models import Account, ApiKey, ApiModel, Creator, utcnow

router = APIRouter()


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class SignupIn(LoginIn):
    name: str = Field(min_length=1, max_length=200, description="The creator's display name.")


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="What the key is for, e.g. 'scheduler sync'.")
    expires_in_days: int | None = Field(default=None, ge=1, le=3650, description="The key stops working after "
                                        "this many days; omitted: it works until revoked.")


class AccountPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disabled: bool = Field(description="True: the account's sessions end and its API keys stop working at once; "
                           "False: it may sign in again.")


class ApiKeyOut(ApiModel):
    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked: bool


class NewApiKeyOut(ApiKeyOut):
    key: str = Field(description="The key itself: shown this once, never again (only its hash is kept).")


def _key_out(row: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(id=row.id, name=row.name, prefix=row.prefix, created_at=row.created_at,
                     last_used_at=row.last_used_at, expires_at=row.expires_at, revoked=row.revoked_at is not None)


def _set_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=int(SESSION_TTL.total_seconds()), httponly=True,
                        samesite="lax", secure=request.url.scheme == "https", path="/")


def _guard(request: Request) -> LoginGuard:
    return request.app.state.login_guard


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@contextmanager
def _hash_slot(request: Request):
    """One of the process's few password-hashing slots, or 503: argon2 is slow on purpose."""
    with _guard(request).hashing() as got:
        if not got:
            raise HTTPException(503, "too many sign-ins at once; try again in a moment",
                                headers={"Retry-After": "1"})
        yield


@router.post("/auth/login", response_model=AccountOut, tags=["auth"],
             responses={429: problems.RESPONSES[429], 503: problems.RESPONSES[503]})
def login(body: LoginIn, request: Request, response: Response, session: SessionDep):
    """Sign in with email and password; sets the session cookie the pages use. Wrong passwords are limited per
    email and address, per address and per email (api.login_guard): 429 with Retry-After. An address that signed
    in to the email before keeps signing in while others are refused."""
    email = body.email.strip().lower()
    address = _client_address(request)
    guard = _guard(request)
    if refusal := guard.refusal(email, address):
        raise HTTPException(429, f"{refusal.reason}; try again in {refusal.seconds} s",
                            headers={"Retry-After": str(refusal.seconds)})
    with _hash_slot(request):
        account = check_password(session, email=body.email, password=body.password)
    if account is None:
        guard.failed(email, address)
        raise HTTPException(401, "wrong email or password")
    guard.succeeded(email, address)
    _set_cookie(request, response, start_session(session, account_id=account.id))
    return _account_out(account)


@router.post("/auth/logout", status_code=204, tags=["auth"])
def logout(request: Request, session: SessionDep):
    if token := request.cookies.get(SESSION_COOKIE):
        end_session(session, token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/auth/signup", response_model=AccountOut, status_code=201, tags=["auth"])
def signup(body: SignupIn, request: Request, response: Response, session: SessionDep):
    """A creator signs up: their creator record and account, signed in at once. Agencies, ops and admins are
    given accounts by an admin (POST /api/accounts)."""
    creator = Creator(name=body.name, email=body.email.strip().lower())
    session.add(creator)
    session.flush()
    try:
        with _hash_slot(request):
            account = create_account(session, email=body.email, name=body.name, role=Role.creator,
                                     password=body.password, creator_id=creator.id)
    except AccountError as exc:
        session.rollback()
        raise HTTPException(409 if "exists already" in str(exc) else 422, str(exc)) from None
    session.commit()
    _set_cookie(request, response, start_session(session, account_id=account.id))
    return _account_out(account)


@router.get("/me", response_model=AccountOut, tags=["auth"])
def me(who: PrincipalDep, session: SessionDep):
    return _account_out(session.get(Account, who.account_id))


@router.post("/me/api-keys", response_model=NewApiKeyOut, status_code=201, tags=["auth"])
def create_api_key(body: ApiKeyIn, who: PrincipalDep, session: SessionDep):
    """A key for a program acting as you. The response holds the key once; store it then."""
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    row, key = issue_api_key(session, account_id=who.account_id, name=body.name, expires_at=expires)
    session.commit()
    return NewApiKeyOut(**_key_out(row).model_dump(), key=key)


@router.get("/me/api-keys", response_model=list[ApiKeyOut], tags=["auth"])
def list_api_keys(who: PrincipalDep, session: SessionDep, page: PageDep):
    q = select(ApiKey).where(ApiKey.account_id == who.account_id).order_by(ApiKey.created_at, ApiKey.id)
    return [_key_out(r) for r in page.rows(session, q)]


@router.delete("/me/api-keys/{key_id}", status_code=204, tags=["auth"])
def revoke_api_key(key_id: str, who: PrincipalDep, session: SessionDep):
    row = session.get(ApiKey, key_id)
    if row is None or row.account_id != who.account_id:
        raise HTTPException(404, f"API key {key_id!r} does not exist")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.commit()
    return Response(status_code=204)


@router.post("/accounts", response_model=AccountOut, status_code=201, tags=["accounts"])
def add_account(body: AccountIn, who: PrincipalDep, session: SessionDep):
    """An admin gives someone an account: agency members, ops, admins, or a creator's login."""
    return service.add_account(session, who, body)


@router.get("/accounts", response_model=list[AccountOut], tags=["accounts"])
def list_accounts(who: PrincipalDep, session: SessionDep, page: PageDep):
    need_role(who)
    return [_account_out(r) for r in page.rows(session, select(Account).order_by(Account.created_at, Account.id))]


def _account_row(session, account_id: str) -> Account:
    row = session.get(Account, account_id)
    if row is None:
        raise HTTPException(404, f"account {account_id!r} does not exist")
    return row


@router.patch("/accounts/{account_id}", response_model=AccountOut, tags=["accounts"])
def patch_account(account_id: str, body: AccountPatch, who: PrincipalDep, session: SessionDep):
    """An admin disables an account (its sessions end and its API keys stop working at once) or enables it."""
    need_role(who)
    _account_row(session, account_id)
    if body.disabled and account_id == who.account_id:
        raise HTTPException(409, "an admin cannot disable their own account; ask another admin")
    row = set_disabled(session, account_id=account_id, disabled=body.disabled)
    audit.record(session, kind="account.disabled" if body.disabled else "account.enabled", subject_id=account_id,
                 data={"by": who.account_id})
    session.commit()
    return _account_out(row)


@router.delete("/accounts/{account_id}/sessions", status_code=204, tags=["accounts"])
def end_account_sessions(account_id: str, who: PrincipalDep, session: SessionDep):
    """An admin signs an account out everywhere: every login session of it ends (its API keys are untouched)."""
    need_role(who)
    _account_row(session, account_id)
    ended = end_sessions(session, account_id=account_id)
    audit.record(session, kind="account.sessions_ended", subject_id=account_id,
                 data={"by": who.account_id, "sessions": ended})
    session.commit()
    return Response(status_code=204)
