"""Body limits (issue 15, High): JSON routes read at most `services.max_json_kb` and only a body declared JSON;
upload routes ask for a session or API key before reading anything. A real uvicorn spoken to over a raw socket,
as tests/integration/test_api_accounts.py does for uploads, so "before it is read" is what is tested."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app_from_env
from studio.config import IngestLimits, ServiceConfig, Settings
from studio.db import upgrade
from studio.keys import init_all_keys
from tests.media_helpers import free_port

pytestmark = pytest.mark.serial  # wall-clock bounds: run alone (see the Makefile's test)


def _app(tmp_path, **settings):
    settings = Settings(data_dir=str(tmp_path / "data"), **settings)
    init_all_keys(settings)
    upgrade(settings.db_url, data_dir=settings.data_path)
    return create_app_from_env(settings)


@pytest.fixture
def server(tmp_path):
    app = _app(tmp_path, ingest=IngestLimits(max_upload_mb=1))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port, app.state.runtime
    srv.should_exit = True
    thread.join(timeout=10)


def _send_until_answered(sock: socket.socket, head: bytes, chunks, *, limit_s: float) -> tuple[bytes, int, float]:
    """Send `head`, then chunks until the server answers; (reply, body bytes sent, seconds to the answer)."""
    started = time.monotonic()
    sock.sendall(head)
    reply, sent, took = b"", 0, None
    sock.settimeout(0.05)
    for chunk in chunks:
        if time.monotonic() - started > limit_s:
            break
        try:
            reply += sock.recv(65536)
        except TimeoutError:
            pass
        except OSError:
            break
        if reply:
            took = time.monotonic() - started
            break
        try:
            sock.sendall(chunk)
            sent += len(chunk)
        except OSError:
            break
    sock.settimeout(max(0.1, limit_s - (time.monotonic() - started)))
    try:
        while data := sock.recv(65536):  # the refusal closes the connection
            took = took if reply else time.monotonic() - started
            reply += data
    except (TimeoutError, OSError):
        pass
    return reply, sent, took if took is not None else time.monotonic() - started


def test_a_20_mb_json_body_to_the_login_is_refused_with_413_in_under_a_second(server):
    port, _ = server
    size = 20 * 1024 * 1024
    head = (f"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    body = (b'{"email": "a@b.com", "password": "' + b"x" * 65536 for _ in range(size // 65536))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reply, sent, took = _send_until_answered(sock, head, body, limit_s=5)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"64 KB (services.max_json_kb)" in reply
    assert took < 1.0, f"answered after {took:.2f} s"
    assert sent < size // 4


def test_a_chunked_json_body_is_cut_off_once_past_the_limit(server):
    port, _ = server
    head = (f"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    piece = b"x" * 16384
    body = (b"%x\r\n" % len(piece) + piece + b"\r\n" for _ in range(1000))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reply, sent, _ = _send_until_answered(sock, head, body, limit_s=10)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert sent < 512 * 1024, f"{sent} bytes went out before the refusal"


def test_an_upload_without_credentials_is_refused_before_its_body_is_read(server):
    port, rt = server
    head = (f"POST /api/creators/x/avatars?name=a HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 900000\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        # Under the upload limit, and none of the body sent: the answer must come without it.
        reply, _, took = _send_until_answered(sock, head, [], limit_s=3)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:300]
    assert b"sign in" in reply and took < 3
    assert list(rt.data.uploads.iterdir()) == []


def test_a_bad_api_key_on_an_upload_is_refused_before_its_body_is_read(server):
    port, _ = server
    head = (f"POST /api/consents HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer ecs_nope\r\n"
            "Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 900000\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reply, _, _ = _send_until_answered(sock, head, [], limit_s=3)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:300]


@pytest.fixture
def client(tmp_path):
    with TestClient(_app(tmp_path)) as c:
        yield c


@pytest.mark.parametrize("headers", [{}, {"Content-Type": "text/plain"},
                                     {"Content-Type": "application/x-www-form-urlencoded"}])
def test_a_json_route_refuses_a_body_not_declared_json(client, headers):
    body = b'{"email": "bo@a.com", "password": "a long password", "name": "Bo", "role": "agency"}'
    res = client.post("/api/auth/signup", content=body, headers=headers)
    assert res.status_code == 415, res.text
    assert "Content-Type: application/json" in res.json()["detail"]
    assert client.post("/api/auth/login", json={"email": "bo@a.com", "password": "a long password"}
                       ).status_code == 401  # nothing was created from the refused body


def test_the_json_limit_is_a_setting(tmp_path):
    with TestClient(_app(tmp_path, services=ServiceConfig(max_json_kb=1))) as client:
        _small_limit(client)


def _small_limit(client):
    res = client.post("/api/auth/login", json={"email": "a@b.com", "password": "x" * 2000})
    assert res.status_code == 413 and "1 KB (services.max_json_kb)" in res.json()["detail"]
    assert client.post("/api/auth/login", json={"email": "a@b.com", "password": "x" * 20}).status_code == 401
