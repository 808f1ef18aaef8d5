"""FastAPI app factory."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from api import health, pages, problems
from api.auth import credentials_problem
from api.csrf import CrossOriginGuard
from api.limits import BodyLimit, UploadRoutes
from api.login_guard import LoginGuard
from api.metrics import broker_client
from api.nul_guard import NulGuard
from api.request_id import RequestId
from api.routers import accounts, avatars, catalog, consent_review, consents, ops, voiceovers
from api.work_progress import ProgressBoard
from studio.config import Settings, load_settings
from studio.db import require_current_schema
from studio.runtime import Runtime, build_runtime
from workers.renderers import backend_names

DESCRIPTION = """Consented AI-avatar clones, labelled segments, continuous RTMP.

**Sign in** with `POST /api/auth/login` (a session cookie, for the pages) or send an API key as
`Authorization: Bearer ecs_...` (make one with `POST /api/me/api-keys`; it is shown once). Roles: creator, agency,
ops, reviewer (consent review only), admin. Another tenant's resources answer 404, as ids that do not exist.

**Errors** are problem details (RFC 9457, `application/problem+json`): `detail` says what was wrong; `errors`,
`findings` or `problems` list the particulars. **Lists** take `offset` and `limit` and answer with `X-Total-Count`
and `Link` (next, prev) headers.
"""


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="Ethical Clone Studio", version="0.2.0", description=DESCRIPTION)
    app.state.runtime = rt
    problems.install(app)
    mb, kb = rt.settings.ingest.max_upload_mb, rt.settings.services.max_json_kb
    uploads = UploadRoutes(app)
    # The last added runs first: NulGuard runs inside BodyLimit, on a body already held to its limit.
    app.add_middleware(NulGuard, router=app.router, is_upload=uploads)
    app.add_middleware(BodyLimit, limit_bytes=mb * 1024 * 1024, label=f"{mb} MB (ingest.max_upload_mb)",
                       json_limit_bytes=kb * 1024, json_label=f"{kb} KB (services.max_json_kb)",
                       is_upload=uploads, authenticate=partial(credentials_problem, rt.engine))
    app.add_middleware(CrossOriginGuard)  # nothing of a forged request is read
    app.state.login_guard = LoginGuard(broker_client(rt))
    app.state.progress_board = ProgressBoard(broker_client(rt))  # what the pages poll while an upload is checked
    app.add_middleware(RequestId)  # outermost: every line logged for a request carries its id
    health.install(app)
    # consent_review before consents: its /consents/pending must not be read as a consent id.
    for r in (accounts.router, catalog.router, voiceovers.router, avatars.router, consent_review.router,
              consents.router, ops.channels_router):
        app.include_router(r, prefix="/api", responses=problems.RESPONSES)
    app.include_router(ops.router)
    app.include_router(pages.router)
    return app


def create_app_from_env(settings: Settings | None = None) -> FastAPI:
    """The app `studio api` serves; it refuses a database that `studio db upgrade` has not brought to the newest
    schema (migrations run once, by that command, not on every API start)."""
    rt = build_runtime(settings or load_settings(renderers=backend_names()))
    require_current_schema(rt.engine)
    return create_app(rt)
