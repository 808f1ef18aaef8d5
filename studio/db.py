"""Engine and sessions; the schema is owned by Alembic migrations (studio/migrations)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
PG_CONNECT_TIMEOUT_S = 10
PG_LOCK_TIMEOUT_MS = 30_000


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            # WAL lets the API, workers and streamer read while one of them writes.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith("postgresql"):
        # Pre-ping drops connections a restarted server closed; recycle beats idle-timeouts of proxies between
        # hosts; connect_timeout turns an unreachable server into an error, not a hang; lock_timeout bounds a
        # wait on a row another process holds (a claim, a plan) instead of stalling a worker forever.
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, pool_timeout=30,
                             pool_recycle=1800,
                             connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "studio",
                                           "options": f"-c lock_timeout={PG_LOCK_TIMEOUT_MS}"})
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, *, data_dir: Path | None = None) -> None:
    """Bring the database at `url` to the newest schema; `data_dir` lets 0007_store_keys turn stored absolute
    paths under it into store keys (default for SQLite: the database file's directory)."""
    _ensure_sqlite_dir(url)  # `studio db upgrade` on a fresh data dir must not fail
    cfg = alembic_config(url)
    if data_dir is not None:
        cfg.set_main_option("studio.data_dir", str(data_dir).replace("%", "%%"))
    command.upgrade(cfg, "head")


class SchemaBehind(RuntimeError):
    """The database is not at the newest migration; `studio db upgrade` brings it there."""


def schema_revisions(engine: Engine) -> tuple[set[str], set[str]]:
    """(revisions the database is at, newest revisions the migrations define)."""
    heads = set(ScriptDirectory.from_config(alembic_config(str(engine.url))).get_heads())
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current, heads


def require_current_schema(engine: Engine) -> None:
    """Refuse to run a fleet role on a database that migrations have not reached; the fix is one command."""
    current, heads = schema_revisions(engine)
    if current != heads:
        at = ", ".join(sorted(current)) or "no schema"
        raise SchemaBehind(f"database {engine.url.render_as_string(hide_password=True)} is at {at}, the newest "
                           f"schema is {', '.join(sorted(heads))}: run `studio db upgrade` first")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def after_commit(s: Session, *, commit=None, rollback=None) -> None:
    """Run `commit()` once `s` commits, or `rollback()` if it rolls back instead; either way the other is dropped.
    For files that go with their rows: a file deleted before its row's delete commits would leave a row without
    its file when the commit fails (SQLite's lock timeout under load), and a file stored for a row never committed
    is removed (workers.ingest.voiceover)."""
    hooks = s.info.get("after_commit")
    if hooks is None:
        hooks = s.info["after_commit"] = {"commit": [], "rollback": []}

        def run(which):
            def hook(session):
                todo, hooks["commit"], hooks["rollback"] = list(hooks[which]), [], []
                for fn in todo:
                    try:
                        fn()
                    except Exception:  # noqa: BLE001 - a file left behind is logged, the commit stands
                        logging.getLogger("studio.db").exception("cleaning up after a %s", which)
            return hook

        event.listen(s, "after_commit", run("commit"))
        event.listen(s, "after_rollback", run("rollback"))
    if commit is not None:
        hooks["commit"].append(commit)
    if rollback is not None:
        hooks["rollback"].append(rollback)


def lock_row(session: Session, table: str, row_id: str, *, key: str = "id") -> None:
    """Hold `table`'s row whose `key` is `row_id` until the transaction ends, so a read-then-write on it
    (allocating a channel's next sequence numbers, claiming a segment, fencing on a lease) runs in one process at
    a time. PostgreSQL: a row lock (SELECT ... FOR UPDATE); SQLite: any write takes its single write lock until
    commit (pysqlite runs a lone SELECT outside the transaction, so reading first would not)."""
    if session.get_bind().dialect.name == "sqlite":
        session.exec(text(f"UPDATE {table} SET {key} = {key} WHERE {key} = :id").bindparams(id=row_id))
    else:
        session.exec(text(f"SELECT {key} FROM {table} WHERE {key} = :id FOR UPDATE").bindparams(id=row_id))


def lock_name(session: Session, name: str) -> None:
    """Hold a lock on `name` until the transaction ends, for work that has no row of its own to lock (archiving
    one show's segments in order). PostgreSQL: a transaction-scoped advisory lock keyed by a hash of the name,
    so other writers of the same rows are not held up; SQLite: its single write lock."""
    if session.get_bind().dialect.name == "sqlite":
        session.exec(text("UPDATE leader SET name = name WHERE name = :name").bindparams(name=name))
    else:
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        session.exec(text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=key))
