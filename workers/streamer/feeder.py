"""One feeder per channel: airs segments in plan order as ONE continuous RTMP stream, without re-encoding.

Each segment MP4 is demuxed with PyAV and its packets are re-timed onto the channel's timeline: a running
offset that advances by the segment's video duration (frames / fps), so video is exactly continuous across
joins. Audio is kept continuous on its own sample clock, so that a player or a platform's transcoder that plays
decoded audio back to back (rather than by timestamp) never drifts: AAC has 1024 samples of encoder priming
(the first packet sits at -1024 samples) and a segment's last packet overhangs its video end, so at a join each
audio packet is placed where the audio written so far ends when that is within half a packet of its own time
(the audio clock then never strays more than half a packet, 10.7 ms at 48 kHz, from the video, and the error
never accumulates), and dropped when more than half of it would overlap what was written; audio never starts
past the end of its own segment's video. The packets are muxed into
FLV (stream metadata in onMetaData) on the stdin of one ffmpeg that copies it to every destination, paced so
that a packet at timeline T is written at wall clock start + T - lead. When nothing is ready, or a segment is
refused, the slate airs instead, so the stream never stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from studio.masking import scrub_url_keys
from workers.media.ffmpeg_args import push_args
from workers.media.proc import FFmpegProcess

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 5.0  # after stop is set, how long a write blocked on a stuck ffmpeg may hang
CUT_CHECK_SECONDS = 0.25  # while a segment airs, how often its consent is checked again (revocation: off air in 2 s)


@dataclass(frozen=True)
class SegmentRef:
    id: str
    path: Path


class StreamError(RuntimeError):
    """The push ffmpeg died or refused our stream; the message holds its scrubbed stderr tail."""


class LeaseLost(StreamError):
    """This streamer no longer holds the channel's lease: the stream stops at once and is not restarted."""


class Unusable(ValueError):
    """A segment (or the slate) that cannot be joined into the stream; the message says why."""


