"""Accounts, passwords, API keys and login sessions (studio.accounts) on a real SQLite database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from studio.accounts import (
    OPERATOR,
    SESSION_TTL,
    AccountError,
    Principal,
    Role,
    account_for_api_key,
    account_for_session,
    check_password,
    create_account,
    end_session,
    ensure_operator_key,
    issue_api_key,
    start_session,
)
from studio.models import Account, Agency, ApiKey, Creator, LoginSession, utcnow


@pytest.fixture
def world(fresh_db):
    with Session(fresh_db, expire_on_commit=False) as s:
        agency, creator = Agency(name="A"), Creator(name="Ava")
        s.add_all([agency, creator])
        s.commit()
    return fresh_db, agency.id, creator.id


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"role": "creator"}, "must name its creator"),
    ({"role": "agency"}, "must name its agency"),
    ({"role": "ops", "agency_id": "AG"}, "belongs to no agency or creator"),
    ({"role": "reviewer", "creator_id": "CR"}, "belongs to no agency or creator"),
    ({"role": "agency", "agency_id": "AG", "creator_id": "CR"}, "only a creator account names a creator"),
    ({"role": "creator", "creator_id": "nope"}, "creator 'nope' does not exist"),
    ({"role": "agency", "agency_id": "nope"}, "agency 'nope' does not exist"),
    ({"role": "ops", "email": "not-an-email"}, "'not-an-email' is not an email address"),
    ({"role": "ops", "password": "short"}, "5 characters long; use at least 10"),
    ({"role": "wizard"}, "'wizard' is not a valid Role"),
])
def test_bad_accounts_are_refused_naming_the_problem(world, kwargs, words):
    engine, agency_id, creator_id = world
    kwargs = {k: {"AG": agency_id, "CR": creator_id}.get(v, v) for k, v in kwargs.items()}
    with Session(engine) as s, pytest.raises((AccountError, ValueError), match=words):
        create_account(s, **{"email": "x@example.com", "name": "X", **kwargs})


def test_password_is_hashed_with_argon2_and_checked(world):
    engine, agency_id, _ = world
    with Session(engine, expire_on_commit=False) as s:
        create_account(s, email="Bo@Example.com ", name="Bo", role=Role.agency, agency_id=agency_id,
                       password="correct horse battery")
        s.commit()
        row = s.exec(select(Account)).one()
        assert row.email == "bo@example.com" and row.password_hash.startswith("$argon2id$")
        assert "correct horse" not in row.password_hash
        assert check_password(s, email="BO@example.com", password="correct horse battery").id == row.id
        assert check_password(s, email="bo@example.com", password="wrong horse battery") is None
        assert check_password(s, email="nobody@example.com", password="correct horse battery") is None
        row.disabled = True
        s.commit()
        assert check_password(s, email="bo@example.com", password="correct horse battery") is None
        with pytest.raises(AccountError, match="exists already"):
            create_account(s, email="bo@example.com", name="Bo 2", role=Role.ops)


def test_api_keys_are_stored_hashed_and_can_be_revoked(world):
    engine, _, creator_id = world
    with Session(engine, expire_on_commit=False) as s:
        account = create_account(s, email="ava@example.com", name="Ava", role="creator", creator_id=creator_id)
        s.flush()
        row, key = issue_api_key(s, account_id=account.id, name="sync")
        s.commit()
        stored = s.exec(select(ApiKey)).one()
        assert key.startswith("ecs_") and len(key) > 40 and key not in stored.key_hash and stored.prefix == key[:10]
        assert account_for_api_key(s, key).id == account.id
        assert s.get(ApiKey, row.id).last_used_at is not None
        assert account_for_api_key(s, key + "x") is None and account_for_api_key(s, "Bearer nothing") is None
        stored.revoked_at = utcnow()
        s.commit()
        assert account_for_api_key(s, key) is None


def test_login_sessions_expire_and_end(world):
    engine, _, _ = world
    with Session(engine, expire_on_commit=False) as s:
        account = create_account(s, email="ops@example.com", name="Ops", role="ops", password="long enough pw")
        s.commit()
        now = utcnow()
        token = start_session(s, account_id=account.id, now=now)
        assert s.exec(select(LoginSession)).one().token_hash != token
        assert account_for_session(s, token, now=now + SESSION_TTL - timedelta(seconds=1)).id == account.id
        assert account_for_session(s, token, now=now + SESSION_TTL) is None
        end_session(s, token)
        assert account_for_session(s, token, now=now) is None


def test_operator_key_rotates_on_each_start(world):
    engine, _, _ = world
    with Session(engine) as s:
        first = ensure_operator_key(s)
        second = ensure_operator_key(s)
        assert account_for_api_key(s, first) is None  # the previous start's key is revoked
        assert account_for_api_key(s, second).role == "admin"
        assert len(s.exec(select(Account)).all()) == 1


def test_principal_ownership_rules():
    creator = Principal(account_id="a", role=Role.creator, creator_id="c1")
    agency = Principal(account_id="b", role=Role.agency, agency_id="g1")
    ops = Principal(account_id="o", role=Role.ops)
    assert creator.owns_creator("c1") and not creator.owns_creator("c2") and not creator.owns_creator(None)
    assert agency.owns_agency_item("g1") and not agency.owns_agency_item("g2")
    assert not agency.owns_agency_item(None)  # the platform's own channels are the admins'
    assert not ops.owns_creator("c1") and not ops.owns_agency_item("g1")
    assert OPERATOR.owns_creator("c1") and OPERATOR.owns_agency_item(None)
