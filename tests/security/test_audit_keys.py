"""Audit integrity (issue 15): each event carries a MAC made with the key of the role that writes its kind, so a
host with the database but without the control key (a render or streaming host) cannot add a consent event that
`studio audit verify` accepts. On SQLite and on PostgreSQL, with the keys `studio keys init` makes, and runtimes
built as each role's process builds its own."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess

import pytest
from alembic import command
from sqlalchemy import text
from sqlmodel import Session, select

from studio import audit, audit_keys
from studio.audit_checkpoint import STORE_KEY
from studio.audit_keys import KIND_ROLES, ROLES, AuditKeyError
from studio.config import Settings
from studio.db import alembic_config, make_engine, session_scope, upgrade
from studio.keys import init_all_keys, load_key
from studio.models import AuditEvent, utcnow
from studio.runtime import AUDIT_ROLES_ENV, build_runtime
from tests.conftest import STUDIO, studio_env
from workers.provenance.audit_checkpoint import REDIS_KEY, checkpoint_places, redis_client


@pytest.fixture
def settings(tmp_path, db_url, redis_url) -> Settings:
    """A data dir with every key `studio keys init` makes, on the test's database (newest schema) and a
    redis-server of its own (where the checkpoint lives, with its copy in the store: the data dir)."""
    settings = Settings(data_dir=str(tmp_path / "data"), database_url=db_url, services={"redis_url": redis_url})
    init_all_keys(settings)
    return settings


def runtime(settings: Settings, *roles: str):
    """The runtime a process of `roles` builds (a render worker: render; the control host: all)."""
    return build_runtime(settings, audit_roles=roles or ROLES)


def verify(rt, *, legacy_key: bytes | None = None) -> audit.AuditReport:
    with Session(rt.engine) as s:
        return audit.verify_log(s, keyring=rt.audit_keys, places=checkpoint_places(rt), legacy_key=legacy_key)


def checkpoint(rt, *, legacy_key: bytes | None = None) -> audit.Checkpoint:
    with Session(rt.engine) as s:
        return audit.checkpoint(s, rt.audit_keys, checkpoint_places(rt), legacy_key=legacy_key)


def append_raw(engine, *, kind: str, mac_role: str | None, key: bytes | None, subject_id: str = "creator-x") -> int:
    """An event appended straight to the database, as anyone who can write to it could: linked to the head with a
    correct hash, and with `key` a MAC made with that key (else none)."""
    with Session(engine) as s:
        head = s.exec(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
        prev = head.hash if head else audit.GENESIS
        at, data = utcnow(), {"scope": "everything, forever"}
        digest = audit.event_hash(prev, at, kind, subject_id, data)
        ev = AuditEvent(at=at, kind=kind, subject_id=subject_id, data=data, prev_hash=prev, hash=digest,
                        mac_role=mac_role, mac=audit_keys.event_mac(key, digest) if key else None)
        s.add(ev)
        s.commit()
        return ev.id


def record_genuine(settings: Settings) -> int:
    """Every kind in the table, each recorded by a runtime holding only the key of a role that writes it (a kind
    of two roles, once by each); returns how many events."""
    n = 0
    for role in ROLES:
        rt = runtime(settings, role)
        with session_scope(rt.engine) as s:
            for kind in (k for k, roles in KIND_ROLES.items() if role in roles):
                assert audit.record(s, kind=kind, subject_id=f"{role}-{kind}", data={"n": n}).mac_role == role
                n += 1
        rt.engine.dispose()
    return n


# --- (a) a consent forged on a render host ------------------------------------------------------------
@pytest.mark.parametrize("claimed", ["control", "render"])
def test_consent_forged_with_the_render_key_after_a_checkpoint_is_reported(settings, claimed):
    control, render = runtime(settings), runtime(settings, "render")
    with session_scope(control.engine) as s:
        audit.record(s, kind="consent.granted", subject_id="c1", data={"scope": "beauty"})
    with session_scope(render.engine) as s:
        audit.record(s, kind="segment.rendered", subject_id="seg-1")
    checkpoint(control)
    assert verify(control).ok

    # The render host holds the database's credentials and its own key: it links the forgery to the head, with
    # the hash right, and MACs it with the only audit key it has.
    forged = append_raw(render.engine, kind="consent.granted", mac_role=claimed,
                        key=render.audit_keys.key("render"))
    report = verify(control)
    assert not report.ok and report.events == 3
    if claimed == "control":
        assert report.problems == [f"event {forged} consent.granted: MAC does not match the control key (forged)"]
    else:
        assert report.problems == [f"event {forged} consent.granted: signed as render, but only the control role "
                                   "writes consent.granted (forged)"]
    with Session(control.engine) as s:  # the chain alone, as the audit log was checked before, finds nothing
        assert audit.verify_chain(list(s.exec(select(AuditEvent).order_by(AuditEvent.id)))) == []


def test_a_render_event_rewritten_into_a_consent_is_reported(settings):
    render = runtime(settings, "render")
    with session_scope(render.engine) as s:
        ev = audit.record(s, kind="segment.rendered", subject_id="seg-1")
    with render.engine.begin() as db:  # the genuine MAC and role kept, kind and hash rewritten to match
        digest = audit.event_hash(audit.GENESIS, ev.at, "consent.granted", "seg-1", {})
        db.execute(text("UPDATE auditevent SET kind = 'consent.granted', hash = :h WHERE id = :id"),
                   {"h": digest, "id": ev.id})
    assert verify(runtime(settings)).problems == [
        f"event {ev.id} consent.granted: signed as render, but only the control role writes consent.granted (forged)"]


# --- (b) a role's process signs only its own kinds -------------------------------------------------------
@pytest.mark.parametrize("role", ["render", "stream", "ingest", "archive"])
def test_a_process_without_the_control_key_cannot_record_a_consent(settings, role):
    """POLICY C6: a render or streaming process, without the control key, cannot record a consent event."""
    rt = runtime(settings, role)
    assert rt.audit_keys.roles == (role,)
    with pytest.raises(AuditKeyError, match=rf"cannot record consent\.granted: only the control role may write it, "
                                            rf"and this process holds the audit key of {role}"):
        with session_scope(rt.engine) as s:
            audit.record(s, kind="consent.granted", subject_id="c1")
    with Session(rt.engine) as s:
        assert s.exec(select(AuditEvent)).all() == []


def test_the_role_command_decides_which_keys_the_runtime_loads(settings, monkeypatch):
    # What `studio worker --queues render` leaves for the runtime its tasks build (workers.runtime.runtime()).
    monkeypatch.setenv(AUDIT_ROLES_ENV, "render")
    rt = build_runtime(settings)
    assert rt.audit_keys.roles == ("render",)
    with session_scope(rt.engine) as s:
        audit.record(s, kind="segment.rendered", subject_id="seg-1")
        with pytest.raises(AuditKeyError, match="cannot record show.created"):
            audit.record(s, kind="show.created", subject_id="show-1")
    monkeypatch.setenv(AUDIT_ROLES_ENV, "render,nonsense")
    with pytest.raises(ValueError, match="unknown audit role"):
        build_runtime(settings)


def test_an_unknown_kind_is_refused(settings):
    rt = runtime(settings)
    with pytest.raises(AuditKeyError, match=r"unknown audit event kind 'consent\.granted_forever': add it to "
                                            r"KIND_ROLES in studio/audit_keys.py"):
        with session_scope(rt.engine) as s:
            audit.record(s, kind="consent.granted_forever", subject_id="c1")


def test_an_engine_without_keys_records_nothing(db_url):
    engine = make_engine(db_url)  # not a runtime's: no keys bound
    try:
        with pytest.raises(AuditKeyError, match="no audit keys are bound"):
            with session_scope(engine) as s:
                audit.record(s, kind="consent.granted", subject_id="c1")
    finally:
        engine.dispose()


def test_a_role_command_needs_its_own_audit_key_only(tmp_path):
    """`studio worker --queues render` on a host with the render key and no other audit key passes the key check
    (it stops at the schema, not migrated here); without the render key it stops naming it."""
    data = tmp_path / "data"
    init_all_keys(Settings(data_dir=str(data)))
    for role in ROLES:
        if role != "render":
            (data / "keys" / f"audit-{role}.key").unlink()
    env = studio_env(data)

    def start(*args: str) -> str:
        res = subprocess.run([STUDIO, *args], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stdout + res.stderr
        return " ".join((res.stdout + res.stderr).split())

    assert "run `studio db upgrade` first" in start("worker", "--queues", "render")
    assert "no stream audit key" in start("streamer")
    assert "no control audit key" in start("scheduler")
    assert "no archive audit key" in start("worker", "--queues", "render,publish")
    (data / "keys" / "audit-render.key").unlink()
    assert "no render audit key" in start("worker", "--queues", "render")


# --- (c) genuine events of every role ------------------------------------------------------------------
def test_genuine_events_of_every_role_verify_intact(settings):
    n = record_genuine(settings)
    control = runtime(settings)
    checkpoint(control)
    report = verify(control)
    assert report.ok and report.problems == [] and report.warnings == [], report
    assert report.events == n == sum(len(roles) for roles in KIND_ROLES.values())


def test_verify_needs_every_role_key(settings):
    record_genuine(settings)
    with pytest.raises(AuditKeyError, match="holds no render audit key"):
        verify(runtime(settings, "control", "stream"))


def test_the_checkpoint_is_maced_with_the_control_key(settings):
    control = runtime(settings)
    cp = checkpoint(control)
    raw = json.loads(redis_client(settings).get(REDIS_KEY))
    assert raw["mac"] == cp.mac(control.audit_keys.key("control"))
    assert raw["mac"] != cp.mac(load_key(settings)), "still MACed with the policy key, which render hosts hold"
    assert json.loads(control.store.read(STORE_KEY)) == raw


def test_a_checkpoint_forged_with_the_policy_key_is_reported(settings):
    # The policy key (render, publish and streamer hosts) made checkpoints before the role keys. A host holding it,
    # Redis's password and the store forges one now to hide a deleted tail: in the shared places, which came after
    # the role keys, its MAC is wrong outright; as the local file of an older release, it reaches past the events
    # from before migration 0009 (none here).
    control, policy = runtime(settings), load_key(settings)
    with session_scope(control.engine) as s:
        for i in range(3):
            audit.record(s, kind="consent.granted", subject_id=f"c{i}")
    checkpoint(control)
    with control.engine.begin() as db:
        db.execute(text("DELETE FROM auditevent WHERE id = 3"))
    with Session(control.engine) as s:
        head = s.get(AuditEvent, 2)
    cp = audit.Checkpoint(last_id=2, last_hash=head.hash, count=2, at=utcnow().isoformat())
    forged = cp.document(policy)
    redis_client(settings).set(REDIS_KEY, forged)
    control.store.put_bytes(STORE_KEY, forged)
    report = verify(control, legacy_key=policy)
    assert report.problems == [f"audit checkpoint in {where}: MAC does not match the control key (forged, edited or "
                               "made with another key)"
                               for where in (f"Redis key {REDIS_KEY}", f"store key {STORE_KEY}")]
    with pytest.raises(audit.AuditError, match="MAC does not match"):
        checkpoint(control, legacy_key=policy)

    redis_client(settings).delete(REDIS_KEY)
    control.store.delete(STORE_KEY)
    control.data.audit_checkpoint.write_bytes(forged)
    report = verify(control, legacy_key=policy)
    assert report.problems == [f"audit checkpoint in local file {control.data.audit_checkpoint}: MACed with the "
                               "policy key, as only checkpoints from before migration 0009 were, yet it reaches "
                               "event 2, past event 0, the last one from then (forged)"]
    with pytest.raises(audit.AuditError, match="MACed with the policy key"):
        checkpoint(control, legacy_key=policy)


# --- (d) unkeyed events: only those from before migration 0009 ----------------------------------------------
def test_an_unkeyed_event_on_a_log_begun_with_keys_is_reported(settings):
    control = runtime(settings)
    with session_scope(control.engine) as s:
        audit.record(s, kind="consent.granted", subject_id="c1")
    checkpoint(control)
    forged = append_raw(control.engine, kind="consent.granted", mac_role=None, key=None)
    assert verify(control).problems == [
        f"event {forged} consent.granted: has no MAC, and no event predates migration 0009 (forged)"]


def _legacy_log(url: str, policy_key: bytes, checkpoint_path) -> list[int]:
    """Four events as the platform recorded them before migration 0009 (hash chain, no MAC), and a checkpoint
    of their head MACed with the policy key, as it was then."""
    command.upgrade(alembic_config(url), "0008")
    engine = make_engine(url)
    prev, ids = audit.GENESIS, []
    with engine.begin() as db:
        for i in range(4):
            at, kind, data = utcnow(), "consent.granted" if i % 2 else "segment.aired", {"i": i}
            digest = audit.event_hash(prev, at, kind, f"old-{i}", data)
            row = db.execute(text("INSERT INTO auditevent (at, kind, subject_id, data, prev_hash, hash) "
                                  "VALUES (:at, :kind, :sub, :data, :prev, :hash) RETURNING id"),
                             {"at": at.isoformat(sep=" ", timespec="microseconds"), "kind": kind, "sub": f"old-{i}",
                              "data": json.dumps(data), "prev": prev, "hash": digest})
            ids.append(row.scalar_one())
            prev = digest
    engine.dispose()
    body = json.dumps({"at": utcnow().isoformat(), "count": 4, "last_hash": prev, "last_id": ids[-1]},
                      sort_keys=True, separators=(",", ":"))
    checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint_path.write_text(json.dumps({**json.loads(body), "mac": hmac.new(policy_key, body.encode(),
                                                                                hashlib.sha256).hexdigest()}))
    return ids


@pytest.mark.parametrize("engine_kind", ["sqlite", "postgresql"])
def test_migration_0009_keeps_older_events_as_unkeyed_and_no_later_ones(tmp_path, engine_kind, request, redis_url):
    if engine_kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'studio.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database(template=None)
    settings = Settings(data_dir=str(tmp_path / "data"), database_url=url, services={"redis_url": redis_url})
    init_all_keys(settings)
    policy = load_key(settings)
    cp_path = settings.data_path / "audit-checkpoint.json"
    old = _legacy_log(url, policy, cp_path)

    upgrade(url)
    control = runtime(settings)
    with Session(control.engine) as s:
        assert [e.mac for e in s.exec(select(AuditEvent))] == [None] * 4
    report = verify(control, legacy_key=policy)
    assert report.ok, report.problems
    assert report.warnings == [
        f"4 event(s) up to event {old[-1]} are unkeyed (from before migration 0009): their hash chain is checked, "
        "not who wrote them",
        f"audit checkpoint read from local file {cp_path}, where releases before the fleet kept it; the next leader "
        f"pass of the scheduler, or `studio audit checkpoint`, writes it to Redis key {REDIS_KEY} and store key "
        f"{STORE_KEY}",
        f"audit checkpoint in local file {cp_path} is MACed with the policy key (written before the role keys); the "
        "next checkpoint (the scheduler's, or `studio audit checkpoint`) MACs it with the control key"]
    assert report.checkpoint_from == f"local file {cp_path}"

    # The platform goes on with keys; the next checkpoint moves on from the old one, with the control key, to the
    # shared places, where verify reads it from then on.
    with session_scope(control.engine) as s:
        audit.record(s, kind="consent.revoked", subject_id="old-1")
    checkpoint(control, legacy_key=policy)
    report = verify(control)
    assert report.ok and len(report.warnings) == 1 and report.events == 5
    assert report.checkpoint_from == f"Redis key {REDIS_KEY}"

    # An unkeyed event after the boundary is a forgery, and so is moving the boundary over it.
    forged = append_raw(control.engine, kind="consent.granted", mac_role=None, key=None)
    assert verify(control).problems == [f"event {forged} consent.granted: has no MAC, yet comes after event "
                                        f"{old[-1]}, the last one from before migration 0009 (forged)"]
    with control.engine.begin() as db:
        db.execute(text("UPDATE unkeyedauditevents SET last_id = :id"), {"id": forged})
    assert verify(control).problems == [f"event {forged - 1} consent.revoked: carries a MAC, yet is not after event "
                                        f"{forged}, the last one migration 0009 found without a MAC (table "
                                        "unkeyedauditevents edited)"]
    with control.engine.begin() as db:
        db.execute(text("DELETE FROM unkeyedauditevents"))
    problems = verify(control).problems
    assert [p.split(":")[0] for p in problems] == [f"event {i} {k}" for i, k in zip(
        [*old, forged], ["segment.aired", "consent.granted"] * 2 + ["consent.granted"], strict=True)]
    control.engine.dispose()

    command.downgrade(alembic_config(url), "0008")  # and back: the columns and the table go, the events stay
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    with engine.connect() as db:
        assert db.execute(text("SELECT last_id FROM unkeyedauditevents")).scalar_one() == forged
    engine.dispose()


def test_a_consent_checked_on_an_ingest_worker_is_granted_by_the_control_side_only(settings):
    """The consent check runs on the ingest queue, but ingest hosts never hold the control key: the worker records
    the check (`consent.checked`, ingest key) and the consent allows nothing until the API or the scheduler (control)
    grants it, with the control key's event."""
    from datetime import timedelta

    from studio.consent import consent_problem
    from studio.models import Consent
    from tests.conftest import FULL_SCOPE, db_show
    from workers.consent.grant import finalize_checked

    ingest = runtime(settings, "ingest")
    ids = db_show(ingest.engine)
    now = utcnow()
    with session_scope(ingest.engine) as s:
        base = s.get(Consent, ids["consent"])
        checked = Consent(creator_id=base.creator_id, avatar_id=base.avatar_id, signed_name="Ava", statement="x" * 30,
                          statement_sha256="-", starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=1),
                          scope=FULL_SCOPE, status="checked")
        s.add(checked)
        audit.record(s, kind="consent.checked", subject_id=checked.id, data={})
        with pytest.raises(AuditKeyError):
            audit.record(s, kind="consent.granted", subject_id=checked.id, data={})
    with session_scope(ingest.engine) as s:
        assert "is checked" in consent_problem(s.get(Consent, checked.id), at=utcnow())
    with pytest.raises(AuditKeyError):  # the ingest worker cannot finalize either
        finalize_checked(ingest, checked.id)

    control = runtime(settings.model_copy(update={"consent": settings.consent.model_copy(update={"review": "auto"})}),
                      "control")
    assert [c.id for c in finalize_checked(control, checked.id)] == [checked.id]
    with session_scope(control.engine) as s:
        assert s.get(Consent, checked.id).status == "granted"
        granted = s.exec(select(AuditEvent).where(AuditEvent.kind == "consent.granted",
                                                  AuditEvent.subject_id == checked.id)).one()
        assert granted.mac_role == "control"
    assert finalize_checked(control, checked.id) == []  # once
    assert verify(runtime(settings, *ROLES)).ok
