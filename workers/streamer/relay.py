"""Fan-out: one relay per external destination, each supervised on its own.

The feeder publishes a channel to the local nginx-rtmp ingest only. For every enabled destination a
`DestinationRelay` runs a child process that plays the channel back from the ingest and copies its packets,
never re-encoding, to the destination (RTMP or RTMPS). When a destination fails, only its relay waits and
tries again; the feeder and the other destinations never notice.

The child is `python -m workers.streamer.relay` (`relay_main`), a PyAV remux loop, rather than
`ffmpeg -i ... -c copy URL`: the destination URL holds the stream key, and ffmpeg 5 takes it only on its
command line, which every local user reads with `ps`. The child gets the URL on stdin; it reports what it does
as JSON lines on stdout (the parent's only view of it), and its stderr passes through the same key-scrubbing
ring buffer as ffmpeg's.

The child keeps playing the ingest while its destination is down, holding the current GOP (from the last
keyframe), so a reconnect needs only the destination's own handshake and starts on a keyframe at once.
Reconnecting is paced by `DESTINATION_BACKOFF` (a `workers.supervise.RestartPolicy`): exponential from 0.5 s, but
never longer than a tenth of the outage so far (at least 1 s, at most 30 s), so an endpoint back after a short
outage is reached again within about a second and one down for an hour is tried every 30 s; a run live for a
minute resets it. The parent supervises the child (`workers.supervise.Supervised`): it restarts a child that
exits, and ends one that stops reporting (a destination that hangs the connect or stops reading).
"""

from __future__ import annotations

import json
import logging
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from urllib.parse import urlsplit

from studio.destinations import RELAY_SCHEMES, error_category, internal_address_problem
from studio.masking import scrub_url_keys, shown_url  # noqa: F401  (shown_url re-exported)
from workers.media.proc import FFmpegProcess
from workers.supervise import Exit, RestartPolicy, Supervised

log = logging.getLogger("studio.streamer")

# Child exit codes: which side failed decides how the parent retries.
EXIT_SOURCE = 3   # the local ingest: not publishing yet, stalled or gone
EXIT_CONFIG = 5   # the child could not read its configuration

SOURCE_OPEN_SECONDS = 10.0  # a play on the ingest waits this long for the feeder to publish
SOURCE_READ_SECONDS = 4.0   # no packet from the ingest for this long: the source stalled
PROBE_MICROSECONDS = 2_000_000  # enough of the stream to see both tracks (the GOP is 1 s)
REPORT_SECONDS = 0.5        # the child reports at least this often while it runs
SILENT_SECONDS = 5.0        # a child silent for this long is stuck (hung connect, stalled write): ended
JUMP_SECONDS = 3.0          # a timestamp step beyond this, or backwards, is a new publish on the ingest
GOP_LIMIT = 1500            # packets held from the last keyframe (a stream without keyframes must not grow it)


class DestinationRefused(ValueError):
    """The destination may not be reached: a scheme other than rtmp/rtmps, or a host on an internal address."""


