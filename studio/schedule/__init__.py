"""24/7 show schedules, and the rolling-horizon planner that turns them into timed segments and breaks.

The parts, each building on the ones before it:
- `model`: the schedule as stored on a show (`ShowSchedule` and its windows, rotation, avatars, breaks) and what a
  pass takes and returns (`PlanRequest`, `PlanState`, `Plan`); all planner times are integer milliseconds.
- `cycle`: the rotation compiled once into a cycle (smooth weighted round-robin, or one hour filled greedily when
  quotas or cooldowns bind), the on-air windows in UTC, and a request made ready to lay out.
- `reference`: `plan_reference`, the plain definition: the cycle laid out one item at a time, every rule
  checked at every airing boundary.
- `fast`: `plan_arrays`, the same plans as arrays for many channels at once (stretches between events by
  bisection, numpy over channels), checked equal to the reference by tests; it hands a channel to the
  reference where a policy refusal or a skip needs the item-by-item checks. `plan` is the entry point for one
  show.
"""

from studio.schedule.fast import PlanArrays, plan, plan_arrays
from studio.schedule.model import (
    HOUR_MS,
    Allowed,
    AvatarStint,
    Breaks,
    Plan,
    PlanItem,
    PlanRequest,
    PlanState,
    Refusal,
    RotationEntry,
    ScheduleError,
    ShowSchedule,
    Window,
    from_ms,
    to_ms,
)
from studio.schedule.reference import plan_reference

__all__ = [
    "HOUR_MS",
    "Allowed",
    "AvatarStint",
    "Breaks",
    "Plan",
    "PlanArrays",
    "PlanItem",
    "PlanRequest",
    "PlanState",
    "Refusal",
    "RotationEntry",
    "ScheduleError",
    "ShowSchedule",
    "Window",
    "from_ms",
    "plan",
    "plan_arrays",
    "plan_reference",
    "to_ms",
]