@dataclass(frozen=True)
class StreamFormat:
    """What every piece must share with the slate to be joined without re-encoding."""

    video_codec: str
    width: int
    height: int
    fps: Fraction
    audio_codec: str
    audio_rate: int
    audio_channels: int
    video_headers: bytes  # avcC: SPS/PPS; the FLV carries one sequence header for the whole stream
    audio_headers: bytes  # AudioSpecificConfig

    def differences(self, other: StreamFormat) -> list[str]:
        """How `self` differs from `other` (the slate), in words; empty when they can be joined."""
        out = []
        for name in ("video_codec", "audio_codec", "fps", "audio_rate", "audio_channels"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                out.append(f"{name} {mine} != slate {theirs}")
        if (self.width, self.height) != (other.width, other.height):
            out.append(f"size {self.width}x{self.height} != slate {other.width}x{other.height}")
        if not out and self.video_headers != other.video_headers:
            out.append("H.264 SPS/PPS differ from the slate's (encoded with other settings)")
        if not out and self.audio_headers != other.audio_headers:
            out.append("AAC config differs from the slate's")
        return out


@dataclass
class Piece:
    """One demuxed segment or slate, packets in file timestamps."""

    path: Path
    fmt: StreamFormat
    video: list[av.Packet]
    audio: list[av.Packet]
    video_tb: Fraction
    audio_tb: Fraction
    zero: Fraction  # first video pts in seconds: the piece's t=0
    audio_frame: Fraction = Fraction(1024, 48000)  # what one audio packet decodes to, seconds (AAC: 1024 samples)

    @property
    def duration(self) -> Fraction:
        return len(self.video) / self.fmt.fps


def load_piece(path: Path) -> Piece:
    """Demux a segment MP4 completely (they are 2-10 s), or raise Unusable saying what is wrong."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise Unusable(f"cannot open {path}: {exc}") from None
    with container:
        if not container.streams.video or not container.streams.audio:
            raise Unusable(f"{path} needs one video and one audio stream, has "
                           f"{len(container.streams.video)} video and {len(container.streams.audio)} audio")
        vs, aus = container.streams.video[0], container.streams.audio[0]
        fps = vs.average_rate or vs.guessed_rate
        if not fps:
            raise Unusable(f"{path} has no frame rate")
        fmt = StreamFormat(
            video_codec=vs.codec_context.name, width=vs.codec_context.width, height=vs.codec_context.height,
            fps=Fraction(fps), audio_codec=aus.codec_context.name, audio_rate=aus.codec_context.sample_rate,
            audio_channels=aus.codec_context.channels, video_headers=bytes(vs.codec_context.extradata or b""),
            audio_headers=bytes(aus.codec_context.extradata or b""),
        )
        video, audio = [], []
        try:
            for pkt in container.demux(vs, aus):
                if pkt.size and pkt.dts is not None:
                    (video if pkt.stream.type == "video" else audio).append(pkt)
        except av.FFmpegError as exc:
            raise Unusable(f"{path} is damaged: {exc}") from None
        video_tb, audio_tb = Fraction(vs.time_base), Fraction(aus.time_base)
    if not video or not audio:
        raise Unusable(f"{path} has {len(video)} video and {len(audio)} audio packets; needs both")
    if not video[0].is_keyframe:
        raise Unusable(f"{path} does not start on a keyframe (IDR)")
    if any(p.pts != p.dts for p in video):
        raise Unusable(f"{path} has B-frames (video pts != dts); segments must be encoded with -bf 0")
    if any(b.dts <= a.dts for a, b in zip(video, video[1:], strict=False)):
        raise Unusable(f"{path} has video timestamps that do not increase")
    frame_size = aus.codec_context.frame_size or 1024  # a trimmed last packet still decodes to a whole frame
    return Piece(path, fmt, video, audio, video_tb, audio_tb, video[0].pts * video_tb,
                 Fraction(frame_size, fmt.audio_rate))


class ChannelFeeder:
    """Airs one channel's segments as one continuous RTMP stream; see the module docstring.

    next_segment() is called once per piece, when the previous piece has been written (lead_seconds ahead
    of air); None airs one slate. verify(ref) is the policy check at air time: False (or an exception)
    refuses the segment, as does a file that cannot be joined to the slate's stream (size, fps, audio rate,
    channels, codec headers); a refused segment gets on_refused(ref, reason) and the slate airs instead.
    on_aired(ref, air_start_wallclock, pts_offset_s, seconds) is called once the whole segment has been
    written, or when the stream stops part-way through it (seconds then says how much went out):
    air_start_wallclock is time.time() at which its first frame is due (run start + pts_offset_s) and
    pts_offset_s its position on this run's timeline. A callable slate is asked for each slate piece and
    again every CUT_CHECK_SECONDS while one airs: another answer cuts the one airing (the clone's idle loop after
    a revocation). on_slate_aired(path, air_start_wallclock, seconds) follows every slate piece, whole or cut.
    Callback exceptions are logged, never stop the stream.
    metadata goes into the FLV onMetaData (nginx-rtmp passes it on only with `meta copy`).
    """

    def __init__(
        self,
        *,
        destinations: list[str],
        next_segment: Callable[[], SegmentRef | None],
        slate: Path | Callable[[], Path],
        verify: Callable[[SegmentRef], bool],
        on_aired: Callable[[SegmentRef, float, float, float], None] | None = None,
        on_refused: Callable[[SegmentRef, str], None] | None = None,
        metadata: dict[str, str] | None = None,
        lead_seconds: float = 1.0,
        still_allowed: Callable[[SegmentRef], bool] | None = None,
        fence: Callable[[], bool] | None = None,
        on_slate_aired: Callable[[Path, float, float], None] | None = None,
    ):
        if isinstance(destinations, str) or not destinations or not all(
                isinstance(d, str) and d.strip() for d in destinations):
            raise ValueError("destinations must be a non-empty list of RTMP URLs, got "
                             + scrub_url_keys(repr(destinations)))
        if not lead_seconds > 0:
            raise ValueError(f"lead_seconds must be > 0, got {lead_seconds!r}")
        for key, value in (metadata or {}).items():
            if not isinstance(key, str) or not isinstance(value, str) or not key:
                raise ValueError(f"metadata must map non-empty str to str, got {key!r}: {value!r}")
        self.destinations = list(destinations)
        self.next_segment = next_segment
        # A callable slate is asked each time one airs: after a revocation it must stop being the clone.
        self._slate = slate if callable(slate) else (lambda p=Path(slate): p)
        self._slate_changes = callable(slate)  # asked again while one airs too: a changed answer cuts it
        self.on_slate_aired = on_slate_aired
        self.verify = verify
        self.still_allowed = still_allowed
        # The channel lease, asked before every packet (a local check): False stops the stream at once.
        self.fence = fence
        # Set to end the stream at the next piece boundary (a hand-over to another streamer).
        self.boundary = threading.Event()
        self.on_aired = on_aired
        self.on_refused = on_refused
        self.metadata = dict(metadata or {})
        self.lead_seconds = float(lead_seconds)
        try:
            self.format = load_piece(self.slate).fmt
        except Unusable as exc:
            raise ValueError(f"slate is not usable: {exc}") from None
        self.segments_aired = 0
        self.slates_aired = 0
        self.refused = 0
        self.cut = 0
        self.started_wall: float | None = None
        self.audio_packets_dropped = 0
        # Packets muxed more than one frame interval after their air moment (t0 + t, lead excluded): underruns.
        self.underruns = 0
        self.max_late_seconds = 0.0  # the largest lateness of any packet past its air moment, seconds
        self._aired = Fraction(0)

    @property
    def slate(self) -> Path:
        return Path(self._slate())

    @property
    def aired_seconds(self) -> float:
        """Timeline duration of every piece aired completely, over all runs."""
        return float(self._aired)

    # -- choosing what airs next ----------------------------------------------------------------------
    def _refuse(self, ref: SegmentRef, reason: str) -> None:
        self.refused += 1
        log.warning("refused segment %s (%s): %s", ref.id, ref.path, reason)
        if self.on_refused is not None:
            try:
                self.on_refused(ref, reason)
            except Exception:
                log.exception("on_refused callback failed for segment %s", ref.id)

    def _next_piece(self) -> tuple[SegmentRef | None, Piece]:
        try:
            ref = self.next_segment()
        except Exception:
            log.exception("next_segment failed; airing the slate")
            ref = None
        if ref is not None:
            try:
                allowed = bool(self.verify(ref))
                reason = "" if allowed else "policy check failed at air time"
            except Exception as exc:
                allowed, reason = False, f"policy check raised {exc!r}"
            if not allowed:
                self._refuse(ref, reason)
            else:
                try:
                    piece = load_piece(Path(ref.path))
                    problems = piece.fmt.differences(self.format)
                    if not problems:
                        return ref, piece
                    self._refuse(ref, "cannot join without re-encoding: " + "; ".join(problems))
                except Unusable as exc:
                    self._refuse(ref, str(exc))
        return None, self._slate_piece()

    def _slate_piece(self) -> Piece:
        piece = load_piece(self.slate)
        if piece.fmt.differences(self.format):  # a replacement slate must join like the first one
            raise StreamError(f"slate {piece.path} cannot be joined: {'; '.join(piece.fmt.differences(self.format))}")
        return piece

    # -- the stream -----------------------------------------------------------------------------------
    def run(self, stop_event: threading.Event, duration: float | None = None) -> None:
        """Air until `stop_event` is set or `duration` seconds of timeline have aired (whole pieces).

        Raises StreamError when the push ffmpeg dies; each run is a new RTMP publish starting at t=0.
        """
        if duration is not None and not duration > 0:
            raise ValueError(f"duration must be > 0 seconds or None, got {duration!r}")
        proc = FFmpegProcess(push_args(self.destinations), stdin=True, name="ffmpeg-push")
        finished = threading.Event()
        watchdog = threading.Thread(target=self._watch, args=(stop_event, finished, proc), daemon=True)
        watchdog.start()
        out = None
        try:
            out = av.open(_PipeWriter(proc.stdin), mode="w", format="flv",
                          options={"flvflags": "no_duration_filesize", "flush_packets": "1"})
            out.metadata.update(self.metadata)  # -> FLV onMetaData
            with av.open(str(self.slate)) as template:
                vout = out.add_stream(template=template.streams.video[0])
                aout = out.add_stream(template=template.streams.audio[0])
            out.start_encoding()
            self._air_loop(out, vout, aout, proc, stop_event, duration)
            out.close()
            out = None
        except (OSError, av.FFmpegError) as exc:
            raise self._stream_error(proc, f"writing the stream failed: {exc}") from None
        finally:
            finished.set()
            if out is not None:
                try:
                    out.close()
                except Exception:
                    pass
            died = proc.returncode is not None and not proc.stopping
            rc = proc.stop(timeout=STOP_GRACE_SECONDS)
        if died or (rc not in (0, None) and not stop_event.is_set()):
            raise self._stream_error(proc, f"push ffmpeg exited with code {rc}")

    def _air_loop(self, out, vout, aout, proc: FFmpegProcess, stop: threading.Event, duration: float | None):
        offset = Fraction(0)  # this run's timeline position, seconds
        last = {"video": -1, "audio": -1}  # last dts written, output time base
        audio_end: Fraction | None = None  # where the audio written so far ends (sample clock), seconds
        limit = None if duration is None else Fraction(repr(duration))  # 90.04 means 2251/25, not a hair above
        t0_mono = t0_wall = None
        while not stop.is_set() and not self.boundary.is_set() and (limit is None or offset < limit):
            ref, piece = self._next_piece()
            slate = piece.path if ref is None else None  # which slate airs, for its cut and its record
            if t0_mono is None:
                # The clock starts once the first piece is in hand: its loading is not counted against air time.
                t0_mono, t0_wall = time.monotonic(), time.time()
                self.started_wall = t0_wall  # wall-clock time of timeline 0 of this run (a recording's t=0)
            items = []
            for pkt in piece.video:
                items.append((offset + pkt.dts * piece.video_tb - piece.zero, 0, pkt, vout))
            end = offset + piece.duration
            for pkt in piece.audio:
                t = offset + pkt.dts * piece.audio_tb - piece.zero
                if t >= end:  # never let audio run past its segment's video
                    self.audio_packets_dropped += 1
                    continue
                d = piece.audio_frame  # not pkt.duration: an edit list's trim is lost in FLV
                if audio_end is not None:
                    if t + d / 2 <= audio_end:  # more than half of it was written already (priming, overhang)
                        self.audio_packets_dropped += 1
                        continue
                    if abs(t - audio_end) <= d / 2:
                        t = audio_end  # butt it against the audio before: the sample clock stays continuous
                audio_end = t + d
                items.append((t, 1, pkt, aout))
            items.sort(key=lambda item: (item[0], item[1]))
            next_check, frame = time.monotonic() + CUT_CHECK_SECONDS, 1 / Fraction(piece.fmt.fps)
            for t, _, pkt, ostream in items:
                kind = ostream.type
                ts = round(t / ostream.time_base)
                if ts <= last[kind]:  # AAC priming overlap at a join (or before t=0)
                    self.audio_packets_dropped += kind == "audio"
                    continue
                delay = t0_mono + float(t) - self.lead_seconds - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    if ref is not None and t > offset:  # stopped part-way: what went out is on the record
                        self._notify_aired(ref, t0_wall + float(offset), float(offset), float(t - offset))
                    return
                if ref is not None and self.still_allowed is not None and time.monotonic() >= next_check:
                    next_check = time.monotonic() + CUT_CHECK_SECONDS
                    if not self._allowed(ref):
                        # Revoked on air: cut here, right after the last video frame written; the slate follows.
                        end = max(offset, last["video"] * vout.time_base + frame)
                        self._notify_aired(ref, t0_wall + float(offset), float(offset), float(end - offset))
                        self.cut += 1
                        ref = None
                        audio_end = None  # the rest of its audio was not written: the next piece starts afresh
                        break
                elif slate is not None and self._slate_changes and time.monotonic() >= next_check:
                    next_check = time.monotonic() + CUT_CHECK_SECONDS
                    if self._slate_replaced(slate):
                        # The clone's idle loop after a revocation: cut like a segment; the card follows.
                        end = max(offset, last["video"] * vout.time_base + frame)
                        self._notify_slate(slate, t0_wall + float(offset), float(end - offset))
                        audio_end = None
                        break
                if not proc.alive:
                    raise self._stream_error(proc, f"push ffmpeg exited with code {proc.returncode}")
                if self.fence is not None and not self.fence():
                    proc.stop(timeout=1.0)  # nothing more goes out under a lease this streamer lost
                    raise LeaseLost("the channel's lease was lost (expired or taken over): stopped at once")
                pkt.stream = ostream
                pkt.time_base = ostream.time_base
                pkt.pts = pkt.dts = ts
                late = time.monotonic() - (t0_mono + float(t))
                if late > self.max_late_seconds:
                    self.max_late_seconds = late
                if late > frame:
                    self.underruns += 1
                out.mux(pkt)
                last[kind] = ts
            else:
                if ref is None:
                    self.slates_aired += 1
                    self._notify_slate(slate, t0_wall + float(offset), float(piece.duration))
                else:
                    self.segments_aired += 1
                    self._notify_aired(ref, t0_wall + float(offset), float(offset), float(piece.duration))
            self._aired += end - offset
            offset = end

    def _allowed(self, ref: SegmentRef) -> bool:
        try:
            return bool(self.still_allowed(ref))
        except Exception:  # a check that cannot answer must not keep a possibly revoked clone on air
            log.exception("still_allowed failed for segment %s; cutting to the slate", ref.id)
            return False

    def _slate_replaced(self, path: Path) -> bool:
        """The slate to air now is another one (the idle loop's consent ended). A check that cannot answer keeps
        the slate, whose one second ends soon anyway; the next piece is chosen afresh."""
        try:
            return Path(self._slate()) != path
        except Exception:
            log.exception("the slate check failed; this slate airs to its end")
            return False

    def _notify_slate(self, path: Path | None, air_start: float, seconds: float) -> None:
        if self.on_slate_aired is not None and path is not None:
            try:
                self.on_slate_aired(path, air_start, seconds)
            except Exception:
                log.exception("on_slate_aired callback failed for slate %s", path)

    def _notify_aired(self, ref: SegmentRef, air_start: float, pts_offset: float, seconds: float) -> None:
        if self.on_aired is not None:
            try:
                self.on_aired(ref, air_start, pts_offset, seconds)
            except Exception:
                log.exception("on_aired callback failed for segment %s", ref.id)

    @staticmethod
    def _watch(stop: threading.Event, finished: threading.Event, proc: FFmpegProcess) -> None:
        """If a write is stuck on an ffmpeg that stopped reading, end ffmpeg so that run() returns."""
        while not finished.is_set():
            if stop.wait(0.5):
                if not finished.wait(STOP_GRACE_SECONDS):
                    log.warning("feeder did not stop within %.0f s; terminating the push ffmpeg",
                                STOP_GRACE_SECONDS)
                    proc.stop(timeout=1.0)
                return

    @staticmethod
    def _stream_error(proc: FFmpegProcess, what: str) -> StreamError:
        if proc.alive:
            proc.stop(timeout=1.0)
        tail = proc.stderr_tail(30) or "(ffmpeg printed nothing)"
        return StreamError(f"{what}; ffmpeg said:\n{tail}")


class _PipeWriter:
    """File-like for PyAV: every write reaches the pipe at once (no seek, so the muxer never seeks)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, data) -> int:
        self._stream.write(data)
        self._stream.flush()
        return len(data)