def check_destination(url: str, *, allow_private: bool) -> None:
    """Refuse any scheme but rtmp/rtmps and, unless `allow_private`, a host that resolves to this machine or a
    private, link-local, multicast or unspecified address. Called before every connection: the API judged the
    URL's text when it was saved, and a name's addresses can change since (DNS rebinding)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        raise DestinationRefused("the destination URL cannot be read") from None
    if parts.scheme.lower() not in RELAY_SCHEMES:
        raise DestinationRefused("refused: the relay sends only rtmp:// and rtmps:// (only rtmp or rtmps)")
    if allow_private:
        return
    if (problem := internal_address_problem(host)) is not None:
        raise DestinationRefused(f"refused: {problem} (an internal address; streamer.allow_private_destinations)")
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme.lower() == "rtmps" else 1935),
                                   type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DestinationRefused(f"cannot resolve the destination host ({exc})") from None
    for info in infos:
        if (problem := internal_address_problem(info[4][0])) is not None:
            raise DestinationRefused(f"refused: the destination host resolves to {problem} (an internal address; "
                                     f"streamer.allow_private_destinations)")


# Failures count from the last run live for `healthy_after` (the child reports it); the relay never gives up.
DESTINATION_BACKOFF = RestartPolicy(pause=0.5, cap=30.0, patience=0.1, fast_cap=1.0, window=None)
SOURCE_BACKOFF = RestartPolicy(pause=0.25, cap=2.0, window=None)  # the loopback ingest: retry quickly


@dataclass(frozen=True)
class RelayTarget:
    """One destination row as the supervisor sees it: the stored (sealed) URL and what may be shown."""

    id: str
    stored: str
    shown: str
    platform: str = "custom"


class DestinationRelay:
    """Relays `source` (the channel on the local ingest) to one destination until `stop()`.

    `open_url()` returns the destination's plain URL; it is called once, when the relay starts, and the URL is
    kept only in memory and written only to the child's stdin. `status()` is JSON-ready and shows the URL
    masked; `last_error` comes from the child's scrubbed reports or from our own messages."""

    def __init__(self, target: RelayTarget, *, source: str, open_url: Callable[[], str],
                 backoff: RestartPolicy = DESTINATION_BACKOFF, source_backoff: RestartPolicy = SOURCE_BACKOFF,
                 allow_private: bool = False):
        self.target, self.source, self.allow_private = target, source, allow_private
        self._open_url = open_url
        self.backoff, self.source_backoff = backoff, source_backoff
        self.name = f"relay-{target.id}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.state = "starting"
        self.attempts = 0          # connection attempts in the current outage (a healthy run resets it)
        self.connects = 0          # times it went live, over the relay's life
        self.failures = 0          # failures in the current outage: the backoff exponent
        self.source_failures = 0   # children in a row that found the ingest not publishing
        self.last_error: str | None = None
        self.retry_at: float | None = None
        self.live_since: float | None = None
        self.outage_since: float | None = time.time()
        self._outage_start = time.monotonic()  # moves on by each live spell: only time down counts
        self._bytes_done = self._seconds_done = 0.0  # totals of finished children
        self._bytes_run = self._seconds_run = 0.0    # the running child's
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    # -- control --------------------------------------------------------------------------------------
    def start(self) -> DestinationRelay:
        self.thread.start()
        return self

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.thread.join(timeout=timeout)

    def status(self) -> dict:
        with self._lock:
            return {"id": self.target.id, "url": self.target.shown, "platform": self.target.platform,
                    "state": self.state, "attempts": self.attempts, "connects": self.connects,
                    "last_error": self.last_error, "error": error_category(self.last_error),
                    "retry_at": self.retry_at, "live_since": self.live_since,
                    "down_since": None if self.state == "live" else self.outage_since,
                    "bytes_relayed": int(self._bytes_done + self._bytes_run),
                    "seconds_relayed": round(self._seconds_done + self._seconds_run, 3)}

    # -- supervision ----------------------------------------------------------------------------------
    def _set(self, **fields) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(self, key, value)

    def _run(self) -> None:
        try:
            url = self._open_url()
        except Exception as exc:  # a sealed URL that does not open will not open on the next try either
            self._set(state="failed", last_error=scrub_url_keys(f"cannot open the destination URL: {exc}"))
            log.error("%s %s: %s", self.name, self.target.shown, self.last_error)
            return
        if urlsplit(url).scheme.lower() not in RELAY_SCHEMES:
            self._set(state="failed", last_error="refused: the relay sends only rtmp:// and rtmps:// (only rtmp or "
                                                 "rtmps); correct the destination's URL")
            log.error("%s %s: %s", self.name, self.target.shown, self.last_error)
            return
        supervised = Supervised(f"{self.name} {self.target.shown}", lambda: self._launch(url), pace=self._pace,
                                stop=self._stop, restart_clean_exit=True, stall_after=SILENT_SECONDS,
                                first_progress_within=SOURCE_OPEN_SECONDS + SILENT_SECONDS, every=0.05,
                                stop_timeout=2.0)
        supervised.run()
        self._set(state="stopped", retry_at=None, live_since=None)

    def _launch(self, url: str) -> _RelayChild:
        self._set(state="waiting_for_source", retry_at=None)
        args = [sys.executable, "-m", "workers.streamer.relay", "--source", self.source, "--label", self.target.id]
        proc = FFmpegProcess(args, stdin=True, stdout=True, name=self.name)
        config = {"destination": url, "failures": self.failures, "allow_private": self.allow_private,
                  "outage": time.monotonic() - self._outage_start, "backoff": asdict(self.backoff)}
        try:
            proc.stdin.write(json.dumps(config).encode() + b"\n")
            proc.stdin.close()
        except OSError:
            pass  # it died at start: its stderr says why
        return _RelayChild(self, proc)

    def _pace(self, exit: Exit) -> float:
        """The pause before the next child: short and steady while the ingest is not publishing (the feeder is
        starting or restarting: not this destination's fault), the destination's backoff otherwise."""
        if exit.code == EXIT_SOURCE:
            self._set(source_failures=self.source_failures + 1)
            delay, state = self.source_backoff.delay(self.source_failures), "waiting_for_source"
        else:
            self._set(source_failures=0, failures=self.failures + 1)
            delay, state = self.backoff.delay(self.failures, time.monotonic() - self._outage_start), "backing_off"
        self._set(state=state, last_error=exit.error, retry_at=round(time.time() + delay, 3), live_since=None)
        return delay

    def _went_down(self) -> None:
        """Under the lock: a live spell ended; count only the time down towards the outage."""
        if self.live_since is not None:
            self._outage_start += time.time() - self.live_since
        self.outage_since, self.live_since = time.time(), None

    def _apply(self, msg: dict) -> None:
        """One report from the child."""
        event = msg.get("event")
        with self._lock:
            if event == "source":
                self.state = "connecting"
            elif event == "attempt":
                self.state, self.attempts, self.retry_at = "connecting", self.attempts + 1, None
            elif event == "live":
                self.state, self.connects, self.last_error = "live", self.connects + 1, None
                self.live_since = time.time()
                log.info("%s %s: live", self.name, self.target.shown)
            elif event == "healthy":
                self.failures, self.attempts = 0, 0
                self._outage_start = time.monotonic()
            elif event == "failed":
                if self.state == "live":
                    self._went_down()
                self.state, self.failures = "backing_off", int(msg.get("failures", self.failures + 1))
                self.last_error = scrub_url_keys(str(msg.get("error", "")))[:500]
                self.retry_at = round(time.time() + float(msg.get("retry_in", 0)), 3)
                log.warning("%s %s: %s; next try in %.1f s", self.name, self.target.shown, self.last_error,
                            float(msg.get("retry_in", 0)))
            if "bytes" in msg:
                self._bytes_run, self._seconds_run = float(msg["bytes"]), float(msg.get("seconds", 0.0))


