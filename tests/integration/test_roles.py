"""The fleet roles as commands, really started: `studio api`, `studio worker`, `studio scheduler` and `studio
streamer` each start one role from the settings (here: a password-protected redis-server whose password comes
from a secrets directory), log JSON lines with role and host, and stop cleanly on SIGTERM. Before starting they
refuse, with exit 2 and the fix: missing keys (`studio keys init`), a relative data_dir, and a database behind the
newest migration (`studio db upgrade`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import STUDIO, require
from tests.media_helpers import free_port
from workers.stack.embedded import wait_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
PASSWORD = "r0le-test-redis-pw"


@pytest.fixture
def redis_server(tmp_path):
    require("redis-server")
    port = free_port()
    conf = tmp_path / "redis.conf"
    conf.write_text(f'requirepass "{PASSWORD}"\n')
    proc = subprocess.Popen(["redis-server", str(conf), "--bind", HOST, "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert wait_port(HOST, port, 10), "redis-server did not start"
        yield proc, port
    finally:
        _stop(proc, 10)


def _stop(proc: subprocess.Popen, timeout: float) -> int:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    # Every port free: the streamer role's ingest would otherwise bind the default 1936 and 8780, which another
    # suite running on the machine (or anything listening there) holds.
    env.update(STUDIO_DATA_DIR=str(tmp_path / "data"), STUDIO_API_PORT=str(free_port()),
               STUDIO_RTMP_PORT=str(free_port()), STUDIO_HTTP_PORT=str(free_port()), PYTHONUNBUFFERED="1",
               COLUMNS="200", **extra)
    return env


def _studio(env: dict, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([STUDIO, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def fleet_env(tmp_path, redis_server):
    """A data dir made ready by the real commands, and the redis password in a secrets directory."""
    _, port = redis_server
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "redis_password").write_text(PASSWORD + "\n")
    env = _env(tmp_path, STUDIO_REDIS_URL=f"redis://{HOST}:{port}/0", STUDIO_SECRETS_DIR=str(secrets))
    assert _studio(env, "keys", "init").returncode == 0
    assert _studio(env, "db", "upgrade").returncode == 0
    return env


def test_version_is_the_package_version():
    res = subprocess.run([STUDIO, "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == f"studio {version('ethical-clone-studio')}"


def test_missing_keys_stop_every_command_but_keys_init(tmp_path):
    env = _env(tmp_path)
    res = _studio(env, "api")
    assert res.returncode == 2
    [line] = [x for x in _json_lines(res.stdout) if x["level"] == "error"]
    assert "no policy key" in line["message"] and "run `studio keys init`" in line["message"]
    assert line["role"] == "api" and line["host"]
    res = _studio(env, "audit", "verify")
    assert res.returncode == 2 and "studio keys init" in " ".join(res.stderr.split())
    assert not (tmp_path / "data" / "keys" / "policy.key").exists(), "a command other than keys init made a key"
    assert _studio(env, "keys", "init").returncode == 0
    assert (tmp_path / "data" / "keys" / "policy.key").exists()


def test_a_role_refuses_a_relative_data_dir(tmp_path):
    env = {**_env(tmp_path), "STUDIO_DATA_DIR": "data"}
    res = _studio(env, "worker", "--queues", "render", cwd=tmp_path)
    assert res.returncode == 2
    message = " ".join(x["message"] for x in _json_lines(res.stdout))
    assert "data_dir 'data' is relative" in message and "set STUDIO_DATA_DIR to an absolute path" in message
    assert not (tmp_path / "data").exists()


def test_roles_refuse_a_database_behind_the_newest_schema(tmp_path):
    env = _env(tmp_path)
    assert _studio(env, "keys", "init").returncode == 0
    for role in ("api", "scheduler"):
        res = _studio(env, role)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "run `studio db upgrade` first" in res.stdout
    assert _studio(env, "db", "upgrade").returncode == 0


def test_an_unreachable_database_is_named_by_its_setting_never_its_url(tmp_path):
    password = "db-pass-never-shown-4711"
    env = {**_env(tmp_path), "STUDIO_DATABASE_URL": f"postgresql+psycopg://studio:{password}@127.0.0.1:{free_port()}/s"}
    assert _studio(env, "keys", "init").returncode == 0
    for args in (("db", "upgrade"), ("audit", "verify"), ("api",)):
        res = _studio(env, *args)
        out = res.stdout + res.stderr
        assert res.returncode == 2, out
        assert "database (setting database_url) cannot be reached" in " ".join(out.split()), out
        assert password not in out and "Traceback" not in out


def test_admin_commands_leave_a_shared_database_schema_to_db_upgrade(tmp_path, pg_server, redis_url):
    """On PostgreSQL (a fleet's) an admin command never migrates as a side effect; on SQLite (one host's) it does."""
    from sqlalchemy import create_engine, inspect

    url = pg_server.create_database(template=None)
    env = _env(tmp_path, STUDIO_DATABASE_URL=url, STUDIO_REDIS_URL=redis_url)  # the audit checkpoint's Redis
    assert _studio(env, "keys", "init").returncode == 0
    res = _studio(env, "audit", "verify")
    assert res.returncode == 2 and "run `studio db upgrade` first" in " ".join(res.stderr.split()), res.stderr
    engine = create_engine(url)
    assert not inspect(engine).get_table_names(), "the admin command made tables"
    assert _studio(env, "db", "upgrade").returncode == 0
    assert "segment" in inspect(engine).get_table_names()
    engine.dispose()
    res = _studio(env, "audit", "verify")
    assert res.returncode == 0 and "intact" in res.stdout, res.stdout + res.stderr


def test_a_worker_refuses_a_store_it_cannot_use(fleet_env, s3_server):
    env = {**fleet_env, "STUDIO_STORE__URL": "s3://studio-no-such-bucket/media",
           "STUDIO_STORE__ENDPOINT_URL": s3_server["endpoint_url"], "STUDIO_STORE__PATH_STYLE": "true",
           "STUDIO_STORE__ACCESS_KEY_ID": s3_server["access_key_id"],
           "STUDIO_STORE__SECRET_ACCESS_KEY": s3_server["secret_access_key"]}
    res = _studio(env, "worker", "--queues", "render")
    assert res.returncode == 2, res.stdout + res.stderr
    message = " ".join(x["message"] for x in _json_lines(res.stdout) if x["level"] == "error")
    assert "media store is not usable: store.url: bucket 'studio-no-such-bucket'" in message
    assert "does not exist" in message and s3_server["secret_access_key"] not in res.stdout + res.stderr


def _get(url: str, headers: dict | None = None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def test_api_role_answers_livez_and_readyz_and_logs_json(tmp_path, fleet_env, redis_server):
    redis_proc, _ = redis_server
    port = fleet_env["STUDIO_API_PORT"]
    base = f"http://{HOST}:{port}"
    out = (tmp_path / "api.out").open("w+")
    proc = subprocess.Popen([STUDIO, "api"], env=fleet_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_port(HOST, int(port), 60), (tmp_path / "api.out").read_text()
        status, headers, body = _get(f"{base}/livez", {"X-Request-ID": "req-from-proxy-1"})
        assert (status, body) == (200, {"status": "ok"})
        assert headers["x-request-id"] == "req-from-proxy-1"
        status, headers, body = _get(f"{base}/readyz")
        assert status == 200, body
        assert body["checks"] == {"database": {"status": "ok"}, "broker": {"status": "ok"}, "store": {"status": "ok"}}
        assert len(headers["x-request-id"]) == 32  # made when the caller sent none
        _stop(redis_proc, 10)
        status, _, body = _get(f"{base}/readyz")
        assert status == 503 and body["status"] == "not ready"
        assert body["checks"]["broker"] == {"status": "failed", "category": "unreachable"}
        assert body["checks"]["database"] == {"status": "ok"}
        status, _, health = _get(f"{base}/healthz")
        assert status == 503 and health == {"status": "degraded", "database": "ok", "redis": "error: unreachable",
                                         "store": "ok"}
        status, _, _ = _get(f"{base}/livez")
        assert status == 200  # liveness asks no dependency
    finally:
        # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught (exit status -15).
        assert _stop(proc, 30) in (0, -signal.SIGTERM)
    lines = _json_lines((tmp_path / "api.out").read_text())
    assert any(x["message"] == "Application shutdown complete." for x in lines)
    assert all(x["role"] == "api" and x["host"] and x["ts"] for x in lines)
    access = [x for x in lines if x["logger"] == "uvicorn.access"]
    assert any("/livez" in x["message"] and x.get("request_id") == "req-from-proxy-1" for x in access)
    assert any("/readyz" in x["message"] and "503" in x["message"] for x in access)
    assert PASSWORD not in (tmp_path / "api.out").read_text()


@pytest.mark.parametrize(("args", "ready"), [
    (["worker", "--queues", "render", "--concurrency", "1"], "render@"),
    (["scheduler"], "scheduler started"),
    (["streamer"], "streamer supervisor started"),
])
def test_role_starts_from_the_settings_and_stops_cleanly(tmp_path, fleet_env, args, ready):
    path = tmp_path / "role.out"
    proc = subprocess.Popen([STUDIO, *args], env=fleet_env, stdout=path.open("w"), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None and ready not in path.read_text():
            time.sleep(0.3)
        assert ready in path.read_text(), path.read_text()
        time.sleep(1.5)  # a pass or two of its loop: a broker refusal (wrong password) would show here
    finally:
        assert _stop(proc, 60) == 0
    lines = _json_lines(path.read_text())
    assert all(x["role"] == args[0] and x["host"] for x in lines)
    assert not [x for x in lines if x["level"] in ("error", "critical")], lines
    assert PASSWORD not in path.read_text()
    if args[0] == "worker":
        assert any(x["message"].startswith("Connected to redis://:****@") for x in lines), lines
