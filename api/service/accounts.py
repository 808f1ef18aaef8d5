"""Accounts an admin gives (agency members, ops, reviewers, admins, a creator's login)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from studio.access import need_role
from studio.accounts import AccountError, Principal, Role, create_account
from studio.errors import Refused
from studio.models import Account


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=320)
    name: str = Field(min_length=1, max_length=200)
    role: Role
    password: str | None = Field(default=None, min_length=1, max_length=1024,
                                 description="None: the account signs in with API keys only.")
    agency_id: str | None = Field(default=None, description="Required for role agency.")
    creator_id: str | None = Field(default=None, description="Required for role creator.")


class AccountOut(BaseModel):
    id: str
    email: str
    name: str
    role: str
    agency_id: str | None
    creator_id: str | None
    disabled: bool


def _account_out(row: Account) -> AccountOut:
    return AccountOut(**row.model_dump(include=set(AccountOut.model_fields)))


def add_account(session: Session, who: Principal, body: AccountIn) -> AccountOut:
    """An admin gives someone an account; an email that has one already is refused (409)."""
    need_role(who)
    try:
        row = create_account(session, **body.model_dump())
    except AccountError as exc:
        session.rollback()
        raise Refused(409 if "exists already" in str(exc) else 422, str(exc)) from None
    session.commit()
    return _account_out(row)
