"""How work is queued: which render queue a backend's renders go to, task time limits, retries, the broker's
visibility timeout, and render priority by deadline.

Plain values and pure functions, so the Celery app, the tasks, the scheduler, the streamer and the tests read one
source. With the Redis transport a priority is a list per level and the worker pops level 0 first: a LOWER number
is served SOONER (the opposite of RabbitMQ).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from workers.renderers import backends

# --- which queue a render goes to -----------------------------------------------------------------------------------
# Renders are queued by the kind of device their avatar's backend runs on: `render.cpu` on any host, `render.gpu` on
# hosts whose torch sees a CUDA device. Each backend of workers/renderers names its kind (Backend.queue_kind).
DEVICE_CLASSES = ("cpu", "gpu")
RENDER_QUEUES = tuple(f"render.{device}" for device in DEVICE_CLASSES)
RENDER_ALIAS = "render"  # `studio worker --queues render`: every render queue this host can serve
QUEUES = ("ingest", *RENDER_QUEUES, "publish")


class QueueError(ValueError):
    """A queue name that is not one of QUEUES (nor the alias), or a backend that has no queue."""


class CannotServe(QueueError):
    """A render queue this host cannot serve: render.gpu without a GPU."""


class HasRenderer(Protocol):
    renderer: str


def renderer_devices() -> dict[str, str]:
    """Each registered backend's device class, by backend name (`footage` -> `cpu`)."""
    return {name: found.queue_kind for name, found in backends().items()}


def queue_for_renderer(renderer: str) -> str:
    """The render queue of backend `renderer` (`footage` -> `render.cpu`)."""
    devices = renderer_devices()
    try:
        return f"render.{devices[renderer]}"
    except KeyError:
        raise QueueError(f"unknown renderer backend {renderer!r}; known: {', '.join(sorted(devices))}") from None


def ingest_queue(renderer: str) -> str:
    """Where a footage ingest for backend `renderer` goes: `ingest` (any host) for a CPU backend; the backend's own
    render queue for a GPU backend, whose bundle is prepared on the GPU (the musetalk face latents)."""
    queue = queue_for_renderer(renderer)
    return queue if queue != "render.cpu" else "ingest"


def render_queue(avatar: HasRenderer) -> str:
    """The queue every render of `avatar`'s segments is sent to: the one for the backend the avatar names."""
    return queue_for_renderer(avatar.renderer)


def renderers_for(queues: list[str]) -> list[str]:
    """The backends whose renders a worker consuming `queues` takes."""
    return sorted(name for name, device in renderer_devices().items() if f"render.{device}" in queues)


def expand_queues(names: list[str], *, gpu: str | None) -> list[str]:
    """The queues a worker asked for `names` consumes, in order, once each: `render` means `render.cpu`, and
    `render.gpu` too where the host has a GPU (`gpu`: its name, None without one). Raise QueueError for a name
    that is no queue, CannotServe for `render.gpu` on a host without a GPU."""
    if not names:
        raise QueueError(f"no queue given; choose from {', '.join((RENDER_ALIAS, *QUEUES))}")
    out: list[str] = []
    for name in names:
        if name == RENDER_ALIAS:
            out += ["render.cpu", *(["render.gpu"] if gpu else [])]
        elif name == "render.gpu" and not gpu:
            raise CannotServe("render.gpu needs a GPU, and this host has none that torch can use (no CUDA device, "
                             "or torch not installed); consume render.cpu here, or start this worker on a GPU host")
        elif name in QUEUES:
            out.append(name)
        else:
            raise QueueError(f"unknown queue {name!r}; choose from {', '.join((RENDER_ALIAS, *QUEUES))} "
                             f"({RENDER_ALIAS}: every render queue this host can serve)")
    return list(dict.fromkeys(out))



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

# A segment is archived after the show's previous one (its C2PA manifest chains to it): while that one is not, the
# task retries every ARCHIVE_ORDER_WAIT_S, at most ARCHIVE_ORDER_WAITS times -- longer than the predecessor's own
# retries after errors (5 + 10 + 20 + 40 + 80 s) -- and then fails, leaving the chain visibly stopped there.
ARCHIVE_ORDER_WAIT_S = 5
ARCHIVE_ORDER_WAITS = 40


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
