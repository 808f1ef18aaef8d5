"""Text holding a NUL character (U+0000) is refused before a route runs.

PostgreSQL text cannot hold NUL: a name, script or id carrying one (`\\u0000` in JSON, `%00` in the URL) fails in
the database as a 500, after the route has done part of its work (SQLite stores it silently). This ASGI middleware,
inside BodyLimit (so a body is already bounded and declared JSON), answers 422 problem details naming where the NUL
is, before the route runs:
- the decoded path (naming the path parameter) and the query string, raw and percent-decoded (naming the parameter);
- the JSON body of a POST, PUT or PATCH to any route but the upload routes: buffered, parsed only when its bytes
  hold the escape `\\u0000` or a NUL byte (JSON in UTF-16 or UTF-32), then walked for a key or string holding
  U+0000 (an escaped backslash, `"\\\\u0000"`, is text and passes); otherwise replayed to the route unchanged.
Upload routes read multipart forms; a route that stores a form field checks it with `nul_location` (the consent
grant's `grant`).

422, not 400: the request is well-formed HTTP and JSON and only a value is unacceptable, which is how FastAPI
answers a bad path, query or body value; every route with parameters or a body declares 422 in the OpenAPI.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from urllib.parse import parse_qsl

from starlette.routing import Match

from api.limits import refuse

STATUS = 422
ESCAPES = (b"\\u0000", b"\x00")  # what a JSON body holding U+0000 must contain, in UTF-8 or in UTF-16/32


def nul_location(value, root: tuple = ("body",)) -> tuple | None:
    """Where parsed JSON `value` holds U+0000 in a key or a string, as a loc (`("body", "items", 2, "title")`), or
    None. Iterative: a body nested a thousand deep does not exhaust the stack."""
    stack = [(root, value)]
    while stack:
        loc, v = stack.pop()
        if isinstance(loc[-1], str) and "\0" in loc[-1] or isinstance(v, str) and "\0" in v:
            return loc
        if isinstance(v, dict):
            stack.extend((loc + (k,), item) for k, item in reversed(v.items()))
        elif isinstance(v, list):
            stack.extend((loc + (i,), v[i]) for i in reversed(range(len(v))))
    return None


def loc_text(loc: tuple) -> str:
    """Where a loc points, in words: `body.items[2].title`, `query parameter 'name'`, `path parameter 'id'`, `the
    path`; a NUL shown as `\\u0000`, long names cut."""
    if loc[0] in ("path", "query"):
        out = f"{loc[0]} parameter '{str(loc[1])[:40]}'" if len(loc) > 1 else "the path"
    else:
        out = str(loc[0]) + "".join(f"[{p}]" if isinstance(p, int) else "." + p[:40] for p in loc[1:])
    return out.replace("\0", "\\u0000")


def nul_problem(loc: tuple, escape: str = "\\u0000") -> dict:
    """The refusal of a NUL at `loc`: the sentence and the `errors` member, as validation errors carry them."""
    return {"message": f"{loc_text(loc)} holds a NUL character ({escape}), which the database cannot store; "
                       "remove it",
            "errors": [{"loc": [p.replace("\0", "\\u0000") if isinstance(p, str) else p for p in loc],
                        "msg": "holds a NUL character", "type": "nul_character"}]}


class NulGuard:
    """ASGI middleware: 422 problem details for a NUL in the path, the query or a JSON body, before the route runs."""

    def __init__(self, app, *, router, is_upload):
        """`router`: the app's router (its routes name the path parameters); `is_upload`: api.limits.UploadRoutes."""
        self.app, self.router, self.is_upload = app, router, is_upload

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if (loc := self._url_nul(scope)) is not None:
            return await self._refuse(send, loc, "%00")
        if scope["method"] not in ("POST", "PUT", "PATCH") or self.is_upload(scope["path"]):
            return await self.app(scope, receive, send)
        messages = []  # the body as it came (BodyLimit holds it to services.max_json_kb), to replay
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        if any(e in body for e in ESCAPES) and (loc := _body_nul(body)) is not None:
            return await self._refuse(send, loc, "\\u0000")
        queued = iter(messages)

        async def replay():
            return next(queued, None) or await receive()

        await self.app(scope, replay, send)

    def _url_nul(self, scope) -> tuple | None:
        if "\0" in scope["path"]:
            for route in self.router.routes:
                match, child = route.matches(scope)
                if match is not Match.NONE:
                    for name, value in child.get("path_params", {}).items():
                        if "\0" in str(value):
                            return ("path", name)
            return ("path",)
        query = scope.get("query_string", b"").decode("latin-1")  # as Starlette decodes it
        for name, value in parse_qsl(query, keep_blank_values=True):
            if "\0" in name or "\0" in value:
                return ("query", name)
        return None

    @staticmethod
    async def _refuse(send, loc: tuple, escape: str) -> None:
        problem = nul_problem(loc, escape)
        await refuse(send, STATUS, HTTPStatus(STATUS).phrase, problem["message"], errors=problem["errors"])


def _body_nul(body: bytes) -> tuple | None:
    """Where a JSON body holds U+0000, parsed as Starlette parses it; None for a body it cannot parse (the route
    answers that)."""
    try:
        return nul_location(json.loads(body))
    except (ValueError, RecursionError):
        return None
