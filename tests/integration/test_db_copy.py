"""`studio db copy --to URL`: a SQLite install with rows in every table copied into an empty PostgreSQL, checked
row for row, the audit chain intact on the copy; a target with rows, and one that cannot be reached, refused."""

from __future__ import annotations

import subprocess
import uuid
import zlib
from datetime import datetime

import pytest
from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, func, insert, null, select
from sqlmodel import Session, SQLModel

from studio import audit, audit_keys
from studio.audit_checkpoint import CheckpointPlaces, StoreSlot
from studio.config import Settings
from studio.db import make_engine, session_scope, upgrade
from studio.db_copy import content_hash, tables
from studio.models import AuditEvent
from studio.store import FileStore
from tests.conftest import STUDIO, bind_audit_keys, studio_env
from tests.media_helpers import free_port

pytestmark = pytest.mark.integration


def _value(col, i: int, parents: dict[str, object]):
    if col.foreign_keys:
        return parents[next(iter(col.foreign_keys)).column.table.name]
    kind = type(col.type)
    if isinstance(col.type, JSON):
        # Null in row 1 of every table, and in row 0 of every other table (by name, not by how many came before).
        if col.nullable and (i % 2 or zlib.crc32(col.table.name.encode()) % 2 == 0):
            return None
        return {"n": i, "text": "ünïcode", "list": [1.5, None, "x"]}
    if issubclass(kind, Boolean):
        return bool(i % 2)
    if issubclass(kind, Integer):
        return 1000 + i
    if issubclass(kind, Float):
        return 0.1 + i
    if issubclass(kind, DateTime):
        return datetime(2026, 12, 4, 18, 30, 15, 123456 + i)
    value = f"{col.name}-{i}-{uuid.uuid4().hex}"
    return value[-col.type.length:] if getattr(col.type, "length", None) else value


def fill_every_table(engine) -> dict[str, int]:
    """Two rows in each table (one in a table keyed by its parent's id; the audit log: a real chain of events,
    signed with the audit keys bound to `engine`; its one-row table of unkeyed events: one row, none unkeyed),
    every column set, half the nullable JSON columns left NULL; returns the row counts."""
    parents: dict[str, object] = {}
    with engine.begin() as conn:
        for table in tables():
            if table.name == "auditevent":
                continue
            if table.name == "unkeyedauditevents":
                conn.execute(insert(table).values(id=1, last_id=0, migrated_at=datetime(2026, 12, 4, 18, 30)))
                continue
            # A table keyed by its parent's id (a channel's lease), or with one row per parent (a script's
            # voice-over), gets one row: the parent's.
            one = any(c.foreign_keys for c in table.primary_key.columns) or any(
                c.unique and c.foreign_keys for c in table.columns)
            for i in range(1 if one else 2):
                row = {c.name: _value(c, i, parents) for c in table.columns}
                # Row 1 holds the JSON value null in its nullable JSON columns, row 0 of the next table SQL NULL.
                row = {k: (null() if v is None and i == 0 else v) for k, v in row.items()}
                conn.execute(insert(table).values(**row))
                parents[table.name] = row[next(iter(table.primary_key.columns)).name]
    for i in range(5):
        with session_scope(engine) as s:
            audit.record(s, kind="consent.granted", subject_id=f"s{i}", data={"i": i, "note": "ünïcode"})
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in tables()}


def _copy(data, url: str) -> subprocess.CompletedProcess:
    return subprocess.run([STUDIO, "db", "copy", "--to", url], env=studio_env(data), capture_output=True,
                          text=True, timeout=300)


def test_copy_sqlite_into_an_empty_postgresql_then_refuse_a_second_copy(tmp_path, pg_server):
    data = tmp_path / "data"
    settings = Settings(data_dir=str(data))
    upgrade(settings.db_url)
    source = make_engine(settings.db_url)
    keyring = bind_audit_keys(source)
    counts = fill_every_table(source)
    assert set(counts) == set(SQLModel.metadata.tables) and all(
        n >= (1 if name in ("unkeyedauditevents", "channellease", "voiceover") else 2) for name, n in counts.items())
    target_url = pg_server.create_database(template=None)  # empty: the copy migrates it

    res = _copy(data, target_url)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{sum(counts.values())} rows in {len(counts)} tables match the source" in res.stdout

    target = make_engine(target_url)
    with source.connect() as src, target.connect() as dst:
        for table in tables():
            assert content_hash(dst, table) == content_hash(src, table), table.name
    no_checkpoint = CheckpointPlaces(shared=(StoreSlot(FileStore(tmp_path / "store")),))
    with Session(target) as s:
        events = s.exec(select(AuditEvent).order_by(AuditEvent.id)).scalars().all()
        assert [e.id for e in events] == [1, 2, 3, 4, 5]
        report = audit.verify_log(s, keyring=keyring, places=no_checkpoint)
        assert report.ok and report.events == 5, report.problems
    # The copy goes on as a live database: the next event links to the copied head under a fresh id.
    audit_keys.bind(target, keyring)
    with session_scope(target) as s:
        assert audit.record(s, kind="segment.aired", subject_id="after", data={}).id == 6
    with Session(target) as s:
        assert audit.verify_log(s, keyring=keyring, places=no_checkpoint).ok
    # SQL NULL stays SQL NULL and the JSON value null stays JSON null (IS NULL finds the same rows on both).
    sql_nulls = 0
    with source.connect() as src, target.connect() as dst:
        for table in tables():
            for col in (c for c in table.columns if isinstance(c.type, JSON) and c.nullable):
                def nulls(conn, table=table, col=col):
                    return conn.execute(select(func.count()).select_from(table).where(col.is_(None))).scalar_one()
                assert nulls(src) == nulls(dst), f"{table.name}.{col.name}"
                sql_nulls += nulls(src)
    assert 0 < sql_nulls < 2 * sum(1 for t in tables() for c in t.columns if isinstance(c.type, JSON) and c.nullable)

    again = _copy(data, target_url)
    assert again.returncode == 1
    assert "is not empty: table agency holds rows" in " ".join(again.stderr.split())
    with target.connect() as dst:
        assert dst.execute(select(func.count()).select_from(AuditEvent)).scalar_one() == 6  # nothing added
    source.dispose()
    target.dispose()


def test_copy_to_an_unreachable_database_is_refused_without_its_password(tmp_path):
    data = tmp_path / "data"
    upgrade(Settings(data_dir=str(data)).db_url)
    port = free_port()  # nothing listens there
    res = _copy(data, f"postgresql+psycopg://studio:s3cret-pw@127.0.0.1:{port}/studio")
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 1
    assert f"cannot reach the target database postgresql+psycopg://studio:***@127.0.0.1:{port}/studio" in out
    assert "s3cret-pw" not in out
