"""The pages for creators, agencies, ops and consent reviewers: static HTML and plain JavaScript (api/web/) over the
JSON API, so no Node build is needed. Each page signs in through the session cookie and shows only what the API lets
its user see."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

WEB = Path(__file__).resolve().parent / "web"
PAGES = {"login": "login.html", "creator": "creator.html", "agency": "agency.html", "ops": "ops.html",
         "review": "review.html"}
ASSETS = {"app.js": "text/javascript", "style.css": "text/css", "creator.js": "text/javascript",
          "creator-voice.js": "text/javascript", "agency.js": "text/javascript", "ops.js": "text/javascript",
          "review.js": "text/javascript"}

router = APIRouter(include_in_schema=False)


@router.get("/")
def index():
    return RedirectResponse("/login")


@router.get("/{page}")
def page(page: str):
    if page not in PAGES:
        raise HTTPException(404, f"no page {page!r}; pages: {', '.join('/' + p for p in PAGES)}")
    return FileResponse(WEB / PAGES[page], media_type="text/html", headers={"Cache-Control": "no-store"})


@router.get("/static/{name}")
def asset(name: str):
    if name not in ASSETS:
        raise HTTPException(404, f"no asset {name!r}")
    return FileResponse(WEB / name, media_type=ASSETS[name])
