"""Media store: segment write + read-back through the S3 backend (moto's S3 server on loopback) against the file
backend (a shared directory, read through the same host cache) on the same files. MB/s and p95 ms per segment.

The S3 peer is moto's standalone server in a separate process: a real HTTP S3 API over a socket, but an in-memory
Python implementation, so its figures say what the client side (boto3, signing, the cache) costs, not what a
MinIO or AWS bucket would do."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import Figure, report

SEGMENTS = 30
SEGMENT_BYTES = 2_600_000  # about 6 s of 720x1280 at the default 3.5 Mb/s cap
BUCKET = "studio-bench"


@contextmanager
def moto_server(env: dict[str, str] | None = None, *, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """moto's S3 server on a free loopback port, in its own process; yields its endpoint URL. `tls`: (certificate,
    key) PEM files, served over https then."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)]
    if tls is not None:
        argv += ["--ssl-cert", str(tls[0]), "--ssl-key", str(tls[1])]
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def _run(store, files: list[Path]) -> dict[str, float]:
    writes, reads = [], []
    for i, f in enumerate(files):
        t = time.perf_counter()
        store.put(f"segments/bench/{i:08d}-p{i}-a1.mp4", f)
        writes.append(time.perf_counter() - t)
    for i in range(len(files)):
        t = time.perf_counter()
        store.get(f"segments/bench/{i:08d}-p{i}-a1.mp4").read_bytes()  # a cache miss: fetched, then read
        reads.append(time.perf_counter() - t)
    mb = len(files) * SEGMENT_BYTES / 1e6
    return {"write_mbs": mb / sum(writes), "write_p95": 1000 * _p95(writes),
            "read_mbs": mb / sum(reads), "read_p95": 1000 * _p95(reads)}


def main() -> None:
    from studio.config import Settings
    from studio.stores import store_for

    with tempfile.TemporaryDirectory(prefix="studio-bench-store-") as td, moto_server() as endpoint:
        root = Path(td)
        files = []
        for i in range(SEGMENTS):
            f = root / "src" / f"{i}.mp4"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(os.urandom(SEGMENT_BYTES))
            files.append(f)
        cache_mb = 2 * SEGMENTS * SEGMENT_BYTES >> 20
        (root / "shared").mkdir()
        local = store_for(Settings(data_dir=str(root / "data"), store={
            "url": f"file://{root / 'shared'}", "cache_dir": str(root / "cache-file"), "cache_max_mb": cache_mb}))
        s3 = store_for(Settings(data_dir=str(root / "data"), store={
            "url": f"s3://{BUCKET}/media", "endpoint_url": endpoint, "path_style": True, "access_key_id": "bench",
            "secret_access_key": "bench-secret", "cache_dir": str(root / "cache-s3"), "cache_max_mb": cache_mb}))
        s3.client.create_bucket(Bucket=BUCKET)
        f_file, f_s3 = _run(local, files), _run(s3, files)
    report("store", [
        Figure("segment write, S3 (moto)", f_s3["write_mbs"], "MB/s", "file store", f_file["write_mbs"]),
        Figure("segment write p95, S3 (moto)", f_s3["write_p95"], "ms", "file store", f_file["write_p95"]),
        Figure("segment read-back via cache, S3 (moto)", f_s3["read_mbs"], "MB/s", "file store", f_file["read_mbs"]),
        Figure("segment read-back p95, S3 (moto)", f_s3["read_p95"], "ms", "file store", f_file["read_p95"]),
    ], notes=f"{SEGMENTS} segments of {SEGMENT_BYTES / 1e6:.1f} MB; write = atomic put; read-back = a cache miss "
             "(fetch into the host cache, then read); moto is an in-memory S3 in one Python process on this host")


if __name__ == "__main__":
    main()
