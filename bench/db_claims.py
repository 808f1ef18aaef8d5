"""Render-claim throughput: 4 worker processes claiming planned segments through the render worker's own claim
(`workers.render.segment._claim`: row lock, consent and usage checks, PLANNED -> RENDERING), rows only, no rendering.
PostgreSQL 15 (started here, on loopback, fsync off as in the tests) against SQLite (WAL) in the same run."""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from bench.common import Figure, report

WORKERS = 4
SEGMENTS = 2000


def _world(url: str) -> list[str]:
    from sqlmodel import Session

    from studio.db import make_engine
    from studio.models import Segment
    from tests.conftest import db_show

    engine = make_engine(url)
    ids = db_show(engine)
    with Session(engine) as s:
        rows = [Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                        consent_id=ids["consent"], script_id=ids["script"], text="Paid partnership with Lumen Labs.",
                        seq=i) for i in range(SEGMENTS)]
        s.add_all(rows)
        s.commit()
        out = [r.id for r in rows]
    engine.dispose()
    return out


def _claimer(url: str, ids: list[str], start, results) -> None:
    from studio import audit_keys
    from studio.db import make_engine
    from workers.render.segment import _claim

    rt = SimpleNamespace(engine=make_engine(url))
    audit_keys.bind(rt.engine, audit_keys.AuditKeyring.generate([audit_keys.RENDER]))  # as a render worker's
    start.wait()
    took, claimed = [], 0
    for seg_id in ids:
        t = time.perf_counter()
        claimed += _claim(rt, seg_id, task_id=f"bench-{seg_id}") is not None
        took.append(time.perf_counter() - t)
    results.put((claimed, took))
    rt.engine.dispose()


def claims_per_second(url: str) -> tuple[float, float, int]:
    """(claims/s over all workers, p95 ms of one claim, claims made) with WORKERS processes."""
    ids = _world(url)
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(WORKERS + 1), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, ids[i::WORKERS], start, results)) for i in range(WORKERS)]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    done = [results.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    claimed = sum(c for c, _ in done)
    took = sorted(t for _, ts in done for t in ts)
    return claimed / wall, statistics.quantiles(took, n=20)[-1] * 1000, claimed


def main() -> None:
    from studio.db import upgrade
    from tests.pg import PgServer

    with tempfile.TemporaryDirectory(prefix="bench-claims-") as td:
        sqlite_url = f"sqlite:///{Path(td) / 'studio.db'}"
        upgrade(sqlite_url)
        lite_rate, lite_p95, lite_n = claims_per_second(sqlite_url)
    server = PgServer.start()
    try:
        server.migrate_template()
        pg_rate, pg_p95, pg_n = claims_per_second(server.create_database())
    finally:
        server.stop()
    assert lite_n == pg_n == SEGMENTS, (lite_n, pg_n)
    report("db_claims", [
        Figure(f"render claims/s, {WORKERS} workers, PostgreSQL", pg_rate, "claims/s", "SQLite", lite_rate),
        Figure("one claim p95, PostgreSQL", pg_p95, "ms", "SQLite", lite_p95),
    ], notes=f"{SEGMENTS} planned segments split over {WORKERS} processes, each claimed once through "
             "workers.render.segment._claim; rows only, no rendering; PostgreSQL 15 local, fsync off")


if __name__ == "__main__":
    main()
