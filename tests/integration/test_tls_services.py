"""TLS to the shared services, each a real server on loopback with certificates made in the test: a redis-server
that speaks only TLS and asks for a client certificate, a PostgreSQL with ssl=on that admits only hostssl with a
verified client certificate, and moto's S3 server over https. Clients come from the project's settings through
its own factories (Settings.redis, the Celery app, make_engine and Alembic on Settings.db_url, the store); with
the right CA they round-trip, with none or a wrong one they are refused and the error names the setting."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import boto3
import psycopg
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from api.health import category
from bench.store import moto_server
from studio.config import Settings
from studio.db import make_engine, upgrade
from studio.store import StoreError
from studio.stores import store_for
from studio.tls import certificate_problem
from tests.conftest import require
from tests.media_helpers import free_port
from tests.pg import PgServer
from tests.tls_certs import make_tls_files
from workers.stack.embedded import wait_port

pytestmark = pytest.mark.integration
HOST = "127.0.0.1"


def _redis_settings(tmp_path, url: str, **tls) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"), services={"redis_url": url, "redis_tls": tls})


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- Redis ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    """redis-server with no plain port, TLS on a free loopback port, client certificates required."""
    require("redis-server")
    folder = tmp_path_factory.mktemp("redis-tls")
    certs = make_tls_files(folder / "certs")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", HOST, "--port", "0", "--tls-port", str(port),
                             "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
                             "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=(folder / "redis.log").open("w"), stderr=subprocess.STDOUT)
    try:
        assert wait_port(HOST, port, 10), (folder / "redis.log").read_text()
        yield certs, f"rediss://{HOST}:{port}/0"
    finally:
        _stop(proc)


def test_redis_client_from_settings_round_trips_over_tls(tls_redis, tmp_path):
    certs, url = tls_redis
    settings = _redis_settings(tmp_path, url, ca_file=str(certs.ca), cert_file=str(certs.client_cert),
                               key_file=str(certs.client_key))
    client = settings.redis.client(timeout=5, connect_timeout=5)
    try:
        key = f"tls-{uuid.uuid4().hex}"
        client.set(key, b"over tls", ex=60)
        assert client.get(key) == b"over tls"
        assert client.connection_pool.connection_class is redis.SSLConnection
    finally:
        client.close()


@pytest.mark.parametrize("trust", ["system", "wrong"])
def test_redis_without_the_ca_is_refused_naming_the_setting(tls_redis, tmp_path, trust):
    certs, url = tls_redis
    ca_file = str(certs.wrong_ca) if trust == "wrong" else None
    settings = _redis_settings(tmp_path, url, ca_file=ca_file, cert_file=str(certs.client_cert),
                               key_file=str(certs.client_key))
    client = settings.redis.client(timeout=5, connect_timeout=5)
    with pytest.raises(redis.ConnectionError) as exc:
        client.ping()
    message = certificate_problem(exc.value, section="services.redis_tls", ca_file=ca_file)
    assert message is not None and message.startswith("services.redis_tls.ca_file: the server's TLS certificate "
                                                       "does not verify against")
    assert (str(certs.wrong_ca) if ca_file else "the system's trusted CAs") in message
    assert category(exc.value) == "certificate refused"  # what /readyz says of the broker
    print(f"\n{message}")


def test_redis_without_a_client_certificate_is_refused(tls_redis, tmp_path):
    certs, url = tls_redis
    client = _redis_settings(tmp_path, url, ca_file=str(certs.ca)).redis.client(timeout=5, connect_timeout=5)
    with pytest.raises(redis.ConnectionError) as exc:
        client.ping()
    # Under TLS 1.3 the server's alert may reach the client as a bare EOF: the message names cert_file when the
    # alert arrived, and never blames the CA, which verified.
    message = certificate_problem(exc.value, section="services.redis_tls", ca_file=str(certs.ca))
    assert message is None or message.startswith("services.redis_tls.cert_file:"), message
    log = (certs.ca.parent.parent / "redis.log").read_text()
    assert "peer did not return a certificate" in log, log[-2000:]


def test_celery_broker_and_result_backend_over_tls(tls_redis, tmp_path):
    from workers.app import make_celery

    certs, url = tls_redis
    settings = _redis_settings(tmp_path, url, ca_file=str(certs.ca), cert_file=str(certs.client_cert),
                               key_file=str(certs.client_key))
    app = make_celery(settings.redis)
    assert app.conf.broker_use_ssl["ssl_ca_certs"] == str(certs.ca) == app.conf.redis_backend_use_ssl["ssl_ca_certs"]
    with app.connection_for_write() as conn:  # the broker: a message through a kombu queue on the TLS redis
        queue = conn.SimpleQueue(f"tls-probe-{uuid.uuid4().hex[:8]}")
        queue.put({"segment": "s-1"})
        message = queue.get(timeout=5)
        assert message.payload == {"segment": "s-1"}
        message.ack()
        queue.close()
    task_id = uuid.uuid4().hex  # the result backend: a stored result read back
    app.backend.store_result(task_id, {"rendered": True}, "SUCCESS")
    assert app.AsyncResult(task_id).get(timeout=5) == {"rendered": True}

    wrong = make_celery(_redis_settings(tmp_path, url, ca_file=str(certs.wrong_ca), cert_file=str(certs.client_cert),
                                        key_file=str(certs.client_key)).redis)
    with pytest.raises(Exception) as exc, wrong.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0.1, interval_step=0.1, timeout=5)
    assert certificate_problem(exc.value, section="services.redis_tls", ca_file=str(certs.wrong_ca))


# --- PostgreSQL ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_pg(tmp_path_factory):
    """PostgreSQL 15 with ssl=on whose pg_hba admits TCP connections only over TLS with a client certificate
    whose name is the user's (clientcert=verify-full)."""
    folder = tmp_path_factory.mktemp("pg-tls")
    certs = make_tls_files(folder / "certs", client_cn="postgres")
    server_files = Path(tempfile.mkdtemp(prefix="studio-pg-tls-"))  # postgres owns its key, and can reach it here
    for src in (certs.server_cert, certs.server_key, certs.ca):
        shutil.copy(src, server_files / src.name)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for path in (server_files, *server_files.iterdir()):
            os.chown(path, pw.pw_uid, pw.pw_gid)
    options = (f"-c ssl=on -c ssl_cert_file={server_files / 'server.pem'} -c ssl_key_file={server_files / 'server.key'}"
               f" -c ssl_ca_file={server_files / 'ca.pem'}")
    server = PgServer.start(options=options, hba="local all all trust\n"
                                                 "hostssl all all 127.0.0.1/32 trust clientcert=verify-full\n")
    try:
        yield certs, server
    finally:
        server.stop()
        shutil.rmtree(server_files, ignore_errors=True)


