"""Render one planned segment: speech -> frames -> policy middleware -> encode -> stamp -> READY.

`render_segment_direct` is what the Celery task, the CLI and the tests call. It is idempotent: a
segment that is already READY (or past it) is left alone, so a redelivered task never renders twice.

A render stops itself when its segment is no longer wanted (POLICY C5: running renders of a revoked clone
are cancelled): once the speech is made, and then four times a second while frames are made and encoded, it
asks the database whether the segment is still RENDERING for this attempt and its consent still holds. If
not, the encoder is killed, every file of the attempt is removed and the segment is left CANCELLED; the task
returns normally, so Celery does not retry it.

A render that would start after its segment's deadline (or air time) is not started: the segment is SKIPPED with
the reason, and the streamer's idle loop covers for it. A task redelivered after its worker died is a new attempt,
up to MAX_RENDER_ATTEMPTS; then the segment is FAILED, so a segment that kills its worker cannot loop forever.

A running attempt beats: every BEAT_S it moves its row's `updated_at` (fenced on the attempt). A render host that
dies whole (worker and pool), freezes or loses its network stops beating, and the leading scheduler puts the
segment back to PLANNED after `scheduler.render_lost_seconds` (workers.plan.scheduler.requeue_lost_renders), where
the next pass queues it to another worker, instead of waiting for the broker's visibility timeout. The task
that was lost with the host, redelivered later, finds the row rendered or beating under another task and
leaves it; the lost attempt itself, should it wake up, stops at its next check (another attempt took over).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from billiard.exceptions import SoftTimeLimitExceeded
from sqlmodel import Session, select, update

from studio import audit
from studio.admission import segment_problem
from studio.consent import consent_problem
from studio.db import lock_row, session_scope
from studio.models import Avatar, Channel, Consent, Creator, Script, Segment, Voiceover, new_produce_id, utcnow
from studio.policy import PolicyStamp, webvtt, with_punctuation
from studio.policy_profiles import EffectivePolicy, effective_policy
from studio.runtime import Runtime
from studio.segments import TERMINAL, SegmentState, move
from studio.storage import atomic_path
from studio.voiceover import parse_voice, voiceover_of
from workers.ingest.voiceover import joined, recorded_speech
from workers.media import allocator
from workers.media.encode import pipe_frames
from workers.media.ffmpeg_args import segment_encode_args
from workers.media.marks_check import CHECK_FRAMES, check_encoded
from workers.media.watermark import Mark, avatar_ref_from_id, produce_token_from_id
from workers.queue_policy import MAX_RENDER_ATTEMPTS, RENDER_LIMITS, missed_air_time
from workers.render.faults import NO_FAULTS, FaultPlan
from workers.render.policy_middleware import PolicyMiddleware
from workers.renderers import make_renderer
from workers.tts import make_tts, voice_language
from workers.tts.base import Speech
from workers.tts.wav import speech_to_wav

log = logging.getLogger("studio.render")
S = SegmentState
# How often a running render asks whether it is still wanted: by wall time, not frames, so the stop comes as
# quickly from a renderer slower than real time as from a fast one. One read of two rows by key each time.
CHECK_INTERVAL_S = 0.25
BEAT_S = 2.0  # a running attempt moves its row's updated_at this often (the scheduler's sign that it is alive)


class RenderCancelled(Exception):
    """The segment stopped being wanted while it rendered (revoked or expired consent, cancelled, taken over)."""


@dataclass(frozen=True)
class StillWanted:
    """The cooperative cancellation check of one render attempt. Cheap (one row and its consent, by key):
    the scope, approval and cap checks of `segment_problem` ran at claim time and run again before stamping."""

    rt: Runtime
    segment_id: str
    attempt: int
    progress: Callable[[], None] = lambda: None  # told of every frame that passes (the beat's sign of progress)
    deadline: float | None = None  # time.monotonic() past which the render raises SoftTimeLimitExceeded

    def problem(self) -> str | None:
        with session_scope(self.rt.engine) as s:
            row = s.get(Segment, self.segment_id)
            if row is None:
                return f"segment {self.segment_id} was deleted"
            if row.state != S.RENDERING:
                return f"segment {self.segment_id} is {row.state}"
            if row.attempts != self.attempt:
                return f"attempt {row.attempts} of segment {self.segment_id} took over from attempt {self.attempt}"
            return consent_problem(s.get(Consent, row.consent_id), at=utcnow())

    def check(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise SoftTimeLimitExceeded(f"segment {self.segment_id}: attempt {self.attempt} ran past the render's "
                                        f"soft time limit ({RENDER_LIMITS.soft_s} s)")
        if problem := self.problem():
            raise RenderCancelled(problem)

    def frames(self, frames: Iterable[np.ndarray], *, interval: float = CHECK_INTERVAL_S) -> Iterator[np.ndarray]:
        """Pass frames through, checking at most every `interval` seconds of wall time. Raised inside the
        encoder's frame source, RenderCancelled makes `pipe_frames` kill ffmpeg and `atomic_path` remove the
        partial file."""
        last = time.monotonic()
        for frame in frames:
            self.progress()
            if time.monotonic() - last >= interval:
                self.check()
                last = time.monotonic()
            yield frame


def _claim(rt: Runtime, segment_id: str, *, task_id: str | None = None) -> dict | None:
    """Move the segment to RENDERING and gather what the render needs; None if there is nothing to do.
    `task_id` (the Celery task's id) is recorded so a revocation can revoke the task while it is queued."""
    with session_scope(rt.engine) as s:
        seg = _locked(s, segment_id)
        if seg is None:
            if s.get(Segment, segment_id) is None:
                raise LookupError(f"segment {segment_id} does not exist")
            log.info("segment %s is being claimed by another worker; left to it", segment_id)
            return None
        if seg.state in TERMINAL or seg.state == S.READY:
            return None
        now = utcnow()
        problem = segment_problem(s, seg, at=now)
        if problem:
            move(s, seg, S.CANCELLED, error=problem, data={"reason": problem})
            return None
        if late := missed_air_time(deadline=seg.deadline, air_at=seg.air_at, now=now):
            _give_up(s, seg, S.SKIPPED, late, now=now)
            return None
        if (seg.state == S.RENDERING and task_id is not None and seg.task_id not in (None, task_id)
                and beating(seg, now=now, lost_after=rt.settings.scheduler.render_lost_seconds)):
            log.info("segment %s is rendering under task %s, which beats; task %s leaves it", segment_id,
                     seg.task_id, task_id)
            return None
        if seg.state == S.RENDERING and seg.attempts >= MAX_RENDER_ATTEMPTS:
            _give_up(s, seg, S.FAILED, f"the worker rendering it was lost on each of {seg.attempts} attempts",
                     now=now)
            return None
        if seg.state in (S.FAILED, S.RENDERING):
            # FAILED: a retry. RENDERING: the worker that held it died and the task was redelivered.
            move(s, seg, S.PLANNED, event=None)
        move(s, seg, S.RENDERING, event=None)
        seg.attempts += 1
        seg.task_id = task_id or seg.task_id
        seg.updated_at = utcnow()
        avatar = s.get(Avatar, seg.avatar_id)
        creator = s.get(Creator, avatar.creator_id)
        channel = s.get(Channel, seg.channel_id)
        script = s.get(Script, seg.script_id) if seg.script_id else None
        recorded = voiceover_of(s, script) if script is not None and avatar.voice == "recorded" else None
        return {"seg": seg, "attempt": seg.attempts, "bundle": avatar.bundle_path, "renderer": avatar.renderer,
                "creator": creator.name, "channel": channel, "voice": avatar.voice, "voiceover": recorded}


def beating(seg: Segment, *, now, lost_after: float) -> bool:
    """A RENDERING row whose attempt beat within `lost_after` seconds: its render is alive somewhere."""
    return seg.updated_at is not None and (now - seg.updated_at).total_seconds() < lost_after


class RenderBeat:
    """Moves the attempt's `updated_at` every BEAT_S from a thread of its own while the attempt makes progress
    (speech, bundle fetch and encode alike). Fenced on the attempt: it never touches a row another attempt took
    over. No beat is written once `progress()` has not been called for `stall_s` seconds (it starts again when
    progress does, unless the scheduler has requeued the segment meanwhile), nor after `limit_s` seconds in all:
    a render stuck where nothing can stop it then loses its segment to another worker (requeue_lost_renders).

    `node`: the worker node it runs on (Celery's hostname). While the attempt is stalled it is listed in the node's
    `stalled` renders (workers.worker_report.record_stall; /metrics studio_worker_stalled_renders): a thread stuck
    in a call that never returns still takes one of the worker's slots after its segment went elsewhere, and only a
    restart gives it back. A pool process that Celery kills at the hard time limit drops off the list at the
    worker's next heartbeat."""

    def __init__(self, rt: Runtime, segment_id: str, attempt: int, *, every: float = BEAT_S,
                 stall_s: float | None = None, limit_s: float = RENDER_LIMITS.hard_s, node: str | None = None):
        self.rt, self.segment_id, self.attempt, self.every = rt, segment_id, attempt, every
        self.node = node
        self.stall_s = rt.settings.worker.render_stall_seconds if stall_s is None else stall_s
        self.limit_s = limit_s
        self.started = self._last_progress = time.monotonic()
        self.stalled = False
        self._reported = False  # counted in the node's stalled renders
        self._report_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"beat-{segment_id}", daemon=True)

    def start(self) -> RenderBeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """The render returned (done, failed or cancelled): it no longer holds a slot, stalled or not."""
        self._stop.set()
        self._thread.join(timeout=self.every + 5)
        with self._report_lock:
            if self._reported:
                self._report(False)

    def progress(self) -> None:
        """The render moved on (a frame, a finished step). Cheap: called for every frame."""
        self._last_progress = time.monotonic()

    def beat(self) -> bool:
        """One beat; False when the row is no longer this attempt's (taken over, cancelled, rendered)."""
        with session_scope(self.rt.engine) as s:
            stmt = (update(Segment).where(Segment.id == self.segment_id, Segment.state == S.RENDERING,
                                          Segment.attempts == self.attempt).values(updated_at=utcnow()))
            return s.exec(stmt).rowcount == 1

    def _report(self, stalled: bool) -> None:
        """Count this attempt in (or out of) its node's stalled renders; never raises (the beat must go on)."""
        self._reported = stalled
        if self.node is None:
            return
        try:
            from workers.worker_report import record_stall

            record_stall(self.rt.engine, name=self.node, segment_id=self.segment_id, attempt=self.attempt,
                         stalled=stalled, pid=os.getpid())
        except Exception:
            log.exception("segment %s: reporting a stalled render of node %s failed", self.segment_id, self.node)

    def _alive(self) -> bool:
        """Whether this attempt should still beat; logs when it stalls and when it recovers, and counts it in its
        node's stalled renders meanwhile."""
        now = time.monotonic()
        if now - self.started > self.limit_s:
            log.error("segment %s: attempt %d ran past the render's hard time limit (%s s); its beat stops, so the "
                      "scheduler queues the segment again for another worker", self.segment_id, self.attempt,
                      self.limit_s)
            self._sync(True)  # it holds its slot until it returns (stop) or the worker restarts
            return False
        idle = now - self._last_progress
        if idle > self.stall_s:
            if not self.stalled:
                log.error("segment %s: attempt %d made no progress for %.0f s (worker.render_stall_seconds %s); its "
                          "beat stops, so the scheduler queues the segment again for another worker unless it "
                          "moves on first", self.segment_id, self.attempt, idle, self.stall_s)
            self.stalled = True
        elif self.stalled:
            log.warning("segment %s: attempt %d moved on after a stall; beating again", self.segment_id,
                        self.attempt)
            self.stalled = False
        self._sync(self.stalled)
        return True

    def _sync(self, stalled: bool) -> None:
        """List or unlist this attempt as `stalled` says, unless the render has returned (stop unlists it)."""
        with self._report_lock:
            if stalled != self._reported and not self._stop.is_set():
                self._report(stalled)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if not self._alive():
                return
            if self.stalled:
                continue
            try:
                if not self.beat():
                    return  # the cancellation check stops the render itself
            except Exception:  # a database blip: the next beat tries again; the check decides about the render
                log.warning("segment %s: render beat not written", self.segment_id, exc_info=True)


