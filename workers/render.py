"""Render one planned segment: speech -> frames -> policy middleware -> encode -> stamp -> READY.

`render_segment_direct` is what the Celery task, the CLI and the tests call. It is idempotent: a
segment that is already READY (or past it) is left alone, so a redelivered task never renders twice.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from studio import audit
from studio.consent import consent_problem
from studio.db import session_scope
from studio.models import Avatar, Channel, Consent, Creator, Segment, utcnow
from studio.policy import PolicyStamp, caption_cues, webvtt, with_punctuation
from studio.segments import TERMINAL, SegmentState, transition
from studio.storage import atomic_path
from workers.media.encode import pipe_frames
from workers.media.ffmpeg_args import segment_encode_args
from workers.policy_middleware import PolicyMiddleware
from workers.renderers import make_renderer
from workers.runtime import Runtime
from workers.tts import make_tts
from workers.tts.base import Speech
from workers.tts.wav import speech_to_wav

S = SegmentState


def _claim(rt: Runtime, segment_id: str) -> dict | None:
    """Move the segment to RENDERING and gather what the render needs; None if there is nothing to do."""
    with session_scope(rt.engine) as s:
        seg = s.get(Segment, segment_id)
        if seg is None:
            raise LookupError(f"segment {segment_id} does not exist")
        if seg.state in TERMINAL or seg.state == S.READY:
            return None
        problem = consent_problem(s.get(Consent, seg.consent_id), at=utcnow())
        if problem:
            seg.state = transition(seg.state, S.CANCELLED)
            seg.error = problem
            audit.record(s, kind="segment.cancelled", subject_id=seg.id, data={"reason": problem})
            return None
        if seg.state in (S.FAILED, S.RENDERING):
            # FAILED: a retry. RENDERING: the worker that held it died and the task was redelivered.
            seg.state = transition(seg.state, S.PLANNED)
        seg.state = transition(seg.state, S.RENDERING)
        seg.attempts += 1
        seg.updated_at = utcnow()
        avatar = s.get(Avatar, seg.avatar_id)
        creator = s.get(Creator, avatar.creator_id)
        channel = s.get(Channel, seg.channel_id)
        return {"seg": seg, "attempt": seg.attempts, "bundle": Path(avatar.bundle_path), "creator": creator.name,
                "channel": channel}


def render_segment_direct(rt: Runtime, segment_id: str) -> str:
    """Render, label, encode and stamp one segment; return its final state."""
    job = _claim(rt, segment_id)
    if job is None:
        with session_scope(rt.engine) as s:
            return s.get(Segment, segment_id).state
    seg: Segment = job["seg"]
    profile = rt.settings.media
    try:
        speech = make_tts(rt.settings.tts).synthesize(seg.text)
        renderer = make_renderer(rt.settings.renderer, job["bundle"], profile)
        frames = renderer.render(speech)
        # One file per attempt: a redelivered task racing a slow one can never overwrite stamped bytes.
        final = rt.data.segment_path(seg.channel_id, seg.seq, seg.produce_id, attempt=job["attempt"])
        stamp, n = encode_labelled(rt, speech=speech, frames=frames, out=final, segment_id=seg.id,
                                   channel_id=seg.channel_id, produce_id=seg.produce_id, show_id=seg.show_id,
                                   banner_for=job["creator"] if seg.show_start else None, text=seg.text)
    except Exception as exc:
        _fail(rt, segment_id, exc, attempt=job["attempt"])
        raise
    with session_scope(rt.engine) as s:
        row = s.get(Segment, segment_id)
        if row.state != S.RENDERING or row.attempts != job["attempt"]:
            # Another attempt took over (or the segment was cancelled) while this one rendered.
            _discard(final)
            return row.state
        # Consent is checked again: a revocation during the render must not let the segment out.
        problem = consent_problem(s.get(Consent, row.consent_id), at=utcnow())
        if problem:
            row.state = transition(row.state, S.CANCELLED)
            row.error = problem
            _discard(final)
            audit.record(s, kind="segment.cancelled", subject_id=row.id, data={"reason": problem})
            return row.state
        row.state = transition(row.state, S.READY)
        row.path, row.duration_s, row.stamp = str(final), n / profile.fps, stamp.to_dict()
        row.error, row.updated_at = None, utcnow()
        audit.record(s, kind="segment.rendered", subject_id=row.id,
                     data={"produce_id": row.produce_id, "sha256": stamp.sha256, "frames": n})
        return row.state


def encode_labelled(rt: Runtime, *, speech: Speech, frames, out: Path, segment_id: str, channel_id: str,
                    produce_id: str, show_id: str, banner_for: str | None,
                    text: str = "") -> tuple[PolicyStamp, int]:
    """Label `frames`, encode them with the speech, stamp the file; the file appears only when stamped."""
    profile = rt.settings.media
    n = speech.frame_count(profile.fps)
    mw = PolicyMiddleware(label=rt.settings.label, profile=profile, key=rt.key, producer=rt.settings.producer)
    shown = with_punctuation([w.text for w in speech.words], text)
    cues = caption_cues([(t, w.start, w.end) for t, w in zip(shown, speech.words, strict=True)])
    labelled = mw.label_frames(frames, cues=cues, banner_for=banner_for)
    with tempfile.TemporaryDirectory(prefix="studio-render-") as td:
        wav = Path(td) / "speech.wav"
        speech_to_wav(speech, wav)
        with atomic_path(out) as tmp:
            args = segment_encode_args(profile, audio_path=str(wav), out_path=str(tmp), frames=n,
                                       metadata=mw.metadata(produce_id=produce_id, propagator=channel_id,
                                                            propagate_id=show_id))
            pipe_frames(args, labelled, expect=n, shape=(profile.height, profile.width))
            stamp = mw.stamp(tmp, segment_id=segment_id, channel_id=channel_id, produce_id=produce_id,
                             banner=banner_for is not None)
    with atomic_path(out.with_suffix(".vtt")) as tmp:
        tmp.write_text(webvtt(cues))
    return stamp, n


def _discard(segment: Path) -> None:
    for path in (segment, segment.with_suffix(".vtt")):
        path.unlink(missing_ok=True)


def _fail(rt: Runtime, segment_id: str, exc: Exception, *, attempt: int) -> None:
    with session_scope(rt.engine) as s:
        row = s.get(Segment, segment_id)
        if row is not None and row.state == S.RENDERING and row.attempts == attempt:
            row.state = transition(row.state, S.FAILED)
            row.error = f"{exc.__class__.__name__}: {exc}"[:2000]
            row.updated_at = utcnow()
            audit.record(s, kind="segment.failed", subject_id=row.id, data={"error": row.error})


def render_slate(rt: Runtime, *, channel_id: str, out: Path, bundle: Path | None = None,
                 text: str = "Back in a moment") -> PolicyStamp:
    """What airs when nothing is ready, stamped like any segment: the avatar's own idle loop when its
    bundle is given (it starts and ends on the loop frame every segment starts and ends on, so the
    hand-over between idle and speaking never jumps), else a plain card. Labelled either way."""
    profile = rt.settings.media
    n = max(1, round(rt.settings.streamer.slate_seconds * profile.fps))
    if bundle is not None:
        frames = make_renderer(rt.settings.renderer, bundle, profile).idle(n)
    else:
        frames = (card.copy() for card in [_card(profile.width, profile.height, text)] * n)
    silence = Speech(samples=np.zeros(int(n * 16000 / profile.fps), np.float32), sample_rate=16000)
    produce_id = f"slate-{channel_id}"
    stamp, _ = encode_labelled(rt, speech=silence, frames=frames, out=out, segment_id=produce_id,
                               channel_id=channel_id, produce_id=produce_id, show_id="slate", banner_for=None)
    return stamp


def _card(w: int, h: int, text: str) -> np.ndarray:
    import cv2

    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    card = (np.array([18, 22, 48], np.float32) * (1 - y) + np.array([60, 24, 70], np.float32) * y)
    card = np.broadcast_to(card, (h, w, 3)).astype(np.uint8).copy()
    cv2.putText(card, text, (int(w * 0.12), h // 2), cv2.FONT_HERSHEY_DUPLEX, w / 720 * 1.3, (235, 235, 235),
                2, cv2.LINE_AA)
    return card
