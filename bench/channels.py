"""Channels per machine and streamer CPU per channel, against plain ffmpeg doing the same copy, same run.

Both run to one nginx-rtmp on loopback configured as in production (HLS preview on), one after the other:

- ours: K `ChannelFeeder` threads in one child process (`bench.stream_child`), as the supervisor runs them, each
  publishing its own stream and airing pre-rendered 720x1280 25 fps segments (about 1.8 Mbit/s with audio);
- peer: K `ffmpeg -re -stream_loop -1 -i SEGMENT -t SECONDS -c copy -f flv URL` processes.

CPU is read from /proc (utime + stime) for the process trees (our child and its push ffmpegs; the peer ffmpegs)
between a warm-up and the end of each step, so start-up (imports, connecting) is left out; nginx's own CPU is
reported apart, since it serves both alike.

`python -m bench stream_cpu`: one channel airing one segment over and over against one peer ffmpeg looping it;
BENCH_STREAM_CPU_S seconds each (default 60). Writes bench/out/stream_cpu.json.

`python -m bench channels`: K = 1, 2, 4, 8, 12, 16, ... until a channel of ours underruns (a packet muxed more than
one frame after its air time: `ChannelFeeder.underruns`) and a peer ffmpeg falls below speed 0.99 (its final
`-progress` speed), or K reaches BENCH_CHANNELS_MAX (default 24); BENCH_CHANNELS_S seconds per step (default 60).
Writes bench/out/channels.json.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import report
from bench.continuity import (
    MarkedSegment,
    PeerFigure,
    StreamChild,
    bench_profile,
    env_float,
    interruptible,
    segment_pool,
    start_nginx,
)
from workers.media.proc import FFmpegProcess
from workers.streamer.nginx import NginxRtmp

LEAD_SECONDS = 1.0
PEER_MIN_SPEED = 0.99
_CLK = os.sysconf("SC_CLK_TCK")


# -- CPU from /proc ---------------------------------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, command name, utime + stime in seconds) for every process that can be read."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()
        # After "(comm) ": state ppid ... utime is field 14 of the line, stime 15 (rest[11], rest[12]).
        table[int(entry.name)] = (int(rest[1]), comm, (int(rest[11]) + int(rest[12])) / _CLK)
    return table


def tree_cpu(roots: list[int], table: dict[int, tuple[int, str, float]] | None = None) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of `roots` and all their descendants: pid -> (command name, seconds)."""
    table = _proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out[pid] = (table[pid][1], table[pid][2])
        todo.extend(children.get(pid, []))
    return out


def _used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per command name between two samples; a process new in `after` counts all its CPU."""
    out: dict[str, float] = {}
    for pid, (name, cpu) in after.items():
        out[name] = out.get(name, 0.0) + cpu - before.get(pid, (name, 0.0))[1]
    return out


@dataclass
class CpuWindow:
    """CPU used by process trees between two samples."""

    seconds: float = 0.0              # wall time between the samples
    by_name: dict[str, float] = field(default_factory=dict)  # CPU seconds per command name
    nginx: float = 0.0
    everything: float = 0.0           # every process on the machine (those that ended meanwhile not counted)

    @property
    def total(self) -> float:
        return sum(self.by_name.values())

    @property
    def others(self) -> float:
        """Cores used by other processes on the machine meanwhile (the rest of the machine's load)."""
        return self.cores(max(0.0, self.everything - self.total - self.nginx))

    def cores(self, cpu: float) -> float:
        return cpu / self.seconds if self.seconds > 0 else float("nan")


class CpuMeter:
    """Per-process CPU (utime + stime, which the kernel keeps from exact run time) of process trees between
    start() and stop(). /proc/stat's machine-wide counters are not used: they sample on the timer tick and miss
    most of a paced streamer's short wake-ups."""

    def __init__(self, roots: list[int], nginx: NginxRtmp):
        self.roots, self.nginx_pid = roots, nginx.proc.pid if nginx.proc else -1
        self._a = None

    def _sample(self):
        table = _proc_table()
        everything = {pid: (name, cpu) for pid, (_, name, cpu) in table.items()}
        return time.monotonic(), tree_cpu(self.roots, table), tree_cpu([self.nginx_pid], table), everything

    def start(self) -> None:
        self._a = self._sample()

    def stop(self) -> CpuWindow:
        (ta, pa, na, ea), (tb, pb, nb, eb) = self._a, self._sample()
        return CpuWindow(seconds=tb - ta, by_name=_used(pa, pb), nginx=sum(_used(na, nb).values()),
                         everything=sum(_used(ea, eb).values()))


def warmup_seconds(seconds: float) -> float:
    """The start-up part of a step: feeders catching up after starting all at once, ffmpeg connecting."""
    return min(10.0, 0.25 * seconds)


def _window(seconds: float) -> tuple[float, float]:
    """When to take the two CPU samples, in seconds after start: past the warm-up, before the end."""
    run = seconds - LEAD_SECONDS
    warm = warmup_seconds(seconds)
    return warm, max(warm + 0.5, run * 0.92)


def _sleep_until(t: float) -> None:
    while (left := t - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))


