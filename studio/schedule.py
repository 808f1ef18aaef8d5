"""24/7 show schedules, and the rolling-horizon planner that turns them into timed segments and breaks.

A `ShowSchedule` (kept as JSON on the show) says when a show airs (weekly windows in an IANA zone; none means
24/7), what it airs (a rotation of scripts with weights, hourly quotas and cooldowns), who presents it (avatars,
each under its own consent, in stints of N minutes in a fixed order) and when it pauses (breaks).

How a plan is made (all times are integer milliseconds, so both implementations compute the same plan):
1. The rotation is compiled once into a cycle on the show's content clock: one round of smooth weighted
   round-robin (SWRR, W = sum of weights airings) when that round, repeated back to back, keeps every quota
   and cooldown; otherwise one hour filled greedily in SWRR order with the scripts that are under quota and off
   cooldown, waiting (the idle loop airs) where none may air. Breaks, window gaps and waits only lengthen the
   real gaps between airings, so the repeated cycle keeps quotas and cooldowns on the air clock too.
2. The cycle is laid out from the plan state. At each airing boundary, in this order: outside a window the plan
   jumps to the next one (a window starts like a show: banner, break clock, next avatar); a break that is due
   airs (one that would run past the window end closes the window); a stint that is over hands over; an element
   that does not fit before the window end closes the window; a consent with less than the longest airing left
   of its daily cap hands over (when every consent is at its cap the plan stops); the policy callable may
   refuse the airing, which is then skipped and reported.
3. `plan_arrays` (the fast path) lays out the stretches between two such events at once: the next event is a
   bisection on the cycle's prefix sums, and the stretches of every channel become numpy arrays in one pass.
   `plan_reference` takes the same decisions one item at a time; it is the oracle in tests and the benchmark's
   peer. It also checks every airing against its quota and cooldown on the air clock, against the airings
   before it (kept in the plan state); those checks can only fail after an airing was skipped or the rotation
   was edited, and then the next element of the cycle that may air takes the turn (or the show waits if none
   may). For an hour after such a skip or edit, and whenever the policy refuses an airing, the fast path hands
   the channel to the reference.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import accumulate
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from studio.planner import estimate_seconds, script_parts

HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_INF = 1 << 62
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HHMM = re.compile(r"(\d\d):(\d\d)")

# allowed(avatar_id, consent_id, script_id, at, seconds) -> None if the airing may go ahead, else the reason.
Allowed = Callable[[str, str, str, datetime, float], "str | None"]


class ScheduleError(ValueError):
    """A schedule that cannot be planned with the scripts given; the message says which value and why."""


def to_ms(at: datetime) -> int:
    """Milliseconds since 1970 of a naive UTC datetime (an aware one is converted to UTC first)."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return (at - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


# --- the schedule, as stored on a show --------------------------------------------------------------
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _day(name: str) -> int:
    key = name.strip().lower()
    if key in _DAYS:
        return _DAYS.index(key)
    if key in _FULL_DAYS:
        return _FULL_DAYS.index(key)
    raise ValueError(f"unknown weekday {name!r}; use mon, tue, wed, thu, fri, sat, sun or a range like mon-fri")


def _minute(value: str, name: str, *, allow_24: bool) -> int:
    m = _HHMM.fullmatch(value.strip())
    if not m or int(m[2]) > 59 or int(m[1]) > 24 or (int(m[1]) == 24 and (int(m[2]) or not allow_24)):
        last = "24:00" if allow_24 else "23:59"
        raise ValueError(f"{name} must be a time HH:MM from 00:00 to {last}, got {value!r}")
    return int(m[1]) * 60 + int(m[2])


