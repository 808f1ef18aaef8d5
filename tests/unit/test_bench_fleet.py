"""bench/fleet.py at a tiny size (40 channels, 4 streamers, 1 s phases) on the run's PostgreSQL and a SQLite copy:
every figure is written, the failover completes, and the balance after it is the shares by capacity."""

import json
import math
import shutil

import pytest

from bench import common, fleet


@pytest.mark.slow
def test_fleet_bench_runs_small_and_writes_every_figure(pg_server, migrated_db, tmp_path, monkeypatch):
    shutil.copy(migrated_db, tmp_path / "studio.db")
    monkeypatch.setattr(common, "OUT", tmp_path / "out")
    opts = fleet.parse(["--channels", "40", "--streamers", "4", "--seconds", "1"])
    path = fleet.run(opts, pg_url=pg_server.create_database(), sqlite_url=f"sqlite:///{tmp_path / 'studio.db'}")
    out = json.loads(path.read_text())
    figures = {f["figure"]: f for f in out["figures"]}
    assert len(figures) == len(out["figures"]) == 20
    assert all(isinstance(f["value"], float | int) and math.isfinite(f["value"]) and f["value"] >= 0
               for f in out["figures"])
    renew = figures["renew passes/s, 4 streamers back-to-back, PostgreSQL"]
    assert renew["value"] > 0 and renew["peer"] == "single-row UPDATEs, PostgreSQL" and renew["ratio"] > 0
    failover = next(f for name, f in figures.items() if name.startswith("failover:"))
    assert 0 < failover["value"] < 20
    most = figures["balance after failover: most channels on one of 3 live streamers"]
    fewest = figures["balance after failover: fewest channels on a live streamer"]
    assert (most["value"], fewest["value"]) == (most["peer_value"], fewest["peer_value"]) == (14, 13)
    before = figures["consent checks/s at 40 channels airing, before (every 0.25 s), computed"]
    assert before["value"] == 160 and before["peer"] == "after (push design): not built"
    assert before["peer_value"] is None and "not built" in out["notes"]


def test_fleet_flags_and_helpers():
    assert fleet.parse([]) == fleet.Options(1000, 20, 5.0, 60, 2.0, 50)
    assert fleet.parse(["--channels", "10", "--sample", "50"]).sample == 10
    with pytest.raises(SystemExit):
        fleet.parse(["--channels", "100", "--streamers", "1"])
    assert fleet._busy([(0, 1), (0.5, 2), (3, 4)]) == 3
    assert fleet._busy([]) == 0