def _pg_settings(tmp_path, server: PgServer, **tls) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"), database_url=server.url(), database_tls=tls)


def test_postgres_verify_full_with_the_ca_migrates_and_queries_over_tls(tls_pg, tmp_path):
    certs, server = tls_pg
    settings = _pg_settings(tmp_path, server, ca_file=str(certs.ca), cert_file=str(certs.client_cert),
                            key_file=str(certs.client_key))
    assert "sslmode=verify-full" in settings.db_url
    upgrade(settings.db_url)  # Alembic's own engine, from the same URL
    engine = make_engine(settings.db_url)
    try:
        with engine.connect() as conn:
            ssl_on, version = conn.execute(text("SELECT ssl, version FROM pg_stat_ssl "
                                                "WHERE pid = pg_backend_pid()")).one()
            assert ssl_on and version.startswith("TLS")
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


def test_postgres_without_tls_settings_is_refused_by_the_server(tls_pg, tmp_path):
    _, server = tls_pg
    with pytest.raises(psycopg.OperationalError):  # sslmode=disable: the server admits only hostssl
        psycopg.connect(f"host={HOST} port={server.port} user=postgres dbname=postgres sslmode=disable",
                        connect_timeout=5).close()


@pytest.mark.parametrize("case", ["wrong ca", "no client certificate"])
def test_postgres_a_wrong_ca_or_no_client_certificate_fails_naming_the_setting(tls_pg, tmp_path, case):
    certs, server = tls_pg
    tls = ({"ca_file": str(certs.wrong_ca), "cert_file": str(certs.client_cert), "key_file": str(certs.client_key)}
           if case == "wrong ca" else {"ca_file": str(certs.ca)})
    settings = _pg_settings(tmp_path, server, **tls)
    engine = make_engine(settings.db_url)
    try:
        with pytest.raises(OperationalError) as exc, engine.connect():
            pass
    finally:
        engine.dispose()
    message = certificate_problem(exc.value, section="database_tls", ca_file=tls["ca_file"])
    setting = "database_tls.ca_file" if case == "wrong ca" else "database_tls.cert_file"
    print(f"\n{message}")
    assert message is not None and message.startswith(f"{setting}:"), exc.value
    assert category(exc.value) == "certificate refused"  # what /readyz says of the database
    if case == "wrong ca":
        assert str(certs.wrong_ca) in message


# --- S3 ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def https_s3(tmp_path_factory):
    """moto's S3 server over https with the test CA's server certificate, and one bucket."""
    certs = make_tls_files(tmp_path_factory.mktemp("s3-tls"))
    with moto_server(tls=(certs.server_cert, certs.server_key)) as endpoint:
        bucket = f"studio-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test", verify=str(certs.ca)).create_bucket(Bucket=bucket)
        yield certs, endpoint, bucket


def _s3_settings(tmp_path, endpoint: str, bucket: str, ca_file: str | None) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"), store={
        "url": f"s3://{bucket}/studio", "endpoint_url": endpoint, "path_style": True, "access_key_id": "test",
        "secret_access_key": "test", "ca_file": ca_file, "cache_dir": str(tmp_path / "cache"), "cache_max_mb": 8})


def test_store_round_trips_over_https_with_the_ca_bundle(https_s3, tmp_path):
    certs, endpoint, bucket = https_s3
    assert endpoint.startswith("https://")
    store = store_for(_s3_settings(tmp_path, endpoint, bucket, str(certs.ca)))
    store.check()
    data = os.urandom(4096)
    store.put_bytes("segments/tls/s1.ts", data)
    with store.open("segments/tls/s1.ts") as body:
        assert body.read() == data
    assert store.list("segments/tls/") == ["segments/tls/s1.ts"]
    assert store.delete("segments/tls/s1.ts") and not store.exists("segments/tls/s1.ts")


@pytest.mark.parametrize("trust", ["system", "wrong"])
def test_store_without_the_ca_bundle_is_refused_naming_the_setting(https_s3, tmp_path, trust):
    certs, endpoint, bucket = https_s3
    ca_file = str(certs.wrong_ca) if trust == "wrong" else None
    store = store_for(_s3_settings(tmp_path, endpoint, bucket, ca_file))
    with pytest.raises(StoreError) as exc:
        store.check()
    assert str(exc.value).startswith("store.ca_file: the server's TLS certificate does not verify against")
    assert (ca_file or "the system's trusted CAs") in str(exc.value)
    assert exc.value.category == "certificate refused"  # what /readyz says of the store
    print(f"\n{exc.value}")
    with pytest.raises(StoreError, match=r"^store\.ca_file: "):
        store.put_bytes("segments/tls/never.ts", b"x")
