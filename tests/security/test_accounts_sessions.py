"""Accounts and sessions (issue 15, Medium): password guessing limited per address and shared through Redis
without letting anyone lock a victim out, password hashing capped, cross-site requests refused, accounts that an
admin can disable and sign out, API keys that expire. Each test fails on commit 0761e4c."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from api import login_guard
from api.app import create_app_from_env
from studio.config import ServiceConfig, Settings
from studio.db import upgrade
from studio.keys import init_all_keys
from studio.models import ApiKey, AuditEvent
from tests.conftest import api_key, require
from tests.media_helpers import free_port
from workers.stack.embedded import wait_port

pytestmark = pytest.mark.integration

PASSWORD = "the right password"


class At:
    """The app as reached from one client address (what uvicorn puts in the ASGI scope)."""

    def __init__(self, app, address: str):
        self.app, self.address = app, address

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "client": (self.address, 40000)}
        await self.app(scope, receive, send)


def _app(tmp_path, name: str = "data", **services):
    settings = Settings(data_dir=str(tmp_path / name), services=ServiceConfig(**services))
    init_all_keys(settings)
    upgrade(settings.db_url, data_dir=settings.data_path)
    return create_app_from_env(settings)


@pytest.fixture
def app(tmp_path):
    app = _app(tmp_path)
    with TestClient(app):
        yield app


def _signup(app, email: str = "eve@example.com") -> None:
    with TestClient(At(app, "10.0.0.1")) as c:
        assert c.post("/api/auth/signup", json={"email": email, "password": PASSWORD, "name": "Eve"}).status_code \
            == 201


def _login(client: TestClient, email: str, password: str) -> int:
    return client.post("/api/auth/login", json={"email": email, "password": password}).status_code


def test_an_attacker_cannot_lock_the_victim_out_of_their_own_address(app):
    _signup(app)
    victim, attacker = TestClient(At(app, "10.0.0.1")), TestClient(At(app, "203.0.113.9"))
    assert _login(victim, "eve@example.com", PASSWORD) == 200  # the victim's address becomes a known one
    for _ in range(login_guard.PAIR_MAX):
        assert _login(attacker, "eve@example.com", "a wrong guess") == 401
    locked = attacker.post("/api/auth/login", json={"email": "eve@example.com", "password": PASSWORD})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) <= login_guard.WINDOW_S
    assert _login(victim, "eve@example.com", PASSWORD) == 200


def test_one_address_guessing_many_emails_is_limited(app):
    attacker = TestClient(At(app, "203.0.113.7"))
    for i in range(login_guard.ADDRESS_MAX):
        assert _login(attacker, f"user{i}@example.com", "a wrong guess") == 401
    refused = attacker.post("/api/auth/login", json={"email": "fresh@example.com", "password": "a wrong guess"})
    assert refused.status_code == 429 and "from this address" in refused.json()["detail"]
    assert _login(TestClient(At(app, "198.51.100.2")), "fresh@example.com", "a wrong guess") == 401


def test_many_addresses_guessing_one_email_leave_its_known_address_in(app):
    _signup(app)
    assert _login(TestClient(At(app, "10.0.0.1")), "eve@example.com", PASSWORD) == 200
    for i in range(login_guard.EMAIL_MAX):
        _login(TestClient(At(app, f"203.0.113.{i + 1}")), "eve@example.com", "a wrong guess")
    stranger = TestClient(At(app, "198.51.100.77"))
    assert stranger.post("/api/auth/login", json={"email": "eve@example.com", "password": PASSWORD}).status_code \
        == 429
    assert _login(TestClient(At(app, "10.0.0.1")), "eve@example.com", PASSWORD) == 200


@pytest.fixture
def redis_url(tmp_path):
    require("redis-server")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        assert wait_port("127.0.0.1", port, 10), "redis-server did not start"
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_failures_are_counted_across_api_processes_through_redis(tmp_path, redis_url):
    """Two API processes (real uvicorn) on one database and one Redis: guesses spread over them count together."""
    import httpx

    app = _app(tmp_path, redis_url=redis_url)  # keys and schema of the shared data dir
    _signup(app)
    env = {**os.environ, "STUDIO_DATA_DIR": str(tmp_path / "data"), "STUDIO_REDIS_URL": redis_url}
    ports = [free_port(), free_port()]
    procs = [subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:create_app_from_env", "--factory",
                               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=env)
             for port in ports]
    try:
        for port in ports:
            assert wait_port("127.0.0.1", port, 60), "uvicorn did not start"
        urls = [f"http://127.0.0.1:{port}/api/auth/login" for port in ports]
        for i in range(login_guard.PAIR_MAX):
            res = httpx.post(urls[i % 2], json={"email": "eve@example.com", "password": "a wrong guess"}, timeout=30)
            assert res.status_code == 401
        for url in urls:
            res = httpx.post(url, json={"email": "eve@example.com", "password": PASSWORD}, timeout=30)
            assert res.status_code == 429, res.text
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)


def test_the_in_process_table_is_bounded():
    counters = login_guard._MemoryCounters(max_keys=100)
    for i in range(1000):
        counters.incr(f"k{i}", 900)
    assert len(counters._rows) == 100
    assert counters.count("k999")[0] == 1 and counters.count("k0") == (0, 0)


def test_password_hashing_runs_a_few_at_a_time(app, monkeypatch):
    """Twelve sign-ins at once: at most HASH_SLOTS argon2 verifications run together; the others wait."""
    import api.routers.accounts as accounts_router

    _signup(app)
    running, peak, lock = 0, 0, threading.Lock()
    real = accounts_router.check_password

    def counted(*args, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.05)  # argon2 itself is ~50 ms here; make overlap certain
            return real(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(accounts_router, "check_password", counted)

    def one(i):
        with TestClient(At(app, f"10.1.0.{i}")) as c:
            return _login(c, "eve@example.com", PASSWORD)

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(one, range(12)))
    assert codes == [200] * 12
    assert 1 <= peak <= login_guard.HASH_SLOTS


def _signed_in(app, address="10.0.0.1") -> TestClient:
    _signup(app)
    client = TestClient(At(app, address), base_url="http://studio.test")
    assert _login(client, "eve@example.com", PASSWORD) == 200
    return client


def test_a_cross_site_request_with_the_cookie_is_refused(app):
    client = _signed_in(app)
    body = {"name": "x"}
    forged = client.post("/api/me/api-keys", json=body, headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403 and "another origin" in forged.json()["detail"]
    sibling = client.post("/api/me/api-keys", json=body, headers={"Sec-Fetch-Site": "same-site"})
    assert sibling.status_code == 403
    assert client.get("/api/me/api-keys").headers["x-total-count"] == "0"  # nothing was made
    same = client.post("/api/me/api-keys", json=body, headers={"Origin": "http://studio.test",
                                                               "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 201
    # A program with an API key is not a browser riding a cookie: its Origin does not matter.
    key = same.json()["key"]
    with TestClient(app) as program:
        assert program.post("/api/me/api-keys", json=body, headers={"Authorization": f"Bearer {key}",
                                                                    "Origin": "https://elsewhere.example"}
                            ).status_code == 201


def test_an_admin_disables_an_account_and_ends_its_sessions(app):
    client = _signed_in(app)
    key = client.post("/api/me/api-keys", json={"name": "mine"}).json()["key"]
    me = client.get("/api/me").json()
    engine = app.state.runtime.engine
    with TestClient(app, headers={"Authorization": f"Bearer {api_key(engine)}"}) as admin:
        assert admin.delete(f"/api/accounts/{me['id']}/sessions").status_code == 204
        assert client.get("/api/me").status_code == 401  # signed out everywhere
        with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as program:
            assert program.get("/api/me").status_code == 200  # its keys still work
            assert _login(client, "eve@example.com", PASSWORD) == 200
            res = admin.patch(f"/api/accounts/{me['id']}", json={"disabled": True})
            assert res.status_code == 200 and res.json()["disabled"] is True
            assert client.get("/api/me").status_code == 401
            assert program.get("/api/me").status_code == 401
            assert _login(client, "eve@example.com", PASSWORD) == 401
            assert admin.patch(f"/api/accounts/{me['id']}", json={"disabled": False}).status_code == 200
            assert program.get("/api/me").status_code == 200
        assert admin.patch("/api/accounts/nope", json={"disabled": True}).status_code == 404
    with Session(engine) as s:
        kinds = [e.kind for e in s.exec(select(AuditEvent).where(AuditEvent.subject_id == me["id"]))]
    assert kinds == ["account.sessions_ended", "account.disabled", "account.enabled"]


def test_only_an_admin_disables_accounts(app):
    client = _signed_in(app)
    me = client.get("/api/me").json()
    res = client.patch(f"/api/accounts/{me['id']}", json={"disabled": True},
                       headers={"Sec-Fetch-Site": "same-origin"})
    assert res.status_code == 403


def test_api_keys_expire(app):
    client = _signed_in(app)
    made = client.post("/api/me/api-keys", json={"name": "for a week", "expires_in_days": 7})
    assert made.status_code == 201 and made.json()["expires_at"]
    key = made.json()["key"]
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as program:
        assert program.get("/api/me").status_code == 200
        with Session(app.state.runtime.engine) as s:  # a week passes
            row = s.exec(select(ApiKey).where(ApiKey.id == made.json()["id"])).one()
            row.expires_at = row.created_at - timedelta(seconds=1)
            s.add(row)
            s.commit()
        assert program.get("/api/me").status_code == 401
    bad = client.post("/api/me/api-keys", json={"name": "forever and more", "expires_in_days": 0})
    assert bad.status_code == 422
