"""What both planners share: the rotation compiled into a cycle, the on-air windows, and a request made ready.

1. The rotation is compiled once into a cycle on the show's content clock (`_Cycle`, built by `_compile_many`
   and cached by its key): one round of smooth weighted round-robin (SWRR, W = sum of weights airings) when
   that round, repeated back to back, keeps every quota and cooldown; otherwise one hour filled greedily in SWRR
   order with the scripts that are under quota and off cooldown, waiting (the idle loop airs) where none may air
   (`_hour_cycles`). Breaks, window gaps and waits only lengthen the real gaps between airings, so the repeated
   cycle keeps quotas and cooldowns on the air clock too.
2. `_windows` turns the weekly windows into merged UTC intervals; `_Show` holds a request's parts, cycle,
   windows, avatars and caps; `_Cursor` is the plan state while a pass lays the cycle out. The layout itself
   is `reference.plan_reference` (item by item) and `fast.plan_arrays` (stretches as arrays).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Sequence
from functools import lru_cache
from itertools import accumulate
from zoneinfo import ZoneInfo

import numpy as np

from studio.planner import estimate_seconds, script_parts
from studio.schedule.model import (
    _DAYS,
    _MS,
    HOUR_MS,
    PlanRequest,
    PlanState,
    ScheduleError,
    ShowSchedule,
    _minute,
    from_ms,
    to_ms,
)

_DAY_MS = 86_400_000
_INF = 1 << 62


@lru_cache(maxsize=16384)
def _parts(text: str, words_per_minute: int) -> tuple[tuple[str, int], ...]:
    return tuple((p, round(estimate_seconds(p, words_per_minute) * 1000)) for p in script_parts(text))


class _Cycle:
    """The compiled rotation: elements (script index, or -1 for a wait) and their prefix sums."""

    __slots__ = ("elems", "ms", "L", "D", "C", "A", "AD", "dmax", "n_airings", "id", "after_wait")

    def __init__(self, elems: list[int], ms: list[int], key: tuple):
        self.elems, self.ms, self.L = elems, ms, len(elems)
        self.C = list(accumulate(ms, initial=0))
        if min(elems) >= 0:
            self.A, self.dmax, self.n_airings = self.C, max(ms), self.L
        else:
            aired = [x if s >= 0 else 0 for s, x in zip(elems, ms, strict=True)]
            self.A, self.dmax, self.n_airings = list(accumulate(aired, initial=0)), max(aired), self.L - elems.count(-1)
        self.D, self.AD = self.C[-1], self.A[-1]
        self.after_wait = [elems[-1] < 0, *(s < 0 for s in elems[:-1])]
        self.id = hashlib.sha1(repr(key).encode()).hexdigest()[:16]   # the cycle is a function of its key


def _swrr_round(w: Sequence[int]) -> list[int]:
    n, total = len(w), sum(w)
    cur, order = [0] * n, []
    for _ in range(total):
        for i in range(n):
            cur[i] += w[i]
        p = max(range(n), key=cur.__getitem__)
        cur[p] -= total
        order.append(p)
    return order


def _round_keeps_limits(order: list[int], d: Sequence[int], cd: Sequence[int], q: Sequence[int | None]) -> bool:
    starts, t = [], 0
    for i in order:
        starts.append(t)
        t += d[i]
    period = t
    for i in set(order):
        own = [s for s, j in zip(starts, order, strict=True) if j == i]
        gaps = [b - a - d[i] for a, b in zip(own, own[1:] + [own[0] + period], strict=True)]
        if min(gaps) < cd[i]:
            return False
        if q[i] is not None:
            m = len(own)
            for j, s in enumerate(own):
                x = s + HOUR_MS
                if m * (x // period) + bisect_left(own, x % period) - j > q[i]:
                    return False
    return True


def _hour_cycles(keys: Sequence[tuple]) -> list[tuple[list[int], list[int]]]:
    """One-hour cycles for many rotations at once: greedy SWRR among the scripts that may start now (under quota,
    off cooldown, and ending early enough that the gap to their first airing in the next hour keeps the
    cooldown), else a wait until one may. Lockstep over rotations, numpy over their scripts."""
    m, n = len(keys), max(len(k[0]) for k in keys)
    w, d, cd = (np.zeros((m, n), dtype=np.int64) for _ in range(3))
    q = np.full((m, n), _INF, dtype=np.int64)
    for r, (wk, dk, cdk, qk, _) in enumerate(keys):
        k = len(wk)
        w[r, :k], d[r, :k], cd[r, :k] = wk, dk, cdk
        q[r, :k] = [_INF if x is None else x for x in qk]
    hi = np.where((w > 0) & (d + cd <= HOUR_MS), HOUR_MS - d, -1)   # latest start allowed; -1: none
    lo = np.zeros((m, n), dtype=np.int64)                            # earliest start allowed (cooldown)
    count = np.zeros((m, n), dtype=np.int64)
    first = np.full((m, n), -1, dtype=np.int64)
    cur = np.zeros((m, n), dtype=np.int64)
    clock = np.zeros(m, dtype=np.int64)
    rows = np.arange(m)                                              # the rotations still being filled
    # Every array stays C-contiguous (np.where, boolean selection), so .ravel() below is a view to write through.
    rec: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    while len(rows):
        flat = np.arange(len(rows)) * n
        c = clock[:, None]
        elig = (lo <= c) & (c <= hi)
        welig = w * elig
        cur += welig
        pick = np.where(elig, cur, -_INF).argmax(axis=1)
        ix = flat + pick
        has = elig.ravel()[ix]
        cur.ravel()[ix] -= welig.sum(axis=1)
        dur = d.ravel()[ix] * has
        f = first.ravel()[ix]
        f = np.where(f < 0, clock, f)
        first.ravel()[ix] = np.where(has, f, first.ravel()[ix])
        cnt = count.ravel()[ix] + has
        count.ravel()[ix] = cnt
        cdx = cd.ravel()[ix]
        latest = np.where(cnt >= q.ravel()[ix], -1, np.minimum(HOUR_MS - dur, HOUR_MS - dur - cdx + f))
        hi.ravel()[ix] = np.where(has, latest, hi.ravel()[ix])
        clock += dur
        lo.ravel()[ix] = np.where(has, clock + cdx, lo.ravel()[ix])
        if has.all():
            rec.append((rows, pick, dur))
            continue
        ready = np.where((lo > clock[:, None]) & (lo <= hi), lo, _INF).min(axis=1)
        wait = np.where(has, 0, np.where(ready < _INF, ready, HOUR_MS) - clock)
        rec.append((rows, np.where(has, pick, np.where(wait > 0, -1, -2)), dur + wait))
        clock += wait
        live = has | (ready < _INF)
        if not live.all():
            rows, w, d, cd, q, hi, lo, count, first, cur, clock = (
                x[live] for x in (rows, w, d, cd, q, hi, lo, count, first, cur, clock))
    who = np.concatenate([x[0] for x in rec])
    es, ds = np.concatenate([x[1] for x in rec]), np.concatenate([x[2] for x in rec])
    keep = es != -2
    who, es, ds = who[keep], es[keep], ds[keep]
    order = np.argsort(who, kind="stable")
    es, ds = es[order].tolist(), ds[order].tolist()
    bounds = np.concatenate(([0], np.cumsum(np.bincount(who, minlength=m)))).tolist()
    return [(es[bounds[i]:bounds[i + 1]], ds[bounds[i]:bounds[i + 1]]) for i in range(m)]


_CYCLES: dict[tuple, _Cycle] = {}


def _compile_many(keys: Sequence[tuple]) -> list[_Cycle]:
    """Compiled cycles for rotation keys (weights, airing ms, cooldown ms, quotas, script ids), cached."""
    if len(_CYCLES) > 65536:   # a bounded cache; rotations change rarely
        _CYCLES.clear()
    todo: dict[tuple, list[int]] = {}
    for key in keys:
        if key in _CYCLES or key in todo:
            continue
        w, d, cd, q, ids = key
        order = _swrr_round(w)
        if _round_keeps_limits(order, d, cd, q):
            _CYCLES[key] = _Cycle(order, [d[i] for i in order], key)
            continue
        for i, sid in enumerate(ids):
            if d[i] + cd[i] > HOUR_MS:
                raise ScheduleError(f"script {sid!r} cannot air: with limits that bind, each script must fit an hour "
                                    f"with its cooldown, and it is {d[i] / 1000:.0f} s with a cooldown of "
                                    f"{cd[i] / 1000:.0f} s")
        todo[key] = order
    if todo:
        for key, (elems, ms) in zip(todo, _hour_cycles(list(todo)), strict=True):
            _CYCLES[key] = _Cycle(elems, ms, key)
    return [_CYCLES[k] for k in keys]


def _windows(schedule: ShowSchedule, lo_ms: int, hi_ms: int) -> tuple[list[int], list[int]] | None:
    """Merged on-air intervals in UTC ms covering lo..hi and two weeks after hi; None for 24/7."""
    if not schedule.windows:
        return None
    zone = ZoneInfo(schedule.timezone)

    def utc(local_ms: int) -> int:   # a local wall time as UTC; a time in a spring-forward gap moves forward
        return local_ms - zone.utcoffset(from_ms(local_ms)) // _MS

    specs = []
    for w in schedule.windows:
        a, b = _minute(w.start, "start", allow_24=False), _minute(w.end, "end", allow_24=True)
        specs.append(({_DAYS.index(x) for x in w.days}, a * 60_000, (b if b > a else b + 1440) * 60_000))
    spans = []
    for day in range(lo_ms // _DAY_MS - 2, hi_ms // _DAY_MS + 16):   # a weekly window can fall in a DST gap
        weekday = (day + 3) % 7   # 1970-01-01 was a Thursday
        for days, a, b in specs:
            if weekday in days and (s := utc(day * _DAY_MS + a)) < (e := utc(day * _DAY_MS + b)):
                spans.append((s, e))
    spans.sort()
    starts: list[int] = []
    ends: list[int] = []
    for s, e in spans:
        if ends and s <= ends[-1]:
            ends[-1] = max(ends[-1], e)
        else:
            starts.append(s)
            ends.append(e)
    return starts, ends


class _Show:
    """A request made ready to lay out: parts, compiled cycle, windows, avatars, caps."""

    __slots__ = ("req", "ids", "index", "parts", "dur", "cd", "quota", "key", "cycle", "windows", "brk", "stint_ms",
                 "avatar_ids", "consent_ids", "cons", "budget", "guard_span", "until", "now")

    def __init__(self, req: PlanRequest, words_per_minute: int):
        sch = req.schedule
        self.req = req
        self.ids = [e.script_id for e in sch.rotation]
        self.index = {s: i for i, s in enumerate(self.ids)}
        self.parts = []
        for sid in self.ids:
            text = req.scripts.get(sid)
            if text is None:
                raise ScheduleError(f"the rotation names script {sid!r}, but no text was given for it")
            parts = _parts(text, words_per_minute) if isinstance(text, str) else tuple(text)
            if not parts:
                raise ScheduleError(f"script {sid!r} has no words to say")
            self.parts.append(parts)
        self.dur = dur = tuple(sum(ms for _, ms in p) for p in self.parts)
        self.cd = tuple(round(e.cooldown_s * 1000) for e in sch.rotation)
        self.quota = tuple(e.max_per_hour for e in sch.rotation)
        self.key = (tuple(e.weight for e in sch.rotation), dur, self.cd, self.quota, tuple(self.ids))
        self.cycle: _Cycle = None  # set by _shows, which compiles the cycles of many shows at once
        self.now = to_ms(req.now)
        self.until = self.now + round(req.horizon_s * 1000)
        self.windows = _windows(sch, min(req.state.t_ms, self.now), self.until)
        b = sch.breaks
        self.brk = None if b is None else (b.every_minutes * 60_000 - b.seconds * 1000, b.seconds * 1000)
        self.stint_ms = [a.minutes * 60_000 for a in sch.avatars]
        self.avatar_ids = [a.avatar_id for a in sch.avatars]
        self.consent_ids = list(dict.fromkeys(a.consent_id for a in sch.avatars))
        self.cons = [self.consent_ids.index(a.consent_id) for a in sch.avatars]
        self.budget = [None if (cap := req.max_hours_per_day.get(c)) is None
                       else round(cap * HOUR_MS) - round(req.used_seconds.get(c, 0.0) * 1000)
                       for c in self.consent_ids]
        self.guard_span = max(max(self.cd), HOUR_MS if any(x is not None for x in self.quota) else 0)

    def cap_reason(self, c: int, planned_ms: int) -> str:
        cid = self.consent_ids[c]
        cap = self.req.max_hours_per_day[cid]
        used = self.req.used_seconds.get(cid, 0.0) + planned_ms / 1000
        return (f"consent {cid} allows {cap:g} h on air in 24 h; {used / 3600:.2f} h are aired or planned and the "
                f"next airing may take up to {self.cycle.dmax / 1000:.1f} s")

    def next_avatar(self, a: int, exhausted: set[int]) -> int | None:
        n = len(self.stint_ms)
        for step in range(1, n + 1):
            if self.cons[(a + step) % n] not in exhausted:
                return (a + step) % n
        return None


def _shows(requests: Sequence[PlanRequest], words_per_minute: int) -> list[_Show]:
    shows = [_Show(r, words_per_minute) for r in requests]
    for sh, cycle in zip(shows, _compile_many([sh.key for sh in shows]), strict=True):
        sh.cycle = cycle
    return shows


class _Cursor:
    """The mutable plan state during one pass."""

    __slots__ = ("t", "k", "avatar", "ss", "sa", "br", "banner", "guard_until", "skips", "blocks", "history",
                 "exhausted", "planned", "stopped")

    def __init__(self, sh: _Show):
        s = sh.req.state
        self.t, self.k, self.ss, self.sa, self.br, self.banner = s.t_ms, s.k, s.stint_start_ms, s.stint_aired, \
            s.break_ref_ms, s.banner
        self.avatar = s.avatar if s.avatar < len(sh.stint_ms) else 0
        self.guard_until, self.skips, self.blocks = s.guard_until_ms, s.skips, s.blocks
        self.history = {sh.index[sid]: [end, list(starts)] for sid, end, starts in s.history if sid in sh.index}
        self.exhausted: set[int] = set()
        self.planned = [0] * len(sh.consent_ids)
        self.stopped = False
        if s.cycle_id != sh.cycle.id:   # a new rotation: start it over, checking limits against what aired before
            self.k = 0
            if self.history:
                self.guard_until = max(self.guard_until, self.t + sh.guard_span)
        else:
            self.k = s.k % sh.cycle.L
        if self.t < sh.now:             # fell behind (a new show, an outage): pick up at `now` like a new window
            self.t = sh.now
            self.enter(sh)

    def enter(self, sh: _Show) -> None:
        self.banner, self.br = True, self.t
        if self.sa:
            self.hand_over(sh)
        else:
            self.ss = self.t

    def hand_over(self, sh: _Show) -> None:
        nxt = sh.next_avatar(self.avatar, self.exhausted)
        if nxt is None:
            self.stopped = True
            return
        self.avatar, self.ss, self.sa, self.banner = nxt, self.t, False, True

    def state(self, sh: _Show) -> PlanState:
        t, hist = self.t, []
        for i in sorted(self.history):
            end, starts = self.history[i]
            end = end if end is not None and end > t - HOUR_MS else None   # any cooldown, also after an edit
            recent = tuple(x for x in starts if x > t - HOUR_MS) if sh.quota[i] is not None else ()
            if end is not None or recent:
                hist.append((sh.ids[i], end, recent))
        return PlanState(t_ms=t, k=self.k % sh.cycle.L, cycle_id=sh.cycle.id, avatar=self.avatar,
                         stint_start_ms=self.ss, stint_aired=self.sa, break_ref_ms=self.br, banner=self.banner,
                         guard_until_ms=self.guard_until if self.guard_until > t else 0, skips=self.skips,
                         blocks=self.blocks, history=tuple(hist))

    def planned_seconds(self, sh: _Show) -> dict[str, float]:
        return {c: ms / 1000 for c, ms in zip(sh.consent_ids, self.planned, strict=True)}
