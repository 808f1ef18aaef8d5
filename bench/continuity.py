"""Stream continuity and A/V sync over a long run: our feeder against ffmpeg's concat demuxer, same run.

A pool of pre-rendered, joinable segments of varied lengths (2.0-7.6 s), each holding one A/V sync marker at
its own offset: a white flash on exactly one frame and a 1 kHz tone burst starting on the same instant. The
same pseudo-random sequence of them airs `BENCH_CONTINUITY_S` seconds of timeline (default 1800) twice at
once, to one nginx-rtmp on loopback that records every stream (`record all`):

- ours: `ChannelFeeder` in a child process (`bench.stream_child`), as the streamer runs it;
- peer: `ffmpeg -re -f concat -safe 0 -i list.txt -c copy -f flv rtmp://.../peer`.

Each recording is then read back: per stream, timestamps strictly increasing (violations counted), the largest
step between consecutive video frames in frame intervals (1.0 = continuous), and the A/V offset at every
marker (tone onset - flash, positive = audio late) with its first and last values. The offset is measured two
ways: by the audio packets' timestamps, and by the audio sample clock (first audio timestamp + decoded samples
so far), which is where a player that plays every decoded sample in turn hears the tone. Overlapping audio at
joins moves the second and not the first.

`python -m bench continuity`; BENCH_CONTINUITY_S (seconds of timeline), BENCH_STREAM_SIZE (WxH, default 720x1280).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from bench.common import OUT, Figure, report
from studio.config import MediaProfile
from workers.media.ffmpeg_args import aac_audio_args, x264_video_args
from workers.media.proc import FFmpegProcess, run_ffmpeg
from workers.streamer.nginx import NginxRtmp

REPO = Path(__file__).resolve().parent.parent
WORK = OUT / "work" / "streaming"
POOL_VERSION = 2  # bump when the segment maker changes: cached pools of other versions are made again

# Segment lengths in frames at 25 fps: 2.0 s to 7.6 s, chosen so that the AAC overhang past the last video frame
# (frames * 1920 samples past a multiple of 1024) varies; none is a multiple of 8 frames, which would have none.
POOL_FRAMES = (50, 61, 78, 93, 110, 124, 141, 157, 173, 190)
TONE_HZ = 1000.0
TONE_AMPLITUDE = 0.5
TONE_SECONDS = 0.1
NOISE_AMPLITUDE = 0.03  # quiet background noise, so that AAC spends about its bit rate as speech would
FLASH_LUMA = 200.0      # mean Y (0-255) above which a frame is the white flash; the test pattern is about 100
ONSET_LEVEL = 0.2       # |sample| above which the tone has started (burst 0.5, background at most 0.03)
ONSET_QUIET_SECONDS = 0.25  # an onset is the first loud sample after at least this long without one
PAIR_WINDOW_SECONDS = 0.5   # a flash and an onset further apart than this are not one marker
STARTUP_SECONDS = 5.0       # the feeder's underruns are counted apart in the first seconds (see bench.stream_child)


# Figures whose peer value may be 0 (a count of violations): bench.common prints "n/a" and writes null then.
PeerFigure = Figure


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None
    if not value > minimum:
        raise SystemExit(f"{name} must be > {minimum}, got {raw!r}")
    return value


def bench_profile() -> MediaProfile:
    """The channel's media profile (configs/default.yaml: 720x1280 at 25 fps), size from BENCH_STREAM_SIZE."""
    raw = os.environ.get("BENCH_STREAM_SIZE", "720x1280")
    try:
        width, height = (int(v) for v in raw.lower().split("x"))
        return MediaProfile(width=width, height=height, fps=25)
    except ValueError as exc:
        raise SystemExit(f"BENCH_STREAM_SIZE must be WIDTHxHEIGHT with even numbers, got {raw!r}: {exc}") from None


# -- segments with sync markers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MarkedSegment:
    path: Path
    frames: int
    marker_frame: int | None  # the flash frame (tone onset at the same instant); None: no marker (the slate)

    def seconds(self, fps: int) -> Fraction:
        return Fraction(self.frames, fps)


