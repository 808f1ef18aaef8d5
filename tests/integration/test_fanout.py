"""Fan-out on real services: the streamer supervisor (`python -m workers.streamer.supervisor`) airs a channel
to the local nginx-rtmp ingest and relays it to three destinations made through the API: an RTMP receiver
(`ffmpeg -listen`), an RTMPS receiver (the same behind a TLS terminator with a self-signed certificate), and
an RTMPS address where nothing listens. The first receiver is killed mid-stream and started again on its port.

Each destination is on its own: the unreachable one keeps backing off with masked errors, the killed one
reconnects within 3 s of coming back, and the RTMPS recording has no gap through all of it. No stream key
is in any API response, the channel status, a log file under data/logs, or the database file."""

from __future__ import annotations

import datetime as dt
import json
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import sqlmodel
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from api.app import create_app_from_env
from studio.config import load_settings
from studio.db import session_scope, upgrade
from studio.keys import init_all_keys
from studio.models import Avatar, Consent, Creator, Destination, Show, utcnow
from tests.conftest import FULL_SCOPE, ROOT, as_admin, require, studio_env
from tests.media_helpers import free_port
from workers.streamer.nginx import NginxRtmp

pytestmark = pytest.mark.integration

KEYS = {"a": "KEY-A-7f3e9c1d55", "b": "KEY-B-52aa0b9e77", "c": "KEY-C-0d1c33f499"}
FRAME = 1 / 25
RECONNECT_LIMIT = 3.0  # seconds from the endpoint coming back to the relay being live on it (the goal)


def _receiver(port: int, key: str, out: Path) -> subprocess.Popen:
    """An RTMP server that is not ours: one `ffmpeg -listen` recording what is published to it."""
    return subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "warning", "-y", "-listen", "1",
                             "-i", f"rtmp://127.0.0.1:{port}/live/{key}", "-c", "copy", "-f", "flv", str(out)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class TlsTerminator:
    """RTMPS endpoint: TLS on a loopback port (self-signed certificate), plain bytes forwarded to `target_port`.

    ffmpeg cannot listen on rtmps itself ("rtmp_listen not available for rtmps"), hence this stand-in for a
    platform's TLS front end."""

    def __init__(self, workdir: Path, target_port: int):
        self.target_port = target_port
        self.handshakes = 0
        self.bytes_in = 0
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
        cert_path, key_path = workdir / "tls.pem", workdir / "tls.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert_path, key_path)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
            self.handshakes += 1
            plain = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            raw.close()
            return
        with tls, plain:  # one thread moves both ways: an SSL socket must not be read and written concurrently
            while not self.closed.is_set():
                ready, _, _ = select.select([tls, plain], [], [], 0.5)
                try:
                    if tls in ready or tls.pending():
                        data = tls.recv(65536)
                        if not data:
                            return
                        self.bytes_in += len(data)
                        plain.sendall(data)
                    if plain in ready:
                        data = plain.recv(65536)
                        if not data:
                            return
                        tls.sendall(data)
                except (OSError, ssl.SSLError):
                    return

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


def _dts(path: Path) -> dict[str, np.ndarray]:
    times: dict[str, list[float]] = {"video": [], "audio": []}
    with av.open(str(path)) as c:
        for pkt in c.demux():
            if pkt.dts is not None and pkt.size:
                times[pkt.stream.type].append(float(pkt.dts * pkt.time_base))
    return {k: np.array(v) for k, v in times.items()}


def _by_key(status: dict) -> dict[str, dict]:
    """The channel status's destinations, named a/b/c by their (masked) port."""
    return {name: d for d in status.get("destinations", []) for name, port in PORTS.items() if f":{port}/" in d["url"]}


PORTS: dict[str, int] = {}


