"""Cross-site request forgery: a state-changing request that a browser sent from another site is refused.

SameSite=Lax alone lets a sibling subdomain ("same-site") post with the session cookie, and older browsers ignore
it. Every browser in use marks its requests: `Sec-Fetch-Site` (same-origin, same-site, cross-site, none) and, on
POST/PUT/PATCH/DELETE, `Origin`. The check follows Go's net/http CrossOriginProtection: a request is allowed when
`Sec-Fetch-Site` is same-origin or none (typed by the user); when that header is absent, when `Origin` is absent
too (not a browser: curl, the CLI, programs with API keys) or names this very host; everything else is 403.
Requests that carry an API key are not cookie-authenticated and pass: a site cannot make a browser attach one.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from api.problems import problem

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def cross_origin(method: str, headers: dict[str, str], *, host: str, trusted_origins: frozenset[str]) -> str | None:
    """Why this request is refused as cross-origin, or None. `headers` has lower-case names."""
    if method in SAFE_METHODS:
        return None
    if headers.get("authorization", "")[:7].lower() == "bearer " or headers.get("x-api-key"):
        return None
    site = headers.get("sec-fetch-site")
    if site is not None:
        if site in ("same-origin", "none"):
            return None
        return f"a {site} request may not change state here (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    if origin is None:
        return None
    if origin in trusted_origins:
        return None
    parts = urlsplit(origin)
    if origin != "null" and parts.netloc and parts.netloc.lower() == host.lower():
        return None
    return f"a request from another origin ({origin[:100]}) may not change state here"


class CrossOriginGuard:
    """ASGI middleware: 403 problem details for a cross-origin state-changing request, before any handler runs."""

    def __init__(self, app, *, trusted_origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self.trusted = frozenset(o.rstrip("/") for o in trusted_origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        reason = cross_origin(scope["method"], headers, host=headers.get("host", ""), trusted_origins=self.trusted)
        if reason is None:
            return await self.app(scope, receive, send)
        await problem(403, reason)(scope, receive, send)
