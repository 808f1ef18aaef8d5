"""X-Request-ID: echoed when the caller (a proxy) sends one, made up otherwise; every log line written while the
request runs carries it (workers.logs)."""

from __future__ import annotations

import re
import uuid

from workers.logs import log_context

HEADER = b"x-request-id"
# A caller's id is echoed only when it is short and plain, so a header cannot inject into logs.
_SAFE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestId:
    """Pure ASGI middleware, so the context variable is set in the task that also writes the access log."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(HEADER, b"").decode("latin-1")
        rid = given if _SAFE.match(given) else uuid.uuid4().hex

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, rid.encode())]}
            await send(message)

        with log_context(request_id=rid):
            await self.app(scope, receive, send_with_id)
