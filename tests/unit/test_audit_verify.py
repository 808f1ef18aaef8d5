"""`studio audit verify` (POLICY C6): every edit, deletion, reordering or insertion is found, tail included.

The log is tampered with through raw SQL on the driver's own connection (sqlite3, psycopg), as someone with the
database would do it; every test runs on SQLite and on PostgreSQL."""

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select

from studio import audit, audit_keys
from studio.audit_checkpoint import STORE_KEY, CheckpointPlaces, StoreSlot
from studio.db import session_scope
from studio.models import AuditEvent
from studio.store import FileStore

WHERE = f"store key {STORE_KEY}"


@pytest.fixture
def engine(fresh_db):
    return fresh_db  # every role's audit keys are bound to it (see `keys`)


def keys(engine) -> audit_keys.AuditKeyring:
    return audit_keys.bound(engine)


@pytest.fixture
def db_file(fresh_db):
    """The database as its owner sees it: raw SQL on the driver's connection (see `tamper`, `row`)."""
    return fresh_db


@pytest.fixture
def cp_path(tmp_path) -> Path:
    """Where the checkpoint lands: its key in a media store (a directory; Redis and the copies in
    tests/integration/test_audit_checkpoint_shared.py)."""
    return tmp_path / "store" / STORE_KEY


def places(cp_path: Path) -> CheckpointPlaces:
    return CheckpointPlaces(shared=(StoreSlot(FileStore(cp_path.parents[1])),))


def record_events(engine, n: int = 6) -> list[int]:
    ids = []
    for i in range(n):
        with session_scope(engine) as s:
            ev = audit.record(s, kind="segment.aired" if i % 2 else "consent.granted", subject_id=f"sub-{i}",
                              data={"i": i, "note": "ünïcode ok"})
            ids.append(ev.id)
    return ids


def checkpoint(engine, cp_path: Path) -> audit.Checkpoint:
    with Session(engine) as s:
        return audit.checkpoint(s, keys(engine), places(cp_path))


def verify(engine, cp_path: Path, keyring: audit_keys.AuditKeyring | None = None) -> audit.AuditReport:
    with Session(engine) as s:
        return audit.verify_log(s, keyring=keyring or keys(engine), places=places(cp_path))


class RawSQL:
    """A DB-API connection outside SQLAlchemy; statements are written with `?` and sent in the driver's style."""

    def __init__(self, engine) -> None:
        self.conn = engine.raw_connection()
        self.pg = engine.dialect.name == "postgresql"

    def execute(self, sql: str, args: tuple = ()):
        cur = self.conn.cursor()
        cur.execute(sql.replace("?", "%s") if self.pg else sql, args)
        return cur

    def __enter__(self) -> "RawSQL":
        return self

    def __exit__(self, exc_type, *_) -> None:
        (self.conn.rollback if exc_type else self.conn.commit)()
        self.conn.close()


def tamper(db_file, *statements: tuple[str, tuple]) -> None:
    with RawSQL(db_file) as conn:
        for sql, args in statements:
            conn.execute(sql, args)


def row(db_file, id_: int) -> tuple:
    """One event as text (time and data included), as it would be written back by hand."""
    with RawSQL(db_file) as conn:
        return tuple(conn.execute("SELECT CAST(at AS TEXT), kind, subject_id, CAST(data AS TEXT), prev_hash, hash "
                                  "FROM auditevent WHERE id = ?", (id_,)).fetchone())


@pytest.fixture
def log(engine, cp_path) -> list[int]:
    """Six committed events and a checkpoint of their head."""
    ids = record_events(engine)
    checkpoint(engine, cp_path)
    return ids


def only_problems(report: audit.AuditReport) -> list[str]:
    assert not report.ok
    return report.problems


# --- intact -------------------------------------------------------------------------------------
def test_intact_log_passes(engine, db_file, cp_path, log):
    report = verify(engine, cp_path)
    assert report.ok and report.problems == [] and report.warnings == []
    assert report.events == len(log)
    assert report.head_hash == row(db_file, log[-1])[5]


def test_events_after_the_checkpoint_still_pass(engine, cp_path, log):
    record_events(engine, 3)
    report = verify(engine, cp_path)
    assert report.ok and report.events == len(log) + 3


def test_checkpoint_file_holds_the_head_and_a_mac(engine, cp_path, log):
    raw = json.loads(cp_path.read_text())
    assert set(raw) == {"last_id", "last_hash", "count", "at", "mac"}
    assert raw["last_id"] == log[-1] and raw["count"] == len(log)
    assert not list(cp_path.parent.glob("*.part"))  # written through a temp file, renamed onto its name


