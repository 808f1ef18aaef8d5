"""TLS to a fleet's shared services: Redis, PostgreSQL and the S3 media store.

The settings models (`RedisTLS` at services.redis_tls, `PostgresTLS` at database_tls; the store's CA is
store.ca_file) check their files when the settings load, so `studio config check` names a missing or unreadable
one. One function per service turns them into what its client takes, and every client is made through it:
`redis_ssl_options` (redis-py, and Celery's broker_use_ssl / redis_backend_use_ssl), `postgres_url` (the libpq
parameters sslmode, sslrootcert, sslcert, sslkey, in the URL so that the engine, Alembic and every other user of
`Settings.db_url` carry them), `s3_verify` (boto3's verify=). Verification cannot be turned off: there is no
setting for it, and a URL that asks for it (`ssl_cert_reqs=none`) is refused.
"""

from __future__ import annotations

import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    import redis

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
# Modes in which libpq may fall back to plain text or skip the certificate: a CA or client certificate named
# beside one of them would suggest a protection that is not there.
FALLBACK_MODES = {"disable", "allow", "prefer"}
# libpq parameter -> PostgresTLS field
_PG_PARAMS = {"sslrootcert": "ca_file", "sslcert": "cert_file", "sslkey": "key_file"}
# A failed check of the server's certificate, and a refusal of the client's, as ssl, libpq, redis-py and
# botocore word them.
_SERVER_CERT_FAILURES = ("certificate verify failed", "CERTIFICATE_VERIFY_FAILED", "certificate is not valid for",
                         "Hostname mismatch", "unable to get local issuer certificate", "self-signed certificate",
                         "self signed certificate", "root certificate file")
_CLIENT_CERT_REFUSALS = ("alert certificate required", "alert unknown ca", "alert bad certificate",
                         "certificate required", "no certificate returned", "requires a valid client certificate")


def check_pem_file(path: str | None, *, private_key: bool = False) -> str | None:
    """`path` when it names a readable PEM file (absolute, so every role reads the same one wherever it starts);
    ValueError naming the path and the problem otherwise. A private key must not be readable by every user.
    What the file holds is never put in a message."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_absolute():
        raise ValueError(f"must be an absolute path, got {path!r}")
    if not p.is_file():
        raise ValueError(f"file {p} does not exist" if not p.exists() else f"{p} is not a regular file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"file {p} cannot be read ({exc.strerror})") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"file {p} holds no PEM block (-----BEGIN ...); give the PEM file, not DER or a directory")
    if private_key and p.stat().st_mode & stat.S_IROTH:
        raise ValueError(f"key file {p} is readable by every user (mode {stat.S_IMODE(p.stat().st_mode):o}); "
                         f"chmod 600 it")
    return str(p)


class _TLSFiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: str | None = Field(None, description="PEM file of the CA(s) that signed the server's certificate (a "
                                "private CA); default: the system's trusted CAs.")
    cert_file: str | None = Field(None, description="PEM client certificate, for a server that asks for one "
                                  "(mutual TLS); it may hold the key too.")
    key_file: str | None = Field(None, description="PEM private key of cert_file (mode 600); default: inside "
                                 "cert_file.")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable(cls, v: str | None, info) -> str | None:
        return check_pem_file(v, private_key=info.field_name == "key_file")

    @model_validator(mode="after")
    def _key_needs_cert(self):
        if self.key_file and not self.cert_file:
            raise ValueError("key_file is set without cert_file; set the client certificate too")
        return self

    @property
    def is_set(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file))


class RedisTLS(_TLSFiles):
    """TLS to Redis, used when services.redis_url is rediss://; the server's certificate is always verified,
    host name included."""


class PostgresTLS(_TLSFiles):
    """TLS to PostgreSQL (libpq's sslmode, sslrootcert, sslcert, sslkey)."""

    sslmode: SslMode | None = Field(None, description="libpq sslmode; default: what database_url says, else "
                                    "verify-full when ca_file is set, else libpq's own (prefer).")

    @model_validator(mode="after")
    def _no_fallback_with_files(self):
        if self.sslmode in FALLBACK_MODES and self.is_set:
            raise ValueError(f"sslmode {self.sslmode!r} may connect without TLS or without checking the server, "
                             f"yet a CA or client certificate is set; use verify-full")
        return self


# -- Redis ------------------------------------------------------------------------------------------------------
def redis_ssl_options(url: str, tls: RedisTLS) -> dict[str, object]:
    """Keyword arguments of redis-py's SSLConnection for `url` (also Celery's broker_use_ssl and
    redis_backend_use_ssl): empty for redis://; for rediss:// the certificate and host name are verified, against
    tls.ca_file when set. ValueError when the URL is not rediss:// but TLS files are set, or asks not to verify."""
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        if tls.is_set:
            raise ValueError("services.redis_tls is set, but the Redis URL is not rediss:// (services.redis_url; the "
                             "embedded redis-server speaks no TLS)")
        return {}
    asked = dict(parse_qsl(parts.query)).get("ssl_cert_reqs", "required").lower()
    if asked not in ("required", "cert_required"):
        raise ValueError(f"services.redis_url asks for ssl_cert_reqs={asked}; the server's certificate is always "
                         f"verified: remove it, and name a private CA with services.redis_tls.ca_file")
    options: dict[str, object] = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_check_hostname": True}
    for key, value in (("ssl_ca_certs", tls.ca_file), ("ssl_certfile", tls.cert_file), ("ssl_keyfile", tls.key_file)):
        if value:
            options[key] = value
    return options


@dataclass(frozen=True)
class RedisEndpoint:
    """The Redis every role shares: its URL (password in) and the TLS options of its clients."""

    url: str = field(repr=False)  # holds the password
    ssl: Mapping[str, object] = field(default_factory=dict)

    def client(self, *, timeout: float | None, connect_timeout: float) -> redis.Redis:
        """A redis-py client; `timeout` None waits on reads for ever (a pub/sub listener)."""
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=timeout, socket_connect_timeout=connect_timeout,
                                    **self.ssl)


