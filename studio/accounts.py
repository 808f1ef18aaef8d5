"""Accounts, roles and credentials: who is asking, and whose resources they may see.

Five roles. A creator manages their own footage, avatars, consents and aired history. An agency member manages
their agency's channels, products, scripts and shows, and sees the avatars whose consent grants that agency. Ops
see queues, workers and stream health, never stream keys or footage. A reviewer approves or rejects consents that
passed the automated check (their footage, consent video and the check's figures) and does nothing else. An admin
runs the platform.

Passwords are hashed with argon2id (argon2-cffi). API keys and session tokens are 256-bit random strings: only
their SHA-256 is stored, so a leaked database holds nothing that signs in.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, select

from studio.models import Account, Agency, ApiKey, Creator, LoginSession, utcnow

KEY_PREFIX = "ecs_"
SESSION_TTL = timedelta(hours=12)
MIN_PASSWORD = 10
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")
_hasher = PasswordHasher()


class Role(StrEnum):
    creator = "creator"
    agency = "agency"
    ops = "ops"
    reviewer = "reviewer"
    admin = "admin"


# Roles that belong to no agency or creator: the platform's own staff.
STAFF = (Role.ops, Role.reviewer, Role.admin)


class AccountError(ValueError):
    """A request about accounts that cannot be done; the message says what was wrong, with the value."""


@dataclass(frozen=True)
class Principal:
    """Who is asking: what the API and the CLI decide every access by."""

    account_id: str
    role: Role
    agency_id: str | None = None
    creator_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin

    def owns_creator(self, creator_id: str | None) -> bool:
        return self.is_admin or (self.role is Role.creator and creator_id is not None
                                 and creator_id == self.creator_id)

    def owns_agency_item(self, agency_id: str | None) -> bool:
        """A channel, product or show of `agency_id` (None: the platform's own, admins only)."""
        return self.is_admin or (self.role is Role.agency and agency_id is not None and agency_id == self.agency_id)


# The command line acts as the operator of the machine it runs on, who holds the data dir and its keys anyway.
OPERATOR = Principal(account_id="operator", role=Role.admin)


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is {len(password)} characters long; use at least {MIN_PASSWORD}")
    return _hasher.hash(password)


def normal_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.fullmatch(email):
        raise AccountError(f"{email!r} is not an email address")
    return email


def create_account(session: Session, *, email: str, name: str, role: Role | str, password: str | None = None,
                   agency_id: str | None = None, creator_id: str | None = None) -> Account:
    """Add an account (not committed). A creator account names its creator, an agency account its agency; ops,
    reviewer and admin accounts name neither."""
    role = Role(role)
    email = normal_email(email)
    if role is Role.creator and not creator_id:
        raise AccountError("a creator account must name its creator (creator_id)")
    if role is Role.agency and not agency_id:
        raise AccountError("an agency account must name its agency (agency_id)")
    if role in STAFF and (agency_id or creator_id):
        raise AccountError(f"a {role} account belongs to no agency or creator")
    if role is not Role.creator and creator_id:
        raise AccountError(f"only a creator account names a creator, not a {role} account")
    if role is not Role.agency and agency_id:
        raise AccountError(f"only an agency account names an agency, not a {role} account")
    if creator_id and session.get(Creator, creator_id) is None:
        raise AccountError(f"creator {creator_id!r} does not exist")
    if agency_id and session.get(Agency, agency_id) is None:
        raise AccountError(f"agency {agency_id!r} does not exist")
    if session.exec(select(Account).where(Account.email == email)).first() is not None:
        raise AccountError(f"an account for {email!r} exists already")
    row = Account(email=email, name=name.strip() or email, role=str(role), agency_id=agency_id,
                  creator_id=creator_id, password_hash=hash_password(password) if password is not None else None)
    session.add(row)
    return row


def principal_of(account: Account) -> Principal:
    return Principal(account_id=account.id, role=Role(account.role), agency_id=account.agency_id,
                     creator_id=account.creator_id)


def issue_api_key(session: Session, *, account_id: str, name: str,
                  expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """A new key for the account (not committed): the row, and the key itself, which is never stored. A key with
    `expires_at` stops working then; None: until revoked."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(account_id=account_id, name=name, prefix=key[:len(KEY_PREFIX) + 6], key_hash=hash_secret(key),
                 expires_at=expires_at)
    session.add(row)
    return row, key


def account_for_api_key(session: Session, key: str, *, now: datetime | None = None) -> Account | None:
    if not key.startswith(KEY_PREFIX):
        return None
    row = session.exec(select(ApiKey).where(ApiKey.key_hash == hash_secret(key))).first()
    now = now or utcnow()
    if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    account = session.get(Account, row.account_id)
    if account is None or account.disabled:
        return None
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):  # not a write per request
        row.last_used_at = now
        session.add(row)
        session.commit()
    return account


def check_password(session: Session, *, email: str, password: str) -> Account | None:
    """The account if the password is its own; None otherwise (same answer for an unknown email)."""
    try:
        email = normal_email(email)
    except AccountError:
        return None
    account = session.exec(select(Account).where(Account.email == email)).first()
    if account is None or account.disabled or not account.password_hash:
        _hasher.hash("timing")  # an unknown email costs what a wrong password costs
        return None
    try:
        _hasher.verify(account.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    return account


def start_session(session: Session, *, account_id: str, now: datetime | None = None) -> str:
    """A new login session (committed); returns the token for the cookie."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    session.add(LoginSession(account_id=account_id, token_hash=hash_secret(token), created_at=now,
                             expires_at=now + SESSION_TTL))
    session.commit()
    return token


def account_for_session(session: Session, token: str, *, now: datetime | None = None) -> Account | None:
    row = session.exec(select(LoginSession).where(LoginSession.token_hash == hash_secret(token))).first()
    if row is None or row.expires_at <= (now or utcnow()):
        return None
    account = session.get(Account, row.account_id)
    return None if account is None or account.disabled else account


def end_sessions(session: Session, *, account_id: str) -> int:
    """End every login session of the account (not committed): its browsers are signed out at their next request.
    Returns how many were ended."""
    rows = list(session.exec(select(LoginSession).where(LoginSession.account_id == account_id)))
    for row in rows:
        session.delete(row)
    return len(rows)


def set_disabled(session: Session, *, account_id: str, disabled: bool) -> Account:
    """Disable an account (its sessions end, its API keys stop working) or enable it again (not committed)."""
    account = session.get(Account, account_id)
    if account is None:
        raise AccountError(f"account {account_id!r} does not exist")
    account.disabled = disabled
    session.add(account)
    if disabled:
        end_sessions(session, account_id=account_id)
    return account


def end_session(session: Session, token: str) -> None:
    row = session.exec(select(LoginSession).where(LoginSession.token_hash == hash_secret(token))).first()
    if row is not None:
        session.delete(row)
        session.commit()


def ensure_operator_key(session: Session, *, email: str = "operator@localhost") -> str:
    """An admin account for the machine's operator with a fresh API key (committed), for `studio up`: the stack
    writes the key into the data dir's keys folder, beside the policy key, for local tools and tests."""
    account = session.exec(select(Account).where(Account.email == email)).first()
    if account is None:
        account = create_account(session, email=email, name="Operator", role=Role.admin)
        session.flush()
    for old in session.exec(select(ApiKey).where(ApiKey.account_id == account.id, ApiKey.name == "studio up",
                                                 ApiKey.revoked_at == None)):  # noqa: E711 (SQL NULL)
        old.revoked_at = utcnow()
        session.add(old)
    _, key = issue_api_key(session, account_id=account.id, name="studio up")
    session.commit()
    return key
