"""stored absolute paths under the data directory become media store keys (relative, / separators)

A value outside the data directory is left as it is and reported (a warning per row); a value that is already
relative is left. The data directory is the `studio.data_dir` option that `studio.db.upgrade` sets, or, for
SQLite, the directory of the database file (where `studio` keeps it by default).

Revision ID: 0007_store_keys
Revises: 0006
Create Date: 2026-12-04 19:00:00
"""

import logging
import os
from pathlib import Path

import sqlalchemy as sa
from alembic import context, op

revision = '0007_store_keys'
down_revision = '0006'
branch_labels = None
depends_on = None

log = logging.getLogger("studio.migrations")

# (table, primary key, column): every column that names a file the platform keeps.
PATH_COLUMNS = [
    ("avatar", "id", "bundle_path"),
    ("consent", "id", "video_path"),
    ("segment", "id", "path"),
    ("segment", "id", "archive_path"),
    ("recording", "id", "path"),
]


def data_dir() -> Path | None:
    given = context.config.get_main_option("studio.data_dir")
    if given:
        return Path(given)
    url = op.get_bind().engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).parent
    return None


def to_key(value: str, roots: list[Path]) -> str | None:
    """The key of an absolute `value` inside one of `roots` (the data dir, lexical and resolved), else None."""
    p = Path(os.path.abspath(value))
    for root in roots:
        if root in p.parents:
            key = p.relative_to(root).as_posix()
            parts = key.split("/")
            if "\\" not in key and all(part not in ("", ".", "..") for part in parts):
                return key
    return None


def _convert(convert) -> None:
    bind = op.get_bind()
    for table, pk, column in PATH_COLUMNS:
        t = sa.table(table, sa.column(pk), sa.column(column))
        rows = bind.execute(sa.select(t.c[pk], t.c[column]).where(t.c[column].is_not(None))).all()
        for ident, value in rows:
            new = convert(table, ident, column, value)
            if new is not None and new != value:
                bind.execute(sa.update(t).where(t.c[pk] == ident).values({column: new}))


def upgrade() -> None:
    root = data_dir()
    if root is None:
        log.warning("0007_store_keys: the data directory is not known (set studio.data_dir): stored paths are left "
                    "as they are; run `studio db upgrade` with the install's settings")
        return
    roots = list(dict.fromkeys([Path(os.path.abspath(root)), Path(os.path.realpath(root))]))

    def convert(table, ident, column, value):
        if not value.startswith("/"):
            return None  # already a key (or a placeholder)
        key = to_key(value, roots)
        if key is None:
            log.warning("0007_store_keys: %s %s: %s %s is outside the data directory %s; left as it is",
                        table, ident, column, value, roots[0])
        return key

    _convert(convert)


def downgrade() -> None:
    root = data_dir()
    if root is None:
        return
    base = Path(os.path.abspath(root))
    _convert(lambda table, ident, column, value: None if value.startswith("/") or value == "-"
             else str(base / value))
