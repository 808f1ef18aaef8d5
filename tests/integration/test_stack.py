"""`studio up`: every service starts on loopback, answers, and stops cleanly on SIGTERM; a port in use
is a clear error at once, not a hang."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import time
import urllib.request

import pytest
import redis

from tests.conftest import STUDIO, served, studio_env
from tests.media_helpers import free_port
from workers.streamer.nginx import accepts

pytestmark = pytest.mark.integration


def _ports() -> dict[str, int]:
    return {"api": free_port(), "redis": free_port(), "rtmp": free_port(), "http": free_port()}


def test_port_in_use_is_a_clear_error(tmp_path):
    ports = _ports()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports["api"]))
        busy.listen()
        started = time.monotonic()
        res = subprocess.run([STUDIO, "up"], env={**studio_env(tmp_path / "data", **ports), "COLUMNS": "200"},
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert f"port already in use: api 127.0.0.1:{ports['api']}" in " ".join(res.stderr.split())
    assert time.monotonic() - started < 30
    assert not accepts("127.0.0.1", ports["redis"]), "a service was left running after the refusal"


def test_up_serves_and_stops_every_child_on_sigterm(tmp_path):
    ports = _ports()
    data = tmp_path / "data"
    proc = subprocess.Popen([STUDIO, "up"], env=studio_env(data, **ports), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        body = served(proc, f"http://127.0.0.1:{ports['api']}/healthz", timeout=90)
        health = body and json.loads(body)
        assert health == {"status": "ok", "database": "ok", "redis": "ok", "store": "ok"}, \
            proc.stderr.read() if proc.poll() else ""
        for name in ("rtmp", "http", "redis"):
            assert accepts("127.0.0.1", ports[name]), f"{name} port {ports[name]} not listening"
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/healthz", timeout=2) as r:
            assert r.status == 200
        # The embedded redis wants the password kept in data/keys (0600); without it a client is refused.
        pw_file = data / "keys" / "redis.password"
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=ports["redis"], socket_timeout=5).ping()
        url = f"redis://:{pw_file.read_text().strip()}@127.0.0.1:{ports['redis']}/0"
        # The workers are real Celery workers on the three queues, reachable through the embedded redis.
        ping = subprocess.run([str(STUDIO).replace("studio", "celery"), "-A", "workers.app", "inspect", "ping",
                               "--timeout", "10"], env={**studio_env(data, **ports), "STUDIO_REDIS_URL": url},
                              capture_output=True, text=True, timeout=60)
        for queue in ("ingest", "render.cpu", "publish"):
            assert f"{queue}@" in ping.stdout, ping.stdout + ping.stderr
        # Each role's log in data/logs is JSON lines naming the role; no line shows the redis password.
        for role, name in (("api", "api"), ("worker", "worker-render.cpu"), ("scheduler", "scheduler")):
            lines = [json.loads(x) for x in (data / "logs" / f"{name}.log").read_text().splitlines()
                     if x.startswith("{")]
            assert lines and all(line["role"] == role and line["host"] for line in lines), name
        assert pw_file.read_text().strip() not in "".join(p.read_text() for p in (data / "logs").glob("*.log"))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, proc.stderr.read()
    for name, port in ports.items():
        assert not accepts("127.0.0.1", port), f"{name} still listening on {port} after SIGTERM"
    left = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True)
    assert left.stdout.strip() == "", f"processes left behind: {left.stdout}"