def test_empty_log_verifies_and_checkpoints(engine, cp_path):
    cp = checkpoint(engine, cp_path)
    assert (cp.last_id, cp.count, cp.last_hash) == (None, 0, audit.GENESIS)
    report = verify(engine, cp_path)
    assert report.ok and report.events == 0 and report.head_hash == audit.GENESIS


def test_record_does_not_need_a_checkpoint(engine, cp_path):
    record_events(engine, 2)
    assert not cp_path.exists()


def test_missing_checkpoint_is_a_warning_not_a_crash(engine, cp_path):
    record_events(engine, 3)
    report = verify(engine, cp_path)
    assert report.ok and report.events == 3
    assert len(report.warnings) == 1 and "cannot check for deleted tail events" in report.warnings[0]


# --- tampering ----------------------------------------------------------------------------------
def test_edited_data_is_detected(engine, db_file, cp_path, log):
    tamper(db_file, ("UPDATE auditevent SET data = ? WHERE id = ?", ('{"i": 99}', log[2])))
    assert only_problems(verify(engine, cp_path)) == [
        f"event {log[2]}: content does not match its hash (edited or forged)"]


def test_edited_kind_is_detected(engine, db_file, cp_path, log):
    tamper(db_file, ("UPDATE auditevent SET kind = 'nothing.happened' WHERE id = ?", (log[1],)))
    assert only_problems(verify(engine, cp_path)) == [
        f"event {log[1]}: content does not match its hash (edited or forged)"]


def test_data_that_is_not_json_is_reported_not_raised(engine, db_file, cp_path, log):
    if engine.dialect.name == "postgresql":
        # PostgreSQL's json and timestamp columns refuse such values: the tamper itself fails, nothing changes.
        import psycopg

        with pytest.raises(psycopg.DataError, match="json"):
            tamper(db_file, ("UPDATE auditevent SET data = 'garbage{' WHERE id = ?", (log[3],)))
        with pytest.raises(psycopg.DataError, match="timestamp"):
            tamper(db_file, ("UPDATE auditevent SET at = 'a day' WHERE id = ?", (log[4],)))
        assert verify(engine, cp_path).ok
        return
    tamper(db_file, ("UPDATE auditevent SET data = 'garbage{' WHERE id = ?", (log[3],)),
           ("UPDATE auditevent SET at = 'yesterday' WHERE id = ?", (log[4],)))
    problems = only_problems(verify(engine, cp_path))
    assert any(p.startswith(f"event {log[3]}: data 'garbage{{'") for p in problems)
    assert any(p.startswith(f"event {log[4]}: timestamp 'yesterday'") for p in problems)


def test_deleted_middle_event_is_detected(engine, db_file, cp_path, log):
    tamper(db_file, ("DELETE FROM auditevent WHERE id = ?", (log[2],)))
    problems = only_problems(verify(engine, cp_path))
    assert problems[0] == (f"event {log[3]}: previous hash does not match event {log[1]}; "
                           f"event {log[2]} is missing (deleted)")
    assert f"event {log[-1]}: 1 of the 6 events up to it" in problems[1]


def test_deleted_first_events_are_detected(engine, db_file, cp_path, log):
    tamper(db_file, ("DELETE FROM auditevent WHERE id IN (?, ?)", (log[0], log[1])))
    problems = only_problems(verify(engine, cp_path))
    assert problems[0] == (f"event {log[2]}: is the first event but links to an earlier one that is gone "
                           "(events before it deleted)")


def test_deleted_first_event_is_detected_without_a_checkpoint(engine, db_file, cp_path):
    ids = record_events(engine, 4)
    tamper(db_file, ("DELETE FROM auditevent WHERE id = ?", (ids[0],)))
    report = verify(engine, cp_path)
    assert not report.ok and report.problems[0].startswith(f"event {ids[1]}: is the first event")


def test_deleted_tail_is_detected_by_the_checkpoint(engine, db_file, cp_path, log):
    tamper(db_file, ("DELETE FROM auditevent WHERE id >= ?", (log[-2],)))
    report = verify(engine, cp_path)
    # The chain that is left is whole: only the checkpoint can tell.
    assert report.events == len(log) - 2
    assert only_problems(report) == [
        f"events {log[-2]}..{log[-1]} are missing: the log ends at event {log[-3]} but the checkpoint "
        f"of {json.loads(cp_path.read_text())['at']} saw it reach event {log[-1]} (tail deleted)"]


def test_deleted_tail_then_new_events_is_detected(engine, db_file, cp_path, log):
    # Cut the tail, then let the platform record more: the checkpointed event's id now holds another event.
    tamper(db_file, ("DELETE FROM auditevent WHERE id >= ?", (log[-2],)))
    record_events(engine, 3)
    problems = only_problems(verify(engine, cp_path))
    at = json.loads(cp_path.read_text())["at"]
    if engine.dialect.name == "postgresql":  # its sequence never hands out an id twice: the head is just gone
        assert problems == [f"event {log[-1]}: the head checkpointed at {at} is gone (deleted)"]
        return
    assert problems == [f"event {log[-1]}: hash differs from the checkpoint of {at} (the chain was rewritten)"]


