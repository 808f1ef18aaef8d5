"""Preview stills are shared through Redis: the streamer decodes the newest still of a channel's HLS preview on
its own host and writes it to Redis; the API on another host (its data directory holds no HLS) serves the same
JPEG to whoever may see the channel, and only to them; the still expires when the streamer stops writing, and the
API's own HLS directory is the fallback when Redis holds none."""

from __future__ import annotations

import subprocess
import threading
import time
from types import SimpleNamespace

import redis
from fastapi.testclient import TestClient
from sqlmodel import Session

from studio.config import Settings
from studio.models import Agency, Channel
from tests.conftest import api_key, db_show, require
from tests.integration.test_metrics_redis import redis_server  # noqa: F401  (fixture)
from workers.media.preview import first_frame_jpeg, hls_dir
from workers.streamer import preview_share
from workers.streamer.preview_share import PreviewShare


def _hls(data_root, channel_id: str) -> bytes:
    """What nginx-rtmp leaves in a host's HLS directory: a playlist and an MPEG-TS fragment (a test pattern)."""
    require("ffmpeg")
    folder = hls_dir(data_root)
    folder.mkdir(parents=True, exist_ok=True)
    fragment = folder / f"{channel_id}-7.ts"
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=320x568:rate=25", "-frames:v", "5", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-f", "mpegts", str(fragment)], check=True, timeout=60)
    (folder / f"{channel_id}.m3u8").write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{fragment.name}\n")
    return first_frame_jpeg(fragment)


def _agency_channel(engine, channel_id: str) -> tuple[str, str]:
    """The channel belongs to agency A; returns (A's key, another agency's key)."""
    with Session(engine) as s:
        mine, other = Agency(name="A"), Agency(name="B")
        s.add_all([mine, other])
        s.flush()
        s.get(Channel, channel_id).agency_id = mine.id
        s.commit()
        ids = mine.id, other.id
    return api_key(engine, role="agency", agency_id=ids[0]), api_key(engine, role="agency", agency_id=ids[1])


def test_a_still_shared_by_the_streamer_is_served_by_the_api_on_another_host(redis_server, fresh_db,  # noqa: F811
                                                                              tmp_path):
    from api.app import create_app

    _, url = redis_server
    cid = db_show(fresh_db)["channel"]
    owner, stranger = _agency_channel(fresh_db, cid)
    streamer_root, api_root = tmp_path / "stream-host", tmp_path / "api-host"
    expected = _hls(streamer_root, cid)
    share = PreviewShare(redis.Redis.from_url(url), hls_dir(streamer_root), every=1.0, max_bytes=256 << 10)
    assert share.publish([cid, "not-airing"]) == 1, share.skipped
    assert "no HLS playlist" in share.skipped["not-airing"]

    (api_root / "run").mkdir(parents=True)
    rt = SimpleNamespace(engine=fresh_db, settings=Settings(services={"redis_url": url}),
                         data=SimpleNamespace(run=api_root / "run", root=api_root))
    assert not hls_dir(api_root).exists(), "the API's host has no HLS of its own"
    with TestClient(create_app(rt)) as client:
        path = f"/api/channels/{cid}/preview.jpg"
        got = client.get(path, headers={"Authorization": f"Bearer {owner}"})
        assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
        assert got.content == expected, "the API serves the streamer's still, byte for byte"
        assert client.get(path, headers={"Authorization": f"Bearer {stranger}"}).status_code == 404
        assert client.get(path).status_code == 401

        time.sleep(3.3)  # three periods without a write: the streamer is gone, so is its still
        gone = client.get(path, headers={"Authorization": f"Bearer {owner}"})
        assert gone.status_code == 404 and "not airing" in gone.json()["detail"]

        # Not a JPEG (or one over the size bound) is never served from Redis.
        redis.Redis.from_url(url).set(preview_share.PREFIX + cid, b"<html>not a picture</html>")
        assert client.get(path, headers={"Authorization": f"Bearer {owner}"}).status_code == 404

        # An older streamer shares nothing: the API's own HLS directory is read, as before.
        redis.Redis.from_url(url).delete(preview_share.PREFIX + cid)
        local = _hls(api_root, cid)
        got = client.get(path, headers={"Authorization": f"Bearer {owner}"})
        assert got.status_code == 200 and got.content == local


def test_the_preview_thread_shares_only_what_airs_and_refuses_oversized_stills(redis_server, tmp_path):  # noqa: F811
    _, url = redis_server
    client = redis.Redis.from_url(url)
    expected = _hls(tmp_path, "ch1")
    _hls(tmp_path, "ch2")
    tiny = PreviewShare(client, hls_dir(tmp_path), every=1.0, max_bytes=64)
    assert tiny.publish(["ch1"]) == 0 and "preview_max_kb" in tiny.skipped["ch1"]
    assert client.get(preview_share.PREFIX + "ch1") is None

    share = PreviewShare(client, hls_dir(tmp_path), every=1.0, max_bytes=256 << 10)
    airing: list[str] = ["ch1"]  # ch2 has HLS files left over but is not on air: not decoded, not shared
    stop = threading.Event()
    thread = share.run_every(lambda: list(airing), stop)
    try:
        deadline = time.monotonic() + 3
        while client.get(preview_share.PREFIX + "ch1") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get(preview_share.PREFIX + "ch1") == expected
        assert 0 < client.pttl(preview_share.PREFIX + "ch1") <= 3000, "expires after three periods"
        assert client.get(preview_share.PREFIX + "ch2") is None
        share.forget("ch1")
        assert client.get(preview_share.PREFIX + "ch1") is None
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
