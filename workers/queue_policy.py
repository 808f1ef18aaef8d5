"""How work is queued: task time limits, retries, the broker's visibility timeout, and render priority by deadline.

Plain values and pure functions, so the Celery app, the tasks, the scheduler, the streamer and the tests read one
source. With the Redis transport a priority is a list per level and the worker pops level 0 first: a LOWER number
is served SOONER (the opposite of RabbitMQ).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class TimeLimits:
    hard_s: int
    soft_s: int


INGEST_LIMITS = TimeLimits(hard_s=1800, soft_s=1700)
CONSENT_CHECK_LIMITS = TimeLimits(hard_s=600, soft_s=540)  # a 120 s consent video is checked in about a minute
RENDER_LIMITS = TimeLimits(hard_s=600, soft_s=540)
ARCHIVE_LIMITS = TimeLimits(hard_s=300, soft_s=270)

RENDER_MAX_RETRIES = 3
# A segment rendered this many times without becoming READY is given up: the streamer skips it, and a task
# redelivered once more (a render that kills its worker every time) fails it instead of looping.
MAX_RENDER_ATTEMPTS = RENDER_MAX_RETRIES + 1


def render_retry_countdown(retries: int) -> int:
    """Seconds before retry number `retries` + 1 of a failed render: 1, 2, 4, ... (exponential backoff)."""
    return 2 ** max(0, retries)


# Redis acknowledges nothing per consumer: a message a worker took and has not acked goes back to the queue once
# it has been out this long, to whichever worker asks next. It must therefore outlast the longest any task holds
# its message -- the render's hard time limit is what the issue names, but one visibility timeout covers every
# queue on the broker, and an ingest may run longer -- plus the longest retry countdown (a retried task waits
# for its ETA holding the message) and a margin. Shorter, and a slow task would run twice at once.
VISIBILITY_MARGIN_S = 120
VISIBILITY_TIMEOUT_S = (max(limits.hard_s for limits in (INGEST_LIMITS, CONSENT_CHECK_LIMITS, RENDER_LIMITS,
                                                          ARCHIVE_LIMITS))
                        + render_retry_countdown(RENDER_MAX_RETRIES) + VISIBILITY_MARGIN_S)

# Ten Redis lists per queue, one per level (kombu's default is four: 0, 3, 6, 9).
PRIORITY_STEPS = tuple(range(10))
MOST_URGENT, LEAST_URGENT = PRIORITY_STEPS[0], PRIORITY_STEPS[-1]
# One level per this many seconds until the deadline: with the 120 s buffer, deadlines spread over levels 0-8.
PRIORITY_STEP_SECONDS = 15.0


def render_priority(deadline: datetime | None, *, now: datetime) -> int:
    """Broker priority of a render, from its segment's deadline (naive UTC, like `now`): a deadline already
    passed or less than PRIORITY_STEP_SECONDS away -> 0 (served first), one level later per step further away,
    at most LEAST_URGENT; no deadline -> LEAST_URGENT, the level of a task sent without a priority."""
    if deadline is None:
        return LEAST_URGENT
    seconds_left = (deadline - now).total_seconds()
    return int(min(LEAST_URGENT, max(MOST_URGENT, seconds_left // PRIORITY_STEP_SECONDS)))


# How long the scheduler keeps trying to queue a render while the broker is away (a Redis restart takes seconds):
# about a minute, in kombu's retry-policy terms.
DISPATCH_RETRY = {"max_retries": 30, "interval_start": 0, "interval_step": 0.5, "interval_max": 2}


def missed_air_time(*, deadline: datetime | None, air_at: datetime | None, now: datetime) -> str | None:
    """Why a render starting at `now` is too late to be worth doing, or None: its deadline (air time minus the
    planner's safety margin) or its air time has passed. All naive UTC."""
    if deadline is not None and now > deadline:
        return f"render would start at {now:%H:%M:%S}, after its deadline {deadline:%H:%M:%S} UTC"
    if air_at is not None and now >= air_at:
        return f"render would start at {now:%H:%M:%S}, after its air time {air_at:%H:%M:%S} UTC"
    return None
