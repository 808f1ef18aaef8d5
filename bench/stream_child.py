"""Child process of the streaming benches: K `ChannelFeeder`s as threads in one process, as the supervisor runs them.

`python -m bench.stream_child CONFIG.json` with CONFIG
  {"channels": [{"url": "rtmp://...", "segments": ["a.mp4", ...]}, ...], "slate": "slate.mp4",
   "seconds": 60, "lead_seconds": 1.0}
and optionally "warmup_seconds" (default 10). Each channel airs its segments in order, over and over, for `seconds`
of timeline. Reports JSON lines on stdout: {"event": "started", "pid": ...} once every feeder is made and its thread
started, then {"event": "done", "channels": [{"underruns", "max_late_seconds", "aired_seconds", "pacing", "error",
...}]}. SIGTERM or SIGINT stops the feeders (each stops its push ffmpeg); so does the parent going away.

Underruns (`ChannelFeeder.underruns`, packets muxed more than one frame after their air time) are also split at
`warmup_seconds` after the start: a feeder's clock starts before its first segment is loaded and its push ffmpeg
has connected, so the first packets of a run are late by that start-up time (all the more with many channels
starting at once). At the split the feeder's `max_late_seconds` is set back to 0, so that the steady part gets
its own largest lateness; `last_underrun_at` is when (s after the start) the underrun count last went up.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from workers.streamer.feeder import ChannelFeeder, SegmentRef


def _say(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Channel:
    def __init__(self, n: int, url: str, segments: list[str], slate: Path, lead: float):
        refs = [SegmentRef(f"{n}-{i}", Path(p)) for i, p in enumerate(segments)]
        if not refs:
            raise ValueError(f"channel {n} has no segments")
        self._next = itertools.cycle(refs)
        self.lead = lead
        self.pacing: list[float] = []  # first and last: wall clock - when the segment's last packet was due
        self.error: str | None = None
        self.startup: tuple[int, float] | None = None  # (underruns, max_late_seconds) at the end of the warm-up
        self.last_underrun_at: float | None = None
        self._seen_underruns = 0
        self.feeder = ChannelFeeder(destinations=[url], next_segment=lambda: next(self._next), slate=slate,
                                    verify=lambda ref: True, on_aired=self._aired, lead_seconds=lead)

    def _aired(self, ref: SegmentRef, air_start: float, offset: float, seconds: float) -> None:
        # The whole segment has been written now: it should be air_start + seconds - lead on the wall clock.
        behind = time.time() - (air_start + seconds - self.lead)
        if self.pacing:
            self.pacing[1:] = [behind]
        else:
            self.pacing = [behind, behind]

    def run(self, stop: threading.Event, seconds: float) -> None:
        try:
            self.feeder.run(stop, duration=seconds)
        except Exception as exc:  # reported to the parent
            self.error = f"{type(exc).__name__}: {exc}"

    def watch(self, elapsed: float, warmup: float) -> None:
        """Called every 0.1 s by the monitor thread."""
        f = self.feeder
        if f.underruns != self._seen_underruns:
            self._seen_underruns, self.last_underrun_at = f.underruns, elapsed
        if self.startup is None and elapsed >= warmup:
            self.startup = (f.underruns, f.max_late_seconds)
            f.max_late_seconds = 0.0  # from here on: the steady part's largest lateness

    def result(self) -> dict:
        f = self.feeder
        startup = self.startup or (f.underruns, f.max_late_seconds)
        steady_late = f.max_late_seconds if self.startup else 0.0
        return {"underruns": f.underruns, "max_late_seconds": max(startup[1], steady_late),
                "startup_underruns": startup[0], "startup_max_late_seconds": startup[1],
                "steady_underruns": f.underruns - startup[0], "steady_max_late_seconds": steady_late,
                "steady": self.startup is not None, "last_underrun_at": self.last_underrun_at,
                "aired_seconds": f.aired_seconds, "segments_aired": f.segments_aired, "slates_aired": f.slates_aired,
                "refused": f.refused, "audio_packets_dropped": f.audio_packets_dropped, "pacing": self.pacing,
                "error": self.error}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.stream_child CONFIG.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    config = json.loads(Path(argv[0]).read_text())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    parent = os.getppid()

    def orphaned() -> None:  # the bench died without stopping us: stop rather than stream on
        while not stop.wait(1.0):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=orphaned, daemon=True).start()
    lead = float(config.get("lead_seconds", 1.0))
    channels = [Channel(n, c["url"], c["segments"], Path(config["slate"]), lead)
                for n, c in enumerate(config["channels"])]
    threads = [threading.Thread(target=c.run, args=(stop, float(config["seconds"])), name=f"feeder-{n}")
               for n, c in enumerate(channels)]
    warmup = float(config.get("warmup_seconds", 10.0))
    started = time.monotonic()
    for t in threads:
        t.start()
    _say({"event": "started", "pid": os.getpid(), "channels": len(channels)})
    while any(t.is_alive() for t in threads):
        time.sleep(0.1)
        elapsed = time.monotonic() - started
        for c in channels:
            c.watch(elapsed, warmup)
    for t in threads:
        t.join()
    _say({"event": "done", "stopped": stop.is_set(), "channels": [c.result() for c in channels]})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