class Window(_Model):
    days: list[str] = Field(min_length=1, description="Weekdays the window opens on, in the schedule's zone: mon..sun, "
                            "full names, or ranges such as mon-fri (fri-mon wraps over the weekend).")
    start: str = Field(description="Local opening time, HH:MM.")
    end: str = Field(description="Local closing time, HH:MM; 24:00 is midnight; a time before `start` means the "
                     "next day (22:00-02:00).")

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        found: set[int] = set()
        for item in v:
            first, sep, last = item.partition("-")
            a = _day(first)
            b = _day(last) if sep else a
            found.update((a + i) % 7 for i in range((b - a) % 7 + 1))
        return [_DAYS[d] for d in sorted(found)]

    @field_validator("start")
    @classmethod
    def _start(cls, v: str) -> str:
        _minute(v, "start", allow_24=False)
        return v.strip()

    @field_validator("end")
    @classmethod
    def _end(cls, v: str) -> str:
        _minute(v, "end", allow_24=True)
        return v.strip()

    @model_validator(mode="after")
    def _not_empty(self) -> Window:
        if _minute(self.start, "start", allow_24=False) == _minute(self.end, "end", allow_24=True):
            raise ValueError(f"window {self.start}-{self.end} is empty; use 00:00-24:00 for a whole day")
        return self


