"""FastAPI app factory."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from api.routers import avatars, catalog, consents, ops
from studio.config import Settings, load_settings
from studio.db import upgrade
from workers.runtime import Runtime, build_runtime


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="Ethical Clone Studio", version="0.1.0",
                  description="Consented AI-avatar clones, labelled segments, continuous RTMP.")
    app.state.runtime = rt

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the field and the problem, but never echo the input: it may carry a stream key.
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": detail})
    for r in (catalog.router, avatars.router, consents.router, ops.channels_router):
        app.include_router(r, prefix="/api")
    app.include_router(ops.router)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        http = f"http://{rt.settings.services.host}:{rt.settings.services.http_port}"
        return (f"<!doctype html><title>Ethical Clone Studio</title><h1>Ethical Clone Studio</h1>"
                f"<p>API docs: <a href='/docs'>/docs</a> · metrics: <a href='/metrics'>/metrics</a>"
                f" · HLS previews under <code>{http}/hls/</code></p>")

    return app


def create_app_from_env(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    upgrade(settings.db_url)
    return create_app(build_runtime(settings))
