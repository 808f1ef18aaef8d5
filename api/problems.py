"""Errors as problem details (RFC 9457): `application/problem+json` with type, title, status and detail.

`detail` is always one sentence a person can act on. Where a handler has more to say (lint findings, consent
problems, the fields of a malformed payload) it travels in extension members beside it: `findings`, `problems`,
`errors`. Validation errors name each field and what is wrong with it, never the value sent, which may hold a
stream key or a password. An unexpected error is a 500 problem that says so and leaves the details to the log.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from studio.errors import Refused

log = logging.getLogger("studio.api")
MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://ethical-clone-studio.example/problems/"


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of this API is answered."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="A URI naming the kind of problem.")
    title: str = Field(description="The HTTP status phrase.")
    status: int
    detail: str = Field(description="What was wrong, with the value, and what to do.")
    errors: list[dict] | None = Field(default=None, description="Malformed payloads: each field (loc) and what is "
                                      "wrong with it (msg).")
    findings: list[dict] | None = Field(default=None, description="Rules a script or show breaks: rule, words, "
                                        "message, fix.")
    problems: list[str] | None = Field(default=None, description="Why a consent was refused, one line each.")


def _documented(description: str) -> dict:
    return {"model": Problem, "description": description, "content": {MEDIA_TYPE: {}}}


# Declared on every /api route, so clients generated from the OpenAPI know the error shape.
RESPONSES = {
    400: _documented("The body cannot be parsed (not JSON, or a broken multipart form)"),
    401: _documented("Not signed in, or the API key or session is not valid"),
    403: _documented("The caller's role may not do this"),
    404: _documented("No such row, or another tenant's (the same answer)"),
    413: _documented("The body is over the upload limit; refused before it is read"),
    409: _documented("It exists already (an account's email, say)"),
    422: _documented("The payload is malformed or breaks a rule; `errors`, `findings` or `problems` say where"),
    429: _documented("Too many attempts; Retry-After says when to try again"),
    503: _documented("A service it needs (the queues' broker) does not answer; try again later"),
}


def problem(status: int, detail: str, *, headers: dict | None = None, **extra) -> JSONResponse:
    title = HTTPStatus(status).phrase
    body = {"type": TYPE_BASE + title.lower().replace(" ", "-").replace("'", ""), "title": title,
            "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def _split(detail) -> tuple[str, dict]:
    """A handler's HTTPException detail as (sentence, extension members)."""
    if isinstance(detail, dict):
        extra = {k: v for k, v in detail.items() if k not in ("message", "detail")}
        return str(detail.get("message") or detail.get("detail") or "the request was refused"), extra
    if isinstance(detail, list):
        return "the request was refused", {"errors": detail}
    return str(detail), {}


def field_errors(exc: RequestValidationError) -> list[dict]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail, extra = _split(exc.detail)
        return problem(exc.status_code, detail, headers=getattr(exc, "headers", None), **extra)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:  # the rules' refusals (studio.errors)
        detail, extra = _split(exc.detail)
        return problem(exc.status_code, detail, headers=exc.headers, **extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = field_errors(exc)
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return problem(422, f"the request is malformed: {where}{more}", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, f"an unexpected {type(exc).__name__} stopped the request; it is in the API log")