def make_marked_segment(path: Path, *, frames: int, marker_frame: int | None, profile: MediaProfile) -> Path:
    """An MP4 segment encoded exactly like the renderer's (x264/AAC channel settings, IDR first, no B-frames):
    a moving test pattern (about 1.6 Mbit/s at 720x1280) that is white on `marker_frame` only, and quiet noise
    with a tone burst starting at the first sample of that frame. Exactly `frames` frames, audio as long."""
    if frames <= 0:
        raise ValueError(f"frames must be > 0, got {frames}")
    if marker_frame is not None and not 0 <= marker_frame < frames:
        raise ValueError(f"marker_frame must be in [0, {frames}), got {marker_frame}")
    fps, w, h = profile.fps, profile.width, profile.height
    duration = f"{frames / fps:.6f}"
    # Half-size pattern scaled up: about what real footage costs at CRF 23, where full-size testsrc2 hits maxrate.
    video = f"testsrc2=s={w // 2 // 2 * 2}x{h // 2 // 2 * 2}:r={fps},scale={w}:{h}"
    audio = f"{NOISE_AMPLITUDE}*(2*random(0)-1)"
    if marker_frame is not None:
        video += f",drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='eq(n\\,{marker_frame})'"
        onset = f"{marker_frame / fps:.6f}"
        audio += (f"+if(between(t\\,{onset}\\,{onset}+{TONE_SECONDS})\\,"
                  f"{TONE_AMPLITUDE}*sin(2*PI*{TONE_HZ}*(t-{onset}))\\,0)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg([
        "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
        "-f", "lavfi", "-i", video,
        "-f", "lavfi", "-i", f"aevalsrc=exprs='{audio}':s={profile.audio_rate}:d={duration}",
        "-map", "0:v:0", "-map", "1:a:0",
        *x264_video_args(profile), *aac_audio_args(profile),
        "-af", f"apad,atrim=0:{duration}", "-t", duration,
        "-movflags", "+faststart", "-f", "mp4", str(path),
    ], timeout=600)
    return path


def marker_frame_for(i: int, frames: int) -> int:
    """Markers at varying offsets, at least 0.32 s from the start and 0.52 s from the end of their segment."""
    return 8 + (i * 37) % (frames - 21)


def segment_pool(profile: MediaProfile, *, work: Path = WORK) -> tuple[list[MarkedSegment], MarkedSegment]:
    """The pool and a marker-free slate, made once per size and kept under bench/out/work/streaming."""
    folder = work / f"{profile.width}x{profile.height}-{profile.fps}"
    wanted = {"version": POOL_VERSION, "frames": list(POOL_FRAMES), "profile": profile.model_dump()}
    manifest = folder / "pool.json"
    pool = [MarkedSegment(folder / f"seg{i:02d}.mp4", n, marker_frame_for(i, n)) for i, n in enumerate(POOL_FRAMES)]
    slate = MarkedSegment(folder / "slate.mp4", profile.fps, None)
    try:
        cached = json.loads(manifest.read_text()) == wanted and all(s.path.exists() for s in [*pool, slate])
    except (OSError, ValueError):
        cached = False
    if not cached:
        print(f"  making {len(pool) + 1} segments at {profile.width}x{profile.height} in {folder} ...", flush=True)
        manifest.unlink(missing_ok=True)
        for seg in [*pool, slate]:
            make_marked_segment(seg.path, frames=seg.frames, marker_frame=seg.marker_frame, profile=profile)
        manifest.write_text(json.dumps(wanted))
    return pool, slate


def sequence(pool: Sequence[MarkedSegment], seconds: float, fps: int, *, seed: int = 7) -> list[MarkedSegment]:
    """A pseudo-random order of the pool (never the same segment twice in a row) lasting at least `seconds`."""
    rng = random.Random(seed)
    out: list[MarkedSegment] = []
    total = Fraction(0)
    while total < Fraction(str(seconds)):
        choice = rng.choice([s for s in pool if not out or s is not out[-1]])
        out.append(choice)
        total += choice.seconds(fps)
    return out


