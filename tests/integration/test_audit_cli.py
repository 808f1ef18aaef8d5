"""`studio audit verify` (POLICY C6) on a real data dir: intact after a checkpoint; an edited event, and the
last events deleted, are each found and named, with exit code 1. On SQLite and on PostgreSQL, with a redis-server
holding the checkpoint (its copy in the store, here the data dir; more in test_audit_checkpoint_shared.py)."""

from __future__ import annotations

import json
import subprocess

import pytest
from sqlalchemy import text

from studio import audit
from studio.config import Settings
from studio.db import session_scope, upgrade
from studio.keys import init_all_keys
from studio.runtime import build_runtime
from tests.conftest import STUDIO, studio_env

pytestmark = pytest.mark.integration


def _cli(data, url, redis_url, *args) -> tuple[int, dict]:
    env = studio_env(data) | {"STUDIO_DATABASE_URL": url, "STUDIO_REDIS_URL": redis_url}
    res = subprocess.run([STUDIO, "audit", *args], env=env, capture_output=True, text=True, timeout=120)
    return res.returncode, (json.loads(res.stdout) if "--json" in args else {"out": res.stdout})


def _logged(tmp_path, db_url, redis_url, kinds: list[str]):
    """A data dir with its keys, a migrated database and an audit log of one event per kind: (data dir, runtime)."""
    data = tmp_path / "data"
    settings = Settings(data_dir=str(data), database_url=db_url, services={"redis_url": redis_url})
    init_all_keys(settings)
    upgrade(settings.db_url)
    rt = build_runtime(settings)
    with session_scope(rt.engine) as s:
        for i, kind in enumerate(kinds):
            audit.record(s, kind=kind, subject_id=f"x{i}", data={"i": i})
    return data, rt


def test_audit_verify_finds_edits_and_a_deleted_tail(tmp_path, db_url, redis_url):
    data, rt = _logged(tmp_path, db_url, redis_url, ["consent.granted" if i % 2 else "segment.aired" for i in range(6)])
    assert _cli(data, db_url, redis_url, "checkpoint")[0] == 0
    code, report = _cli(data, db_url, redis_url, "verify", "--json")
    assert code == 0 and report["ok"] and report["events"] == 6
    assert report["checkpoint_from"] == "Redis key studio:audit:checkpoint"
    assert (data / "audit" / "checkpoint.json").exists()  # the copy in the store (the data dir)

    with rt.engine.begin() as db:  # straight SQL, as someone with the database would edit it
        db.execute(text("UPDATE auditevent SET data = :d WHERE id = 3"), {"d": json.dumps({"i": 99})})
    code, report = _cli(data, db_url, redis_url, "verify", "--json")
    assert code == 1 and any(p.startswith("event 3:") for p in report["problems"])

    with rt.engine.begin() as db:
        db.execute(text("UPDATE auditevent SET data = :d WHERE id = 3"), {"d": json.dumps({"i": 2})})
        db.execute(text("DELETE FROM auditevent WHERE id >= 5"))  # the tail: invisible to the chain alone
    code, report = _cli(data, db_url, redis_url, "verify", "--json")
    assert code == 1 and any("tail deleted" in p or "missing" in p for p in report["problems"]), report


def test_the_report_shows_what_an_edited_row_holds_as_it_is(tmp_path, db_url, redis_url):
    """Whoever edits the log writes what the report quotes: data with square brackets in it is shown as it is.
    Before, `[/]` in it crashed `studio audit verify` with a traceback in place of its list of problems, and
    `[conceal]` would hide the rest of the line."""
    data, rt = _logged(tmp_path, db_url, redis_url, ["segment.aired"] * 3)
    with rt.engine.begin() as db:
        db.execute(text("UPDATE auditevent SET data = :d WHERE id = 2"), {"d": json.dumps("[/] [conceal]hidden")})
    env = studio_env(data) | {"STUDIO_DATABASE_URL": db_url, "STUDIO_REDIS_URL": redis_url}
    res = subprocess.run([STUDIO, "audit", "verify"], env={**env, "COLUMNS": "80"}, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("tampered: 3 events"), lines
    # SQLite hands the edited value back as the string, PostgreSQL as its JSON text (quoted): either, whole.
    assert any(line.startswith("  event 2: data '") and "[/] [conceal]hidden" in line
               and line.endswith("' is not a JSON object (edited)") for line in lines), res.stdout