@pytest.fixture(scope="module")
def fanout(tmp_path_factory):
    require("nginx", "ffmpeg")
    tmp = tmp_path_factory.mktemp("fanout")
    data = tmp / "data"
    config = tmp / "studio.yaml"
    config.write_text((ROOT / "configs" / "default.yaml").read_text()
                      .replace("width: 720", "width: 360").replace("height: 1280", "height: 640"))
    env = {**studio_env(data, rtmp=free_port(), http=free_port(), api=free_port(), redis=free_port()),
           "STUDIO_CONFIG": str(config)}
    settings = load_settings(config, env=env)
    init_all_keys(settings)
    upgrade(settings.db_url)

    pa, pb = free_port(), free_port()
    tls = TlsTerminator(tmp, pb)
    pc = free_port()  # nothing listens here
    PORTS.update(a=pa, b=tls.port, c=pc)
    urls = {"a": f"rtmp://127.0.0.1:{pa}/live/{KEYS['a']}", "b": f"rtmps://127.0.0.1:{tls.port}/live/{KEYS['b']}",
            "c": f"rtmps://127.0.0.1:{pc}/live/{KEYS['c']}"}
    receivers = {"a1": _receiver(pa, KEYS["a"], tmp / "a1.flv"), "b": _receiver(pb, KEYS["b"], tmp / "b.flv")}
    nginx = NginxRtmp(data / "nginx", rtmp_port=settings.services.rtmp_port, http_port=settings.services.http_port,
                      hls=False).start()
    responses: list[str] = []
    obs: dict = {"tmp": tmp, "data": data, "responses": responses, "urls": urls}
    supervisor = None
    app = create_app_from_env(settings)
    try:
        with TestClient(app) as api:
            as_admin(api, app.state.runtime.engine)
            res = api.post("/api/channels", json={"name": "fan", "territories": ["US"], "destinations": [
                {"url": urls[k]} for k in "abc"]})
            assert res.status_code == 201, res.text
            responses.append(res.text)
            channel_id = res.json()["id"]
            obs["channel_id"] = channel_id
            _show(settings, channel_id, tmp)
            (data / "logs").mkdir(parents=True, exist_ok=True)
            with open(data / "logs" / "streamer.log", "ab") as log:
                supervisor = subprocess.Popen([sys.executable, "-m", "workers.streamer.supervisor"], env=env,
                                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

            def status() -> dict:
                r = api.get(f"/api/channels/{channel_id}/status")
                responses.append(r.text)
                return r.json()

            def wait_for(what, timeout: float) -> dict:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    st = status()
                    if what(st):
                        return st
                    time.sleep(0.2)
                raise AssertionError(f"timed out; last status: {json.dumps(st, indent=1)}\n"
                                     f"{(data / 'logs' / 'streamer.log').read_text()[-3000:]}")

            both_live = lambda st: all(_by_key(st).get(k, {}).get("state") == "live" for k in "ab")  # noqa: E731
            st = wait_for(both_live, 90)
            obs["airing_since"] = st["airing_since"]
            obs["live_after_publish"] = max(_by_key(st)[k]["live_since"] for k in "ab") - st["airing_since"]
            obs["live_at"] = time.time()
            time.sleep(6)
            st = status()
            obs["c_early"], obs["a_before_kill"] = _by_key(st)["c"], _by_key(st)["a"]

            receivers["a1"].kill()  # the endpoint dies mid-stream (its unflushed recording is lost with it)
            obs["killed_at"] = time.time()
            wait_for(lambda st: _by_key(st)["a"]["state"] != "live", 10)
            time.sleep(2.5)
            obs["a_down"] = _by_key(status())["a"]
            receivers["a2"] = _receiver(pa, KEYS["a"], tmp / "a2.flv")  # and comes back on the same port
            back = time.time()
            st = wait_for(lambda st: _by_key(st)["a"]["state"] == "live" and
                          (_by_key(st)["a"]["live_since"] or 0) > back, 15)
            obs["reconnect_s"] = _by_key(st)["a"]["live_since"] - back
            time.sleep(5)
            obs["final"] = status()
            obs["channels"] = api.get("/api/channels").text
            responses.append(obs["channels"])
            obs["run_json"] = (data / "run" / f"channel-{channel_id}.json").read_text()
            obs["stopped_at"] = time.time()
    finally:
        if supervisor is not None:
            supervisor.send_signal(signal.SIGTERM)
            try:
                supervisor.wait(timeout=30)
            except subprocess.TimeoutExpired:
                supervisor.kill()
        for proc in receivers.values():  # each ends when its relay disconnects; the recording is complete
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(timeout=5)
        nginx.stop()
        tls.close()
    obs["supervisor_rc"] = supervisor.returncode if supervisor else None
    obs["tls_handshakes"] = tls.handshakes
    return obs


def _show(settings, channel_id: str, tmp: Path) -> None:
    """A show on the channel; its avatar has no usable bundle, so the labelled card slate airs throughout."""
    from datetime import timedelta

    from studio.db import make_engine

    engine = make_engine(settings.db_url)
    now = utcnow()
    with session_scope(engine) as s:
        creator = Creator(name="Ava")
        s.add(creator)
        s.flush()
        avatar = Avatar(creator_id=creator.id, name="Ava", status="deleted", bundle_path=str(tmp / "gone"),
                        footage_sha256="-", width=360, height=640, fps=25.0, duration_s=32.0)
        s.add(avatar)
        s.flush()
        consent = Consent(creator_id=creator.id, avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                          starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1), scope=FULL_SCOPE,
                          statement_sha256="-")
        s.add(consent)
        s.flush()
        s.add(Show(channel_id=channel_id, avatar_id=avatar.id, consent_id=consent.id, name="fan-out",
                   script_ids=[], starts_at=now - timedelta(seconds=1)))
    engine.dispose()