class RotationEntry(_Model):
    script_id: str = Field(min_length=1, description="The script that airs (one entry per script).")
    weight: int = Field(1, description="Share of airings against the other scripts; a whole number > 0.")
    max_per_hour: int | None = Field(None, description="At most this many airings in any 60 minutes; none: no quota.")
    cooldown_s: float = Field(0.0, description="Seconds from the end of one airing of this script to the start of "
                              "its next, 0 to 3600.")

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: int) -> int:
        if v <= 0:
            raise ValueError(f"weight must be > 0, got {v}")
        return v

    @field_validator("max_per_hour")
    @classmethod
    def _quota(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError(f"max_per_hour must be > 0 (or left out for no quota), got {v}")
        return v

    @field_validator("cooldown_s")
    @classmethod
    def _cooldown(cls, v: float) -> float:
        if not 0 <= v <= 3600:
            raise ValueError(f"cooldown_s must be 0 to 3600 seconds, got {v:g}; use max_per_hour for rarer airings")
        return v


class AvatarStint(_Model):
    avatar_id: str = Field(min_length=1, description="The avatar that presents.")
    consent_id: str = Field(min_length=1, description="The consent it presents under (caps, scope, term).")
    minutes: int = Field(60, description="Stint length before it hands over to the next avatar in the list.")

    @field_validator("minutes")
    @classmethod
    def _minutes(cls, v: int) -> int:
        if v <= 0:
            raise ValueError(f"minutes must be > 0, got {v}")
        return v


class Breaks(_Model):
    every_minutes: int = Field(description="A break starts this many minutes after the previous one started.")
    seconds: int = Field(description="Break length; the disclosure banner airs again after it.")

    @field_validator("every_minutes", "seconds")
    @classmethod
    def _positive(cls, v: int, info) -> int:
        if v <= 0:
            raise ValueError(f"{info.field_name} must be > 0, got {v}")
        return v

    @model_validator(mode="after")
    def _shorter(self) -> Breaks:
        if self.seconds >= self.every_minutes * 60:
            raise ValueError(f"a break of {self.seconds} s does not fit in every {self.every_minutes} min; make "
                             "seconds shorter than every_minutes")
        return self


class ShowSchedule(_Model):
    timezone: str = Field("UTC", description="IANA zone of the windows, e.g. Europe/Berlin.")
    windows: list[Window] = Field(default_factory=list, description="Weekly on-air windows; none: 24/7.")
    rotation: list[RotationEntry] = Field(description="Scripts that rotate; at least one.")
    avatars: list[AvatarStint] = Field(description="Presenters in hand-over order; at least one.")
    breaks: Breaks | None = Field(None, description="Regular breaks; none: no breaks.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone must be an IANA zone such as Europe/Berlin, got {v!r}") from None
        return v

    @field_validator("rotation")
    @classmethod
    def _rotation(cls, v: list[RotationEntry]) -> list[RotationEntry]:
        if not v:
            raise ValueError("rotation is empty; add at least one script")
        seen: set[str] = set()
        for e in v:
            if e.script_id in seen:
                raise ValueError(f"script {e.script_id!r} appears twice in the rotation; give it one entry with "
                                 "a higher weight")
            seen.add(e.script_id)
        return v

    @field_validator("avatars")
    @classmethod
    def _avatars(cls, v: list[AvatarStint]) -> list[AvatarStint]:
        if not v:
            raise ValueError("avatars is empty; add at least one avatar with its consent")
        return v


# --- plan state, request and result -------------------------------------------------------------------
@dataclass(frozen=True)
class PlanState:
    """Where a show's plan stands; the next pass continues from here. JSON-able through `as_dict`."""

    t_ms: int                     # the end of what is planned
    k: int = 0                    # position in the compiled rotation cycle
    cycle_id: str = ""            # which cycle `k` refers to; another cycle restarts the rotation
    avatar: int = 0               # index into ShowSchedule.avatars
    stint_start_ms: int = 0
    stint_aired: bool = False     # the current stint has aired something
    break_ref_ms: int = 0         # end of the last break, or start of the window
    banner: bool = True           # the next segment opens with the disclosure banner
    guard_until_ms: int = 0       # quotas and cooldowns are checked on the air clock until then (after a skip)
    skips: int = 0                # airings refused in a row for the current avatar
    blocks: int = 0               # avatars in a row that had a whole cycle refused
    # (script_id, end of its last airing if within the hour, its starts in the last hour if it has a quota): what
    # an airing is checked against after a skip or an edit (a quota added by an edit counts from the edit on).
    history: tuple = ()

    @classmethod
    def initial(cls, start: datetime) -> PlanState:
        t = to_ms(start)
        return cls(t_ms=t, stint_start_ms=t, break_ref_ms=t)

    @property
    def at(self) -> datetime:
        return from_ms(self.t_ms)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> PlanState:
        hist = tuple((s, e, tuple(st)) for s, e, st in d.get("history", ()))
        return cls(**{**d, "history": hist})


@dataclass(frozen=True)
class PlanRequest:
    schedule: ShowSchedule
    # script_id -> text, for every script in the rotation; or its parts as ((text, ms), ...) when they are fixed
    # already (a recorded voice-over's cut, studio.voiceover.recorded_parts)
    scripts: Mapping[str, str | tuple[tuple[str, int], ...]]
    state: PlanState
    now: datetime                 # naive UTC; nothing is planned before it
    horizon_s: float = 1800.0     # plan airings that start before now + horizon
    used_seconds: Mapping[str, float] = field(default_factory=dict)   # consent -> aired or planned in the last 24 h
    max_hours_per_day: Mapping[str, float] = field(default_factory=dict)  # consent -> its cap (scope.max_hours_per_day)


@dataclass(frozen=True)
class PlanItem:
    kind: str                     # "segment" | "break"
    at: datetime                  # planned start on air, naive UTC
    seconds: float                # estimated length
    deadline: datetime            # its render must be done by then (at - safety margin)
    show_start: bool = False      # opens with the disclosure banner
    script_id: str | None = None
    part: int = 0                 # index of the part within its script
    text: str = ""
    avatar_id: str | None = None
    consent_id: str | None = None


@dataclass(frozen=True)
class Refusal:
    at: datetime
    avatar_id: str
    consent_id: str
    script_id: str
    reason: str


@dataclass
class Plan:
    items: list[PlanItem]
    refusals: list[Refusal]
    state: PlanState
    planned_seconds: dict[str, float]   # consent -> seconds planned by this pass


# --- preparation shared by both implementations ------------------------------------------------------
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


# --- the reference: one item at a time -----------------------------------------------------------------
def _window_at(windows: tuple[list[int], list[int]] | None, t: int) -> tuple[bool, int]:
    """(inside, end of this window) or (outside, start of the next one)."""
    if windows is None:
        return True, _INF
    for s, e in zip(*windows, strict=True):
        if t < s:
            return False, s
        if t < e:
            return True, e
    raise AssertionError(f"no on-air window after {from_ms(t)}: windows are computed two weeks past the horizon")


def _ready_at(sh: _Show, hist: list | None, i: int, t: int) -> int:
    """Earliest time from `t` at which script `i` keeps its cooldown and hourly quota on the air clock."""
    if hist is None:
        return t
    end, starts = hist
    ready = t if end is None else max(t, end + sh.cd[i])
    q = sh.quota[i]
    if q is not None:
        recent = [x for x in starts if x > t - HOUR_MS]
        if len(recent) >= q:
            ready = max(ready, recent[-q] + HOUR_MS)
    return ready


def plan_reference(request: PlanRequest, *, allowed: Allowed | None = None, words_per_minute: int = 165,
                   margin_s: float = 30.0, retry_s: float = 60.0) -> Plan:
    """The plan, decided item by item: the oracle for `plan_arrays`. Same arguments as `plan`."""
    sh = _shows([request], words_per_minute)[0]
    cur = _Cursor(sh)
    cy, margin, retry = sh.cycle, round(margin_s * 1000), round(retry_s * 1000)
    items: list[PlanItem] = []
    refusals: list[Refusal] = []
    while not cur.stopped and cur.t < sh.until:
        t = cur.t
        inside, bound = _window_at(sh.windows, t)
        if not inside:
            cur.t = bound
            cur.enter(sh)
            continue
        if sh.brk and t - cur.br >= sh.brk[0]:
            if t + sh.brk[1] > bound:
                cur.t = bound
                continue
            items.append(PlanItem("break", from_ms(t), sh.brk[1] / 1000, from_ms(t - margin)))
            cur.t = cur.br = t + sh.brk[1]
            cur.banner = True
            continue
        if t - cur.ss >= sh.stint_ms[cur.avatar]:
            cur.hand_over(sh)
            continue
        r = cur.k % cy.L
        s, d = cy.elems[r], cy.ms[r]
        if t + d > bound:
            cur.t = bound
            continue
        if s < 0:
            cur.t, cur.k, cur.banner = t + d, cur.k + 1, True
            continue
        c = sh.cons[cur.avatar]
        aid, cid, sid = sh.avatar_ids[cur.avatar], sh.consent_ids[c], sh.ids[s]
        if sh.budget[c] is not None and cur.planned[c] + cy.dmax > sh.budget[c]:
            refusals.append(Refusal(from_ms(t), aid, cid, sid, sh.cap_reason(c, cur.planned[c])))
            cur.exhausted.add(c)
            cur.hand_over(sh)
            continue
        if _ready_at(sh, cur.history.get(s), s, t) > t:   # only after a skip or an edit: see the module notes
            ready = {x: _ready_at(sh, cur.history.get(x), x, t) for x in set(cy.elems) if x >= 0}
            m = next((m for m in range(1, cy.L) if (x := cy.elems[(cur.k + m) % cy.L]) >= 0 and ready[x] <= t), None)
            if m is None:      # nothing in the cycle may air yet: wait for the first that may
                cur.t, cur.banner = min(ready.values()), True
            else:              # the next that may air takes the turn
                cur.k += m
                cur.guard_until = max(cur.guard_until, t + sh.guard_span)
            continue
        if allowed is not None and (reason := allowed(aid, cid, sid, from_ms(t), d / 1000)) is not None:
            refusals.append(Refusal(from_ms(t), aid, cid, sid, reason))
            cur.k += 1
            cur.skips += 1
            cur.guard_until = max(cur.guard_until, t + sh.guard_span)
            if cur.skips >= cy.n_airings:   # this avatar refused a whole cycle: the next one takes over
                cur.skips, cur.blocks = 0, cur.blocks + 1
                if cur.blocks >= len(sh.stint_ms):   # every avatar did: wait and try again
                    cur.blocks, cur.t, cur.banner = 0, t + retry, True
                else:
                    cur.hand_over(sh)
            continue
        at = t
        for p, (text, ms) in enumerate(sh.parts[s]):
            items.append(PlanItem("segment", from_ms(at), ms / 1000, from_ms(at - margin), cur.banner and p == 0,
                                  sid, p, text, aid, cid))
            at += ms
        hist = cur.history.setdefault(s, [None, []])
        if sh.quota[s] is not None:   # the last `quota` starts are all its check needs
            hist[1] = hist[1][-sh.quota[s] + 1:] + [t] if sh.quota[s] > 1 else [t]
        hist[0] = t + d
        cur.planned[c] += d
        cur.t, cur.k, cur.banner, cur.sa, cur.skips, cur.blocks = t + d, cur.k + 1, False, True, 0, 0
    return Plan(items, refusals, cur.state(sh), cur.planned_seconds(sh))


# --- the fast path: stretches between events, laid out with numpy --------------------------------------
class PlanArrays:
    """One channel's plan as arrays, one row per element of its rotation cycle as laid out: start (ms), script
    (-1 for a wait, when the idle loop airs), avatar, banner; and its breaks. `items(k)` makes the first k items,
    `to_plan()` all of them."""

    def __init__(self, sh: _Show, at: np.ndarray, script: np.ndarray, avatar: np.ndarray, show_start: np.ndarray,
                 breaks: list[int], refusals: list[Refusal], state: PlanState, planned: dict[str, float],
                 margin_ms: int):
        self._sh, self.at_ms, self.script, self.avatar, self.show_start = sh, at, script, avatar, show_start
        self.breaks_ms, self.refusals, self.state, self.planned_seconds = breaks, refusals, state, planned
        self._margin = margin_ms

    @property
    def airings(self) -> int:
        return int((self.script >= 0).sum())

    def __len__(self) -> int:
        counts = np.array([len(p) for p in self._sh.parts] + [0])   # index -1, a wait, has no items
        return int(counts[self.script].sum()) + len(self.breaks_ms)

    def items(self, limit: int | None = None) -> list[PlanItem]:
        sh, margin, out = self._sh, self._margin, []
        brk_s = sh.brk[1] / 1000 if sh.brk else 0.0
        breaks, bi, n = self.breaks_ms, 0, len(self.at_ms)
        step = n if limit is None else max(limit, 16)
        for lo in range(0, n, max(step, 1)):
            rows = zip(self.at_ms[lo:lo + step].tolist(), self.script[lo:lo + step].tolist(),
                       self.avatar[lo:lo + step].tolist(), self.show_start[lo:lo + step].tolist(), strict=True)
            for at, s, a, banner in rows:
                if s < 0:
                    continue
                while bi < len(breaks) and breaks[bi] < at:
                    out.append(PlanItem("break", from_ms(breaks[bi]), brk_s, from_ms(breaks[bi] - margin)))
                    bi += 1
                aid, cid, sid = sh.avatar_ids[a], sh.consent_ids[sh.cons[a]], sh.ids[s]
                for p, (text, ms) in enumerate(sh.parts[s]):
                    out.append(PlanItem("segment", from_ms(at), ms / 1000, from_ms(at - margin), banner and p == 0,
                                        sid, p, text, aid, cid))
                    at += ms
                if limit is not None and len(out) >= limit:
                    return out[:limit]
        out += [PlanItem("break", from_ms(b), brk_s, from_ms(b - margin)) for b in breaks[bi:]]
        return out if limit is None else out[:limit]

    def to_plan(self) -> Plan:
        return Plan(self.items(), self.refusals, self.state, self.planned_seconds)

    @classmethod
    def of_plan(cls, sh: _Show, plan: Plan, margin_ms: int) -> PlanArrays:
        firsts = [i for i in plan.items if i.kind == "segment" and i.part == 0]
        return cls(sh, np.array([to_ms(i.at) for i in firsts], dtype=np.int64),
                   np.array([sh.index[i.script_id] for i in firsts], dtype=np.int32),
                   np.array([_avatar_index(sh, i) for i in firsts], dtype=np.int32),
                   np.array([i.show_start for i in firsts], dtype=bool),
                   [to_ms(i.at) for i in plan.items if i.kind == "break"], plan.refusals, plan.state,
                   plan.planned_seconds, margin_ms)


def _avatar_index(sh: _Show, item: PlanItem) -> int:
    return next(a for a, (aid, c) in enumerate(zip(sh.avatar_ids, sh.cons, strict=True))
                if aid == item.avatar_id and sh.consent_ids[c] == item.consent_id)


def _layout(sh: _Show, cur: _Cursor, ch: int, out: list[list[int]]) -> tuple[list[int], list[tuple], int]:
    """Lay one channel out as stretches (ch, cycle position, start ms of that position's cycle, length, avatar,
    banner) appended to `out`; returns its breaks, refusals, and how far into its repeated cycle a stretch
    reaches. Mirrors `plan_reference` without a policy."""
    cy = sh.cycle
    L, D, C, A, AD, elems, ms, dmax, longest = cy.L, cy.D, cy.C, cy.A, cy.AD, cy.elems, cy.ms, cy.dmax, max(cy.ms)
    o_ch, o_r, o_shift, o_len, o_av, o_banner = out
    wstart, wend = sh.windows if sh.windows is not None else ([], [])
    wi, we = 0, _INF
    B, S = sh.brk if sh.brk else (None, 0)
    stint, cons, budget, planned, exhausted = sh.stint_ms, sh.cons, sh.budget, cur.planned, cur.exhausted
    until = sh.until
    t, k, a, ss, sa, br, banner = cur.t, cur.k, cur.avatar, cur.ss, cur.sa, cur.br, cur.banner
    breaks: list[int] = []
    refusals: list[tuple] = []
    stopped, need = False, 0
    while t < until:
        if wstart:
            while wend[wi] <= t:
                wi += 1
            if wstart[wi] > t:      # enter the next window
                t = br = wstart[wi]
                banner = True
                if sa:
                    nxt = sh.next_avatar(a, exhausted)
                    if nxt is None:
                        stopped = True
                        break
                    a, sa = nxt, False
                ss = t
                continue
            we = wend[wi]
        if B is not None and t - br >= B:
            if t + S > we:
                t = we
                continue
            breaks.append(t)
            t = br = t + S
            banner = True
            if t >= until or t >= we:
                continue
        if t - ss >= stint[a]:
            nxt = sh.next_avatar(a, exhausted)
            if nxt is None:
                stopped = True
                break
            a, ss, sa, banner = nxt, t, False, True
        r = k % L
        if t + ms[r] > we:
            t = we
            continue
        c = cons[a]
        bud = budget[c]
        if bud is not None and elems[r] >= 0 and planned[c] + dmax > bud:
            refusals.append((t, a, elems[r], sh.cap_reason(c, planned[c])))
            exhausted.add(c)
            nxt = sh.next_avatar(a, exhausted)
            if nxt is None:
                stopped = True
                break
            a, ss, sa, banner = nxt, t, False, True
            continue
        # Element k may air; the stretch runs to the first later boundary where something happens.
        qk = k // L
        ck, ak = qk * D + C[r], qk * AD + A[r]
        base = ck - t
        due = ss + stint[a]                    # the first of: hand-over, break, horizon end
        if B is not None and br + B < due:
            due = br + B
        if until < due:
            due = until
        q, x = divmod(due + base, D)
        j = q * L + bisect_left(C, x)
        if we < due + longest:                 # an element may not fit before the window ends
            q, x = divmod(we + base, D)
            m = q * L + bisect_right(C, x) - 1
            if m < j:
                j = m
        if bud is not None:                    # the consent reaches its cap
            q, x = divmod(ak + bud - planned[c] - dmax, AD)
            m = q * L + bisect_right(A, x)
            if m <= k:
                m = k + 1
            if elems[m % L] < 0:
                m += 1
            if m < j:
                j = m
        o_ch.append(ch)
        o_r.append(r)
        o_shift.append(t - C[r])
        o_len.append(j - k)
        o_av.append(a)
        o_banner.append(banner)
        if r + j - k > need:
            need = r + j - k
        qj, rj = divmod(j, L)
        t += qj * D + C[rj] - ck
        aired = qj * AD + A[rj] - ak
        if aired:
            planned[c] += aired
            sa, banner = True, False
        if elems[(j - 1) % L] < 0:
            banner = True
        k = j
    cur.t, cur.k, cur.avatar, cur.ss, cur.sa, cur.br, cur.banner, cur.stopped = t, k, a, ss, sa, br, banner, stopped
    return breaks, refusals, need


def _histories(shows: list[_Show], curs: dict[int, _Cursor], at: np.ndarray, script: np.ndarray,
               bounds: dict[int, tuple[int, int]]) -> None:
    """Bring each cursor's history up to date with the airings that can still bind, those of its run's last
    hour, for all channels at once."""
    chans = [ch for ch, cur in curs.items() if bounds[ch][1] > bounds[ch][0]]
    if not chans:
        return
    lo = np.array([bounds[ch][0] + int(np.searchsorted(at[slice(*bounds[ch])], curs[ch].t - HOUR_MS
                                                       - shows[ch].cycle.dmax, side="right")) for ch in chans])
    hi = np.array([bounds[ch][1] for ch in chans])
    n = hi - lo
    idx = np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
    who, s, t = np.repeat(np.array(chans), n), script[idx], at[idx]
    aired = s >= 0
    who, s, t = who[aired], s[aired], t[aired]
    if not len(who):
        return
    key = who * max(len(sh.ids) for sh in shows) + s
    order = np.argsort(key, kind="stable")               # by channel and script, in time order within
    key, t = key[order], t[order].tolist()
    firsts = np.flatnonzero(np.diff(key, prepend=-1)).tolist()
    for a, b, ch, sc in zip(firsts, firsts[1:] + [len(t)], who[order][firsts].tolist(), s[order][firsts].tolist(),
                            strict=True):
        h = curs[ch].history.setdefault(sc, [None, []])
        h[0] = t[b - 1] + shows[ch].dur[sc]
        h[1].extend(t[a:b])


def plan_arrays(requests: Sequence[PlanRequest], *, allowed: Allowed | None = None, words_per_minute: int = 165,
                margin_s: float = 30.0, retry_s: float = 60.0) -> list[PlanArrays]:
    """Plan many channels at once; the same plans as `plan_reference`, one `PlanArrays` per request."""
    shows = _shows(requests, words_per_minute)
    margin = round(margin_s * 1000)
    out: list[list[int]] = [[], [], [], [], [], []]
    runs: list[tuple | None] = []
    first_stretch = []
    for ch, sh in enumerate(shows):
        cur = _Cursor(sh)
        first_stretch.append(len(out[0]))
        if cur.guard_until > cur.t or cur.skips or cur.blocks:
            runs.append(None)      # limits must be checked on the air clock: the reference does that
            continue
        runs.append((cur, *_layout(sh, cur, ch, out)))
    first_stretch.append(len(out[0]))

    # One table per channel: its cycle repeated as often as its longest stretch needs, with start offsets.
    s_ch, s_r, s_len, s_av = (np.array(x, dtype=np.int32) for x in (out[0], out[1], out[3], out[4]))
    s_shift, s_banner = np.array(out[2], dtype=np.int64), np.array(out[5], dtype=bool)
    tab_len = np.array([max(run[3], 1) if run else 1 for run in runs], dtype=np.int64)
    tab_base = np.cumsum(tab_len) - tab_len
    cyc_L = np.array([sh.cycle.L for sh in shows], dtype=np.int64)
    cyc_D = np.array([sh.cycle.D for sh in shows], dtype=np.int64)
    cyc_base = np.cumsum(cyc_L) - cyc_L
    cyc_C = np.array([c for sh in shows for c in sh.cycle.C[:-1]], dtype=np.int64)
    cyc_S = np.array([e for sh in shows for e in sh.cycle.elems], dtype=np.int32)
    cyc_W = np.array([x for sh in shows for x in sh.cycle.after_wait], dtype=bool)
    tab_ch = np.repeat(np.arange(len(shows)), tab_len)
    q, r = np.divmod(np.arange(int(tab_len.sum())) - tab_base[tab_ch], cyc_L[tab_ch])
    g = cyc_base[tab_ch] + r
    tab_C, tab_S, tab_W = q * cyc_D[tab_ch] + cyc_C[g], cyc_S[g], cyc_W[g]

    # Every element of every stretch at once: element i of a stretch is table entry base + r + i.
    total = int(s_len.sum())
    s_first = np.cumsum(s_len, dtype=np.int64) - s_len
    g = np.repeat((tab_base[s_ch] + s_r - s_first).astype(np.int32), s_len) + np.arange(total, dtype=np.int32)
    script = tab_S[g]
    banner = tab_W[g]
    banner[s_first] = s_banner    # the first element of a stretch carries the stretch's own banner
    at = tab_C[g] + np.repeat(s_shift, s_len)
    avatar = np.repeat(s_av, s_len)
    elem_start = np.concatenate((s_first, [total])).tolist()

    bounds, curs = {}, {}
    for ch, run in enumerate(runs):
        if run is not None:
            bounds[ch] = (elem_start[first_stretch[ch]], elem_start[first_stretch[ch + 1]])
            curs[ch] = run[0]
    if allowed is not None:
        for ch, (lo, hi) in bounds.items():
            if _refuses(shows[ch], allowed, at[lo:hi], script[lo:hi], avatar[lo:hi]):
                runs[ch] = None
                del curs[ch]
    _histories(shows, curs, at, script, bounds)

    results: list[PlanArrays] = []
    for ch, (sh, run) in enumerate(zip(shows, runs, strict=True)):
        if run is None:
            results.append(PlanArrays.of_plan(sh, plan_reference(sh.req, allowed=allowed,
                                                                 words_per_minute=words_per_minute,
                                                                 margin_s=margin_s, retry_s=retry_s), margin))
            continue
        cur, breaks, refused, _ = run
        lo, hi = bounds[ch]
        refusals = [Refusal(from_ms(t), sh.avatar_ids[a], sh.consent_ids[sh.cons[a]], sh.ids[s], why)
                    for t, a, s, why in refused]
        results.append(PlanArrays(sh, at[lo:hi], script[lo:hi], avatar[lo:hi], banner[lo:hi], breaks, refusals,
                                  cur.state(sh), cur.planned_seconds(sh), margin))
    return results


def _refuses(sh: _Show, allowed: Allowed, at: np.ndarray, script: np.ndarray, avatar: np.ndarray) -> bool:
    for t, s, a in zip(at.tolist(), script.tolist(), avatar.tolist(), strict=True):
        if s >= 0 and allowed(sh.avatar_ids[a], sh.consent_ids[sh.cons[a]], sh.ids[s], from_ms(t),
                              sh.dur[s] / 1000) is not None:
            return True
    return False


def plan(request: PlanRequest, *, allowed: Allowed | None = None, words_per_minute: int = 165,
         margin_s: float = 30.0, retry_s: float = 60.0) -> Plan:
    """The next stretch of one show's plan: the airings that start from max(state, now) to now + horizon.

    `allowed(avatar_id, consent_id, script_id, at, seconds)` is asked about each airing and returns None or the
    reason it may not air; a refused airing is skipped and reported in `refusals`. It must be a pure question:
    the fast path may ask about an airing and then plan the channel again item by item. `max_hours_per_day`
    caps each consent's air time, counting `used_seconds` (aired or planned in the last 24 h, on every channel:
    plan shows that share a consent one after another, adding each result's `planned_seconds`). Items carry a
    `deadline` `margin_s` before they air; when every avatar is refused a whole cycle the show waits `retry_s`.
    The result's `state` is where the next pass starts.
    """
    return plan_arrays([request], allowed=allowed, words_per_minute=words_per_minute, margin_s=margin_s,
                       retry_s=retry_s)[0].to_plan()