# -- analysis ---------------------------------------------------------------------------------------------------
@dataclass
class Steps:
    """Timestamps of one stream in file order: how many fail to increase strictly, the largest step."""

    count: int
    non_monotonic: int
    max_step: float  # seconds; 0.0 with fewer than two timestamps
    max_step_at: float  # timestamp (s) after which the largest step occurs


def timestamp_steps(ts: Sequence[float]) -> Steps:
    if len(ts) < 2:
        return Steps(len(ts), 0, 0.0, 0.0)
    arr = np.asarray(ts, dtype=np.float64)
    d = np.diff(arr)
    worst = int(d.argmax())
    return Steps(len(ts), int(np.count_nonzero(d <= 0)), float(d[worst]), float(arr[worst]))


class OnsetFinder:
    """Tone onsets in decoded audio fed as (timestamp s, mono samples) chunks in order, without keeping the audio.

    Each onset is (by timestamp, by sample clock): the chunk's timestamp + index / rate, and the first chunk's
    timestamp + every sample decoded before it / rate, which is when a player playing each decoded sample in turn
    plays it. An onset is a sample with |x| > level after at least `quiet` seconds (sample clock) of none.
    """

    def __init__(self, rate: int, *, level: float = ONSET_LEVEL, quiet: float = ONSET_QUIET_SECONDS):
        self.rate, self.level, self.quiet = rate, level, quiet
        self.onsets: list[tuple[float, float]] = []
        self._last_loud = -np.inf  # sample-clock time of the last loud sample
        self._clock0: float | None = None
        self._played = 0

    def feed(self, t: float, samples: np.ndarray) -> None:
        if self._clock0 is None:
            self._clock0 = t
        loud = np.flatnonzero(np.abs(samples) > self.level)
        if loud.size:
            sc = self._clock0 + (self._played + loud) / self.rate
            prev = np.concatenate(([self._last_loud], sc[:-1]))
            for i in np.flatnonzero(sc - prev >= self.quiet):
                self.onsets.append((t + loud[i] / self.rate, float(sc[i])))
            self._last_loud = float(sc[-1])
        self._played += len(samples)


def find_onsets(chunks: Iterable[tuple[float, np.ndarray]], rate: int, **kw) -> list[tuple[float, float]]:
    finder = OnsetFinder(rate, **kw)
    for t, samples in chunks:
        finder.feed(t, samples)
    return finder.onsets


@dataclass
class Marker:
    flash: float          # video timestamp of the flash frame, s
    offset: float         # onset - flash by audio timestamps, s (positive: audio late)
    offset_clock: float   # onset - flash by the audio sample clock, s


def pair_markers(flashes: Sequence[float], onsets: Sequence[tuple[float, float]],
                 window: float = PAIR_WINDOW_SECONDS) -> list[Marker]:
    """Each flash with the nearest onset (by timestamp) within `window`; flashes without one are left out."""
    if not onsets:
        return []
    on = np.asarray([o[0] for o in onsets])
    out = []
    for f in flashes:
        i = int(np.abs(on - f).argmin())
        if abs(on[i] - f) <= window:
            out.append(Marker(f, float(on[i] - f), float(onsets[i][1] - f)))
    return out


@dataclass
class Recording:
    path: str
    fps: float
    video: Steps
    audio: Steps
    audio_rate: int
    flashes: int
    onsets: int
    markers: list[Marker] = field(default_factory=list)
    audio_overlaps: int = 0       # audio packets starting before the previous one ended (by > 2 ms)
    audio_overlap_s: float = 0.0  # their overlap in total
    audio_holes: int = 0          # audio packets starting after the previous one ended (by > 2 ms)
    audio_hole_s: float = 0.0

    @property
    def max_video_step_frames(self) -> float:
        return self.video.max_step * self.fps

    @property
    def duration(self) -> float:
        return self.video.count / self.fps

    def offsets_ms(self, clock: bool = False) -> tuple[float, float]:
        """(first, last) marker offsets in ms; nan when no marker was paired."""
        if not self.markers:
            return float("nan"), float("nan")
        pick = (lambda m: m.offset_clock) if clock else (lambda m: m.offset)
        return pick(self.markers[0]) * 1000, pick(self.markers[-1]) * 1000

    def worst_offset_change_ms(self) -> float:
        """Largest |offset - first offset| over all markers, by timestamps."""
        if not self.markers:
            return float("nan")
        first = self.markers[0].offset
        return max(abs(m.offset - first) for m in self.markers) * 1000


