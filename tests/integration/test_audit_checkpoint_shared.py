"""The audit checkpoint moves with the leadership (issue 16): it lives in Redis (a real redis-server) and the
shared media store (a directory), so a checkpoint written on one host is what `studio audit verify` reads on
another host that has no local file; an older checkpoint written after a newer one (a deposed leader) does not
replace it; a forged MAC in Redis is reported; a Redis that lost its data falls back on the store's copy; a
Redis that cannot be reached stops the command naming `services.redis_url`. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess

import pytest
from sqlalchemy import text
from sqlmodel import Session

from studio import audit
from studio.audit_checkpoint import STORE_KEY
from studio.config import Settings
from studio.db import session_scope
from studio.keys import init_all_keys
from studio.runtime import build_runtime
from tests.conftest import STUDIO, studio_env
from tests.media_helpers import free_port
from workers.plan.scheduler import checkpoint_audit
from workers.provenance.audit_checkpoint import REDIS_KEY, RedisSlot, checkpoint_places, redis_client

pytestmark = pytest.mark.integration


class Host:
    """One host of the fleet: its own data directory (keys copied from the control host), the shared database,
    Redis and store."""

    def __init__(self, data, db_url: str, redis_url: str, store) -> None:
        self.data, self.db_url, self.redis_url, self.store = data, db_url, redis_url, store
        self.settings = Settings(data_dir=str(data), database_url=db_url, services={"redis_url": redis_url},
                                 store={"url": f"file://{store}"})
        self.rt = build_runtime(self.settings)

    def cli(self, *args: str, redis_url: str | None = None) -> tuple[int, dict | str]:
        env = studio_env(self.data) | {"STUDIO_DATABASE_URL": self.db_url, "STUDIO_STORE__URL": f"file://{self.store}",
                                       "STUDIO_REDIS_URL": redis_url or self.redis_url}
        res = subprocess.run([STUDIO, "audit", *args], env=env, capture_output=True, text=True, timeout=120)
        return res.returncode, (json.loads(res.stdout) if "--json" in args and res.returncode < 2
                                else res.stdout + res.stderr)

    def record(self, n: int) -> list[int]:
        with session_scope(self.rt.engine) as s:
            return [audit.record(s, kind="consent.granted", subject_id=f"c{i}", data={"i": i}).id for i in range(n)]

    def checkpoint(self, places=None) -> audit.Checkpoint:
        with Session(self.rt.engine) as s:
            return audit.checkpoint(s, self.rt.audit_keys, places or checkpoint_places(self.rt), legacy_key=self.rt.key)

    def verify(self) -> audit.AuditReport:
        with Session(self.rt.engine) as s:
            return audit.verify_log(s, keyring=self.rt.audit_keys, places=checkpoint_places(self.rt),
                                    legacy_key=self.rt.key)


@pytest.fixture
def hosts(tmp_path, db_url, redis_url) -> tuple[Host, Host]:
    """`core` (the leading scheduler's host) and `render-a` (the standby's), sharing database, Redis and store."""
    store = tmp_path / "store"
    store.mkdir()
    init_all_keys(Settings(data_dir=str(tmp_path / "core")))
    shutil.copytree(tmp_path / "core" / "keys", tmp_path / "render-a" / "keys")
    core, standby = (Host(tmp_path / name, db_url, redis_url, store) for name in ("core", "render-a"))
    yield core, standby
    for host in (core, standby):
        host.rt.engine.dispose()


def test_a_checkpoint_written_on_one_host_shows_a_deleted_tail_on_another(hosts):
    core, standby = hosts
    ids = core.record(6)
    code, out = core.cli("checkpoint")
    assert code == 0, out
    assert not core.rt.data.audit_checkpoint.exists() and not standby.rt.data.audit_checkpoint.exists()
    code, report = standby.cli("verify", "--json")
    assert code == 0 and report["ok"] and report["events"] == 6 and report["warnings"] == [], report
    assert report["checkpoint_from"] == f"Redis key {REDIS_KEY}"

    with core.rt.engine.begin() as db:  # straight SQL, as someone with the database would cut the tail
        db.execute(text("DELETE FROM auditevent WHERE id > :id"), {"id": ids[3]})
    code, report = standby.cli("verify", "--json")
    assert code == 1 and report["problems"] == [
        f"events {ids[4]}..{ids[5]} are missing: the log ends at event {ids[3]} but the checkpoint of "
        f"{json.loads(redis_client(core.settings).get(REDIS_KEY))['at']} saw it reach event {ids[5]} (tail deleted)"]

    # Redis restarted without persistence: the store's copy still shows the cut, and says so.
    redis_client(core.settings).flushall()
    report = standby.verify()
    assert report.checkpoint_from == f"store key {STORE_KEY}" and "tail deleted" in report.problems[0]
    assert report.warnings[0].startswith(f"no audit checkpoint in Redis key {REDIS_KEY}")


def test_an_older_checkpoint_written_after_a_newer_one_does_not_replace_it(hosts, caplog):
    core, standby = hosts
    core.record(3)
    old = core.checkpoint()
    newer_ids = core.record(2)
    newer = standby.checkpoint()  # the new leader, on another host
    assert newer.last_id == newer_ids[-1]

    # The deposed leader wakes up with its older view and writes it: refused by the compare-and-set.
    key = core.rt.audit_keys.key("control")
    assert not checkpoint_places(core.rt).write(old.document(key), old.position)
    stored = json.loads(redis_client(core.settings).get(REDIS_KEY))
    assert stored["last_id"] == newer.last_id and json.loads(core.rt.store.read(STORE_KEY)) == stored

    # The same race inside `audit.checkpoint`: another leader moves the checkpoint on between this pass's read and
    # its write. The pass is refused and logs it; the scheduler's pass goes on.
    class Overtaken(RedisSlot):
        def put(self, document: bytes, position: int) -> bool:
            later = standby.record(1)[-1]
            assert standby.checkpoint().last_id == later
            return super().put(document, position)

    places = checkpoint_places(core.rt)
    slot = places.shared[0]
    places = type(places)(shared=(Overtaken(slot.client, setting=slot.setting), places.shared[1]))
    with pytest.raises(audit.CheckpointRefused, match="holds a later one"):
        core.checkpoint(places)
    with caplog.at_level(logging.WARNING, logger="studio.scheduler"):
        checkpoint_audit(core.rt, places)
    assert any("not written" in r.getMessage() and "kept the later one" in r.getMessage() for r in caplog.records)
    assert standby.verify().ok


def test_a_forged_mac_in_redis_is_reported(hosts):
    core, standby = hosts
    ids = core.record(4)
    core.checkpoint()
    with core.rt.engine.begin() as db:
        db.execute(text("DELETE FROM auditevent WHERE id = :id"), {"id": ids[-1]})
    with core.rt.engine.connect() as db:
        head = db.execute(text("SELECT hash FROM auditevent WHERE id = :id"), {"id": ids[-2]}).scalar_one()
    # Someone with Redis's password hides the cut: a checkpoint of the shorter log, without the control key.
    forged = audit.Checkpoint(last_id=ids[-2], last_hash=head, count=3, at="2026-01-01T00:00:00")
    redis_client(core.settings).set(REDIS_KEY, forged.document(b"a key that is not the control key"))
    code, report = standby.cli("verify", "--json")
    assert code == 1 and report["problems"][0] == (
        f"audit checkpoint in Redis key {REDIS_KEY}: MAC does not match the control key (forged, edited or made "
        "with another key)")
    assert "tail deleted" in report["problems"][1] and report["checkpoint_from"] == f"store key {STORE_KEY}"
    code, out = core.cli("checkpoint")  # and the evidence stays where it is
    assert code == 1 and "MAC does not match" in out
    assert json.loads(redis_client(core.settings).get(REDIS_KEY))["last_id"] == ids[-2]


def test_a_redis_that_cannot_be_reached_stops_the_checkpoint_and_verify_reads_the_store_copy(hosts):
    """Writing needs Redis (its compare-and-set decides); verifying does not: after `studio up` stopped, or with
    Redis away, verify reads the store's copy and says that Redis was not reached, naming the setting."""
    core, _ = hosts
    ids = core.record(3)
    core.checkpoint()  # into Redis and the store
    down = f"redis://:hunter2-not-printed@127.0.0.1:{free_port()}/0"
    code, out = core.cli("checkpoint", redis_url=down)
    assert code == 2, out
    assert "services.redis_url (127.0.0.1:" in out and "cannot be reached" in out
    assert "hunter2" not in out and "Traceback" not in out
    code, report = core.cli("verify", "--json", redis_url=down)
    assert code == 0 and report["ok"], report
    assert report["checkpoint_from"] == "store key audit/checkpoint.json"
    [warning] = [w for w in report["warnings"] if "services.redis_url" in w]
    assert "cannot be reached" in warning and "read from the other places only" in warning
    assert "hunter2" not in json.dumps(report)
    # ... and still sees a deleted tail by the store's copy.
    with core.rt.engine.begin() as db:
        db.execute(text("DELETE FROM auditevent WHERE id = :id"), {"id": ids[-1]})
    code, report = core.cli("verify", "--json", redis_url=down)
    assert code == 1 and any("(tail deleted)" in p for p in report["problems"]), report


def test_the_local_file_of_an_older_release_is_read_until_the_next_checkpoint(hosts):
    core, standby = hosts
    core.record(3)
    shared = core.checkpoint()
    core.rt.data.audit_checkpoint.write_bytes(core.rt.store.read(STORE_KEY))  # as an older release kept it
    redis_client(core.settings).delete(REDIS_KEY)
    core.rt.store.delete(STORE_KEY)
    report = core.verify()
    assert report.ok and report.checkpoint_from == f"local file {core.rt.data.audit_checkpoint}"
    assert "writes it to Redis key" in report.warnings[0]
    assert core.checkpoint().last_id == shared.last_id
    report = standby.verify()
    assert report.ok and report.warnings == [] and report.checkpoint_from == f"Redis key {REDIS_KEY}"


def test_redis_keeps_the_document_the_store_keeps(hosts):
    core, _ = hosts
    core.record(2)
    core.checkpoint()
    raw = redis_client(core.settings).get(REDIS_KEY)
    assert raw == core.rt.store.read(STORE_KEY) == (core.store / STORE_KEY).read_bytes()
