"""Planner speed: 1,000 channels × 24 h planned at once by the fast path (`plan_arrays`), against the
item-by-item reference (`plan_reference`) measured in the same run on a sample of the same channels and scaled
to all of them. The goal in issue 6 is under 1 s for 1,000 channels × 24 h."""

from __future__ import annotations

import os
import random
import statistics
import time
from datetime import datetime

from bench.common import Figure, report
from studio.schedule import (
    AvatarStint,
    Breaks,
    PlanRequest,
    PlanState,
    RotationEntry,
    ShowSchedule,
    Window,
    cycle,
    plan_arrays,
    plan_reference,
)

CHANNELS = 1000
HOURS = 24
SAMPLE = 20          # channels the reference plans; its time is scaled to CHANNELS
REPEATS = 3
START = datetime(2025, 3, 28, 22, 0)   # across Europe's spring clock change
WORDS = ("light serum glow jacket trail rain pocket seams taped bundle cart order free shipping today layers "
         "sunscreen vitamin morning commute mountain partnership paid weighs grams bottle cream mask gentle fresh "
         "colour size fabric stretch comfort warm winter summer price deal limited stock").split()
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Shanghai", "Asia/Kolkata", "America/Sao_Paulo"]


def _text(rng: random.Random, words: int) -> str:
    out, left = [], words
    while left:
        n = min(left, rng.randint(4, 16))
        out.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + rng.choice(".!?"))
        left -= n
    return " ".join(out)


def channel(rng: random.Random, n: int) -> PlanRequest:
    """One channel's show: its own scripts and rotation; 24/7 or weekday windows; breaks, stints, caps."""
    rotation = [RotationEntry(script_id=f"ch{n}-s{i}", weight=rng.randint(1, 5),
                              max_per_hour=rng.choice([None, None, None, rng.randint(4, 20)]),
                              cooldown_s=rng.choice([0, 0, rng.randint(60, 600)]))
                for i in range(rng.randint(3, 8))]
    avatars = [AvatarStint(avatar_id=f"ch{n}-a{i}", consent_id=f"ch{n}-c{i}", minutes=rng.choice([30, 45, 60, 90, 120]))
               for i in range(rng.randint(1, 3))]
    windows = [] if rng.random() < 0.6 else [Window(days=["mon-fri"], start="09:00", end="21:00"),
                                             Window(days=["sat-sun"], start="10:00", end="18:00")]
    breaks = None if rng.random() < 0.3 else Breaks(every_minutes=rng.choice([15, 20, 30, 45]),
                                                    seconds=rng.choice([30, 60, 90, 120]))
    sch = ShowSchedule(timezone=rng.choice(ZONES), windows=windows, rotation=rotation, avatars=avatars,
                       breaks=breaks)
    scripts = {e.script_id: _text(rng, rng.randint(20, 90)) for e in rotation}
    caps = {a.consent_id: rng.choice([8.0, 12.0, 16.0]) for a in avatars if rng.random() < 0.5}
    return PlanRequest(sch, scripts, PlanState.initial(START), START, horizon_s=HOURS * 3600,
                       used_seconds={c: rng.uniform(0, 3600) for c in caps}, max_hours_per_day=caps)


def _cold() -> None:
    # A first pass over new shows splits every script and compiles every rotation; later passes find them cached.
    cycle._parts.cache_clear()
    cycle._CYCLES.clear()


def _timed(fn, *, cold: bool) -> tuple[float, float, object]:
    """(wall s, CPU s of this process, result)."""
    if cold:
        _cold()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    rng = random.Random(6)
    requests = [channel(rng, n) for n in range(CHANNELS)]
    runs = {"cold": [], "warm": []}
    plans = None
    for _ in range(REPEATS):
        for kind in runs:
            wall, cpu, plans = _timed(lambda: plan_arrays(requests), cold=kind == "cold")
            runs[kind].append((wall, cpu))
    policy = min(_timed(lambda: plan_arrays(requests, allowed=lambda *a: None), cold=False)[0] for _ in range(2))

    sample = requests[:: CHANNELS // SAMPLE][:SAMPLE]
    peer = {}
    for kind in runs:
        wall, _, peer_plans = _timed(lambda: [plan_reference(r) for r in sample], cold=kind == "cold")
        peer[kind] = wall * CHANNELS / len(sample)
    if any(plans[requests.index(r)].to_plan() != p for r, p in zip(sample, peer_plans, strict=True)):
        raise SystemExit("the fast path and the reference disagree on the sample; fix that before timing them")

    items = sum(len(p) for p in plans)
    airings = sum(p.airings for p in plans)
    breaks = sum(len(p.breaks_ms) for p in plans)
    t = time.perf_counter()
    one = plans[0].items()
    materialise = time.perf_counter() - t
    med = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    best = {k: min(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    peer_name = f"item-by-item reference, {len(sample)} channels scaled"
    report("planner", [
        Figure(f"first pass: {CHANNELS} channels x {HOURS} h, median of {REPEATS}", med["cold"], "s", peer_name,
               peer["cold"]),
        Figure("later passes (scripts split, rotations compiled)", med["warm"], "s", peer_name, peer["warm"]),
        Figure("channel-days planned per second, first pass", CHANNELS / med["cold"], "/s", peer_name,
               CHANNELS / peer["cold"]),
        Figure("segment parts planned per second, first pass", items / med["cold"], "items/s", peer_name,
               items / peer["cold"]),
        Figure(f"later pass asking a policy about each of {airings} airings", policy, "s", "no policy callable",
               med["warm"]),
        Figure(f"materialise one channel's {HOURS} h ({len(one)} items) as objects", materialise * 1000, "ms"),
    ], notes=f"{items} segment parts and breaks ({airings} airings, {breaks} breaks) over {CHANNELS} channels; the "
             f"sample's plans are identical in both; best runs: first pass {best['cold']:.2f} s, later "
             f"{best['warm']:.2f} s; process CPU (median): {cpu['cold']:.2f} s, {cpu['warm']:.2f} s; "
             f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end; timings drift with the machine's "
             "load, compare ratios")


if __name__ == "__main__":
    main()
