"""Request body limits and checks enforced before the body is read.

FastAPI reads a body completely (parsing JSON, or spooling a multipart body to disk) before a handler or its
dependencies run, so a check there comes after the whole body was read. This ASGI middleware, before anything is
read:
- upload routes (those taking files): asks for a valid session or API key (401 otherwise, nothing read) and holds
  the body to `ingest.max_upload_mb`;
- every other route: holds the body to `services.max_json_kb` and refuses a body that is not declared JSON (415),
  so it is never parsed as JSON on a guess.
A declared Content-Length over the limit is answered 413 at once; a body without a length (chunked) is stopped as
soon as it passes the limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable

from fastapi import params
from fastapi.routing import APIRoute

from api.problems import MEDIA_TYPE, TYPE_BASE

SLACK = 64 * 1024  # multipart boundaries and form fields around the file
JSON_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json\s*(?:;.*)?", re.IGNORECASE)


class UploadRoutes:
    """Which paths are upload routes: those whose body is a form (File/Form parameters), read from the app's
    routes on first use."""

    def __init__(self, app):
        self.app, self._patterns = app, None

    def __call__(self, path: str) -> bool:
        if self._patterns is None:
            self._patterns = [r.path_regex for r in self.app.routes if isinstance(r, APIRoute)
                              and r.body_field is not None and isinstance(r.body_field.field_info, params.Form)]
        return any(p.match(path) for p in self._patterns)


class BodyLimit:
    def __init__(self, app, *, limit_bytes: int, label: str, json_limit_bytes: int, json_label: str,
                 is_upload: Callable[[str], bool], authenticate: Callable[[dict], Awaitable[str | None]]):
        self.app, self.label, self.json_label = app, label, json_label
        self.upload_limit, self.json_limit = limit_bytes + SLACK, json_limit_bytes
        self.is_upload, self.authenticate = is_upload, authenticate

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        has_body = b"transfer-encoding" in headers or (declared is not None and declared.strip() not in (b"", b"0"))
        if self.is_upload(scope["path"]):
            limit, what = self.upload_limit, f"the upload exceeds the limit of {self.label}"
            if (refusal := await self.authenticate(scope)) is not None:
                return await refuse(send, 401, "Unauthorized", refusal, [(b"www-authenticate", b"Bearer")])
        else:
            limit, what = self.json_limit, f"the JSON body exceeds the limit of {self.json_label}"
            kind = headers.get(b"content-type", b"").decode("latin-1")
            if has_body and not JSON_TYPE.fullmatch(kind.strip()):
                return await refuse(send, 415, "Unsupported Media Type",
                                    f"this route reads a JSON body: send it with 'Content-Type: application/json' "
                                    f"(got {kind.strip()[:80]!r})" if kind else
                                    "this route reads a JSON body: send it with 'Content-Type: application/json' "
                                    "(the request declared no content type)")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await refuse(send, 413, "Content Too Large", what.replace("exceeds", f"of {int(declared)} bytes "
                                                                             "exceeds", 1))
        seen = 0
        refused = started = False

        async def counting_receive():
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Answer now, then tell the app the client left: it stops reading, and whatever it answers
                    # to that is dropped below.
                    refused = True
                    if not started:
                        await refuse(send, 413, "Content Too Large", what)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if not refused:
                started = started or message["type"] == "http.response.start"
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


async def refuse(send, status: int, title: str, detail: str, extra_headers: list | None = None, **members) -> None:
    """Answer problem details (`members`: extension members such as `errors`) and close the connection, whatever
    of the body is left unread."""
    body = json.dumps({"type": TYPE_BASE + title.lower().replace(" ", "-"), "title": title, "status": status,
                       "detail": detail, **members}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(extra_headers or [])]})
    await send({"type": "http.response.body", "body": body})
