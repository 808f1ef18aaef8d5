"""Liveness and readiness: `/livez` (the process answers, nothing else is asked) and `/readyz` (each named
check in `app.state.readiness` passes). Answers name each check and a short category, never an exception's
text, which could carry a host name, a path or a credential."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from api.metrics import broker_client
from studio.runtime import Runtime

router = APIRouter(tags=["ops"])


@dataclass(frozen=True)
class ReadinessCheck:
    """One dependency the API needs to serve: `probe(rt)` returns when it is usable and raises otherwise."""

    name: str
    probe: Callable[[Runtime], None]


def _database(rt: Runtime) -> None:
    with rt.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _broker(rt: Runtime) -> None:
    broker_client(rt).ping()


def _store(rt: Runtime) -> None:
    rt.store.check()


DEFAULT_CHECKS = (ReadinessCheck("database", _database), ReadinessCheck("broker", _broker),
                  ReadinessCheck("store", _store))


def category(exc: BaseException) -> str:
    """A short, safe word for why a check failed."""
    import redis

    from studio.store import StoreError
    from studio.tls import certificate_problem

    if isinstance(exc, StoreError):
        return exc.category
    if certificate_problem(exc, section="", ca_file=None):  # before "unreachable": the fix is a setting
        return "certificate refused"
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthenticationWrongNumberOfArgsError):
        return "credentials refused"
    if isinstance(exc, TimeoutError | socket.timeout | redis.TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionError | OSError | redis.ConnectionError | sa_exc.OperationalError
                  | sa_exc.InterfaceError):
        return "unreachable"
    if isinstance(exc, sa_exc.ProgrammingError):
        return "schema"
    return "failed"


def run_checks(rt: Runtime, checks: list[ReadinessCheck]) -> dict[str, dict[str, str]]:
    results = {}
    for check in checks:
        try:
            check.probe(rt)
            results[check.name] = {"status": "ok"}
        except Exception as exc:  # reported, not raised: a probe must answer
            results[check.name] = {"status": "failed", "category": category(exc)}
    return results


def install(app) -> None:
    """The readiness registry; another part (the media store) appends its own ReadinessCheck."""
    app.state.readiness = list(DEFAULT_CHECKS)
    app.include_router(router)


@router.get("/livez")
def livez():
    """The process is up and serving; asks no dependency (a restart would not fix one)."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request):
    """200 when every dependency answers, else 503; each check with ok/failed and a category."""
    checks = run_checks(request.app.state.runtime, request.app.state.readiness)
    ok = all(c["status"] == "ok" for c in checks.values())
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503)
