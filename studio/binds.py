"""Bind addresses of the API and the embedded services (pure): what is a valid one, how a client on this host
reaches it, how it is written next to a port, and which binds expose a service without its password.

A wildcard bind (0.0.0.0, ::) is not an address to connect to: clients on this host use loopback instead.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from studio.config import ServiceConfig

LOOPBACK = "127.0.0.1"
_WILDCARD = {"0.0.0.0": LOOPBACK, "::": "::1"}
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_NOT_A_HOST = "must be an IP address (127.0.0.1, ::1, 0.0.0.0) or a host name (studio.example.com)"
_SCOPE = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def host_problem(host: object) -> str | None:
    """Why `host` is neither an IP address nor a host name (RFC 1123), or None."""
    if not isinstance(host, str) or not host:
        return _NOT_A_HOST
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # an IPv6 scope (fe80::1%eth0) may hold any character but '%'; it goes into config files
        scope = host.partition("%")[2]
        return None if not scope or _SCOPE.fullmatch(scope) else "has an IPv6 scope that is not an interface name"
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        return _NOT_A_HOST
    return None


def connect_host(bind: str) -> str:
    """The address a client on this host uses to reach a service bound to `bind`."""
    return _WILDCARD.get(bind, bind)


def host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets (as URLs and nginx `listen` want it)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for a loopback address or `localhost`; a wildcard or any other name is not."""
    if host.rstrip(".").lower() == "localhost" or host.rstrip(".").lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warnings(svc: ServiceConfig) -> list[str]:
    """Services that other hosts can reach without their secret. The embedded redis-server always has a password
    (services.redis_password or data/keys/redis.password) and the embedded RTMP ingest takes a publish only with
    the channel's one-time token, so only a Redis named by `services.redis_url` on another host can be open."""
    if not svc.redis_url:
        return []
    try:
        parts = urlsplit(svc.redis_url)
        host, password = parts.hostname or "", parts.password
    except ValueError:
        return []
    if password or svc.redis_password or not host or is_loopback(host) or parts.scheme == "unix":
        return []
    return [f"services.redis_url: Redis at {host} is used without a password, so anyone who reaches it can read "
            f"and queue tasks; give that Redis a password (requirepass) and set it in services.redis_password "
            f"(STUDIO_REDIS_PASSWORD or the secrets directory)"]
