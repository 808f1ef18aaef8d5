"""A fleet's first steps on a database server: `studio db upgrade` brings an empty PostgreSQL database to the
newest schema, then `studio demo` with STUDIO_DATABASE_URL airs to an RTMP receiver that is not ours, as it does
on SQLite; the segments, the show and the audit chain are rows in PostgreSQL, and no SQLite file appears."""

from __future__ import annotations

import shutil
import subprocess

import av
import pytest
from sqlalchemy import text

from studio.db import make_engine
from tests.conftest import STUDIO, require, studio_env
from tests.media_helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AIR_SECONDS = 15


def test_demo_airs_on_postgresql(tmp_path, pg_server, demo_footage, redis_url):
    require("redis-server", "nginx", "ffmpeg", "espeak-ng")
    url = pg_server.create_database(template=None)  # empty: only `studio db upgrade` makes the schema
    data = tmp_path / "data"
    (data / "demo").mkdir(parents=True)
    shutil.copy(demo_footage, data / "demo" / "footage.mp4")
    env = studio_env(data, api=free_port(), redis=free_port(), rtmp=free_port(), http=free_port())
    env["STUDIO_DATABASE_URL"] = url

    up = subprocess.run([STUDIO, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)
    assert up.returncode == 0 and "newest schema" in up.stdout, up.stdout + up.stderr

    listen = free_port()
    recording = tmp_path / "received.flv"
    receiver = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "warning", "-y", "-listen", "1",
                                 "-i", f"rtmp://127.0.0.1:{listen}/live/check", "-c", "copy", str(recording)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        demo = subprocess.run([STUDIO, "demo", "--duration", str(AIR_SECONDS), "--rtmp",
                               f"rtmp://127.0.0.1:{listen}/live/check"],
                              env=env, capture_output=True, text=True, timeout=420)
        try:
            receiver.wait(timeout=30)
        except subprocess.TimeoutExpired:  # the push never connected, or something of the demo still holds it
            receiver.kill()
            logs = {p.name: p.read_text(errors="replace")[-1500:] for p in (data / "logs").glob("*.log")}
            left = subprocess.run(["pgrep", "-af", "workers.streamer|nginx|celery"], capture_output=True, text=True)
            pytest.fail(f"the receiver was still connected 30 s after the demo ended (rc {demo.returncode});\n"
                        f"still running: {left.stdout}\ndemo: {demo.stdout[-3000:]}\n{demo.stderr[-3000:]}\n"
                        f"receiver: {receiver.stderr.read().decode(errors='replace')[-1500:]}\nlogs: {logs}")
    finally:
        if receiver.poll() is None:
            receiver.kill()
    assert demo.returncode == 0, f"demo failed:\n{demo.stdout}\n{demo.stderr}"
    assert "demo: aired" in demo.stdout

    with av.open(str(recording)) as c:
        assert c.duration and c.duration / 1e6 > AIR_SECONDS - 5, "the receiver got the show"
        assert {s.type for s in c.streams} >= {"video", "audio"}
    assert not list(data.glob("*.db")), "no SQLite database beside the server's"

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.dialect.name == "postgresql"
            aired = conn.execute(text("SELECT seq, aired_at FROM segment WHERE state = 'aired' AND kind = 'segment' "
                                      "ORDER BY aired_at")).all()
            audit = conn.execute(text("SELECT kind FROM auditevent")).scalars().all()
            seqs = conn.execute(text("SELECT channel_id, seq, count(*) FROM segment "
                                     "GROUP BY channel_id, seq HAVING count(*) > 1")).all()
    finally:
        engine.dispose()
    assert len(aired) >= 2, f"only {len(aired)} segments aired from PostgreSQL"
    assert [r.seq for r in aired] == sorted(r.seq for r in aired), "aired in order"
    assert not seqs, f"sequence numbers collided: {seqs}"
    assert {"consent.granted", "avatar.created", "show.planned", "segment.rendered", "segment.aired"} <= set(audit)
    # The demo's redis-server is gone with it; a fresh, empty one stands for a Redis restarted without persistence:
    # verify reads the audit checkpoint's copy in the store (the data dir), which the demo's scheduler wrote.
    check = subprocess.run([STUDIO, "audit", "verify"], env=env | {"STUDIO_REDIS_URL": redis_url},
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "intact" in check.stdout, check.stdout + check.stderr
    assert "checkpoint read from store key audit/checkpoint.json" in " ".join(check.stdout.split()), check.stdout
