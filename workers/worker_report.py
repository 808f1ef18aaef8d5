"""The worker registry: what each worker serves, runs on and how fast it renders, one WorkerInfo row per Celery node.

The main process of a worker writes its row when it is ready (host, pid, queues, the renderer backends those
queues carry, concurrency, device, CPUs) and refreshes `last_seen` every HEARTBEAT_SECONDS; a row not refreshed
for STALE_AFTER is a worker that is gone (a worker started with --without-heartbeat reads as gone after that
too), and its queues count as served by nobody (api.metrics: studio_queue_workers). The pool process that
rendered adds each render to the counts and moving averages. The rows live in the database rather than in
Redis keys with a TTL: the API, /metrics and the ops page already read workers from there, and a worker that
is gone stays listed (as gone) for a day instead of vanishing. `GET /api/workers` lists the rows.
The GPU is looked at in a child interpreter: CUDA initialised in a prefork parent cannot be used by the pool
processes it forks, and the pool processes are where a GPU renderer runs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.util import find_spec
from pathlib import Path

from celery.signals import heartbeat_sent, worker_ready
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from studio.db import lock_row, session_scope
from studio.models import WorkerInfo, utcnow
from workers.queue_policy import renderers_for

log = logging.getLogger("studio.workers")

EMA_WEIGHT = 0.3  # weight of the newest render in the moving averages
HEARTBEAT_SECONDS = 30.0
STALE_AFTER = timedelta(minutes=2)  # a row not refreshed for this long belongs to a worker that is gone
PROBE_TIMEOUT_S = 120

# Run in a child interpreter by `probe_device`; prints [name, memory_mb].
_PROBE = """
import json
try:
    import torch
except ImportError:
    torch = None
