"""Streaming (issue 15, Medium): the embedded nginx-rtmp ingest accepts a publish on `live/<channel>` only from
that channel's feeder, which shows a one-time token; anyone else on the host is refused, so nothing unlabelled
can reach the relays during a feeder restart. Fails on commit 0761e4c, where any publisher was accepted."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import STUDIO, studio_env
from tests.media_helpers import free_port
from workers.streamer.nginx import NginxRtmp
from workers.streamer.publish_auth import PublishAuthServer, PublishTokens, publish_auth_socket, with_token

pytestmark = pytest.mark.integration


def publish(url: str, seconds: float = 1.0) -> subprocess.CompletedProcess:
    """What an intruder on the host would run: a test picture pushed as FLV."""
    return subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i",
                           f"testsrc=s=64x64:r=10:d={seconds}", "-c:v", "libx264", "-f", "flv", url],
                          capture_output=True, text=True, timeout=30)


def test_only_a_feeder_with_a_fresh_token_may_publish(tmp_path):
    tokens = PublishTokens()
    sock = publish_auth_socket(tmp_path)
    with PublishAuthServer(sock, tokens), \
            NginxRtmp(tmp_path / "nginx", rtmp_port=free_port(), http_port=free_port(), hls=False,
                      publish_auth=sock) as nginx:
        base = f"{nginx.rtmp_url}/chan-a"
        assert publish(base).returncode != 0                                   # no token
        assert publish(with_token(base, "made-up")).returncode != 0            # a guess
        other = tokens.issue("chan-b")
        assert publish(with_token(base, other)).returncode != 0                # another channel's token
        mine = tokens.issue("chan-a")
        ok = publish(with_token(base, mine))
        assert ok.returncode == 0, ok.stderr
        assert publish(with_token(base, mine)).returncode != 0                 # spent
        assert (tokens.accepted, tokens.refused) == (1, 4)
    assert not sock.exists()


def test_tokens_expire_and_the_table_is_bounded():
    tokens = PublishTokens(ttl_s=0.05, max_tokens=3)
    old = tokens.issue("c")
    time.sleep(0.1)
    assert not tokens.spend("c", old)
    issued = [tokens.issue("c") for _ in range(5)]
    assert not tokens.spend("c", issued[0])  # pushed out by newer ones
    assert tokens.spend("c", issued[-1])


def test_studio_up_refuses_a_publisher_without_the_token(tmp_path):
    """The acceptance check against a running `studio up`: `ffmpeg ... -f flv rtmp://127.0.0.1:PORT/live/anything`
    is refused, and nothing of it reaches the HLS preview."""
    ports = {"api": free_port(), "redis": free_port(), "rtmp": free_port(), "http": free_port()}
    data = tmp_path / "data"
    proc = subprocess.Popen([STUDIO, "up"], env=studio_env(data, **ports), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not publish_auth_socket(data).exists():
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.5)
        assert publish_auth_socket(data).exists(), "the streamer's publish check never came up"
        assert oct(publish_auth_socket(data).stat().st_mode & 0o777) == "0o600"
        res = publish(f"rtmp://127.0.0.1:{ports['rtmp']}/live/anything")
        assert res.returncode != 0
        with pytest.raises(OSError):  # nothing was published, so there is no playlist to preview
            urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/hls/anything.m3u8", timeout=2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=40)
