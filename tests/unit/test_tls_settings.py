"""TLS settings for Redis, PostgreSQL and the S3 store, without services: the files are checked when the settings
load (the error names the setting and the path, never what the file holds), settings that contradict their URL
are refused, verification cannot be turned off, and each service's helper gives its client what it needs."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from studio.config import DEFAULT_CONFIG, ConfigError, load_settings
from studio.tls import PostgresTLS, RedisTLS, certificate_problem, postgres_url, redis_ssl_options, s3_verify
from tests.tls_certs import make_tls_files

STUDIO_CLI = Path(sys.executable).parent / "studio"
PG = "postgresql+psycopg://studio@db.example:5432/studio"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return dict(exc.value.problems)


# --- files are checked when the settings load ------------------------------------------------------------
def test_a_missing_ca_file_is_named_by_setting_and_path(tmp_path):
    missing = tmp_path / "nope" / "ca.pem"
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_REDIS_URL": "rediss://r.example:6380/0",
                                           "STUDIO_REDIS_CA_FILE": str(missing)})
    assert problems(exc) == {"services.redis_tls.ca_file": f"file {missing} does not exist"}


@pytest.mark.parametrize(("var", "setting"), [("STUDIO_DATABASE_CA_FILE", "database_tls.ca_file"),
                                              ("STUDIO_STORE_CA_FILE", "store.ca_file"),
                                              ("STUDIO_REDIS_CERT_FILE", "services.redis_tls.cert_file")])
def test_a_file_that_is_no_pem_a_directory_or_relative_is_refused(tmp_path, var, setting):
    der = tmp_path / "ca.der"
    der.write_bytes(b"\x30\x82\x01\x0a secret-looking-bytes")
    for value, said in ((der, "holds no PEM block"), (tmp_path, "is not a regular file"),
                        ("ca.pem", "must be an absolute path")):
        with pytest.raises(ConfigError) as exc:
            load_settings(DEFAULT_CONFIG, env={var: str(value)})
        assert said in problems(exc)[setting]
        assert "secret-looking" not in str(exc.value)


def test_a_world_readable_key_or_a_key_without_its_certificate_is_refused(tmp_path, certs):
    open_key = tmp_path / "client.key"
    open_key.write_bytes(certs.client_key.read_bytes())
    open_key.chmod(0o644)
    env = {"STUDIO_DATABASE_URL": PG, "STUDIO_DATABASE_CERT_FILE": str(certs.client_cert),
           "STUDIO_DATABASE_KEY_FILE": str(open_key)}
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env=env)
    assert problems(exc)["database_tls.key_file"] == (f"key file {open_key} is readable by every user (mode 644); "
                                                       f"chmod 600 it")
    assert "BEGIN" not in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_DATABASE_URL": PG,
                                           "STUDIO_DATABASE_KEY_FILE": str(certs.client_key)})
    assert "key_file is set without cert_file" in problems(exc)["database_tls"]


def test_config_check_reports_a_missing_certificate_and_prints_what_each_service_verifies_against(tmp_path, certs):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[2]), STUDIO_DATABASE_URL=PG,
               STUDIO_DATABASE_CA_FILE=str(tmp_path / "root.crt"))
    bad = subprocess.run([str(STUDIO_CLI), "config", "check"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    out = bad.stdout + bad.stderr
    assert bad.returncode == 1 and "database_tls.ca_file" in out and str(tmp_path / "root.crt") in out, out
    env.update(STUDIO_DATABASE_CA_FILE=str(certs.ca), STUDIO_REDIS_URL="rediss://r.example:6380/0",
               STUDIO_STORE__URL="s3://media/studio", STUDIO_STORE__ENDPOINT_URL="https://s3.example",
               STUDIO_STORE_CA_FILE=str(certs.ca))
    ok = subprocess.run([str(STUDIO_CLI), "config", "check"], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (f"tls: redis verified against the system's CAs; database sslmode=verify-full, CA {certs.ca}; store "
            f"verified against {certs.ca}") in " ".join(ok.stdout.split()), ok.stdout


def test_the_older_style_names_reach_every_tls_setting(certs):
    env = {"STUDIO_REDIS_URL": "rediss://:pw@r.example:6380/0", "STUDIO_REDIS_CA_FILE": str(certs.ca),
           "STUDIO_REDIS_CERT_FILE": str(certs.client_cert), "STUDIO_REDIS_KEY_FILE": str(certs.client_key),
           "STUDIO_DATABASE_URL": PG, "STUDIO_DATABASE_SSLMODE": "verify-ca",
           "STUDIO_DATABASE_CA_FILE": str(certs.ca), "STUDIO_DATABASE_CERT_FILE": str(certs.client_cert),
           "STUDIO_DATABASE_KEY_FILE": str(certs.client_key), "STUDIO_STORE__URL": "s3://media/studio",
           "STUDIO_STORE__ENDPOINT_URL": "https://s3.example", "STUDIO_STORE_CA_FILE": str(certs.ca)}
    s = load_settings(DEFAULT_CONFIG, env=env)
    assert s.redis.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True,
                           "ssl_ca_certs": str(certs.ca), "ssl_certfile": str(certs.client_cert),
                           "ssl_keyfile": str(certs.client_key)}
    assert dict(parse_qsl(urlsplit(s.db_url).query)) == {"sslmode": "verify-ca", "sslrootcert": str(certs.ca),
                                                         "sslcert": str(certs.client_cert),
                                                         "sslkey": str(certs.client_key)}
    assert s.s3_verify == str(certs.ca)
    assert "pw" not in repr(s.redis)  # the endpoint's URL holds the password


# --- Redis -------------------------------------------------------------------------------------------------
def test_redis_plain_url_has_no_tls_and_rediss_always_verifies():
    assert redis_ssl_options("redis://127.0.0.1:6390/0", RedisTLS()) == {}
    assert redis_ssl_options("rediss://r.example:6380/0", RedisTLS()) == {"ssl_cert_reqs": ssl.CERT_REQUIRED,
                                                                         "ssl_check_hostname": True}


def test_redis_tls_files_without_rediss_or_a_url_that_skips_verification_are_refused(certs):
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_REDIS_CA_FILE": str(certs.ca)})  # the embedded redis-server
    assert "services.redis_tls is set, but the Redis URL is not rediss://" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_REDIS_URL": "rediss://r.example:6380/0?ssl_cert_reqs=none"})
    assert "ssl_cert_reqs=none" in str(exc.value) and "always verified" in str(exc.value)


def test_redis_tls_offers_no_switch_to_turn_verification_off():
    assert set(RedisTLS.model_fields) == {"ca_file", "cert_file", "key_file"}
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_SERVICES__REDIS_TLS__VERIFY": "false"})
    assert "services.redis_tls.verify" in problems(exc)


# --- PostgreSQL ----------------------------------------------------------------------------------------------
def test_postgres_ca_file_means_verify_full_unless_the_url_or_setting_says_otherwise(certs):
    ca = str(certs.ca)
    assert dict(parse_qsl(urlsplit(postgres_url(PG, PostgresTLS(ca_file=ca))).query)) == {
        "sslmode": "verify-full", "sslrootcert": ca}
    assert postgres_url(f"{PG}?sslmode=verify-ca", PostgresTLS(ca_file=ca)) == \
        f"{PG}?sslmode=verify-ca&sslrootcert={ca.replace('/', '%2F')}"
    assert postgres_url(f"{PG}?sslmode=require", PostgresTLS()) == f"{PG}?sslmode=require"  # as the URL says
    assert postgres_url(PG, PostgresTLS()) == PG


def test_postgres_settings_that_contradict_the_url_or_fall_back_to_plain_text_are_refused(certs):
    with pytest.raises(ValueError, match=r"database_url says sslmode=require, database_tls\.sslmode says "
                                         r"verify-full: set it in one place"):
        postgres_url(f"{PG}?sslmode=require", PostgresTLS(sslmode="verify-full"))
    with pytest.raises(ValueError, match=r"database_url says sslmode=prefer.*use sslmode=verify-full"):
        postgres_url(f"{PG}?sslmode=prefer", PostgresTLS(ca_file=str(certs.ca)))
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_DATABASE_URL": PG, "STUDIO_DATABASE_SSLMODE": "disable",
                                           "STUDIO_DATABASE_CA_FILE": str(certs.ca)})
    assert "sslmode 'disable' may connect without TLS" in problems(exc)["database_tls"]
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_DATABASE_SSLMODE": "verify-full"})  # SQLite
    assert "database_tls is set, but database_url is not a PostgreSQL URL" in str(exc.value)


def test_the_database_password_and_tls_parameters_both_reach_db_url(certs):
    s = load_settings(DEFAULT_CONFIG, env={"STUDIO_DATABASE_URL": PG, "STUDIO_DATABASE_CA_FILE": str(certs.ca),
                                           "STUDIO_DATABASE_PASSWORD": "p@ss-w0rd"})
    parts = urlsplit(s.db_url)
    assert parts.password == "p%40ss-w0rd" and parts.hostname == "db.example"
    assert dict(parse_qsl(parts.query))["sslrootcert"] == str(certs.ca)


# --- S3 ------------------------------------------------------------------------------------------------------
def test_s3_verify_is_the_ca_bundle_or_the_system_cas_and_never_off(certs):
    assert s3_verify(None, None) is True
    assert s3_verify("https://s3.example", str(certs.ca)) == str(certs.ca)
    with pytest.raises(ValueError, match=r"store\.ca_file is set, but store\.endpoint_url http://s3\.example is not"):
        s3_verify("http://s3.example", str(certs.ca))
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_STORE_CA_FILE": str(certs.ca)})  # the file:// store
    assert "store.ca_file is set, but store.url is not an s3:// store" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_settings(DEFAULT_CONFIG, env={"STUDIO_STORE__VERIFY": "false"})
    assert "store.verify" in problems(exc)


# --- errors name the setting to fix ------------------------------------------------------------------------
def test_a_certificate_failure_names_the_ca_setting_and_other_errors_are_left_alone():
    try:
        raise ConnectionError("Error 1 connecting to 127.0.0.1:6380") from ssl.SSLCertVerificationError(
            1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate in chain")
    except ConnectionError as exc:
        message = certificate_problem(exc, section="services.redis_tls", ca_file="/etc/studio/ca.pem")
    assert message.startswith("services.redis_tls.ca_file: the server's TLS certificate does not verify against "
                              "the CA in /etc/studio/ca.pem")
    refused = certificate_problem(OSError("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate "
                                          "required"), section="database_tls", ca_file=None)
    assert refused.startswith("database_tls.cert_file: the server refused this client's certificate")
    assert certificate_problem(ConnectionRefusedError(111, "Connection refused"), section="store", ca_file=None) is None