def _locked(s: Session, segment_id: str) -> Segment | None:
    """The segment, row-locked until commit so that it is claimed once; None if another claim holds it now
    (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the database's write lock, taken first, serialises claims)."""
    if s.get_bind().dialect.name == "sqlite":
        lock_row(s, "segment", segment_id)
    stmt = (select(Segment).where(Segment.id == segment_id).with_for_update(skip_locked=True)
            .execution_options(populate_existing=True))
    return s.exec(stmt).first()


def channel_policy(rt: Runtime, channel: Channel) -> EffectivePolicy:
    """The strictest merge of the profiles the channel names (`default` always applies)."""
    return effective_policy(list(channel.policy_profiles or []), directory=rt.settings.policy_path)


def _give_up(s, seg: Segment, state: SegmentState, reason: str, *, now) -> None:
    move(s, seg, state, error=reason, at=now, data={"reason": reason, "attempts": seg.attempts})


def render_segment_direct(rt: Runtime, segment_id: str, *, task_id: str | None = None,
                          on_rendered: Callable[[int, float], None] | None = None, node: str | None = None) -> str:
    """Render, label, encode and stamp one segment; return its final state. `on_rendered(frames, seconds)` is
    told how long a render that ended READY took, from claim to stamp (the worker's speed report). `node`: the
    worker node rendering it, whose stalled renders count this one while it makes no progress (RenderBeat)."""
    started = time.monotonic()
    job = _claim(rt, segment_id, task_id=task_id)
    if job is None:
        with session_scope(rt.engine) as s:
            return s.get(Segment, segment_id).state
    seg: Segment = job["seg"]
    profile = rt.settings.media
    faults = FaultPlan.from_env(seq=seg.seq, attempt=job["attempt"])
    # One file per attempt: a redelivered task racing a slow one can never overwrite stamped bytes.
    final = rt.data.segment_path(seg.channel_id, seg.seq, seg.produce_id, attempt=job["attempt"])
    beat = RenderBeat(rt, segment_id, job["attempt"], node=node).start()
    wanted = StillWanted(rt, segment_id, job["attempt"], progress=beat.progress,
                         deadline=started + RENDER_LIMITS.soft_s)
    try:
        policy = channel_policy(rt, job["channel"])
        faults.check("tts")
        text, speech, spoken = segment_speech(rt, seg, policy=policy, creator=job["creator"], voice=job["voice"],
                                              voiceover=job["voiceover"])
        beat.progress()
        wanted.check()
        faults.check("render")
        renderer = make_renderer(job["renderer"], rt.local_dir(job["bundle"]), profile, rt.settings.renderer)
        beat.progress()
        frames = wanted.frames(renderer.render(speech))
        mark = Mark(produce_token_from_id(seg.produce_id), avatar_ref_from_id(seg.avatar_id))
        refs = {"segment": seg.id, "avatar": seg.avatar_id, "show": seg.show_id, "consent": seg.consent_id,
                "channel": seg.channel_id}
        stamp, n = encode_labelled(rt, speech=speech, frames=frames, out=final, segment_id=seg.id,
                                   channel_id=seg.channel_id, produce_id=seg.produce_id, show_id=seg.show_id,
                                   banner_for=job["creator"] if seg.show_start else None, text=text,
                                   policy=policy, mark=mark, refs=refs, faults=faults, spoken=bool(spoken))
        beat.progress()
        # Into the store before the row says READY: whoever reads the key finds the whole file.
        key = rt.publish(final, sidecars=(".vtt",))
    except RenderCancelled as stop:
        return _stopped(rt, segment_id, final, attempt=job["attempt"], reason=str(stop))
    except Exception as exc:
        _fail(rt, segment_id, exc, attempt=job["attempt"])
        raise
    finally:
        beat.stop()
    with session_scope(rt.engine) as s:
        row = s.get(Segment, segment_id, with_for_update=True, populate_existing=True)
        if row.state != S.RENDERING or row.attempts != job["attempt"]:
            # Another attempt took over (or the segment was cancelled) while this one rendered.
            _discard(final, rt=rt)
            return row.state
        # Consent is checked again: a revocation (or a lost approval) during the render must not let it out.
        problem = segment_problem(s, row, at=utcnow())
        if problem:
            _discard(final, rt=rt)
            return move(s, row, S.CANCELLED, error=problem, data={"reason": problem})
        row.path, row.duration_s, row.stamp = key, n / profile.fps, stamp.to_dict()
        move(s, row, S.READY, error=None, at=utcnow(), event="segment.rendered",
             data={"produce_id": row.produce_id, "sha256": stamp.sha256, "frames": n})
        state = row.state
    if on_rendered is not None:
        try:
            on_rendered(n, time.monotonic() - started)
        except Exception:  # the speed report must never fail (and so retry) a render that is done
            log.exception("reporting the render of segment %s failed", segment_id)
    return state


