"""The schedule as stored on a show, and what the planner takes and returns.

A `ShowSchedule` (kept as JSON on the show) says when a show airs (weekly windows in an IANA zone; none means
24/7), what it airs (a rotation of scripts with weights, hourly quotas and cooldowns), who presents it (avatars,
each under its own consent, in stints of N minutes in a fixed order) and when it pauses (breaks). A pass of the
planner takes a `PlanRequest` (the schedule, the scripts' text, the `PlanState` where the last pass stopped, and
each consent's daily cap) and returns a `Plan` (timed `PlanItem`s, the `Refusal`s, the next state).

All times inside the planner are integer milliseconds since 1970 (`to_ms`, `from_ms`), so the reference and the
fast planner compute the same plan. The rest of the package builds on this module: `cycle` compiles and prepares,
`reference` and `fast` lay out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HOUR_MS = 3_600_000
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
