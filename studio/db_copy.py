"""Copy a SQLite install's database into an empty PostgreSQL (`studio db copy --to URL`), checked row for row.

The target is brought to the newest schema first and must hold no rows. Tables are copied in foreign-key order
with their ids (the audit chain's ids and hashes included, so `studio audit verify` passes on the copy), in one
transaction on the target: each table's count and content hash are compared with the source's before it
commits, so a copy that does not match leaves the target as empty as it was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import JSON, Connection, Engine, Integer, Table, func, null, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

import studio.models  # noqa: F401  (registers the tables)
from studio.db import make_engine, upgrade

BATCH = 1000
Progress = Callable[[str, int, int], None]


class CopyError(RuntimeError):
    """The copy was refused or did not match; the target holds nothing of it."""


@dataclass(frozen=True)
class TableCopy:
    table: str
    rows: int
    sha256: str


def masked(url: str) -> str:
    """The URL as it may be shown: never its password."""
    return make_url(url).render_as_string(hide_password=True)


def _reason(exc: BaseException, url: str | None = None) -> str:
    """The driver's first line of complaint, without the password should a driver ever repeat it."""
    text_ = str(getattr(exc, "orig", None) or exc).strip()
    line = text_.splitlines()[0] if text_ else type(exc).__name__
    password = make_url(url).password if url else None
    return line.replace(password, "***") if password else line


def tables() -> list[Table]:
    """Every table of the schema, parents before children."""
    return list(SQLModel.metadata.sorted_tables)


def _schema_revision(conn: Connection) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _canonical(value) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return value


def _json_columns(table: Table) -> list:
    return [c for c in table.columns if isinstance(c.type, JSON) and c.nullable]


def _rows(conn: Connection, table: Table) -> Iterator[dict]:
    """Rows in key order; a nullable JSON column also says whether it holds SQL NULL (`_null_<name>`), which the
    driver reads as None just like the JSON value null."""
    flags = [c.is_(None).label(f"_null_{c.name}") for c in _json_columns(table)]
    stmt = select(table, *flags).order_by(*table.primary_key.columns)
    for row in conn.execution_options(yield_per=BATCH).execute(stmt).mappings():
        yield dict(row)


def content_hash(conn: Connection, table: Table) -> tuple[int, str]:
    """(rows, sha256 of the rows in key order, each value as Python reads it back): equal on both databases
    when every row came across unchanged."""
    digest, n = hashlib.sha256(), 0
    for row in _rows(conn, table):
        digest.update(json.dumps([_canonical(v) for v in row.values()], sort_keys=True, default=str).encode())
        digest.update(b"\n")
        n += 1
    return n, digest.hexdigest()


def _insertable(table: Table, row: dict) -> dict:
    """The row as the target takes it: SQL NULL stays SQL NULL, the JSON value null stays JSON null."""
    out = {c.name: row[c.name] for c in table.columns}
    for c in _json_columns(table):
        if row[f"_null_{c.name}"]:
            out[c.name] = null()
    return out


def _insert(conn: Connection, table: Table, batch: list[dict]) -> None:
    try:
        conn.execute(table.insert(), batch)
    except SQLAlchemyError as exc:
        raise CopyError(f"table {table.name}: a row does not fit the target: {_reason(exc)}; "
                        "nothing was kept") from None


def _refuse_rows(conn: Connection, url: str) -> None:
    for table in tables():
        if conn.execute(select(func.count()).select_from(table)).scalar_one():
            raise CopyError(f"the target database {masked(url)} is not empty: table {table.name} holds rows; "
                            "copy only into an empty database")


def _reset_sequences(conn: Connection) -> None:
    """PostgreSQL hands out serial ids from a sequence that copied ids did not move: set it past the copied."""
    for table in tables():
        for col in table.primary_key.columns:
            if isinstance(col.type, Integer):
                seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                   {"t": table.name, "c": col.name}).scalar()
                if seq:
                    conn.execute(text(f"SELECT setval('{seq}', COALESCE((SELECT max({col.name}) FROM "
                                      f"{table.name}), 0) + 1, false)"))


def copy_database(source_url: str, target_url: str, *, progress: Progress | None = None) -> list[TableCopy]:
    """Copy every row of `source_url` into the empty PostgreSQL at `target_url`; return what was copied."""
    if not target_url.startswith("postgresql"):
        raise CopyError(f"--to must be a PostgreSQL URL (postgresql+psycopg://user:password@host:port/db), "
                        f"not {masked(target_url)}")
    source = make_engine(source_url)
    target = make_engine(target_url)
    try:
        try:
            with target.connect():
                pass
        except SQLAlchemyError as exc:
            raise CopyError(f"cannot reach the target database {masked(target_url)} (--to): "
                            f"{_reason(exc, target_url)}") from None
        with source.connect() as conn:
            revision = _schema_revision(conn)
        upgrade(target_url)
        with target.connect() as conn:
            if _schema_revision(conn) != revision:
                raise CopyError(f"the source database {masked(source_url)} is at schema {revision}, not the newest "
                                f"({_schema_revision(conn)}): run `studio db upgrade` on it first")
        return _copy(source, target, target_url, progress or (lambda *_: None))
    finally:
        source.dispose()
        target.dispose()


def _copy(source: Engine, target: Engine, target_url: str, progress: Progress) -> list[TableCopy]:
    try:
        return _copy_tables(source, target, target_url, progress)
    except SQLAlchemyError as exc:
        # e.g. a value SQLite kept that PostgreSQL refuses (a string longer than its column): nothing is kept.
        raise CopyError(f"copying into {masked(target_url)} failed, nothing was kept: {_reason(exc, target_url)}"
                        ) from None


def _copy_tables(source: Engine, target: Engine, target_url: str, progress: Progress) -> list[TableCopy]:
    done: list[TableCopy] = []
    with source.connect() as src, target.begin() as dst:
        _refuse_rows(dst, target_url)
        counts = {t.name: src.execute(select(func.count()).select_from(t)).scalar_one() for t in tables()}
        for table in tables():
            copied, batch = 0, []
            progress(table.name, 0, counts[table.name])
            for row in _rows(src, table):
                batch.append(_insertable(table, row))
                if len(batch) == BATCH:
                    _insert(dst, table, batch)
                    copied, batch = copied + len(batch), []
                    progress(table.name, copied, counts[table.name])
            if batch:
                _insert(dst, table, batch)
                copied += len(batch)
            progress(table.name, copied, counts[table.name])
        _reset_sequences(dst)
        for table in tables():
            want, got = content_hash(src, table), content_hash(dst, table)
            if want != got:
                raise CopyError(f"table {table.name} does not match after the copy (source {want[0]} rows, "
                                f"target {got[0]} rows, content hashes differ: {want[1] != got[1]}); "
                                "nothing was kept")
            done.append(TableCopy(table.name, want[0], want[1]))
    return done
