"""Shared fixtures: generated footage (no real person, nothing downloaded) and loopback ports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDIO = str(Path(sys.executable).with_name("studio"))
# A complete consent scope (POLICY C3) for worlds built straight in the database; channels target "US".
FULL_SCOPE = {"brands": [], "categories": ["beauty", "outdoor", "home"],
              "excluded_categories": ["alcohol", "gambling", "medicine", "politics"],
              "platforms": ["custom", "youtube"], "territories": ["US"], "languages": ["en"], "max_hours_per_day": 24}


NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `gpu` need an NVIDIA GPU; on a host without its driver they are skipped, saying so."""
    if NVIDIA_DRIVER.exists():
        return
    skip = pytest.mark.skip(reason=f"needs an NVIDIA GPU, and this host has no NVIDIA driver ({NVIDIA_DRIVER})")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _process_config(monkeypatch):
    """A command run in process with --config makes that file the process's config (STUDIO_CONFIG, see
    api.cli_base._settings); each test ends with the environment's own value again."""
    if "STUDIO_CONFIG" in os.environ:
        monkeypatch.setenv("STUDIO_CONFIG", os.environ["STUDIO_CONFIG"])
    else:
        monkeypatch.delenv("STUDIO_CONFIG", raising=False)


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """An empty SQLite database at the newest schema, migrated once per run; tests copy it (`fresh_db`)."""
    from studio.db import upgrade

    path = tmp_path_factory.mktemp("db") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL 15 on loopback for the whole run (started when a test first asks for it), with a
    template database at the newest schema; stopped at the end of the session, also after a failure."""
    from tests.pg import PgServer

    server = PgServer.start()
    try:
        server.migrate_template()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, migrated_db, tmp_path) -> str:
    """The URL of a database of one's own at the newest schema, on SQLite (a copy of the migrated file) and on
    PostgreSQL (`CREATE DATABASE ... TEMPLATE`): every test that uses it runs on both."""
    if request.param == "sqlite":
        shutil.copy(migrated_db, tmp_path / "studio.db")
        return f"sqlite:///{tmp_path / 'studio.db'}"
    return request.getfixturevalue("pg_server").create_database()


@pytest.fixture
def redis_url(tmp_path):
    """A redis-server of the test's own on loopback, without persistence (as a fleet's may run), stopped after."""
    from tests.media_helpers import free_port, stop_process
    from workers.stack.embedded import wait_port

    require("redis-server")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert wait_port("127.0.0.1", port, 10), "redis-server did not start"
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)


@pytest.fixture
def fresh_db(db_url):
    """An engine on a fresh migrated database (SQLite and PostgreSQL), without running Alembic, with every role's
    audit keys (fresh) bound to it as a runtime on the control host binds them (`audit_keys.bound(fresh_db)`)."""
    from studio.db import make_engine

    engine = make_engine(db_url)
    bind_audit_keys(engine)
    yield engine
    engine.dispose()


def bind_audit_keys(engine, roles=None):
    """Fresh audit keys of `roles` (default every role) bound to `engine`, as `build_runtime` binds its own;
    returns the keyring."""
    from studio import audit_keys

    keyring = audit_keys.AuditKeyring.generate(roles or audit_keys.ROLES)
    audit_keys.bind(engine, keyring)
    return keyring


@pytest.fixture
def raw_sql(fresh_db):
    """Run SQL straight on the test's database, outside the ORM and its checks (to tamper with rows)."""
    from sqlalchemy import text

    def run(sql: str, **params) -> None:
        with fresh_db.begin() as conn:
            conn.execute(text(sql), params)

    return run


def db_show(engine, *, text: str = "Paid partnership with Lumen Labs.") -> dict[str, str]:
    """Rows for one show straight in the database: creator, avatar (no bundle), product, script, a US channel,
    a consent with FULL_SCOPE in term, and the show. Returns their ids by name."""
    from datetime import timedelta

    from sqlmodel import Session

    from studio.models import Avatar, Channel, Consent, Creator, Product, Script, Show, utcnow

    now = utcnow()
    with Session(engine, expire_on_commit=False) as s:
        creator = Creator(name="Ava")
        s.add(creator)
        s.flush()
        avatar = Avatar(creator_id=creator.id, name="Ava", bundle_path="-", footage_sha256="-", width=360,
                        height=640, fps=25, duration_s=30)
        product = Product(name="Glow Serum", brand="Lumen", category="beauty")
        channel = Channel(name="main", territories=["US"])
        s.add_all([avatar, product, channel])
        s.flush()
        consent = Consent(creator_id=creator.id, avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                          statement_sha256="-", starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=1),
                          scope=FULL_SCOPE)
        script = Script(product_id=product.id, text=text)
        s.add_all([consent, script])
        s.flush()
        show = Show(channel_id=channel.id, avatar_id=avatar.id, consent_id=consent.id, name="s",
                    script_ids=[script.id])
        s.add(show)
        s.commit()
    return {"channel": channel.id, "show": show.id, "avatar": avatar.id, "consent": consent.id, "script": script.id}


def db_channels(engine, n: int, *, prefix: str = "c") -> list[str]:
    """`n` US channels straight in the database; returns their ids, sorted."""
    from sqlmodel import Session

    from studio.models import Channel

    with Session(engine) as s:
        rows = [Channel(name=f"{prefix}{i}", territories=["US"]) for i in range(n)]
        s.add_all(rows)
        s.commit()
        return sorted(r.id for r in rows)


@pytest.fixture(scope="session")
def demo_footage(tmp_path_factory) -> Path:
    """45 s of the synthetic creator at the default 720x1280 profile (the footage `studio demo` uses)."""
    from workers.media.synthface import make_demo_footage

    return make_demo_footage(tmp_path_factory.mktemp("footage") / "demo.mp4", seconds=45.0)


