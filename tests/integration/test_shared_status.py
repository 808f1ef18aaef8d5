"""Channel status is shared through Redis: what a streamer on one host writes, the API on another host (no
status files of its own) shows in the channel status, the ops overview and /metrics; it expires when the
streamer stops writing, and the files are the fallback only while Redis does not answer."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import redis
from fastapi.testclient import TestClient

from studio.config import Settings
from tests.conftest import as_admin, db_show
from tests.integration.test_metrics_redis import AUTH, TOKEN, redis_server, samples  # noqa: F401  (fixture)
from workers.streamer import status as shared

STATUS = {"state": "airing", "airing": True, "segments_aired": 7, "updated": 0.0,
          "destinations": [{"id": "d1", "url": "rtmp://203.0.113.9/live/****", "platform": "custom", "state": "live",
                            "connects": 2, "attempts": 0, "bytes_relayed": 1000, "seconds_relayed": 4.0}]}


def test_a_status_written_on_one_host_is_shown_by_the_api_on_another(redis_server, fresh_db, tmp_path):  # noqa: F811
    from api.app import create_app

    proc, url = redis_server
    ids = db_show(fresh_db)
    cid = ids["channel"]
    streamer_host = redis.Redis.from_url(url)
    assert shared.publish(streamer_host, {cid: {**STATUS, "channel_id": cid, "updated": time.time()}}, ttl=2)

    api_run = tmp_path / "api-host-run"  # the API's host has no status file of this channel
    api_run.mkdir()
    rt = SimpleNamespace(engine=fresh_db, settings=Settings(services={"redis_url": url}, metrics_token=TOKEN),
                         data=SimpleNamespace(run=api_run, root=tmp_path))
    with TestClient(create_app(rt)) as client:
        m = samples(client.get("/metrics", headers=AUTH).content)
        assert m[("studio_channel_airing", frozenset({("channel", cid)}))] == 1
        assert m[("studio_channel_segments_aired_total", frozenset({("channel", cid)}))] == 7
        as_admin(client, fresh_db)
        st = client.get(f"/api/channels/{cid}/status").json()
        assert st["airing"] is True and st["segments_aired"] == 7 and st["destinations"][0]["state"] == "live"
        overview = client.get("/api/ops/overview").json()
        assert cid in json.dumps(overview)

        time.sleep(2.5)  # the streamer stopped writing: the status expires, the channel is off air everywhere
        assert client.get(f"/api/channels/{cid}/status").json()["airing"] is False

        # Redis down: this host's own files are read (under `studio up` the streamer writes both).
        (api_run / f"channel-{cid}.json").write_text(json.dumps({**STATUS, "channel_id": cid}))
        proc.terminate()
        proc.wait(timeout=10)
        assert client.get(f"/api/channels/{cid}/status").json()["segments_aired"] == 7