def test_destinations_are_sealed_at_rest(fanout):
    from studio.db import make_engine
    from studio.secrets import is_sealed

    engine = make_engine(f"sqlite:///{fanout['data'] / 'studio.db'}")
    with session_scope(engine) as s:
        rows = s.exec(sqlmodel.select(Destination)).all()
        assert len(rows) == 3 and all(is_sealed(r.url) and "****" in r.url_masked for r in rows)
    engine.dispose()


def test_reachable_destinations_receive_the_stream_and_the_rtmps_one_has_no_gap(fanout):
    tmp = fanout["tmp"]
    b = _dts(tmp / "b.flv")
    assert fanout["tls_handshakes"] >= 1  # B really went over TLS
    dv, da = np.diff(b["video"]), np.diff(b["audio"])
    assert dv.min() > 0 and dv.max() <= FRAME * 1.5, f"B video dts steps {dv.min():.3f}..{dv.max():.3f} s"
    assert da.min() > 0 and da.max() <= 1024 / 48000 * 1.5, f"B audio dts steps {da.min():.3f}..{da.max():.3f} s"
    # B aired continuously from before A was killed until after A came back.
    span = fanout["stopped_at"] - fanout["live_at"]
    assert b["video"][-1] - b["video"][0] >= span - 1.0, f"B recorded {b['video'][-1]:.1f} s of {span:.1f} s"
    # A relayed until it was killed (its receiver's own file died with it), then again once it was back.
    assert fanout["a_before_kill"]["seconds_relayed"] >= 5.0 and fanout["a_before_kill"]["bytes_relayed"] > 0
    a2 = _dts(tmp / "a2.flv")
    assert a2["video"][-1] >= 4.0 and np.diff(a2["video"]).max() <= FRAME * 1.5


def test_a_destination_that_comes_back_is_live_again_within_3_s(fanout):
    reconnect = fanout["reconnect_s"]
    print(f"reconnect after the endpoint came back: {reconnect:.2f} s")
    assert 0 < reconnect <= RECONNECT_LIMIT
    a = _by_key(fanout["final"])["a"]
    assert a["connects"] == 2 and a["state"] == "live"
    down = fanout["a_down"]
    assert down["state"] == "backing_off" and down["attempts"] >= 2 and KEYS["a"] not in json.dumps(down)


def test_the_unreachable_destination_keeps_backing_off_with_masked_errors(fanout):
    early, late = fanout["c_early"], _by_key(fanout["final"])["c"]
    assert early["state"] in ("backing_off", "connecting") and late["state"] in ("backing_off", "connecting")
    assert late["attempts"] > early["attempts"] >= 3, (early, late)
    assert late["connects"] == 0 and late["bytes_relayed"] == 0
    assert "Connection refused" in late["last_error"] and late["url"].endswith("/live/****")
    assert late["url"].startswith("rtmps://")


def test_relays_started_before_the_feeder_publishes_follow_it_at_once(fanout):
    # The supervisor starts the relays with the feeder, which first renders its slates: they wait on the ingest.
    print(f"both destinations live {fanout['live_after_publish']:.2f} s after the feeder started publishing")
    assert 0 < fanout["live_after_publish"] <= 5.0


def test_the_feeder_and_the_others_never_noticed(fanout):
    final = fanout["final"]
    assert final["state"] == "airing" and final["airing_since"] == fanout["airing_since"]
    assert final["last_error"] is None
    b = _by_key(final)["b"]
    assert b["connects"] == 1 and b["state"] == "live" and b["seconds_relayed"] > 10
    assert fanout["supervisor_rc"] == 0


def test_no_stream_key_in_api_responses_status_logs_or_database(fanout):
    data = fanout["data"]
    places = {"API responses": "\n".join(fanout["responses"]), "channel status": fanout["run_json"]}
    logs = [p for p in (data / "logs").rglob("*") if p.is_file()] + \
        [p for p in (data / "nginx" / "logs").rglob("*") if p.is_file()]
    assert any(p.name == "streamer.log" and p.stat().st_size > 0 for p in logs)
    for path in logs:
        places[str(path.relative_to(data))] = path.read_text(errors="replace")
    db = data / "studio.db"
    places["database"] = b"".join(p.read_bytes() for p in data.glob("studio.db*")).decode("latin-1")
    assert db.exists()
    for where, text in places.items():
        for key in KEYS.values():
            assert key not in text, f"stream key {key} found in {where}"
    assert "live/****" in places["API responses"] and "live/****" in places["channel status"]