def _luma(frame: av.VideoFrame) -> float:
    """Mean Y of a decoded frame (every 4th row and column)."""
    plane = frame.planes[0]
    y = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:frame.height:4, :frame.width:4]
    return float(y.mean())


def _mono(frame: av.AudioFrame) -> np.ndarray:
    data = frame.to_ndarray()
    if frame.format.is_planar:
        return data[0]
    return data.reshape(-1)[::len(frame.layout.channels)]


def analyse_recording(path: Path, *, flash_luma: float = FLASH_LUMA) -> Recording:
    """Demux and decode a recording (FLV or MP4, one video and one audio stream) in one pass."""
    vts: list[float] = []
    ats: list[float] = []
    flashes: list[float] = []
    overlaps = holes = 0
    overlap_s = hole_s = 0.0
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise RuntimeError(f"cannot open recording {path}: {exc}") from None
    with container:
        if not container.streams.video or not container.streams.audio:
            raise RuntimeError(f"recording {path} needs a video and an audio stream")
        vs, aus = container.streams.video[0], container.streams.audio[0]
        vs.thread_type = "AUTO"
        fps = float(vs.average_rate or vs.guessed_rate or 25)
        rate = aus.codec_context.sample_rate
        onsets = OnsetFinder(rate)
        prev_end: float | None = None

        def video_frames(frames) -> None:
            for frame in frames:
                if frame.pts is not None and _luma(frame) > flash_luma:
                    flashes.append(float(frame.pts * frame.time_base))

        for pkt in container.demux(vs, aus):
            if pkt.dts is None or not pkt.size:
                continue
            is_video = pkt.stream.type == "video"
            (vts if is_video else ats).append(float(pkt.dts * pkt.time_base))
            try:
                frames = pkt.decode()
            except av.FFmpegError:
                continue  # a damaged packet: its timestamps were still counted
            if is_video:
                video_frames(frames)
                continue
            for frame in frames:
                t = float((frame.pts if frame.pts is not None else pkt.pts) * frame.time_base)
                if prev_end is not None:
                    d = t - prev_end
                    if d < -0.002:
                        overlaps, overlap_s = overlaps + 1, overlap_s - d
                    elif d > 0.002:
                        holes, hole_s = holes + 1, hole_s + d
                prev_end = t + frame.samples / rate
                onsets.feed(t, _mono(frame))
        try:
            video_frames(vs.codec_context.decode(None))  # frames still in the (threaded) decoder
        except (av.FFmpegError, EOFError):
            pass
    flashes = _first_of_runs(sorted(flashes), 1.5 / fps)
    return Recording(str(path), fps, timestamp_steps(vts), timestamp_steps(ats), rate, len(flashes),
                     len(onsets.onsets), pair_markers(flashes, onsets.onsets), overlaps, overlap_s, holes, hole_s)


def _first_of_runs(times: list[float], gap: float) -> list[float]:
    """Bright frames next to each other are one flash (its first frame)."""
    out: list[float] = []
    prev = -np.inf
    for t in times:
        if t - prev > gap:
            out.append(t)
        prev = t
    return out