def test_whole_log_deleted_is_detected(engine, db_file, cp_path, log):
    tamper(db_file, ("DELETE FROM auditevent", ()))
    report = verify(engine, cp_path)
    assert report.events == 0
    assert only_problems(report)[0].startswith(f"events 1..{log[-1]} are missing")


def test_swapped_rows_are_detected(engine, db_file, cp_path, log):
    a, b = log[2], log[3]
    ra, rb = row(db_file, a), row(db_file, b)
    sql = "UPDATE auditevent SET at = ?, kind = ?, subject_id = ?, data = ?, prev_hash = ?, hash = ? WHERE id = ?"
    park = "UPDATE auditevent SET hash = ? WHERE id = ?"  # hash is UNIQUE
    tamper(db_file, (park, ("x", a)), (park, ("y", b)), (sql, (*rb, a)), (sql, (*ra, b)))
    problems = only_problems(verify(engine, cp_path))
    assert f"event {a}: links to event {b}, not to event {log[1]} before it (inserted or reordered)" in problems
    assert f"event {b}: links to event {log[1]}, not to event {a} before it (inserted or reordered)" in problems
    assert any(p.startswith(f"event {b}: recorded at") and p.endswith("(reordered)") for p in problems)
    assert f"event {log[4]}: links to event {a}, not to event {b} before it (inserted or reordered)" in problems


def test_forged_row_with_a_made_up_hash_is_detected(engine, db_file, cp_path, log):
    last = row(db_file, log[-1])
    tamper(db_file, ("INSERT INTO auditevent (id, at, kind, subject_id, data, prev_hash, hash) "
                     "VALUES (?, ?, 'consent.granted', 'sub-x', '{}', ?, ?)",
                     (log[-1] + 1, last[0], last[5], "f" * 64)))
    assert only_problems(verify(engine, cp_path)) == [
        f"event {log[-1] + 1}: content does not match its hash (edited or forged)"]


def forged_event(db_file, after: int) -> tuple:
    """A well-formed event that links to event `after`, with its hash computed as the platform would."""
    from datetime import datetime

    at_text, *_, prev = row(db_file, after)
    at = datetime.fromisoformat(at_text)
    data = {"forged": True}
    return (at_text, "consent.granted", "sub-forged", json.dumps(data), prev,
            audit.event_hash(prev, at, "consent.granted", "sub-forged", data))


def test_forged_row_slipped_into_the_middle_is_detected(engine, db_file, cp_path, log):
    # Make room after event 3 by moving the later ids up, then insert a correctly hashed event there.
    moves = [("UPDATE auditevent SET id = ? WHERE id = ?", (i + 100, i)) for i in reversed(log[3:])]
    tamper(db_file, *moves, ("INSERT INTO auditevent (id, at, kind, subject_id, data, prev_hash, hash) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", (log[3], *forged_event(db_file, log[2]))))
    problems = only_problems(verify(engine, cp_path))
    assert problems[0] == f"event {log[3]} consent.granted: has no MAC, and no event predates migration 0009 (forged)"
    assert problems[1] == f"event {log[3] + 100}: links to event {log[2]}, not to event {log[3]} before it " \
                          "(inserted or reordered)"
    assert f"event {log[-1]}: the head checkpointed" in problems[-1]


