"""Streaming (issue 15, Medium): the embedded nginx-rtmp ingest accepts a publish on `live/<channel>` only from
that channel's feeder, which shows a one-time token; anyone else on the host is refused, so nothing unlabelled
can reach the relays during a feeder restart. Fails on commit 0761e4c, where any publisher was accepted."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import STUDIO, studio_env
from tests.media_helpers import free_port
from workers.streamer.nginx import NginxRtmp
from workers.streamer.publish_auth import (
    PublishAuthError,
    PublishAuthServer,
    PublishTokens,
    private_dir,
    publish_auth_socket,
    with_token,
)

pytestmark = pytest.mark.integration


def publish(url: str, seconds: float = 1.0) -> subprocess.CompletedProcess:
    """What an intruder on the host would run: a test picture pushed as FLV."""
    return subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i",
                           f"testsrc=s=64x64:r=10:d={seconds}", "-c:v", "libx264", "-f", "flv", url],
                          capture_output=True, text=True, timeout=30)


def deep(tmp_path):
    """A data directory whose data/nginx/publish-auth.sock would not fit a Unix socket's 108 bytes."""
    return tmp_path / ("volumes-" + "a" * 40) / ("kubernetes-" + "b" * 40) / "data"


@pytest.mark.parametrize("where", ["data dir", "deep data dir"])
def test_only_a_feeder_with_a_fresh_token_may_publish(tmp_path, where):
    tokens = PublishTokens()
    sock = publish_auth_socket(tmp_path if where == "data dir" else deep(tmp_path))
    assert (sock.parent == tmp_path / "nginx") == (where == "data dir")
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


def test_a_socket_too_deep_for_the_data_dir_lives_in_a_private_folder_named_by_it(tmp_path):
    """Before, a data_dir deeper than about 70 characters (a pytest folder numbered over 99 under xdist, a
    Kubernetes volume) stopped `studio up` and the streamer with a traceback: the socket path would not fit."""
    short, long_ = publish_auth_socket(tmp_path), publish_auth_socket(deep(tmp_path))
    assert short == tmp_path / "nginx" / "publish-auth.sock"
    assert long_.parent == Path("/tmp") / f"studio-{os.getuid()}" and long_.name.startswith("publish-auth-")
    assert len(str(long_)) <= 100 and publish_auth_socket(deep(tmp_path)) == long_
    assert publish_auth_socket(deep(tmp_path) / "other") != long_
    assert publish_auth_socket(tmp_path / "with space").parent.name == f"studio-{os.getuid()}"  # nginx can't quote it
    with socket.socket(socket.AF_UNIX) as probe:  # what the old path did: too long to bind
        with pytest.raises(OSError):
            probe.bind(str(deep(tmp_path) / "nginx" / "publish-auth.sock"))


@pytest.fixture
def short_root():
    """A folder standing in for /tmp, short enough for a socket (pytest's own may not be)."""
    root = Path(tempfile.mkdtemp(prefix="pa-", dir="/tmp"))
    yield root
    shutil.rmtree(root)


def test_the_socket_folder_must_be_this_user_s_alone(tmp_path, short_root):
    """A folder under /tmp that someone else made first (theirs, open to all, or a link to elsewhere) could hold
    their own socket answering nginx that any publish may go ahead: refused, and no socket is made."""
    sock = publish_auth_socket(deep(tmp_path), short_root=short_root)
    with PublishAuthServer(sock, PublishTokens()):
        assert oct(sock.parent.stat().st_mode & 0o777) == "0o700" and sock.exists()
    assert not sock.exists()
    folder = sock.parent
    folder.chmod(0o777)
    with pytest.raises(PublishAuthError, match=r"is writable by others \(mode 0777\)"):
        PublishAuthServer(sock, PublishTokens())
    folder.chmod(0o700)
    os.chown(folder, 65534, 65534)
    with pytest.raises(PublishAuthError, match=f"belongs to uid 65534, not this user \\(uid {os.getuid()}\\)"):
        PublishAuthServer(sock, PublishTokens())
    folder.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    folder.symlink_to(elsewhere)
    with pytest.raises(PublishAuthError, match="is a link, not a directory") as exc:
        PublishAuthServer(sock, PublishTokens())
    assert str(folder) in str(exc.value) and "data/nginx" in str(exc.value)
    assert not list(elsewhere.iterdir())
    private_dir(tmp_path / "fresh" / "sub")  # made where missing, 0700
    assert oct((tmp_path / "fresh" / "sub").stat().st_mode & 0o777) == "0o700"


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
    data = deep(tmp_path)  # the publish check's socket in its private folder under /tmp
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
