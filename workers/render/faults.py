"""Fault injection for the policy middleware, so tests can prove that every step fails closed.

`STUDIO_FAULTS` lists `STEP:SEQ[:ATTEMPTS]` entries separated by commas: the middleware raises
`InjectedFault` at STEP while rendering the segment at plan position SEQ, on its first ATTEMPTS attempts
(every attempt when ATTEMPTS is left out). Unset, nothing is injected. It can only make a segment fail;
no value of it can make anything air that would not air without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# The middleware's steps, in the order they run on a segment.
STEPS = ("tts", "render", "badge", "banner", "captions", "watermark", "encode", "metadata", "selfcheck", "stamp")


class InjectedFault(RuntimeError):
    """Raised on purpose by a fault-injection test."""


@dataclass(frozen=True)
class Fault:
    step: str
    seq: int
    attempts: int | None  # None: every attempt


def parse_faults(value: str) -> tuple[Fault, ...]:
    faults = []
    for entry in (e.strip() for e in value.split(",") if e.strip()):
        parts = entry.split(":")
        if len(parts) not in (2, 3) or parts[0] not in STEPS:
            raise ValueError(f"STUDIO_FAULTS entry {entry!r} is not STEP:SEQ[:ATTEMPTS] with STEP one of "
                             f"{', '.join(STEPS)}")
        try:
            seq, attempts = int(parts[1]), int(parts[2]) if len(parts) == 3 else None
        except ValueError:
            raise ValueError(f"STUDIO_FAULTS entry {entry!r}: SEQ and ATTEMPTS must be integers") from None
        faults.append(Fault(parts[0], seq, attempts))
    return tuple(faults)


@dataclass(frozen=True)
class FaultPlan:
    faults: tuple[Fault, ...] = ()
    seq: int | None = None
    attempt: int = 1

    @classmethod
    def from_env(cls, *, seq: int | None, attempt: int) -> FaultPlan:
        return cls(parse_faults(os.environ.get("STUDIO_FAULTS", "")), seq, attempt)

    def check(self, step: str) -> None:
        for f in self.faults:
            if f.step == step and f.seq == self.seq and (f.attempts is None or self.attempt <= f.attempts):
                raise InjectedFault(f"injected fault at {step} (segment seq {self.seq}, attempt {self.attempt})")


NO_FAULTS = FaultPlan()
