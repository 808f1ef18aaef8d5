"""Memory of every long-lived process over a long run of the real demo stack: `python -m bench soak --minutes N`.

`studio demo` airs one channel to an outside nginx-rtmp (started here, as a platform's ingest would be) for the
warm-up plus N minutes. Every `--interval` seconds (30) each process of the stack is sampled from
/proc/PID/status (RssAnon, RssFile) and /proc/PID/smaps_rollup (Pss) and counted under its role: redis, nginx,
each Celery worker (parent and pool apart), the API, the scheduler, the streamer, its relay processes
(`python -m workers.streamer.relay`) and their ffmpeg. A render's own ffmpeg encoder lives for one segment: it is
sampled and its peak shown, but it has no slope.

Per role: RSS after the warm-up (`--warmup-minutes`, 10), the least-squares slope in MiB per hour over the rest,
and the peak from the moment the channel is on air. The peer, in the same run: a plain
`ffmpeg -re -stream_loop -1 -i footage.mp4 -c copy -f flv rtmp://outside/live/peer` relay for the same time.
Figures go to bench/out/soak.json with every sample. The data directory (bench/out/work/soak) is kept, so a
second run reuses the synthetic creator's footage and avatar.

Goal (issue 21): every long-lived role's slope under 10 MiB/h, the render worker (parent and pool) at most
1.2 GiB at its peak at 720x1280.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import OUT, Figure, report
from bench.continuity import REPO, free_port
from workers.media.proc import FFmpegProcess
from workers.streamer.nginx import NginxRtmp

WORK = OUT / "work" / "soak"
MIB = 1024.0
SLOPE_GOAL_MIB_H = 10.0
RENDER_PEAK_GOAL_MIB = 1.2 * 1024
RENDER_ROLE = "worker render.cpu"
PEER = "ffmpeg -re -c copy relay"
ON_AIR_TIMEOUT_S = 1800  # first run: footage, ingest, consent video and voice-overs come first


@dataclass
class Sample:
    t: float                  # seconds since the channel went on air (negative before)
    roles: dict[str, dict[str, float]] = field(default_factory=dict)  # role -> {rss, anon, file, pss} in MiB
    pids: dict[str, list[int]] = field(default_factory=dict)


def read_memory(pid: int) -> dict[str, float] | None:
    """RSS (anon, file) and PSS of one process in MiB; None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kb = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            kb[key] = float(value.split()[0])
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        pss = next(float(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    except (OSError, StopIteration, ValueError):
        pss = kb.get("VmRSS", 0.0)
    if "VmRSS" not in kb:  # a zombie
        return None
    return {"rss": kb["VmRSS"] / MIB, "anon": kb.get("RssAnon", 0.0) / MIB,
            "file": (kb.get("RssFile", 0.0) + kb.get("RssShmem", 0.0)) / MIB, "pss": pss / MIB}


def process_table() -> dict[int, tuple[int, str, list[str]]]:
    """pid -> (parent pid, command name, command line) of every process on the host."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        table[int(entry.name)] = (ppid, comm, [a.decode(errors="replace") for a in cmdline if a])
    return table


def stack_role(cmdline: list[str]) -> str:
    """The role of one process the demo started, from its command line."""
    if not cmdline:
        return "?"
    exe = Path(cmdline[0]).name
    if exe.startswith(("redis-server", "nginx", "ffmpeg")):
        return exe.split(":")[0].split()[0]
    if "api" in cmdline[1:3]:
        rest = cmdline[cmdline.index("api") + 1:]
        if rest[:1] == ["worker"] and "--queues" in rest:
            return f"worker {rest[rest.index('--queues') + 1]}"
        return rest[0] if rest else "api"
    return exe


def descendant_roles(root: int, table: dict[int, tuple[int, str, list[str]]]) -> dict[int, str]:
    """Every process under the demo (`root`) by role: the demo's own children name a role; a forked Python child of
    a Celery worker is its pool ("ROLE pool"); a Python program of its own is "ROLE MODULE" (the streamer's relays:
    "streamer relay"); any other program under a role is "ROLE PROGRAM" (ffmpeg)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    roles = {root: "demo"}

    def walk(pid: int, role: str) -> None:
        for kid in children.get(pid, []):
            _, comm, cmdline = table[kid]
            if pid == root:
                kid_role = stack_role(cmdline)
            elif comm.startswith(("python", "celery")) or (cmdline and cmdline[0] == sys.executable):
                module = cmdline[cmdline.index("-m") + 1] if "-m" in cmdline[:-1] else "api"
                if module != "api":  # a program of its own (the streamer's relays): "streamer relay"
                    kid_role = f"{role} {module.rsplit('.', 1)[-1]}"
                else:  # a fork: a Celery worker's pool process
                    kid_role = f"{role} pool" if role.startswith("worker ") and " " not in role[7:] else role
            else:
                kid_role = f"{role} {comm}" if not role.endswith(comm) else role
            roles[kid] = kid_role
            walk(kid, kid_role)

    walk(root, "demo")
    return roles


def transient(role: str) -> bool:
    """A render's encoder (and any other program a worker runs for one task) lives for one task: no slope."""
    return role.startswith("worker ") and not role.endswith(("pool",)) and len(role.split()) > 2


def sample(t: float, pids: dict[str, list[int]]) -> Sample:
    s = Sample(t=t)
    for role, members in pids.items():
        total = {"rss": 0.0, "anon": 0.0, "file": 0.0, "pss": 0.0}
        alive = []
        for pid in members:
            mem = read_memory(pid)
            if mem is None:
                continue
            alive.append(pid)
            for k in total:
                total[k] += mem[k]
        if alive:
            s.roles[role], s.pids[role] = {k: round(v, 2) for k, v in total.items()}, alive
    return s


def stack_pids(demo_pid: int, peer_pid: int | None) -> dict[str, list[int]]:
    by_role: dict[str, list[int]] = {}
    for pid, role in descendant_roles(demo_pid, process_table()).items():
        by_role.setdefault(role, []).append(pid)
    if peer_pid is not None:
        by_role[PEER] = [peer_pid]
    return by_role


@dataclass
class RoleFigures:
    role: str
    after_warmup: float
    slope: float | None
    peak: float
    anon_slope: float | None
    file_slope: float | None
    coverage: float  # share of the samples after the warm-up the role was present in


def slope_mib_h(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) in MiB per hour."""
    if len(points) < 3:
        return None
    t, v = np.array(points, dtype=np.float64).T
    return float(np.polyfit(t / 3600.0, v, 1)[0])


def role_figures(samples: list[Sample], role: str, warmup_s: float) -> RoleFigures | None:
    on_air = [s for s in samples if s.t >= 0 and role in s.roles]
    after = [s for s in samples if s.t >= warmup_s]
    present = [s for s in after if role in s.roles]
    if not on_air or not present:
        return None

    def series(key: str) -> list[tuple[float, float]]:
        return [(s.t, s.roles[role][key]) for s in present]

    long_lived = not transient(role)
    return RoleFigures(role=role, after_warmup=present[0].roles[role]["rss"],
                       slope=slope_mib_h(series("rss")) if long_lived else None,
                       peak=max(s.roles[role]["rss"] for s in on_air),
                       anon_slope=slope_mib_h(series("anon")) if long_lived else None,
                       file_slope=slope_mib_h(series("file")) if long_lived else None,
                       coverage=len(present) / max(1, len(after)))


def combined(samples: list[Sample], roles: tuple[str, ...], name: str) -> list[Sample]:
    """`samples` with one more role: the sum of `roles` (the render worker's parent and its pool)."""
    for s in samples:
        parts = [s.roles[r] for r in roles if r in s.roles]
        if parts:
            s.roles[name] = {k: round(sum(p[k] for p in parts), 2) for k in parts[0]}
    return samples


class Demo:
    """`studio demo` on ports of its own, pushing to the outside nginx too; on-air time read from its output."""

    def __init__(self, data: Path, *, seconds: float, rtmp_url: str, log: Path):
        env = {**os.environ, "STUDIO_DATA_DIR": str(data), "STUDIO_API_PORT": str(free_port()),
               "STUDIO_REDIS_PORT": str(free_port()), "STUDIO_RTMP_PORT": str(free_port()),
               "STUDIO_HTTP_PORT": str(free_port()), "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        env.pop("STUDIO_REDIS_URL", None)
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen([sys.executable, "-m", "api", "demo", "--duration", str(seconds),
                                      "--rtmp", rtmp_url], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.on_air = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            if "on air" in line and "not on air" not in line:
                self.on_air.set()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the demo stops its stack: terminate, wait, kill

    def wait(self, timeout: float) -> int | None:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._reader.join(timeout=5)
        self._log.close()
        return code


def run_soak(*, minutes: float, warmup_minutes: float, interval: float, data: Path) -> tuple[list[Sample], dict]:
    WORK.mkdir(parents=True, exist_ok=True)
    warmup_s, measured_s = warmup_minutes * 60, minutes * 60
    outside = NginxRtmp(WORK / "outside-nginx", rtmp_port=free_port(), http_port=free_port(), hls=False).start()
    demo = peer = None
    samples: list[Sample] = []
    stopping = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        demo = Demo(data, seconds=warmup_s + measured_s, rtmp_url=f"{outside.rtmp_url}/soak", log=WORK / "demo.log")
        deadline = time.monotonic() + ON_AIR_TIMEOUT_S
        while not demo.on_air.wait(1.0):
            if demo.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the demo did not go on air (exit {demo.proc.poll()}); its output ends:\n"
                                   f"{demo.tail()}")
        started = time.monotonic()
        footage = data / "demo" / "footage.mp4"
        peer = FFmpegProcess(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-re", "-stream_loop",
                              "-1", "-i", str(footage), "-c", "copy", "-f", "flv", f"{outside.rtmp_url}/peer"],
                             name="ffmpeg-relay-peer")
        print(f"  on air; sampling every {interval:.0f} s for {warmup_minutes:g} + {minutes:g} min "
              f"(demo log {demo.log_path})", flush=True)
        next_at = started
        while not stopping.is_set():
            now = time.monotonic()
            t = now - started
            if t > warmup_s + measured_s + 1 or demo.proc.poll() is not None:
                break
            if now >= next_at:
                s = sample(t, stack_pids(demo.proc.pid, peer.pid if peer.alive else None))
                samples.append(s)
                render = sum(v["rss"] for r, v in s.roles.items() if r.startswith(RENDER_ROLE) and not transient(r))
                print(f"  {t / 60:6.1f} min  render worker {render:7.1f} MiB  streamer "
                      f"{s.roles.get('streamer', {}).get('rss', 0):6.1f} MiB  peer "
                      f"{s.roles.get(PEER, {}).get('rss', 0):5.1f} MiB", flush=True)
                next_at += interval
            stopping.wait(min(1.0, max(0.0, next_at - time.monotonic())))
        aired = time.monotonic() - started
        if demo.proc.poll() is not None and aired < warmup_s + measured_s - interval:
            raise RuntimeError(f"the demo stopped after {aired:.0f} s on air (exit {demo.proc.returncode}); its "
                               f"output ends:\n{demo.tail()}")
        peer_alive = peer.alive
        peer.stop(timeout=5)
        demo.stop()
        code = demo.wait(120)
        summary = [line for line in demo.log_path.read_text(errors="replace").splitlines()
                   if "aired" in line and "segments" in line]
        return samples, {"aired_s": round(aired, 1), "demo_exit": code, "demo_summary": summary,
                         "peer_alive_at_end": peer_alive, "peer_stderr": peer.stderr_tail(5) if not peer_alive else ""}
    finally:
        signal.signal(signal.SIGTERM, old)
        if peer is not None:
            peer.stop(timeout=5)
        if demo is not None and demo.proc.poll() is None:
            demo.stop()
            demo.wait(120)
        outside.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="Minutes measured after the warm-up (goal: 60).")
    ap.add_argument("--warmup-minutes", type=float, default=10.0, help="Minutes on air before the measure starts.")
    ap.add_argument("--interval", type=float, default=30.0, help="Seconds between samples.")
    ap.add_argument("--data", type=Path, default=WORK / "data", help="The demo's data directory (kept).")
    args = ap.parse_args(argv)
    samples, info = run_soak(minutes=args.minutes, warmup_minutes=args.warmup_minutes, interval=args.interval,
                             data=args.data.resolve())
    render_parts = tuple(sorted({r for s in samples for r in s.roles
                                 if r.startswith(RENDER_ROLE) and not transient(r)}))
    render_total = "render worker (parent + pool)"
    combined(samples, render_parts, render_total)
    warmup_s = args.warmup_minutes * 60
    roles = sorted({r for s in samples for r in s.roles if r not in ("demo", PEER)})
    peer = role_figures(samples, PEER, warmup_s)
    figures, rows, missed = [], [], []
    for role in roles:
        f = role_figures(samples, role, warmup_s)
        if f is None:
            continue
        rows.append(f)
        peer_kw = {"peer": PEER} if peer is not None else {}
        figures.append(Figure(f"{role}: RSS after warm-up", f.after_warmup, "MiB",
                              peer_value=peer.after_warmup if peer else None, **peer_kw))
        if f.slope is not None:
            figures.append(Figure(f"{role}: slope", f.slope, "MiB/h", peer_value=peer.slope if peer else None,
                                  **peer_kw))
            if f.slope >= SLOPE_GOAL_MIB_H and role != render_total:
                missed.append(f"{role} slope {f.slope:.1f} MiB/h")
        figures.append(Figure(f"{role}: peak", f.peak, "MiB", peer_value=peer.peak if peer else None, **peer_kw))
    render = next((f for f in rows if f.role == render_total), None)
    if render is not None and render.peak > RENDER_PEAK_GOAL_MIB:
        missed.append(f"render worker peak {render.peak:.0f} MiB > {RENDER_PEAK_GOAL_MIB:.0f} MiB")
    if render is not None and render.slope is not None and render.slope >= SLOPE_GOAL_MIB_H:
        missed.append(f"render worker slope {render.slope:.1f} MiB/h")
    measured = (samples[-1].t - warmup_s) / 60 if samples else 0.0
    verdict = "goal met" if not missed else "goal missed: " + "; ".join(missed)
    short = " SHORTER than the goal's 60 min." if measured < 59.5 else ""
    notes = (f"{measured:.1f} min measured after a {args.warmup_minutes:g}-min warm-up, a sample every "
             f"{args.interval:g} s; RSS per role (sum over its processes); slope by least squares after the "
             f"warm-up, peak from on air.{short} {verdict}.")
    path = report("soak", figures, notes=notes)
    for f in rows:
        if f.slope is not None:
            print(f"  {f.role:<44} anon {f.anon_slope:+7.2f} MiB/h, file {f.file_slope:+7.2f} MiB/h, "
                  f"present in {f.coverage:.0%} of samples")
    doc = json.loads(path.read_text())
    doc.update(info, minutes=args.minutes, warmup_minutes=args.warmup_minutes, interval_s=args.interval,
               measured_minutes=round(measured, 2), verdict=verdict,
               samples=[{"t": round(s.t, 1), "roles": s.roles, "pids": s.pids} for s in samples])
    path.write_text(json.dumps(doc, indent=1))
    print(f"  {verdict}")


if __name__ == "__main__":
    main(sys.argv[1:])