class _RelayChild:
    """One relay child as `Supervised` sees it: its reports are its progress, taken and applied every tick."""

    def __init__(self, relay: DestinationRelay, proc: FFmpegProcess):
        self.relay, self.proc = relay, proc
        self.lines = _Lines(proc.stdout)
        self.heard = False

    def alive(self) -> bool:
        return self.proc.alive or not self.lines.done

    def progress(self) -> float | None:
        for msg in self.lines.take():
            self.heard = True
            self.relay._apply(msg)
        return self.lines.last_at

    def end(self, timeout: float) -> None:
        self.proc.stop(timeout=timeout)

    def result(self, ran: float, stalled: float | None) -> Exit:
        """Its exit code (a child that never reported counts as the ingest's failure) and the scrubbed reason."""
        relay, heard = self.relay, self.heard
        doing = "connecting to" if relay.state == "connecting" else "writing to"
        rc = self.proc.stop(timeout=2.0)
        self.progress()  # its last reports
        with relay._lock:
            relay._bytes_done += relay._bytes_run
            relay._seconds_done += relay._seconds_run
            relay._bytes_run = relay._seconds_run = 0.0
            if relay.state == "live":
                relay._went_down()
        if stalled is not None and heard:
            error = f"the relay was stuck {doing} the destination for {stalled:.0f} s; restarting it"
        elif stalled is not None:
            error, rc = f"the local ingest gave no stream within {stalled:.0f} s", EXIT_SOURCE
        else:
            tail = [ln for ln in self.proc.stderr_tail(10).splitlines() if ln.strip()]
            error = tail[-1] if tail else f"the relay exited with code {rc}"
        return Exit(ran, scrub_url_keys(error), code=rc, stalled=stalled)


class _Lines:
    """JSON lines from the child's stdout, read by a thread; `take()` returns those not yet taken."""

    def __init__(self, stream):
        self._lock = threading.Lock()
        self._pending: list[dict] = []
        self.last_at: float | None = None
        self.done = False
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for raw in stream:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if isinstance(msg, dict):
                with self._lock:
                    self._pending.append(msg)
                    self.last_at = time.monotonic()
        self.done = True

    def take(self) -> list[dict]:
        with self._lock:
            out, self._pending = self._pending, []
        return out