# -- one step: K channels of ours, or K peer ffmpegs ------------------------------------------------------------
@dataclass
class Step:
    who: str
    k: int
    cpu: CpuWindow
    underruns: int = 0                  # after the start-up (warm-up) part of the step
    max_late_ms: float = float("nan")   # likewise
    startup_underruns: int = 0
    startup_late_ms: float = float("nan")
    settled_s: float = 0.0              # when the last underrun happened, s after the start (0: none)
    min_speed: float = float("nan")
    errors: list[str] = field(default_factory=list)
    ok: bool = False

    @property
    def cores(self) -> float:
        return self.cpu.cores(self.cpu.total)

    def line(self) -> str:
        what = (f"underruns {self.underruns} after start-up ({self.startup_underruns} in it, latest "
                f"{self.startup_late_ms:.0f} ms, last at {self.settled_s:.1f} s), steady latest "
                f"{self.max_late_ms:.0f} ms past air time" if self.who == "ours"
                else f"slowest speed {self.min_speed:.3f}")
        err = f", errors: {'; '.join(self.errors)[:300]}" if self.errors else ""
        return (f"K={self.k} {self.who}: {100 * self.cores:.1f}% of a core ({100 * self.cores / self.k:.2f}%/channel; "
                f"nginx {100 * self.cpu.cores(self.cpu.nginx):.1f}%, other processes {100 * self.cpu.others:.0f}%), "
                f"{what}{err}")


def step_ours(nginx: NginxRtmp, k: int, seconds: float, plans: list[list[MarkedSegment]], slate: MarkedSegment,
              work: Path) -> Step:
    config = {"channels": [{"url": f"{nginx.rtmp_url}/k{k}-ours{i}", "segments": [str(s.path) for s in plans[i]]}
                           for i in range(k)],
              "slate": str(slate.path), "seconds": seconds, "lead_seconds": LEAD_SECONDS,
              "warmup_seconds": warmup_seconds(seconds)}
    child = StreamChild(config, work / f"k{k}-ours")
    try:
        child.wait_event("started", 60)
        t0 = time.monotonic()
        a, b = _window(seconds)
        meter = CpuMeter([child.proc.pid], nginx)
        _sleep_until(t0 + a)
        meter.start()
        _sleep_until(t0 + b)
        cpu = meter.stop()
        done = child.wait_event("done", seconds + 60)
    finally:
        child.stop()
    chans = done["channels"]
    step = Step("ours", k, cpu, underruns=sum(c["steady_underruns"] for c in chans),
                max_late_ms=1000 * max(c["steady_max_late_seconds"] for c in chans),
                startup_underruns=sum(c["startup_underruns"] for c in chans),
                startup_late_ms=1000 * max(c["startup_max_late_seconds"] for c in chans),
                settled_s=max(c["last_underrun_at"] or 0.0 for c in chans),
                errors=[f"channel {i}: {c['error']}" for i, c in enumerate(chans) if c["error"]])
    if done.get("stopped"):
        step.errors.append("stopped early")
    step.ok = step.underruns == 0 and not step.errors
    return step


def _last_speed(progress: Path) -> float:
    speeds = re.findall(r"^speed=\s*([0-9.]+)x", progress.read_text(errors="replace") if progress.exists() else "",
                        re.MULTILINE)
    return float(speeds[-1]) if speeds else float("nan")


def step_peer(nginx: NginxRtmp, k: int, seconds: float, segments: list[MarkedSegment], work: Path) -> Step:
    folder = work / f"k{k}-peer"
    folder.mkdir(parents=True, exist_ok=True)
    procs: list[FFmpegProcess] = []
    try:
        for i in range(k):
            procs.append(FFmpegProcess(
                ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-progress", str(folder / f"{i}.txt"),
                 "-re", "-stream_loop", "-1", "-i", str(segments[i % len(segments)].path), "-t", f"{seconds:.3f}",
                 "-c", "copy", "-f", "flv", f"{nginx.rtmp_url}/k{k}-peer{i}"], name=f"ffmpeg-peer-{i}"))
        t0 = time.monotonic()
        a, b = _window(seconds)
        meter = CpuMeter([p.pid for p in procs], nginx)
        _sleep_until(t0 + a)
        meter.start()
        _sleep_until(t0 + b)
        cpu = meter.stop()
        errors = []
        for i, p in enumerate(procs):
            try:
                rc = p.wait(max(5.0, seconds + 30 - (time.monotonic() - t0)))
            except Exception:
                rc = None
            if rc != 0:
                errors.append(f"peer {i} exit {rc}: {p.stderr_tail(3)}")
    finally:
        for p in procs:
            p.stop(timeout=3)
    speeds = [_last_speed(folder / f"{i}.txt") for i in range(k)]
    step = Step("peer", k, cpu, min_speed=min(speeds), errors=errors)
    step.ok = not errors and all(s >= PEER_MIN_SPEED for s in speeds)
    return step