# -- PostgreSQL ---------------------------------------------------------------------------------------------------
def postgres_params(url: str, tls: PostgresTLS) -> dict[str, str]:
    """The libpq TLS parameters that `tls` adds to `url`. ValueError when `url` is not PostgreSQL but TLS is set,
    or when the URL's query already gives one of them a different value."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("postgresql"):
        if tls.is_set or tls.sslmode:
            raise ValueError("database_tls is set, but database_url is not a PostgreSQL URL")
        return {}
    query = dict(parse_qsl(parts.query))
    wanted = {param: getattr(tls, name) for param, name in _PG_PARAMS.items() if getattr(tls, name)}
    sslmode = tls.sslmode or (None if "sslmode" in query else "verify-full" if tls.ca_file else None)
    if sslmode:
        wanted["sslmode"] = sslmode
    effective = query.get("sslmode", sslmode)
    if effective in FALLBACK_MODES and tls.is_set:
        raise ValueError(f"database_url says sslmode={effective}, which may connect without TLS or without checking "
                         f"the server, yet database_tls names a CA or client certificate; use sslmode=verify-full")
    for param, value in wanted.items():
        if param in query and query[param] != value:
            setting = f"database_tls.{_PG_PARAMS.get(param, param)}"
            raise ValueError(f"database_url says {param}={query[param]}, {setting} says {value}: set it in one place")
    return {k: v for k, v in wanted.items() if k not in query}


def postgres_url(url: str, tls: PostgresTLS) -> str:
    """`url` with the libpq TLS parameters of `tls` in its query (see `postgres_params`)."""
    params = postgres_params(url, tls)
    if not params:
        return url
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


# -- S3 -----------------------------------------------------------------------------------------------------------
def s3_verify(endpoint_url: str | None, ca_file: str | None) -> str | bool:
    """boto3's `verify=`: the CA bundle when one is set, else True (the system's CAs); never False. ValueError
    when a CA bundle is set for an endpoint that is not https://."""
    if ca_file and endpoint_url and urlsplit(endpoint_url).scheme != "https":
        raise ValueError(f"store.ca_file is set, but store.endpoint_url {endpoint_url} is not https://")
    return ca_file or True


# -- errors -------------------------------------------------------------------------------------------------------
def certificate_problem(exc: BaseException, *, section: str, ca_file: str | None) -> str | None:
    """When `exc` (or what caused it) is a failed TLS certificate check, a message naming the setting to fix
    (`section`.ca_file for the server's certificate, `section`.cert_file for this client's) and what to do; None
    for any other error."""
    lines, seen = [], exc
    while seen is not None and len(lines) < 40:
        lines += [line.strip() for line in str(seen).splitlines() if line.strip()]
        seen = seen.__cause__ or seen.__context__
    if said := _first_saying(lines, _SERVER_CERT_FAILURES):
        trusted = f"the CA in {ca_file}" if ca_file else "the system's trusted CAs (no CA file set)"
        return (f"{section}.ca_file: the server's TLS certificate does not verify against {trusted}; set "
                f"{section}.ca_file to the PEM file of the CA that signed it, and check that it names the host "
                f"connected to ({said})")
    if said := _first_saying(lines, _CLIENT_CERT_REFUSALS):
        return (f"{section}.cert_file: the server refused this client's certificate, or wants one and none was "
                f"given; set {section}.cert_file and key_file to a certificate its CA signed ({said})")
    return None


def _first_saying(lines: list[str], markers: tuple[str, ...]) -> str | None:
    """The first of `lines` holding one of `markers`, shortened."""
    for line in lines:
        if any(m in line for m in markers):
            return line if len(line) <= 240 else line[:237] + "..."
    return None
