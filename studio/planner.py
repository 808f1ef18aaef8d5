"""Rolling-horizon planning: keep enough segments planned ahead of air for each show.

Pure: takes what is in the plan now and returns what to add. Deterministic: the n-th segment of a
show always says the same part of the same script, so a replanned horizon is the same horizon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def script_parts(text: str, *, max_words: int = 22) -> list[str]:
    """Split a script into parts that each become one 2-10 s segment, at sentence ends where possible."""
    parts: list[str] = []
    cur: list[str] = []
    for sentence in (s for s in _SENTENCE.split(text.strip()) if s):
        words = sentence.split()
        while len(words) > max_words:  # an over-long sentence is cut at the word limit
            if cur:
                parts.append(" ".join(cur))
                cur = []
            parts.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if cur and len(cur) + len(words) > max_words:
            parts.append(" ".join(cur))
            cur = []
        cur.extend(words)
    if cur:
        parts.append(" ".join(cur))
    return parts


def estimate_seconds(text: str, words_per_minute: int) -> float:
    return len(text.split()) * 60.0 / words_per_minute + 0.4


@dataclass(frozen=True)
class PlannedPart:
    index: int          # position within the show
    script_id: str
    text: str
    show_start: bool


def plan_horizon(*, parts: list[tuple[str, str]], planned_count: int, pending_seconds: float,
                 target_seconds: float, words_per_minute: int, max_new: int = 50) -> list[PlannedPart]:
    """Parts to add so that the not-yet-aired plan covers `target_seconds`.

    `parts` is the show's rotation of (script_id, text); `planned_count` how many segments the show
    already has; `pending_seconds` how much planned material has not aired yet.
    """
    if not parts:
        return []
    out: list[PlannedPart] = []
    index = planned_count
    while pending_seconds < target_seconds and len(out) < max_new:
        script_id, text = parts[index % len(parts)]
        out.append(PlannedPart(index, script_id, text, show_start=index == 0))
        pending_seconds += estimate_seconds(text, words_per_minute)
        index += 1
    return out