class RelayGroup:
    """A channel's relays, one per destination; `sync()` starts and stops them as the rows change."""

    def __init__(self, *, source: str, open_url: Callable[[RelayTarget], str],
                 backoff: RestartPolicy = DESTINATION_BACKOFF, allow_private: bool = False):
        self.source, self._open_url, self.backoff, self.allow_private = source, open_url, backoff, allow_private
        self.relays: dict[tuple[str, str], DestinationRelay] = {}

    def sync(self, targets: list[RelayTarget]) -> None:
        wanted = {(t.id, t.stored): t for t in targets}
        gone = [self.relays.pop(key) for key in list(self.relays) if key not in wanted]
        for relay in gone:
            relay.request_stop()
        for relay in gone:
            relay.stop()
        for key, target in wanted.items():
            if key not in self.relays:
                self.relays[key] = DestinationRelay(target, source=self.source, backoff=self.backoff,
                                                    allow_private=self.allow_private,
                                                    open_url=lambda t=target: self._open_url(t)).start()

    def stop(self) -> list[dict]:
        """Stop every relay; returns their last status (state "stopped") for the channel's final record."""
        relays = list(self.relays.values())
        self.sync([])
        return [r.status() for r in relays]

    def status(self) -> list[dict]:
        return [r.status() for r in self.relays.values()]


# --- the child: python -m workers.streamer.relay --source URL, its config as one JSON line on stdin -------
def _report(**fields) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class _SourceGone(Exception):
    pass


class _Connection:
    """One connection to the destination: opened with the held GOP, then fed live packets, re-timed from 0."""

    def __init__(self, av, destination: str, metadata: dict, vin, ain, step: Fraction):
        self.av, self.step = av, step
        self.out = av.open(destination, "w", format="flv", container_options={"flvflags": "no_duration_filesize"})
        try:
            # onMetaData as the feeder wrote it (the stream's AIGC mark), without the ingest's own keys.
            self.out.metadata.update({k: v for k, v in metadata.items() if not k.startswith("|") and k != "encoder"})
            self.streams = {vin.index: self.out.add_stream(template=vin), ain.index: self.out.add_stream(template=ain)}
            self.out.start_encoding()
        except BaseException:
            self.close()
            raise
        self.base: Fraction | None = None
        self.shift = Fraction(0)
        self.last: dict[int, Fraction] = {}
        self.newest = Fraction(0)
        self.bytes = 0
        self.packets = 0

    def send(self, held: tuple) -> None:
        pkt, index, dts, pts, tb = held
        t = dts * tb
        if self.base is None:
            self.base = t
        t += self.shift - self.base
        prev = self.last.get(index)
        if self.last and (t > self.newest + JUMP_SECONDS or (prev is not None and t < prev - self.step)):
            self.shift += self.newest + self.step - t  # the feeder published again from t=0: carry on from here
            t = self.newest + self.step
        if t < 0 or (prev is not None and t < prev):
            return  # before the first keyframe, or AAC overlap at a join
        pkt.stream = self.streams[index]
        pkt.time_base = tb
        pkt.dts, pkt.pts = round(t / tb), round((t + (pts - dts) * tb) / tb)
        self.out.mux(pkt)
        self.last[index] = t
        self.newest = max(self.newest, t)
        self.bytes += pkt.size
        self.packets += 1

    def close(self) -> None:
        try:
            self.out.close()
        except (self.av.FFmpegError, OSError):
            pass