def segment_speech(rt: Runtime, seg: Segment, *, policy: EffectivePolicy, creator: str, voice: str,
                   voiceover: Voiceover | None) -> tuple[str, Speech, str | None]:
    """(text said, speech, spoken disclosure or None) for one segment, in its avatar's voice: the configured speech,
    an espeak-ng voice of its own, or the part of the script's recorded voice-over that says the segment's text
    (its aligned words and phonemes drive the captions and the lips). The spoken disclosure (POLICY V6) is said
    first by the speech backend, in every case, and captioned with the rest."""
    kind, espeak_voice = parse_voice(voice)
    cfg = rt.settings.tts if kind != "espeak" else rt.settings.tts.model_copy(update={"type": "espeak",
                                                                                     "voice": espeak_voice})
    spoken = policy.spoken_text(creator, voice_language(cfg.voice)) if seg.show_start else None
    if kind == "recorded":
        if voiceover is None:  # checked at claim (usage_problem); a race with an edit or a deletion ends here
            raise LookupError(f"script {seg.script_id} has no usable recorded voice-over for avatar {seg.avatar_id}")
        speech = recorded_speech(rt, voiceover, seg.text)
        if spoken:
            speech = joined(make_tts(cfg).synthesize(spoken), speech)
        return (f"{spoken} {seg.text}" if spoken else seg.text), speech, spoken
    text = f"{spoken} {seg.text}" if spoken else seg.text
    return text, make_tts(cfg).synthesize(text), spoken


