"""A real PostgreSQL 15 (Debian's `postgresql` package) for the tests: initdb into a temporary directory as the
unprivileged `postgres` user (initdb refuses root), a free loopback port, unix sockets in that directory, fsync
off; a template database migrated once, and one database per test copied from it (`CREATE DATABASE ... TEMPLATE`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
USER = "postgres"
TEMPLATE = "studio_tmpl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*argv: str | Path) -> list[str]:
    cmd = [str(a) for a in argv]
    return cmd if os.geteuid() != 0 else ["runuser", "-u", USER, "--", *cmd]


class PgServer:
    """One postgres process on 127.0.0.1:`port`, its data and sockets under `root`."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.data = root / "data"

    @classmethod
    def start(cls, *, options: str = "", hba: str | None = None) -> PgServer:
        """`options`: more `-c name=value` server settings; `hba`: pg_hba.conf in place of initdb's (trust)."""
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL 15 is not installed at {PG_BIN}: run `make setup` (apt package postgresql)")
        root = Path(tempfile.mkdtemp(prefix="studio-pg-"))
        if os.geteuid() == 0:
            pw = pwd.getpwnam(USER)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        server = cls(root, _free_port())
        subprocess.run(_as_postgres(PG_BIN / "initdb", "-D", server.data, "-U", USER, "--auth=trust",
                                    "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
                       check=True, capture_output=True, timeout=120)
        if hba is not None:
            (server.data / "pg_hba.conf").write_text(hba)
        opts = (f"-c listen_addresses=127.0.0.1 -p {server.port} -k {root} -c fsync=off -c synchronous_commit=off"
                " -c full_page_writes=off -c max_connections=300 -c shared_buffers=64MB " + options)
        subprocess.run(_as_postgres(PG_BIN / "pg_ctl", "-D", server.data, "-l", root / "log", "-o", opts,
                                    "-w", "-t", "60", "start"), check=True, capture_output=True, timeout=90)
        return server

    def stop(self) -> None:
        subprocess.run(_as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"),
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{db}"

    def execute(self, sql: str, db: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} dbname={db}", autocommit=True) as c:
            c.execute(sql)

    def create_database(self, *, template: str | None = TEMPLATE) -> str:
        """A new empty (or template-copied) database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        clause = f" TEMPLATE {template}" if template else ""
        for attempt in range(20):
            try:
                self.execute(f"CREATE DATABASE {name}{clause}")
                break
            except Exception as exc:  # the template is busy for a moment after another copy or its migration
                if "being accessed by other users" not in str(exc) or attempt == 19:
                    raise
                time.sleep(0.1)
        return self.url(name)

    def migrate_template(self) -> None:
        from studio.db import upgrade

        self.execute(f"CREATE DATABASE {TEMPLATE}")
        upgrade(self.url(TEMPLATE))