def ks(maximum: int) -> list[int]:
    """1, 2, 4, 8, 12, 16, ... up to `maximum` (always included)."""
    out = [k for k in (1, 2, 4) if k <= maximum]
    k = 8
    while k <= maximum:
        out.append(k)
        k += 4
    if out[-1] != maximum:
        out.append(maximum)
    return out


def _plans(pool: list[MarkedSegment], k: int) -> list[list[MarkedSegment]]:
    """Channel i airs the whole pool over and over, starting at its own place in it."""
    return [pool[i % len(pool):] + pool[:i % len(pool)] for i in range(k)]


# -- the benches ------------------------------------------------------------------------------------------------
def main_cpu() -> None:
    seconds = env_float("BENCH_STREAM_CPU_S", 60.0, minimum=LEAD_SECONDS + 2)
    profile = bench_profile()
    pool, slate = segment_pool(profile)
    segment = pool[len(pool) // 2]
    with interruptible(), tempfile.TemporaryDirectory(prefix="bench-stream-cpu-") as td:
        nginx = start_nginx(Path(td) / "nginx", record=False, hls=True)
        try:
            print(f"  our feeder, one channel airing {segment.path.name} over and over, {seconds:g} s ...", flush=True)
            ours = step_ours(nginx, 1, seconds, [[segment]], slate, Path(td))
            print(f"  {ours.line()}\n  peer ffmpeg looping it, {seconds:g} s ...", flush=True)
            peer = step_peer(nginx, 1, seconds, [segment], Path(td))
            print(f"  {peer.line()}", flush=True)
        finally:
            nginx.stop()
    for s in (ours, peer):
        if s.errors:
            raise RuntimeError(f"{s.who} failed: {'; '.join(s.errors)}")
    py = ours.cpu.cores(sum(v for n, v in ours.cpu.by_name.items() if n != "ffmpeg"))
    push = ours.cpu.cores(ours.cpu.by_name.get("ffmpeg", 0.0))
    peer_name = "ffmpeg -re -stream_loop -1 -c copy"
    report("stream_cpu", [
        PeerFigure("streamer CPU per channel (feeder + push ffmpeg)", 100 * ours.cores, "% of a core", peer_name,
                   100 * peer.cores),
        PeerFigure("  of which the feeder (python)", 100 * py, "% of a core"),
        PeerFigure("  of which its push ffmpeg", 100 * push, "% of a core"),
        PeerFigure("nginx CPU while it streams", 100 * ours.cpu.cores(ours.cpu.nginx), "% of a core", peer_name,
                   100 * peer.cpu.cores(peer.cpu.nginx)),
        PeerFigure("underruns after start-up (> 1 frame late)", ours.underruns, "packets"),
        PeerFigure("underruns in the start-up", ours.startup_underruns, "packets"),
        PeerFigure("start-up: latest packet past its air time", ours.startup_late_ms, "ms"),
    ], notes=(f"One channel, {seconds:g} s each, one after the other, airing {segment.path.name} "
              f"({segment.frames / profile.fps:.2f} s, {profile.width}x{profile.height} {profile.fps} fps, "
              f"{_kbps(segment, profile):.0f} kbit/s) over and over to nginx-rtmp on loopback (HLS on); CPU = "
              "utime+stime from /proc of the process tree over the steady part of the run "
              f"({ours.cpu.seconds:.0f} s window), in % of one core. Start-up: the first "
              f"{warmup_seconds(seconds):g} s, counted apart (see bench.stream_child). Other processes on the "
              f"machine used {100 * ours.cpu.others:.0f}% of a core during ours, {100 * peer.cpu.others:.0f}% "
              "during the peer: other load skews both."))


def _kbps(segment: MarkedSegment, profile) -> float:
    return segment.path.stat().st_size * 8 / 1000 / (segment.frames / profile.fps)


def main() -> None:
    seconds = env_float("BENCH_CHANNELS_S", 60.0, minimum=LEAD_SECONDS + 2)
    maximum = int(env_float("BENCH_CHANNELS_MAX", 24, minimum=0))
    profile = bench_profile()
    pool, slate = segment_pool(profile)
    ours_steps: list[Step] = []
    peer_steps: list[Step] = []
    with interruptible(), tempfile.TemporaryDirectory(prefix="bench-channels-") as td:
        nginx = start_nginx(Path(td) / "nginx", record=False, hls=True)
        try:
            for k in ks(maximum):
                ours_going = not ours_steps or ours_steps[-1].ok
                peer_going = not peer_steps or peer_steps[-1].ok
                if not ours_going and not peer_going:
                    break
                if ours_going:
                    print(f"  K={k} ours, {seconds:g} s ...", flush=True)
                    ours_steps.append(step_ours(nginx, k, seconds, _plans(pool, k), slate, Path(td)))
                    print(f"  {ours_steps[-1].line()}", flush=True)
                if peer_going:
                    print(f"  K={k} peer, {seconds:g} s ...", flush=True)
                    peer_steps.append(step_peer(nginx, k, seconds, pool, Path(td)))
                    print(f"  {peer_steps[-1].line()}", flush=True)
        finally:
            nginx.stop()
    best_ours = max((s.k for s in ours_steps if s.ok), default=0)
    best_clean = max((s.k for s in ours_steps if s.ok and s.startup_underruns == 0), default=0)
    best_peer = max((s.k for s in peer_steps if s.ok), default=0)
    both = {s.k for s in ours_steps} & {s.k for s in peer_steps}
    at = 8 if 8 in both else max(both)
    o = next(s for s in ours_steps if s.k == at)
    p = next(s for s in peer_steps if s.k == at)
    capped = " (the cap, BENCH_CHANNELS_MAX)" if best_ours == maximum else ""
    peer_name = "ffmpeg -re -stream_loop -1 -c copy per channel"
    figures = [
        PeerFigure("channels with zero underruns after start-up", best_ours, "channels", peer_name, best_peer),
        PeerFigure("channels with zero underruns, start-up included", best_clean, "channels"),
        PeerFigure(f"streamer CPU at K={at}", 100 * o.cores, "% of a core", peer_name, 100 * p.cores),
        PeerFigure(f"streamer CPU per channel at K={at}", 100 * o.cores / at, "% of a core", peer_name,
                   100 * p.cores / at),
        PeerFigure(f"nginx CPU at K={at}", 100 * o.cpu.cores(o.cpu.nginx), "% of a core", peer_name,
                   100 * p.cpu.cores(p.cpu.nginx)),
        PeerFigure(f"start-up: latest packet past its air time at K={at}", o.startup_late_ms, "ms"),
    ]
    if best_ours and best_ours != at:
        b = next(s for s in ours_steps if s.k == best_ours)
        figures += [PeerFigure(f"streamer CPU at K={best_ours} (largest without underruns)", 100 * b.cores,
                               "% of a core"),
                    PeerFigure(f"start-up: latest packet past its air time at K={best_ours}", b.startup_late_ms,
                               "ms")]
    notes = (f"{seconds:g} s per step (BENCH_CHANNELS_S), K up to {maximum} (BENCH_CHANNELS_MAX); ours: K feeder "
             "threads in one process (as the supervisor runs them), all started at once, each airing the pool of "
             f"{len(pool)} segments ({pool[0].frames / profile.fps:.1f}-{pool[-1].frames / profile.fps:.1f} s, "
             f"{profile.width}x{profile.height} {profile.fps} fps, about "
             f"{sum(_kbps(s, profile) for s in pool) / len(pool):.0f} kbit/s) from its own place in it. An underrun "
             "is a packet muxed more than one frame after its air time (ChannelFeeder.underruns); ours passes a step "
             f"with none after the start-up (the first {warmup_seconds(seconds):g} s): a feeder's clock starts "
             "before its first segment is loaded and its push ffmpeg has connected, so the first packets of every "
             "run are late by that start-up time, counted apart ('start-up'). Peer: K ffmpeg processes each "
             f"looping one of the same segments; passes with every final -progress speed >= {PEER_MIN_SPEED} (a "
             "coarser test than ours: 1% of 60 s is 0.6 s behind). Largest K for ours "
             f"{best_ours}{capped}. Destination relays and rendering are not running here. One nginx-rtmp, HLS on. "
             "CPU: /proc utime+stime of the process trees over the steady part of each step, in % of one core "
             "(200% = the whole 2-core machine); other load on the machine skews it ('other processes'). Steps: "
             + " | ".join(s.line() for s in [*ours_steps, *peer_steps]))
    report("channels", figures, notes=notes)
