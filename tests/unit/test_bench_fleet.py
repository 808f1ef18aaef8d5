"""bench/fleet.py at a tiny size (40 channels, 4 streamers, 1 s phases) on the run's PostgreSQL, a SQLite copy and
a redis-server of the test's own: every figure is written, the failovers complete, and the balance after them is
the shares by capacity."""

import json
import math
import shutil

import pytest

from bench import common, fleet
from tests.integration.test_metrics_redis import redis_server  # noqa: F401  (fixture)


@pytest.mark.slow
def test_fleet_bench_runs_small_and_writes_every_figure(pg_server, migrated_db, redis_server, tmp_path,  # noqa: F811
                                                        monkeypatch):
    shutil.copy(migrated_db, tmp_path / "studio.db")
    monkeypatch.setattr(common, "OUT", tmp_path / "out")
    opts = fleet.parse(["--channels", "40", "--streamers", "4", "--seconds", "1"])
    path = fleet.run(opts, pg_url=pg_server.create_database(), sqlite_url=f"sqlite:///{tmp_path / 'studio.db'}",
                     redis_url=redis_server[1])
    out = json.loads(path.read_text())
    figures = {f["figure"]: f for f in out["figures"]}
    assert len(figures) == len(out["figures"]) == 32
    assert all(isinstance(f["value"], float | int) and math.isfinite(f["value"]) and f["value"] >= 0
               for f in out["figures"])
    renew = figures["renew passes/s, 4 streamers back-to-back, PostgreSQL"]
    assert renew["value"] > 0 and renew["peer"] == "single-row UPDATEs, PostgreSQL" and renew["ratio"] > 0
    failover = next(f for name, f in figures.items() if name.startswith("failover:"))
    assert 0 < failover["value"] < 20
    most = figures["balance after failover: most channels on one of 3 live streamers"]
    fewest = figures["balance after failover: fewest channels on a live streamer"]
    assert (most["value"], fewest["value"]) == (most["peer_value"], fewest["peer_value"]) == (14, 13)
    renew = figures["renew passes/s, 4 streamers back-to-back, Redis (one Lua script each)"]
    assert renew["value"] > 0 and renew["peer"] == "one script per lease, Redis" and renew["ratio"] > 0
    failover = next(f for name, f in figures.items() if name.startswith("failover on Redis:"))
    assert 0 < failover["value"] < 20 and failover["peer"] == "PostgreSQL"
    most = figures["balance after failover on Redis: most channels on a live streamer"]
    fewest = figures["balance after failover on Redis: fewest channels on a live streamer"]
    assert (most["value"], fewest["value"]) == (most["peer_value"], fewest["peer_value"]) == (14, 13)
    assert figures["consent checks/s at 40 channels airing (every 0.25 s per channel)"]["value"] == 160
    computed = next(f for name, f in figures.items() if name.startswith("database statements/s those cost, before"))
    assert computed["value"] == 160 * 2 and computed["peer_value"] == 4  # a query a second per streamer
    measured = next(f for name, f in figures.items() if name.startswith("the same measured on 40 channels"))
    assert measured["value"] > 10 * measured["peer_value"] > 0