# -- running things ---------------------------------------------------------------------------------------------
@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so every `finally` stops its children."""
    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        old = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_nginx(workdir: Path, *, record: bool, hls: bool) -> NginxRtmp:
    return NginxRtmp(workdir, host="127.0.0.1", rtmp_port=free_port(), http_port=free_port(), hls=hls,
                     record=record).start()


class StreamChild:
    """`python -m bench.stream_child CONFIG`: K feeders as threads in one process, as the supervisor runs them.

    Reports JSON lines on stdout ({"event": "started"} then {"event": "done", ...}); stderr goes to a log file.
    """

    def __init__(self, config: dict, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "child.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = workdir / "child.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.stream_child", str(self.config_path)],
                                     cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True)
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_event(self, name: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if event.get("event") == name:
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise RuntimeError(f"stream child did not report {name!r} (exit code {self.proc.poll()}); "
                                       f"its log {self.log_path}:\n{self.log_tail()}")
                self._cond.wait(min(left, 0.5))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the child stops its feeders, which stop their ffmpeg
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(timeout=2)
        self._log.close()


def recording_of(nginx: NginxRtmp, stream: str) -> Path:
    found = sorted((nginx.workdir / "rec").glob(f"{stream}-*.flv"))
    if len(found) != 1:
        raise RuntimeError(f"expected one nginx recording of stream {stream!r}, found {[p.name for p in found]}")
    return found[0]


def _peer_concat_list(seq: Sequence[MarkedSegment], path: Path) -> Path:
    path.write_text("".join(f"file '{s.path}'\n" for s in seq))
    return path


def run_continuity(seconds: float, profile: MediaProfile, work: Path) -> dict:
    pool, slate = segment_pool(profile)
    seq = sequence(pool, seconds, profile.fps)
    timeline = float(sum(s.seconds(profile.fps) for s in seq))
    nginx = start_nginx(work / "nginx", record=True, hls=False)
    child = peer = None
    try:
        config = {"channels": [{"url": f"{nginx.rtmp_url}/ours", "segments": [str(s.path) for s in seq]}],
                  # Half a frame short: the feeder airs whole pieces while its exact position is below this,
                  # and the float of the exact total can be a hair above it (one piece more).
                  "slate": str(slate.path), "seconds": timeline - 0.5 / profile.fps, "lead_seconds": 1.0,
                  "warmup_seconds": STARTUP_SECONDS}
        peer_args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-re", "-f", "concat", "-safe",
                     "0", "-i", str(_peer_concat_list(seq, work / "list.txt")), "-c", "copy", "-f", "flv",
                     f"{nginx.rtmp_url}/peer"]
        print(f"  airing {timeline:.2f} s of timeline ({len(seq)} segments) through our feeder and ffmpeg concat "
              "at once ...", flush=True)
        child = StreamChild(config, work / "child")
        peer = FFmpegProcess(peer_args, name="ffmpeg-concat-peer")
        started = time.monotonic()
        child.wait_event("started", 60)
        done = child.wait_event("done", timeline + 120)
        if peer.wait(max(10.0, timeline + 60 - (time.monotonic() - started))) != 0:
            raise RuntimeError(f"the peer ffmpeg failed (exit {peer.returncode}):\n{peer.stderr_tail(20)}")
        ours = done["channels"][0]
        if ours.get("error"):
            raise RuntimeError(f"our feeder failed: {ours['error']}\nchild log:\n{child.log_tail()}")
        time.sleep(1.0)  # nginx closes the recordings once each publisher has gone
    finally:
        if child is not None:
            child.stop()
        if peer is not None:
            peer.stop(timeout=3)
        nginx.stop()
    print("  analysing the recordings ...", flush=True)
    rec_ours = analyse_recording(recording_of(nginx, "ours"))
    rec_peer = analyse_recording(recording_of(nginx, "peer"))
    return {"timeline": timeline, "segments": len(seq), "markers_aired": len(seq), "ours": rec_ours,
            "peer": rec_peer, "feeder": ours}


def main() -> None:
    seconds = env_float("BENCH_CONTINUITY_S", 1800.0)
    profile = bench_profile()
    with interruptible(), tempfile.TemporaryDirectory(prefix="bench-continuity-") as td:
        r = run_continuity(seconds, profile, Path(td))
    ours, peer, feeder = r["ours"], r["peer"], r["feeder"]
    frame_ms = 1000 / profile.fps
    o_start, o_end = ours.offsets_ms()
    p_start, p_end = peer.offsets_ms()
    oc_start, oc_end = ours.offsets_ms(clock=True)
    pc_start, pc_end = peer.offsets_ms(clock=True)
    pacing = feeder.get("pacing") or [float("nan"), float("nan")]

    def verdict(rec: Recording, start: float, end: float) -> str:
        ok = abs(end - start) <= frame_ms and rec.max_video_step_frames <= 1.0 + 1e-6 and \
            rec.video.non_monotonic == 0 and rec.audio.non_monotonic == 0 and len(rec.markers) == r["segments"]
        return "PASS" if ok else "FAIL"

    peer_name = "ffmpeg -re -f concat -c copy"
    figures = [
        PeerFigure("A/V offset at first marker (timestamps)", o_start, "ms", peer_name, p_start),
        PeerFigure("A/V offset at last marker (timestamps)", o_end, "ms", peer_name, p_end),
        PeerFigure("A/V drift last - first marker (timestamps)", o_end - o_start, "ms", peer_name, p_end - p_start),
        PeerFigure("A/V offset change, worst marker (timestamps)", ours.worst_offset_change_ms(), "ms", peer_name,
                   peer.worst_offset_change_ms()),
        PeerFigure("A/V drift by audio sample clock", oc_end - oc_start, "ms", peer_name, pc_end - pc_start),
        PeerFigure("largest video step", ours.max_video_step_frames, "frames", peer_name, peer.max_video_step_frames),
        PeerFigure("video timestamps not increasing", ours.video.non_monotonic, "packets", peer_name,
                   peer.video.non_monotonic),
        PeerFigure("audio timestamps not increasing", ours.audio.non_monotonic, "packets", peer_name,
                   peer.audio.non_monotonic),
        PeerFigure("largest audio step", ours.audio.max_step * 1000, "ms", peer_name, peer.audio.max_step * 1000),
        PeerFigure("audio overlapping the previous packet", ours.audio_overlap_s * 1000, "ms total", peer_name,
                   peer.audio_overlap_s * 1000),
        PeerFigure("markers found (flash + tone paired)", len(ours.markers), "markers", peer_name, len(peer.markers)),
        PeerFigure("recorded video", ours.duration, "s", peer_name, peer.duration),
        PeerFigure("feeder pacing drift, last - first segment", (pacing[1] - pacing[0]) * 1000, "ms"),
        PeerFigure("feeder underruns after start-up (> 1 frame late)", feeder["steady_underruns"], "packets"),
        PeerFigure("feeder latest packet after start-up, past air time", feeder["steady_max_late_seconds"] * 1000,
                   "ms"),
        PeerFigure("feeder underruns in the start-up", feeder["startup_underruns"], "packets"),
        PeerFigure("feeder latest packet in the start-up", feeder["startup_max_late_seconds"] * 1000, "ms"),
    ]
    notes = (
        f"{r['timeline']:.2f} s of timeline (BENCH_CONTINUITY_S={seconds:g}), {r['segments']} segments of "
        f"{POOL_FRAMES[0] / profile.fps:.1f}-{POOL_FRAMES[-1] / profile.fps:.1f} s at {profile.width}x"
        f"{profile.height} {profile.fps} fps, one marker each; both streams at once to one nginx-rtmp "
        "(record all), analysed from nginx's recordings. A/V offset = tone onset - flash (positive: audio late), "
        "by audio timestamps, and by the audio sample clock (every decoded sample played in turn from the first "
        "audio timestamp: overlapping audio at joins makes it late). Ratios of drifts/offsets near 0 are not "
        "meaningful: compare the values. Largest video step 1.0 frame = continuous. Pacing drift: wall clock "
        "minus (air start + duration - lead) when each segment has been written, last minus first segment. "
        f"Feeder underruns counted apart in the first {STARTUP_SECONDS:g} s (start-up). Verdict (timestamps "
        "strictly increasing, no video step over one frame, every marker found, drift within one frame "
        f"{frame_ms:.0f} ms), by timestamps: ours {verdict(ours, o_start, o_end)}, peer "
        f"{verdict(peer, p_start, p_end)}; by the audio sample clock: ours {verdict(ours, oc_start, oc_end)}, "
        f"peer {verdict(peer, pc_start, pc_end)}."
    )
    report("continuity", figures, notes=notes)


if __name__ == "__main__":
    main()