def encode_labelled(rt: Runtime, *, speech: Speech, frames, out: Path, segment_id: str, channel_id: str,
                    produce_id: str, show_id: str, banner_for: str | None, policy: EffectivePolicy, mark: Mark,
                    refs: dict[str, str], text: str = "", faults: FaultPlan = NO_FAULTS,
                    spoken: bool = False) -> tuple[PolicyStamp, int]:
    """Label and watermark `frames`, encode them with the speech, read the marks back from the file, stamp it;
    the file appears only when stamped, with its captions beside it as a WebVTT sidecar (POLICY V4)."""
    profile = rt.settings.media
    n = speech.frame_count(profile.fps)
    mw = PolicyMiddleware(policy=policy, style=rt.settings.label, profile=profile, key=rt.key,
                          producer=rt.settings.producer, faults=faults)
    shown = with_punctuation([w.text for w in speech.words], text)
    cues = mw.cues([(t, w.start, w.end) for t, w in zip(shown, speech.words, strict=True)])
    kept: dict[int, np.ndarray] = {}
    labelled = _keeping(mw.label_frames(frames, cues=cues, banner_for=banner_for, mark=mark), kept,
                        {0, min(n, CHECK_FRAMES) - 1})
    bx, by = mw.badge_xy
    bw, bh = mw.badge.size
    with tempfile.TemporaryDirectory(prefix="studio-render-") as td:
        wav = Path(td) / "speech.wav"
        speech_to_wav(speech, wav)
        with atomic_path(out) as tmp:
            args = segment_encode_args(profile, audio_path=str(wav), out_path=str(tmp), frames=n,
                                       metadata=mw.metadata(produce_id=produce_id, propagator=channel_id,
                                                            propagate_id=show_id, refs=refs))
            faults.check("encode")
            pipe_frames(args, labelled, expect=n, shape=(profile.height, profile.width))
            faults.check("selfcheck")
            check_encoded(tmp, key=rt.key, produce_id=produce_id, mark=mark, badge_box=(bx, by, bw, bh),
                          expected=kept)
            stamp = mw.stamp(tmp, segment_id=segment_id, channel_id=channel_id, produce_id=produce_id,
                             banner=banner_for is not None, spoken=spoken)
    with atomic_path(out.with_suffix(".vtt")) as tmp:
        tmp.write_text(webvtt(cues))
    return stamp, n


