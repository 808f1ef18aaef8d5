"""api.nul_guard without services: the walk of parsed JSON for U+0000, how a place is named, and the middleware on a
small app (refusals, and a body without a NUL replayed to the route byte for byte)."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from api.nul_guard import NulGuard, loc_text, nul_location


@pytest.mark.parametrize(("value", "loc"), [
    ({"name": "Se\0rum"}, ("body", "name")),
    ({"items": [{"title": "a"}, {"title": "b"}, {"title": "c\0"}]}, ("body", "items", 2, "title")),
    ({"scope": {"na\0me": 1}}, ("body", "scope", "na\0me")),
    (["ok", ["\0"]], ("body", 1, 0)),
    ("\0", ("body",)),
    ({"a": "x\0", "b": "y\0"}, ("body", "a")),  # the first in document order
])
def test_nul_location_finds_a_nul_in_a_key_or_a_string(value, loc):
    assert nul_location(value) == loc


@pytest.mark.parametrize("value", [
    {"name": "Serum", "n": 0, "ok": True, "none": None, "list": [1.5, "x", {}]},
    json.loads('{"name": "Se\\\\u0000rum"}'),  # an escaped backslash: the text \u0000, no NUL
    [],
])
def test_nul_location_passes_json_without_a_nul(value):
    assert nul_location(value) is None


def test_nul_location_walks_deep_nesting_without_recursion():
    value: list = ["\0"]
    for _ in range(20_000):
        value = [value]
    assert nul_location(value) == ("body",) + (0,) * 20_001


def test_loc_text_names_the_place_as_a_person_reads_it():
    assert loc_text(("body", "items", 2, "title")) == "body.items[2].title"
    assert loc_text(("grant", "scope", "na\0me")) == "grant.scope.na\\u0000me"
    assert loc_text(("query", "name")) == "query parameter 'name'"
    assert loc_text(("path", "script_id")) == "path parameter 'script_id'"
    assert loc_text(("path",)) == "the path"
    assert loc_text(("body", "k" * 100)) == "body." + "k" * 40


@pytest.fixture(scope="module")
def client():
    app = FastAPI()

    @app.post("/echo/{item_id}")
    async def echo(item_id: str, request: Request):
        return {"body": (await request.body()).decode("latin-1")}

    @app.get("/items/{item_id}")
    def item(item_id: str, q: str | None = None):
        return {"id": item_id}

    app.add_middleware(NulGuard, router=app.router, is_upload=lambda path: path.startswith("/upload"))
    return TestClient(app)


def test_a_body_without_a_nul_reaches_the_route_unchanged(client):
    for body in (b'{"a": "\\\\u0000", "b": [1, 2]}', b"not json \\u0000", b""):
        res = client.post("/echo/1", content=body, headers={"content-type": "application/json"})
        assert res.status_code == 200, res.text
        assert res.json()["body"] == body.decode("latin-1")


def _drive(pieces: list[bytes]) -> tuple[list[dict], list[dict]]:
    """NulGuard called as a server calls it, the body in `pieces` (one http.request message each); (what the route
    received, what was sent back)."""
    incoming = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
    incoming.append({"type": "http.disconnect"})
    received, sent = [], []

    async def route(scope, receive, send):
        while (message := await receive())["type"] == "http.request":
            received.append(message)
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    guard = NulGuard(route, router=FastAPI().router, is_upload=lambda path: False)
    scope = {"type": "http", "method": "POST", "path": "/x", "query_string": b"", "headers": []}
    asyncio.run(guard(scope, receive, send))
    return received, sent


def test_a_body_sent_in_pieces_is_replayed_to_the_route_as_it_came():
    pieces = [b'{"a": "', b"x" * 5000, b'", "b": "\\\\u0000"}']
    received, sent = _drive(pieces)
    assert [m["body"] for m in received] == pieces
    assert sent[0]["status"] == 204


def test_a_nul_escape_split_across_pieces_is_refused():
    received, sent = _drive([b'{"a": [{"b": "x\\u', b'0000"}]}'])
    assert received == [] and sent[0]["status"] == 422
    assert json.loads(sent[1]["body"])["detail"].startswith("body.a[0].b holds a NUL character (\\u0000)")


def test_a_nul_in_json_in_utf16_is_refused(client):
    res = client.post("/echo/1", content=json.dumps({"name": "Se\0rum"}).encode("utf-16"),
                      headers={"content-type": "application/json"})
    assert res.status_code == 422, res.text
    assert res.json()["errors"][0]["loc"] == ["body", "name"]


def test_the_path_and_query_are_checked_raw_and_decoded(client):
    assert client.get("/items/a%00").json()["errors"][0]["loc"] == ["path", "item_id"]
    assert client.get("/items/a?q=%00").json()["errors"][0]["loc"] == ["query", "q"]
    assert client.get("/items/a?x%00=1").json()["detail"].startswith("query parameter 'x\\u0000' holds a NUL")
    assert client.get("/nowhere%00").json()["detail"].startswith("the path holds a NUL character (%00)")
    assert client.get("/items/a?q=%5Cu0000").status_code == 200  # the text \u0000


def test_an_upload_route_body_is_left_to_its_handler(client):
    res = client.post("/upload/x", content=json.dumps({"a": "\0"}), headers={"content-type": "application/json"})
    assert res.status_code == 404  # passed through to the (absent) route, body unread
