"""Figures with their peer measured in the same run, printed and written as JSON for comparison over time."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


@dataclass
class Figure:
    figure: str
    value: float
    unit: str
    peer: str | None = None
    peer_value: float | None = None

    @property
    def ratio(self) -> float | None:
        # A ratio against a peer of (about) nothing says nothing: a drift of 3 ms against 0.000 ms.
        if self.peer_value is None or abs(self.peer_value) < 1e-6:
            return None
        return self.value / self.peer_value


def report(name: str, figures: list[Figure], *, notes: str = "") -> Path:
    print(f"\n== {name}")
    for f in figures:
        line = f"  {f.figure:<44} {f.value:10.2f} {f.unit}"
        if f.peer_value is not None:
            ratio = "n/a" if f.ratio is None else f"{f.ratio:.2f}"
            line += f"   peer ({f.peer}) {f.peer_value:.2f} {f.unit}   ratio {ratio}"
        print(line)
    if notes:
        print(f"  {notes}")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps({
        "name": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.platform(),
        "notes": notes,
        "figures": [{**asdict(f), "ratio": f.ratio} for f in figures],
    }, indent=2))
    print(f"  -> {path}")
    return path