def test_forged_row_with_the_chain_recomputed_after_it_is_caught_by_macs_and_the_checkpoint(engine, db_file,
                                                                                              cp_path, log):
    # The strongest attack on a bare chain: rewrite every hash after the forgery so all links hold again. The
    # events after it keep their MACs, which were made over their old hashes.
    from datetime import datetime

    with RawSQL(db_file) as conn:
        rows = conn.execute("SELECT id, CAST(at AS TEXT), kind, subject_id, CAST(data AS TEXT), mac_role, mac "
                            "FROM auditevent WHERE id >= ? ORDER BY id", (log[3],)).fetchall()
        prev = conn.execute("SELECT hash FROM auditevent WHERE id = ?", (log[2],)).fetchone()[0]
        conn.execute("DELETE FROM auditevent WHERE id >= ?", (log[3],))
        forged = [(log[3], rows[0][1], "consent.revoked", "sub-forged", "{}", None, None)]
        shifted = [(id_ + 1, *rest) for id_, *rest in rows[:-1]]  # the last real event drops off the end
        for id_, at, kind, subject_id, data, mac_role, mac in forged + shifted:
            h = audit.event_hash(prev, datetime.fromisoformat(at), kind, subject_id, json.loads(data))
            conn.execute("INSERT INTO auditevent (id, at, kind, subject_id, data, prev_hash, hash, mac_role, mac) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (id_, at, kind, subject_id, data, prev, h, mac_role, mac))
            prev = h
    with Session(engine) as s:
        assert audit.verify_chain(list(s.exec(select(AuditEvent).order_by(AuditEvent.id)))) == []
    kinds = {id_ + 1: (kind, role) for id_, _, kind, _, _, role, _ in rows[:-1]}
    assert only_problems(verify(engine, cp_path)) == [
        f"event {log[3]} consent.revoked: has no MAC, and no event predates migration 0009 (forged)",
        *(f"event {i} {kind}: MAC does not match the {role} key (forged)" for i, (kind, role) in kinds.items()),
        f"event {log[-1]}: hash differs from the checkpoint of {json.loads(cp_path.read_text())['at']} "
        "(the chain was rewritten)"]


# --- the checkpoint itself ----------------------------------------------------------------------
def test_forged_checkpoint_is_reported(engine, db_file, cp_path, log):
    # Cut the tail and forge a checkpoint that matches the shorter log, without the control key.
    tamper(db_file, ("DELETE FROM auditevent WHERE id = ?", (log[-1],)))
    raw = json.loads(cp_path.read_text())
    raw.update(last_id=log[-2], last_hash=row(db_file, log[-2])[5], count=len(log) - 1)
    cp_path.write_text(json.dumps(raw))
    assert only_problems(verify(engine, cp_path)) == [
        f"audit checkpoint in {WHERE}: MAC does not match the control key (forged, edited or made with another key)"]


def test_checkpoint_made_with_another_key_is_reported(engine, cp_path, log):
    other = audit_keys.AuditKeyring({**keys(engine).keys, "control": b"another key, not the platform's"})
    problems = only_problems(verify(engine, cp_path, other))
    assert f"audit checkpoint in {WHERE}: MAC does not match the control key" in problems[-1]


def test_unreadable_checkpoint_is_reported(engine, cp_path, log):
    cp_path.write_text("{not json")
    problems = only_problems(verify(engine, cp_path))
    assert problems[0].startswith(f"audit checkpoint in {WHERE}: unreadable")


def test_checkpoint_moves_forward_with_the_log(engine, cp_path, log):
    more = record_events(engine, 2)
    cp = checkpoint(engine, cp_path)
    assert (cp.last_id, cp.count) == (more[-1], len(log) + 2)
    assert verify(engine, cp_path).ok


def test_checkpoint_sees_only_committed_events(engine, cp_path, log):
    with session_scope(engine) as s:
        audit.record(s, kind="segment.aired", subject_id="in-flight")
        cp = audit.checkpoint(s, keys(engine), places(cp_path))
        s.rollback()
    assert cp.last_id == log[-1]
    assert verify(engine, cp_path).ok


def test_checkpoint_refuses_to_sign_over_a_deleted_tail(engine, db_file, cp_path, log):
    before = cp_path.read_text()
    tamper(db_file, ("DELETE FROM auditevent WHERE id = ?", (log[-1],)))
    with pytest.raises(audit.AuditError, match=f"event {log[-1]}: the head checkpointed"):
        checkpoint(engine, cp_path)
    assert cp_path.read_text() == before  # the evidence is kept


def test_checkpoint_refuses_to_sign_over_a_broken_link_since_the_last_one(engine, db_file, cp_path, log):
    more = record_events(engine, 3)
    tamper(db_file, ("DELETE FROM auditevent WHERE id = ?", (more[1],)))
    with pytest.raises(audit.AuditError, match=f"event {more[2]}: previous hash does not match"):
        checkpoint(engine, cp_path)


def test_first_checkpoint_checks_the_whole_log(engine, db_file, cp_path):
    ids = record_events(engine, 4)
    tamper(db_file, ("UPDATE auditevent SET data = '{}' WHERE id = ?", (ids[1],)))
    with pytest.raises(audit.AuditError, match=f"event {ids[1]}: content does not match"):
        checkpoint(engine, cp_path)
    assert not cp_path.exists()


def test_checkpoint_refuses_a_forged_previous_checkpoint(engine, cp_path, log):
    cp_path.write_text(cp_path.read_text().replace('"count": 6', '"count": 5'))
    with pytest.raises(audit.AuditError, match="MAC does not match"):
        checkpoint(engine, cp_path)


def test_checkpoint_refuses_when_events_before_the_last_one_were_deleted(engine, db_file, cp_path, log):
    # Deleting the first event leaves every link since the last checkpoint whole: the count shows it.
    record_events(engine, 2)
    tamper(db_file, ("DELETE FROM auditevent WHERE id = ?", (log[0],)))
    with pytest.raises(audit.AuditError, match=f"event {log[-1]}: 1 of the 6 events up to it"):
        checkpoint(engine, cp_path)