@pytest.fixture
def short_tmp():
    """A fresh directory with a short path, for a test whose services put unix sockets under it (nginx's publish
    check: 100 characters at most); pytest's tmp_path under a `make test` worker (.../popen-gw1/...) can be longer."""
    root = Path(tempfile.mkdtemp(prefix="studio-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def small_footage(tmp_path_factory):
    """Factory for 360x640 footage variants (fast to make) for the refusal tests; cached per variant."""
    from workers.media.synthface import make_demo_footage

    cache: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("small")

    def make(*, seconds: float = 32.0, faces: int = 1, with_audio: bool = True) -> Path:
        key = (seconds, faces, with_audio)
        if key not in cache:
            cache[key] = make_demo_footage(root / f"f{seconds}-{faces}-{int(with_audio)}.mp4", seconds=seconds,
                                           width=360, height=640, faces=faces, with_audio=with_audio)
        return cache[key]

    return make


def served(proc: subprocess.Popen, url: str, *, timeout: float) -> bytes | None:
    """The body of GET `url` once `proc` (a `studio up`) serves it; None when it exits or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read()
        except OSError:
            time.sleep(0.5)
    return None


def studio_env(data_dir: Path, **ports: int) -> dict[str, str]:
    env = dict(os.environ)
    env["STUDIO_DATA_DIR"] = str(data_dir)
    env["STUDIO_ALLOW_PRIVATE_DESTINATIONS"] = "true"  # the tests' destinations are receivers on loopback
    for name, port in ports.items():
        env[f"STUDIO_{name.upper()}_PORT"] = str(port)
    return env


def ocr(rgb: np.ndarray, tmp: Path) -> list[str]:
    """What tesseract (Debian's tesseract-ocr) reads in an RGB crop: the raw crop, its largest light box,
    and the crop reduced to dark ink on white at two scales, as a moderation tool would try more than one
    reading. A frame without the label yields no "AI avatar" in any of them."""
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    variants = [cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)]
    # The largest light region (a label's box), cut out as a text detector would before reading it.
    n, _, stats, _ = cv2.connectedComponentsWithStats((gray > 200).astype(np.uint8))
    if n > 1:
        x, y, w, h = stats[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])), :4]
        variants.append(cv2.cvtColor(rgb[y:y + h, x:x + w], cv2.COLOR_RGB2BGR))
    for fx in (2, 3):
        big = cv2.resize(gray, None, fx=fx, fy=fx, interpolation=cv2.INTER_CUBIC)
        variants.append(cv2.copyMakeBorder(np.where(big < 110, 0, 255).astype(np.uint8), 20, 20, 20, 20,
                                           cv2.BORDER_CONSTANT, value=255))
    texts = []
    for i, img in enumerate(variants):
        png = tmp / f"ocr{i}.png"
        cv2.imwrite(str(png), img)
        out = subprocess.run(["tesseract", str(png), "-", "--psm", "7"], capture_output=True, text=True, timeout=60)
        texts.append(out.stdout.strip())
    return texts


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing system tools {missing}: run `make setup`")


def has_badge(box: np.ndarray) -> bool:
    """A label box of either polarity: mostly light with dark ink, or mostly dark with light ink."""
    light = float((box > 200).all(axis=2).mean())
    dark = float((box < 80).all(axis=2).mean())
    return (light > 0.3 and dark > 0.03) or (dark > 0.3 and light > 0.03)


def api_key(engine, *, role: str = "admin", agency_id: str | None = None, creator_id: str | None = None,
            email: str | None = None) -> str:
    """An account of `role` with a fresh API key, straight in the database; returns the key."""
    import uuid

    from sqlmodel import Session

    from studio.accounts import create_account, issue_api_key

    with Session(engine, expire_on_commit=False) as s:
        account = create_account(s, email=email or f"{role}-{uuid.uuid4().hex[:8]}@test.local", name=role,
                                 role=role, agency_id=agency_id, creator_id=creator_id)
        s.flush()
        _, key = issue_api_key(s, account_id=account.id, name="tests")
        s.commit()
    return key


def as_admin(client, engine) -> None:
    """Sign the TestClient in as an admin: every request carries an admin's API key."""
    client.headers["Authorization"] = f"Bearer {api_key(engine)}"


# --- an S3-compatible server on loopback ------------------------------------------------------------------------
# moto's standalone server (no MinIO installs from the registries here): a real HTTP S3 API that boto3 talks to
# over a socket, started once per run. Its IAM is on after the first three calls (which make the user, its
# policy and its key), so a wrong key or secret is refused as a real S3 would (SigV4 checked).
S3_POLICY = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}'


@pytest.fixture(scope="session")
def s3_server():
    import boto3

    from bench.store import moto_server

    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as endpoint:
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bootstrap",
                           aws_secret_access_key="bootstrap")
        iam.create_user(UserName="studio")
        iam.put_user_policy(UserName="studio", PolicyName="s3", PolicyDocument=S3_POLICY)
        key = iam.create_access_key(UserName="studio")["AccessKey"]
        yield {"endpoint_url": endpoint, "access_key_id": key["AccessKeyId"],
               "secret_access_key": key["SecretAccessKey"], "region": "us-east-1", "path_style": True}


@pytest.fixture
def s3_bucket(s3_server, request):
    """A new empty bucket on the loopback S3 server; its name is unique to the test."""
    import uuid

    import boto3

    name = f"studio-{uuid.uuid4().hex[:16]}"
    client = boto3.client("s3", endpoint_url=s3_server["endpoint_url"], region_name=s3_server["region"],
                          aws_access_key_id=s3_server["access_key_id"],
                          aws_secret_access_key=s3_server["secret_access_key"])
    client.create_bucket(Bucket=name)
    return name
