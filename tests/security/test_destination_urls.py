"""Destinations (issue 15, Medium): an agency cannot point a relay at this host or an internal network, the whole
URL must match, the relay sends only rtmp/rtmps and re-checks the resolved address before connecting, and an
agency sees a short error category instead of socket error text."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.app import create_app_from_env
from studio.config import Settings, StreamerConfig
from studio.db import upgrade
from studio.keys import init_all_keys
from studio.models import Agency, Channel
from tests.conftest import api_key
from tests.media_helpers import free_port

INTERNAL = ["rtmp://127.0.0.1/live/key", "rtmp://10.1.2.3/live/key", "rtmp://192.168.0.9:1935/live/key",
            "rtmp://169.254.169.254/live/key", "rtmp://[::1]:1935/live/key", "rtmp://[::ffff:127.0.0.1]/live/key",
            "rtmp://0.0.0.0/live/key", "rtmp://224.0.0.1/live/key", "rtmp://localhost/live/key",
            "rtmps://db.internal/live/key", "rtmp://printer.local/live/key", "rtmp://a.localhost/live/key",
            "rtmp://2130706433/live/key", "rtmp://0x7f000001/live/key", "rtmp://127.1/live/key",
            "rtmp://100.64.1.1/live/key"]


def _client(tmp_path, **settings):
    settings = Settings(data_dir=str(tmp_path / "data"), **settings)
    init_all_keys(settings)
    upgrade(settings.db_url, data_dir=settings.data_path)
    app = create_app_from_env(settings)
    client = TestClient(app)
    client.rt = app.state.runtime
    with Session(client.rt.engine, expire_on_commit=False) as s:
        agency = Agency(name="A")
        s.add(agency)
        s.commit()
    client.agency_id = agency.id
    client.headers["Authorization"] = f"Bearer {api_key(client.rt.engine, role='agency', agency_id=agency.id)}"
    return client


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with _client(tmp_path_factory.mktemp("dest")) as c:
        yield c


def _channel(client, url: str):
    return client.post("/api/channels", json={"name": "c", "territories": ["US"], "destinations": [{"url": url}]})


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_destinations_are_refused(client, url):
    res = _channel(client, url)
    assert res.status_code == 422, res.text
    assert "streamer.allow_private_destinations" in res.text and "key" not in res.json()["detail"].split(":")[-1]


def test_a_public_destination_is_accepted(client):
    assert _channel(client, "rtmp://a.rtmp.youtube.com/live2/abcd-1234").status_code == 201


def test_a_trailing_newline_does_not_pass(client):
    res = _channel(client, "rtmp://a.rtmp.youtube.com/live2/abcd-1234\n")
    assert res.status_code == 422 and "rtmp[s]://host/app/KEY" in res.text
    assert "abcd-1234" not in res.text


def test_an_admin_may_allow_private_destinations(tmp_path):
    with _client(tmp_path, streamer=StreamerConfig(allow_private_destinations=True)) as client:
        assert _channel(client, "rtmp://127.0.0.1:1935/live/key").status_code == 201


def _relay_child(destination: str, *, allow_private: bool = False) -> subprocess.CompletedProcess:
    config = {"destination": destination, "allow_private": allow_private}
    return subprocess.run([sys.executable, "-m", "workers.streamer.relay", "--source",
                           f"rtmp://127.0.0.1:{free_port()}/live/none"], input=json.dumps(config) + "\n",
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("url", ["file:///tmp/out.flv", "http://example.com/x", "tcp://10.0.0.1:80"])
def test_the_relay_refuses_any_scheme_but_rtmp(url, tmp_path):
    done = _relay_child(url.replace("/tmp/out.flv", str(tmp_path / "out.flv")))
    assert done.returncode == 5, done.stderr  # EXIT_CONFIG, before the source is even opened
    assert "only rtmp:// and rtmps://" in done.stderr
    assert not (tmp_path / "out.flv").exists()


def test_the_relay_rechecks_the_resolved_address_before_connecting():
    from workers.streamer.relay import DestinationRefused, check_destination

    # A name on no deny list that resolves to an internal address stands for DNS rebinding.
    name = socket.gethostname()
    resolved = {info[4][0] for info in socket.getaddrinfo(name, 1935, type=socket.SOCK_STREAM)}
    assert resolved, name
    with pytest.raises(DestinationRefused, match="resolves to"):
        check_destination(f"rtmp://{name}:1935/live/key", allow_private=False)
    with pytest.raises(DestinationRefused, match="only rtmp"):
        check_destination("srt://example.com:9000/live/key", allow_private=True)
    check_destination(f"rtmp://{name}:1935/live/key", allow_private=True)


@pytest.mark.parametrize("raw, category", [
    ("Connection to tcp://10.9.8.7:1935?tcp_nodelay=0 failed: Connection refused", "connection refused"),
    ("[Errno 110] Connection timed out: 'rtmp://10.9.8.7:1935'", "timeout"),
    ("Failed to resolve hostname db.corp.example: Name or service not known", "dns"),
    ("error:0A000086:SSL routines::certificate verify failed (10.9.8.7)", "tls"),
    ("Server error: [NetStream.Publish.Rejected] 10.9.8.7 said no", "rejected by server"),
])
def test_agencies_see_an_error_category_not_socket_text(client, raw, category):
    with Session(client.rt.engine, expire_on_commit=False) as s:
        channel = Channel(name="c", territories=["US"], agency_id=client.agency_id)
        s.add(channel)
        s.commit()
    client.rt.data.run.mkdir(parents=True, exist_ok=True)
    (client.rt.data.run / f"channel-{channel.id}.json").write_text(json.dumps({
        "channel_id": channel.id, "airing": True, "destinations": [
            {"id": "d1", "url": "rtmp://a.rtmp.youtube.com/live2/****", "state": "backing_off", "last_error": raw}]}))
    dest = client.get(f"/api/channels/{channel.id}/status").json()["destinations"][0]
    assert dest["last_error"] == category and "10.9.8.7" not in json.dumps(dest)
    ops = {"Authorization": f"Bearer {api_key(client.rt.engine, role='ops')}"}
    seen = client.get(f"/api/channels/{channel.id}/status", headers=ops).json()["destinations"][0]
    assert seen["error"] == category and seen["last_error"] == raw  # ops see the (masked) detail