if torch is not None and torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(json.dumps([torch.cuda.get_device_name(0), props.total_memory // 2**20]))
else:
    print(json.dumps(["cpu", None]))
"""


@dataclass(frozen=True)
class Device:
    name: str  # "cpu", "unknown" (the check failed), or the GPU's name
    memory_mb: int | None = None

    @property
    def is_gpu(self) -> bool:
        return self.name not in ("cpu", "unknown")


CPU = Device("cpu")


# A GPU torch could use has its driver's node here (NVIDIA, WSL2, ROCm); without one, importing torch to ask
# (seconds of CPU per worker start) is skipped.
GPU_DRIVER_NODES = ("/proc/driver/nvidia/version", "/dev/dxg", "/dev/kfd")


def probe_device(timeout: float = PROBE_TIMEOUT_S) -> Device:
    """CUDA device 0 as torch sees it, or CPU when torch is not installed, no GPU driver is loaded, or torch sees
    no GPU. Runs the check in a child interpreter (see the module docstring); a check that fails is logged and
    reads as "unknown"."""
    if find_spec("torch") is None or not any(Path(node).exists() for node in GPU_DRIVER_NODES):
        return CPU
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout,
                             check=True).stdout
        name, memory_mb = json.loads(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        log.warning("could not tell which device this worker has: %s", exc)
        return Device("unknown")
    return Device(str(name), int(memory_mb) if memory_mb is not None else None)


def moving_average(old: float | None, new: float, weight: float = EMA_WEIGHT) -> float:
    """Exponential moving average; the first value stands alone."""
    return new if old is None else weight * new + (1 - weight) * old


def is_stale(last_seen: datetime, *, now: datetime) -> bool:
    return now - last_seen > STALE_AFTER


def _upsert(engine: Engine, name: str, update, *, now: datetime, locked: bool = False) -> None:
    """Apply `update(row)` to the node's row, creating it first if there is none (two processes of one node
    may race to create it: the loser updates the winner's row). `locked`: the row is held from the read to the
    write, for an update that reads what another process may write meanwhile (the stalled renders)."""
    for _ in range(2):
        try:
            with session_scope(engine) as s:
                if locked:
                    lock_row(s, "workerinfo", name)
                row = s.get(WorkerInfo, name, populate_existing=locked)
                if row is None:
                    row = WorkerInfo(id=name, device=CPU.name, started_at=now)
                    s.add(row)
                update(row)
                row.last_seen = now
            return
        except IntegrityError:
            continue


def record_start(engine: Engine, *, name: str, queues: list[str], device: Device, cpu_count: int | None,
                 host: str | None = None, pid: int | None = None, concurrency: int | None = None,
                 now: datetime | None = None) -> None:
    """A worker node (re)started: where it runs, what it consumes and renders, on what device; its render
    figures start afresh."""
    now = now or utcnow()

    def update(row: WorkerInfo) -> None:
        row.queues, row.renderers = sorted(queues), renderers_for(queues)
        row.host, row.pid, row.concurrency = host, pid, concurrency
        row.device, row.device_memory_mb, row.cpu_count = device.name, device.memory_mb, cpu_count
        row.started_at, row.renders, row.render_fps, row.realtime_factor = now, 0, None, None
        row.stalled = []  # a restart frees every slot a stuck render held

    _upsert(engine, name, update, now=now)


def record_stall(engine: Engine, *, name: str, segment_id: str, attempt: int, stalled: bool, pid: int | None = None,
                 now: datetime | None = None) -> None:
    """Attempt `attempt` of segment `segment_id`, rendering in process `pid` of node `name`, stalled (`stalled`: it
    holds a slot of the node without making progress), or a stalled one moved on or returned. The row is locked for
    the read and the write: the threads of one node report at once."""
    now = now or utcnow()

    def update(row: WorkerInfo) -> None:
        kept = [e for e in row.stalled or [] if (e.get("segment"), e.get("attempt")) != (segment_id, attempt)]
        if stalled:
            kept.append({"segment": segment_id, "attempt": attempt, "pid": pid,
                         "since": now.isoformat(timespec="seconds") + "Z"})
        row.stalled = kept

    _upsert(engine, name, update, now=now, locked=True)


def pid_alive(pid: int | None) -> bool:
    """Whether process `pid` still runs on this host (None: unknown, so kept)."""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def record_render(engine: Engine, *, name: str, frames: int, seconds: float, fps: float,
                  queue: str | None = None, now: datetime | None = None) -> None:
    """One render of `frames` frames at `fps` took `seconds` of wall time on node `name`."""
    now = now or utcnow()
    seconds = max(seconds, 1e-6)

    def update(row: WorkerInfo) -> None:
        row.renders += 1
        row.render_fps = moving_average(row.render_fps, frames / seconds)
        row.realtime_factor = moving_average(row.realtime_factor, frames / fps / seconds)
        if queue and queue not in row.queues:
            row.queues = sorted([*row.queues, queue])
            row.renderers = renderers_for(row.queues)

    _upsert(engine, name, update, now=now)


def parse_gpu_load(text: str) -> tuple[float, int] | None:
    """The first GPU's line of `nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits`
    ("37, 10240"): (percent busy, MiB in use); None when it says nothing usable ("[N/A]", empty)."""
    for line in text.strip().splitlines()[:1]:
        try:
            load, used = (part.strip() for part in line.split(","))
            return float(load), int(float(used))
        except ValueError:
            return None
    return None


def gpu_load(timeout: float = 2.0) -> tuple[float, int] | None:
    """How busy the GPU is now, from nvidia-smi (a second's worth of sampling by the driver); None without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,"
                              "nounits"], capture_output=True, text=True, timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_gpu_load(out)


def touch(engine: Engine, *, name: str, now: datetime | None = None,
          load: tuple[float, int] | None = None, alive=None) -> None:
    """The node is alive; on a GPU node, `load` is how busy its GPU is (gpu_load). `alive(pid)`, from the node's own
    host: its stalled renders whose process is gone are dropped (a pool process Celery killed at the hard time limit
    and replaced holds no slot any more)."""
    def update(row: WorkerInfo) -> None:
        if load is not None:
            row.device_load_percent, row.device_memory_used_mb = load
        if alive is not None and row.stalled:
            kept = [e for e in row.stalled if alive(e.get("pid"))]
            if len(kept) != len(row.stalled):
                row.stalled = kept

    # Locked as record_stall locks it, when it prunes: a report meanwhile is not lost.
    _upsert(engine, name, update, now=now or utcnow(), locked=alive is not None)


class _Heartbeat:
    """Refreshes `last_seen` from Celery's own worker heartbeat (every 2 s; it keeps beating across broker
    reconnections), at most once per HEARTBEAT_SECONDS."""

    def __init__(self, name: str, db_url: str):
        self.name, self.db_url = name, db_url
        self.last = time.monotonic()

    def __call__(self, **_) -> None:
        if time.monotonic() - self.last < HEARTBEAT_SECONDS:
            return
        self.last = time.monotonic()
        # Only nodes with an NVIDIA driver ask nvidia-smi; CPU nodes report no load.
        load = gpu_load() if Path(GPU_DRIVER_NODES[0]).exists() else None
        _with_engine(self.db_url, lambda engine: touch(engine, name=self.name, load=load, alive=pid_alive),
                     what=f"worker {self.name} heartbeat")


def _with_engine(db_url: str, write, *, what: str) -> None:
    # An engine per report, closed after: nothing that the pool processes forked later could inherit half-open.
    from studio.db import make_engine

    engine = make_engine(db_url)
    try:
        write(engine)
    except Exception:
        log.exception("%s could not be written", what)
    finally:
        engine.dispose()


@worker_ready.connect
def _on_worker_ready(sender, **_) -> None:
    """In the worker's main process (sender is its consumer). The device check takes a second or two (it imports
    torch), so it runs beside the worker rather than holding up its first task."""
    from studio.config import load_settings

    name = sender.hostname
    queues = sorted(sender.app.amqp.queues.consume_from)
    concurrency = sender.controller.concurrency if sender.controller is not None else None
    db_url = load_settings().db_url

    def start(engine: Engine) -> None:
        record_start(engine, name=name, queues=queues, device=probe_device(), cpu_count=os.cpu_count(),
                     host=socket.gethostname(), pid=os.getpid(), concurrency=concurrency)

    threading.Thread(target=_with_engine, args=(db_url, start), kwargs={"what": f"worker {name} start report"},
                     name="worker-report", daemon=True).start()
    heartbeat_sent.connect(_Heartbeat(name, db_url), weak=False)