def _keeping(frames: Iterable[np.ndarray], kept: dict[int, np.ndarray], indices: set[int]) -> Iterator[np.ndarray]:
    """Pass frames through, keeping copies of those at `indices` for the read-back check."""
    for i, frame in enumerate(frames):
        if i in indices:
            kept[i] = frame.copy()
        yield frame


def _discard(segment: Path, *, rt: Runtime | None = None) -> None:
    for path in (segment, segment.with_suffix(".vtt")):
        path.unlink(missing_ok=True)
        if rt is not None and not rt.store_is_data_dir:
            rt.store.delete(rt.key_of(path))


def _stopped(rt: Runtime, segment_id: str, final: Path, *, attempt: int, reason: str) -> str:
    """Leave a render that is no longer wanted. The encoder is dead and the temp files gone by now (killed and
    removed on the way out of `encode_labelled`); the finished files are removed here in case the check fired
    after they were written. The segment ends CANCELLED, never FAILED: there is nothing to retry."""
    _discard(final, rt=rt)
    with session_scope(rt.engine) as s:
        row = s.get(Segment, segment_id, with_for_update=True)
        if row is None:
            return S.CANCELLED
        if row.state == S.RENDERING and row.attempts == attempt:
            # The consent lapsed but nobody cancelled the segment yet (its term ended mid-render).
            move(s, row, S.CANCELLED, error=reason, at=utcnow(),
                 data={"reason": reason, "while_rendering": True, "attempt": attempt})
        return row.state


