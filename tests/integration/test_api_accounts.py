"""Sign-in, API keys and uploads through the API: the real app on a real SQLite database, and for the size limit a
real uvicorn server spoken to over a raw socket, to see that an oversized body is refused before it is read."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from api.app import create_app_from_env
from studio.config import IngestLimits, Settings
from studio.db import upgrade
from studio.keys import init_all_keys
from studio.models import Account, Agency, Creator, UploadJob
from tests.conftest import api_key
from tests.media_helpers import free_port

pytestmark = pytest.mark.integration


def _app(tmp_path, **settings):
    settings = Settings(data_dir=str(tmp_path / "data"), **settings)
    init_all_keys(settings)
    upgrade(settings.db_url)  # `studio db upgrade`: the API refuses a schema behind
    return create_app_from_env(settings)


@pytest.fixture
def client(tmp_path):
    app = _app(tmp_path, ingest=IngestLimits(max_upload_mb=1))
    with TestClient(app) as c:
        c.rt = app.state.runtime
        yield c


def test_signup_login_logout_with_the_session_cookie(client):
    res = client.post("/api/auth/signup", json={"email": "Ava@Example.com", "password": "a long password",
                                                "name": "Ava"})
    assert res.status_code == 201, res.text
    me = client.get("/api/me").json()
    assert me["role"] == "creator" and me["email"] == "ava@example.com" and me["creator_id"]
    cookie = res.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert client.get(f"/api/creators/{me['creator_id']}").json()["name"] == "Ava"
    assert client.post("/api/auth/logout").status_code == 204
    gone = client.get("/api/me")
    assert gone.status_code == 401 and gone.headers["content-type"].startswith("application/problem+json")
    wrong = client.post("/api/auth/login", json={"email": "ava@example.com", "password": "not the password"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong email or password"
    assert client.get("/api/me").status_code == 401
    ok = client.post("/api/auth/login", json={"email": "AVA@example.com", "password": "a long password"})
    assert ok.status_code == 200 and client.get("/api/me").json()["id"] == me["id"]
    with Session(client.rt.engine) as s:
        assert s.exec(select(Account)).one().password_hash.startswith("$argon2id$")


def test_signup_refusals(client):
    short = client.post("/api/auth/signup", json={"email": "b@example.com", "password": "short", "name": "B"})
    assert short.status_code == 422 and "use at least 10" in short.json()["detail"]
    bad = client.post("/api/auth/signup", json={"email": "nope", "password": "a long password", "name": "B"})
    assert bad.status_code == 422 and "'nope' is not an email address" in bad.json()["detail"]
    assert client.post("/api/auth/signup", json={"email": "c@example.com", "password": "a long password",
                                                 "name": "C"}).status_code == 201
    dup = client.post("/api/auth/signup", json={"email": "C@example.com", "password": "a long password",
                                                "name": "C2"})
    assert dup.status_code == 409 and "exists already" in dup.json()["detail"]
    with Session(client.rt.engine) as s:  # the refused sign-ups left no creator behind
        assert [c.name for c in s.exec(select(Creator))] == ["C"]
    extra = client.post("/api/auth/signup", json={"email": "d@example.com", "password": "a long password",
                                                  "name": "D", "role": "admin"})
    assert extra.status_code == 422 and extra.json()["errors"][0]["loc"] == ["body", "role"]


def test_api_keys_are_shown_once_and_revocable(client):
    admin = api_key(client.rt.engine)
    headers = {"Authorization": f"Bearer {admin}"}
    made = client.post("/api/me/api-keys", json={"name": "ci"}, headers=headers)
    assert made.status_code == 201
    key = made.json()["key"]
    listed = client.get("/api/me/api-keys", headers=headers)
    assert key not in listed.text and made.json()["prefix"] in listed.text
    assert listed.headers["x-total-count"] == "2"  # the fixture's key and this one
    assert client.get("/api/me", headers={"X-API-Key": key}).status_code == 200
    assert client.delete(f"/api/me/api-keys/{made.json()['id']}", headers=headers).status_code == 204
    res = client.get("/api/me", headers={"Authorization": f"Bearer {key}"})
    assert res.status_code == 401 and "not valid" in res.json()["detail"]
    assert res.headers["www-authenticate"] == "Bearer"


def test_admin_gives_accounts(client):
    admin = {"Authorization": f"Bearer {api_key(client.rt.engine)}"}
    with Session(client.rt.engine, expire_on_commit=False) as s:
        agency = Agency(name="A")
        s.add(agency)
        s.commit()
    res = client.post("/api/accounts", headers=admin, json={"email": "bo@a.com", "name": "Bo", "role": "agency",
                                                            "agency_id": agency.id, "password": "a long password"})
    assert res.status_code == 201 and res.json()["agency_id"] == agency.id
    missing = client.post("/api/accounts", headers=admin, json={"email": "cy@a.com", "name": "Cy", "role": "agency"})
    assert missing.status_code == 422 and "must name its agency" in missing.json()["detail"]
    signed = client.post("/api/auth/login", json={"email": "bo@a.com", "password": "a long password"})
    assert signed.json()["role"] == "agency"


def test_footage_upload_is_the_creators_own(client):
    engine = client.rt.engine
    with Session(engine, expire_on_commit=False) as s:
        ava, ben, agency = Creator(name="Ava"), Creator(name="Ben"), Agency(name="A")
        s.add_all([ava, ben, agency])
        s.commit()
    files = {"file": ("clip.mp4", b"not a video", "video/mp4")}
    as_ben = {"Authorization": f"Bearer {api_key(engine, role='creator', creator_id=ben.id)}"}
    as_agency = {"Authorization": f"Bearer {api_key(engine, role='agency', agency_id=agency.id)}"}
    res = client.post(f"/api/creators/{ava.id}/avatars?name=x", files=files, headers=as_ben)
    assert res.status_code == 404 and f"creator '{ava.id}' does not exist" in res.json()["detail"]
    res = client.post(f"/api/creators/{ava.id}/avatars?name=x", files=files, headers=as_agency)
    assert res.status_code == 403
    assert client.post(f"/api/creators/{ava.id}/avatars?name=x", files=files).status_code == 401
    own = client.post(f"/api/creators/{ben.id}/avatars?name=x", files=files, headers=as_ben)
    assert own.status_code == 422 and "clip.mp4: not a readable video" in own.json()["detail"]
    assert list(client.rt.data.uploads.iterdir()) == []
    with Session(engine) as s:
        assert s.exec(select(UploadJob)).all() == []


# --- the size limit, on a real server -------------------------------------------------------------------------
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
    yield port, api_key(app.state.runtime.engine, role="creator",
                        creator_id=_creator(app.state.runtime.engine)), app.state.runtime
    srv.should_exit = True
    thread.join(timeout=10)


def _creator(engine) -> str:
    with Session(engine, expire_on_commit=False) as s:
        row = Creator(name="Ava")
        s.add(row)
        s.commit()
    return row.id


def _head(port: int, key: str, path: str, length_header: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary=XX\r\n{length_header}\r\n").encode()


def _read_response(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 40:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_an_oversized_upload_is_refused_before_its_body_is_sent(server):
    port, key, rt = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        # Declares 5 GB and sends none of it: the answer must come anyway, at once.
        sock.sendall(_head(port, key, "/api/creators/x/avatars?name=a", "Content-Length: 5000000000\r\n"))
        started = time.monotonic()
        reply = _read_response(sock)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"application/problem+json" in reply and b"limit of 1 MB" in reply
    assert time.monotonic() - started < 5
    assert list(rt.data.uploads.iterdir()) == []


def test_a_chunked_upload_is_cut_off_once_past_the_limit(server):
    port, key, rt = server
    chunk = b"x" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(_head(port, key, "/api/creators/x/avatars?name=a", "Transfer-Encoding: chunked\r\n"))
        part = (b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
                b"Content-Type: video/mp4\r\n\r\n")
        sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n")  # a well-formed part whose file never ends
        reply = b""
        sock.settimeout(0.05)
        for _ in range(200):  # up to 12.5 MB offered; the server must stop it after about 1 MB
            try:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
                reply += sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if reply:
                break
        reply += _read_response(sock) if not reply.count(b"\r\n\r\n") else b""
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < 4 * 1024 * 1024, f"{sent} bytes went out before the refusal"
    assert list(rt.data.uploads.iterdir()) == []


def test_the_first_admin_comes_from_the_command_line(tmp_path):
    import os
    import subprocess

    from tests.conftest import STUDIO

    env = {**os.environ, "STUDIO_DATA_DIR": str(tmp_path / "data")}

    def add(email: str, password: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([STUDIO, "account", "add", email, *args, "--password-stdin"], input=password + "\n",
                              env=env, capture_output=True, text=True, timeout=120)

    subprocess.run([STUDIO, "keys", "init"], env=env, capture_output=True, timeout=120, check=True)
    ok = add("boss@example.com", "a long enough pw", "--role", "admin")
    assert ok.returncode == 0 and "boss@example.com (admin)" in ok.stdout, ok.stderr
    short = add("b2@example.com", "short", "--role", "admin")
    assert short.returncode == 2 and "5 characters long; use at least 10" in short.stderr
    orphan = add("b3@example.com", "a long enough pw", "--role", "agency")
    assert orphan.returncode == 2 and "must name its agency" in orphan.stderr
    app = create_app_from_env(Settings(data_dir=str(tmp_path / "data")))
    with TestClient(app) as client:
        res = client.post("/api/auth/login", json={"email": "boss@example.com", "password": "a long enough pw"})
        assert res.status_code == 200 and res.json()["role"] == "admin"
        assert client.get("/api/accounts").headers["x-total-count"] == "1"


def test_password_guessing_locks_that_emails_sign_in(client):
    from api import login_guard

    guard = client.app.state.login_guard
    assert client.post("/api/auth/signup", json={"email": "eve@example.com", "password": "the right password",
                                                 "name": "Eve"}).status_code == 201
    client.post("/api/auth/logout")
    try:
        for _ in range(login_guard.PAIR_MAX):
            res = client.post("/api/auth/login", json={"email": "eve@example.com", "password": "a wrong guess"})
            assert res.status_code == 401
        locked = client.post("/api/auth/login", json={"email": "EVE@example.com", "password": "the right password"})
        assert locked.status_code == 429 and "too many wrong passwords" in locked.json()["detail"]
        assert 0 < int(locked.headers["retry-after"]) <= login_guard.WINDOW_S + 1
        other = client.post("/api/auth/login", json={"email": "nobody@example.com", "password": "a wrong guess"})
        assert other.status_code == 401  # other emails are not locked
    finally:
        guard.succeeded("eve@example.com", "testclient")
    assert client.post("/api/auth/login", json={"email": "eve@example.com",
                                                "password": "the right password"}).status_code == 200