def relay(source: str, destination: str, *, backoff: RestartPolicy, failures: int = 0, outage: float = 0.0,
          allow_private: bool = False) -> None:
    """Play `source` and copy it to `destination`, reconnecting with `backoff`, until the source fails."""
    import av

    try:
        inp = av.open(source, timeout=(SOURCE_OPEN_SECONDS, SOURCE_READ_SECONDS),
                      container_options={"analyzeduration": str(PROBE_MICROSECONDS)})
    except (av.FFmpegError, OSError) as exc:
        raise _SourceGone(f"local ingest {source}: {exc}") from None
    with inp:
        if not inp.streams.video or not inp.streams.audio:
            raise _SourceGone(f"local ingest {source}: needs video and audio, has {len(inp.streams.video)} video "
                              f"and {len(inp.streams.audio)} audio")
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        step = 1 / Fraction(vin.average_rate or vin.guessed_rate or 25)
        _report(event="source")
        gop: list[tuple] = []  # (packet, stream index, dts, pts, time base) from the last keyframe
        conn: _Connection | None = None
        outage_start = time.monotonic() - outage
        live_at = next_try = None
        healthy = False
        next_report = time.monotonic()
        done_bytes, done_seconds = 0, 0.0  # relayed by this child's earlier connections
        for pkt in _demux(av, inp, vin, ain, source):
            now = time.monotonic()
            held = (pkt, pkt.stream.index, pkt.dts, pkt.pts if pkt.pts is not None else pkt.dts, pkt.time_base)
            if pkt.stream.index == vin.index and pkt.is_keyframe:
                gop = [held]
            elif gop and len(gop) < GOP_LIMIT:
                gop.append(held)
            try:
                if conn is None and gop and (next_try is None or now >= next_try):
                    _report(event="attempt")
                    check_destination(destination, allow_private=allow_private)  # again each time: DNS changes
                    conn = _Connection(av, destination, dict(inp.metadata), vin, ain, step)
                    for item in gop:  # start on the keyframe at once, a moment behind live
                        conn.send(item)
                    live_at, healthy = now, False
                    _report(event="live")
                elif conn is not None:
                    conn.send(held)
            except (av.FFmpegError, OSError, ValueError) as exc:
                if conn is not None:
                    conn.close()
                    done_bytes, done_seconds = done_bytes + conn.bytes, done_seconds + float(conn.newest)
                    conn = None
                if live_at is not None:
                    outage_start += now - live_at  # only time down counts towards the outage
                    live_at = None
                failures += 1
                delay = backoff.delay(failures, now - outage_start) * random.uniform(0.9, 1.0)
                next_try = now + delay
                _report(event="failed", error=scrub_url_keys(str(exc)), retry_in=round(delay, 3),
                        failures=failures)
            if live_at is not None and not healthy and now - live_at >= backoff.healthy_after:
                healthy, failures, outage_start = True, 0, now
                _report(event="healthy")
            if now >= next_report:
                next_report = now + REPORT_SECONDS
                _report(bytes=done_bytes + (conn.bytes if conn else 0),
                        seconds=round(done_seconds + (float(conn.newest) if conn else 0.0), 3))
        raise _SourceGone(f"local ingest {source}: the stream ended")


def _demux(av, inp, vin, ain, source: str):
    try:
        for pkt in inp.demux(vin, ain):
            if pkt.dts is not None and pkt.size:
                yield pkt
    except (av.FFmpegError, OSError) as exc:
        raise _SourceGone(f"local ingest {source}: {exc}") from None


def relay_main(argv: list[str] | None = None) -> int:
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="Relay one channel from the local ingest to one destination; "
                                     "the destination URL and backoff come as one JSON line on stdin.")
    parser.add_argument("--source", required=True, help="the channel on the local ingest, rtmp://127.0.0.1:...")
    parser.add_argument("--label", default="", help="for `ps` only: the destination's id")
    args = parser.parse_args(argv)
    # SIGTERM ends the child at once, by the kernel: a Python handler would wait for the demuxer's blocking read
    # to return (up to SOURCE_READ_SECONDS once the feeder stopped publishing, as at a hand-over's boundary),
    # keeping the destination's stream open while the next owner waits to publish. Nothing is left to flush: the
    # packets read were sent as they came, and the destination sees the connection close.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        config = json.loads(sys.stdin.readline())
        destination = config["destination"]
        if not isinstance(destination, str) or not destination:
            raise ValueError("destination must be a non-empty string")
        allow_private = config.get("allow_private") is True
        backoff = RestartPolicy(**config.get("backoff", {}))
        failures, outage = int(config.get("failures", 0)), float(config.get("outage", 0.0))
    except (ValueError, KeyError, TypeError) as exc:
        print(f"relay: no usable configuration on stdin ({type(exc).__name__})", file=sys.stderr)
        return EXIT_CONFIG
    if urlsplit(destination).scheme.lower() not in RELAY_SCHEMES:
        print("relay: refused: the relay sends only rtmp:// and rtmps:// (only rtmp or rtmps)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        relay(args.source, destination, backoff=backoff, failures=failures, outage=outage,
              allow_private=allow_private)
    except _SourceGone as exc:
        print(f"relay: {scrub_url_keys(str(exc))}", file=sys.stderr)
        return EXIT_SOURCE
    return 0


if __name__ == "__main__":
    sys.exit(relay_main())
