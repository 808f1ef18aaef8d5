"""Upload size limits enforced before the body is read.

FastAPI parses a multipart body completely (spooling it to disk) before a handler runs, so a check in the handler
comes after a few hundred MB have been read. This ASGI middleware answers 413 at once when the declared
Content-Length is over the limit, and stops a body without a length (chunked) as soon as it passes the limit.
"""

from __future__ import annotations

import json

from api.problems import MEDIA_TYPE, TYPE_BASE

SLACK = 64 * 1024  # multipart boundaries and form fields around the file


class BodyLimit:
    def __init__(self, app, *, limit_bytes: int, label: str):
        self.app, self.limit, self.label = app, limit_bytes + SLACK, label

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, f"the upload of {int(declared)} bytes exceeds the limit of {self.label}")
        seen = 0
        refused = started = False

        async def counting_receive():
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Answer now, then tell the app the client left: it stops reading, and whatever it answers
                    # to that is dropped below.
                    refused = True
                    if not started:
                        await self._refuse(send, f"the upload exceeds the limit of {self.label}")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if not refused:
                started = started or message["type"] == "http.response.start"
                await send(message)

        await self.app(scope, counting_receive, guarded_send)

    @staticmethod
    async def _refuse(send, detail: str) -> None:
        body = json.dumps({"type": TYPE_BASE + "content-too-large", "title": "Content Too Large", "status": 413,
                           "detail": detail}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