def _fail(rt: Runtime, segment_id: str, exc: Exception, *, attempt: int) -> None:
    with session_scope(rt.engine) as s:
        row = s.get(Segment, segment_id, with_for_update=True)
        if row is not None and row.state == S.RENDERING and row.attempts == attempt:
            error = f"{exc.__class__.__name__}: {exc}"[:2000]
            move(s, row, S.FAILED, error=error, at=utcnow(), data={"error": error})


def render_slate(rt: Runtime, *, channel: Channel, out: Path, bundle: Path | None = None,
                 avatar_id: str | None = None, text: str = "Back in a moment") -> PolicyStamp:
    """What airs when nothing is ready, stamped like any segment: the avatar's own idle loop when its
    bundle is given (it starts and ends on the loop frame every segment starts and ends on, so the
    hand-over between idle and speaking never jumps), else a plain card. Labelled and watermarked either
    way, under the channel's policy, so the badge stays on between segments too (POLICY V1); its ProduceID is in
    the audit log so `studio verify` can name it."""
    profile = rt.settings.media
    n = max(1, round(rt.settings.streamer.slate_seconds * profile.fps))
    if bundle is not None:
        frames = make_renderer(_backend_of(rt, avatar_id), bundle, profile, rt.settings.renderer).idle(n)
    else:
        frames = (card.copy() for card in [_card(profile.width, profile.height, text)] * n)
    silence = Speech(samples=np.zeros(int(n * 16000 / profile.fps), np.float32), sample_rate=16000)
    produce_id = new_produce_id()
    mark = Mark(produce_token_from_id(produce_id), avatar_ref_from_id(avatar_id) if avatar_id else 0)
    refs = {"slate": channel.id, "channel": channel.id, **({"avatar": avatar_id} if avatar_id else {})}
    stamp, _ = encode_labelled(rt, speech=silence, frames=frames, out=out, segment_id=f"slate-{channel.id}",
                               channel_id=channel.id, produce_id=produce_id, show_id="slate", banner_for=None,
                               policy=channel_policy(rt, channel), mark=mark, refs=refs)
    with session_scope(rt.engine) as s:
        audit.record(s, kind="slate.rendered", subject_id=channel.id,
                     data={"produce_id": produce_id, "avatar_id": avatar_id, "sha256": stamp.sha256})
    allocator.release()  # the streamer renders slates in its own long-lived process: give the frames' pages back
    return stamp


def _backend_of(rt: Runtime, avatar_id: str | None) -> str:
    """The renderer backend of the avatar whose idle loop a slate shows (the configured one for a bundle given
    without its avatar)."""
    with session_scope(rt.engine) as s:
        avatar = s.get(Avatar, avatar_id) if avatar_id else None
        return avatar.renderer if avatar is not None else rt.settings.renderer.type


def _card(w: int, h: int, text: str) -> np.ndarray:
    import cv2

    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    card = (np.array([18, 22, 48], np.float32) * (1 - y) + np.array([60, 24, 70], np.float32) * y)
    card = np.broadcast_to(card, (h, w, 3)).astype(np.uint8).copy()
    cv2.putText(card, text, (int(w * 0.12), h // 2), cv2.FONT_HERSHEY_DUPLEX, w / 720 * 1.3, (235, 235, 235),
                2, cv2.LINE_AA)
    return card
