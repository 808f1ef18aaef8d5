"""Ingest: reference footage -> validated, analysed, versioned avatar bundle + Avatar row.

Ingest validates and analyses the footage; the avatar's renderer backend builds its own part of the bundle from
that (workers/renderers: `Backend.build_bundle`); ingest adds what every bundle holds (the consent-video reference
and the manifest) and writes the Avatar row. Validation happens before any file is written; the bundle directory
appears only when complete, and the Avatar row only after it, so a refused or failed upload leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

from studio import audit
from studio.config import IngestLimits, MediaProfile, RendererConfig
from studio.db import session_scope
from studio.models import Avatar, Creator, new_id
from studio.storage import DataDir, atomic_dir, sha256_file, write_json_atomic
from workers.media.face import FaceAnalyzer, MouthPose
from workers.media.probe import FootageError, frame_rms, iter_frames, probe, read_audio
from workers.renderers import backend
from workers.renderers.base import Analysis, BundleError, BundleSource, Progress

__all__ = ["Analysis", "analyse", "ingest_direct", "validate"]

ANALYSIS_HEIGHT = 640


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def analyse(path: Path, limits: IngestLimits, *, fps: float, src_h: int, src_w: int, expected_frames: int,
            progress: Progress) -> Analysis:
    scale = src_h / ANALYSIS_HEIGHT
    aw = int(round(src_w / scale / 2) * 2)
    poses: list[MouthPose | None] = []
    faces: list[int] = []
    heights: list[float] = []
    with FaceAnalyzer() as fa:
        for i, rgb in iter_frames(path, width=aw, height=ANALYSIS_HEIGHT):
            poses.append(fa.mouth(rgb))
            if i % limits.sample_every == 0:
                boxes = fa.detect(rgb)
                faces.append(len(boxes))
                heights.extend(b.h for b in boxes)
            progress("analyse", i + 1, expected_frames)
    audio = read_audio(path)
    rms = frame_rms(audio, rate=16000, fps=fps, frames=len(poses))
    return Analysis(len(poses), poses, faces, heights, rms, audio, scale)


def validate(a: Analysis, limits: IngestLimits, name: str) -> None:
    sampled = len(a.faces_per_sample)
    if sampled == 0:
        raise FootageError(f"{name}: no frames could be decoded")
    with_face = sum(1 for n in a.faces_per_sample if n >= 1)
    if with_face == 0:
        raise FootageError(f"{name}: no face found in any of {sampled} sampled frames")
    multi = sum(1 for n in a.faces_per_sample if n >= 2)
    if multi > 0.1 * sampled:
        raise FootageError(f"{name}: two or more faces in {multi} of {sampled} sampled frames; "
                           "the footage must show the creator alone")
    share = with_face / sampled
    if share < limits.min_face_share:
        raise FootageError(f"{name}: face found in {share:.0%} of sampled frames, needs "
                           f"{limits.min_face_share:.0%}; keep the face in view all the time")
    median_h = float(np.median(a.face_heights))
    if median_h < limits.min_face_height:
        raise FootageError(f"{name}: face is {median_h:.0%} of the frame height, needs at least "
                           f"{limits.min_face_height:.0%}; move closer to the camera")
    meshed = sum(p is not None for p in a.poses) / max(1, a.frames)
    if meshed < limits.min_face_share:
        raise FootageError(f"{name}: face landmarks found in {meshed:.0%} of frames, needs "
                           f"{limits.min_face_share:.0%}; face the camera with the mouth visible")
    loud = float(np.percentile(a.rms, 95)) if len(a.rms) else 0.0
    if loud < 0.003:
        raise FootageError(f"{name}: the audio track is silent (95th percentile level {loud:.4f}); "
                           "the footage must include the creator speaking")
    speech = float(np.mean(a.rms > 0.15 * loud))
    if speech < limits.min_speech_share:
        raise FootageError(f"{name}: speech in {speech:.0%} of the footage, needs "
                           f"{limits.min_speech_share:.0%}")


def ingest_direct(*, engine: Engine, data: DataDir, profile: MediaProfile, limits: IngestLimits,
                  creator_id: str, name: str, footage: Path, renderer: str | RendererConfig,
                  progress: Progress = _no_progress, publish_dir: Callable[[Path], str] | None = None) -> Avatar:
    """`renderer`: the backend the avatar's segments are rendered with (the config's renderer.type), which
    decides their render queue; or the whole renderer settings (`renderer.*`), which a backend with weights reads.
    `publish_dir(bundle)` puts the finished bundle into the media store and returns its key
    (the Avatar row holds the key, never a path); without it the bundle stays in `data` under its key."""
    footage = Path(footage)
    config = renderer if isinstance(renderer, RendererConfig) else RendererConfig(type=renderer)
    renderer = config.type
    try:
        chosen = backend(renderer)
    except BundleError as exc:
        raise FootageError(f"cannot build avatar {name!r}: {exc}") from None
    info = probe(footage)
    if not info.has_audio:
        raise FootageError(f"{footage.name}: no audio track; the footage must include the creator's voice")
    if not limits.min_seconds <= info.duration <= limits.max_seconds:
        raise FootageError(f"{footage.name}: {info.duration:.1f} s long, must be {limits.min_seconds:.0f}–"
                           f"{limits.max_seconds:.0f} s (about one minute is best)")
    if info.fps < limits.min_fps:
        raise FootageError(f"{footage.name}: {info.fps:.1f} fps, needs at least {limits.min_fps:.0f} fps")
    with session_scope(engine) as s:
        if s.get(Creator, creator_id) is None:
            raise FootageError(f"creator {creator_id!r} does not exist")

    a = analyse(footage, limits, fps=info.fps, src_h=info.height, src_w=info.width,
                expected_frames=round(info.duration * info.fps), progress=progress)
    if a.frames < 0.9 * info.duration * info.fps:
        raise FootageError(f"{footage.name}: only {a.frames} frames decode of about "
                           f"{info.duration * info.fps:.0f} declared; the file is truncated")
    validate(a, limits, footage.name)

    avatar_id = new_id()
    bundle = data.bundle_dir(avatar_id)
    src = BundleSource(footage=footage, info=info, analysis=a, profile=profile, limits=limits, progress=progress,
                       config=config)
    with atomic_dir(bundle) as tmp:
        built = chosen.build_bundle(src, tmp)
        # The footage is not kept: what the consent-video check (POLICY C2) compares against is kept instead.
        from workers.consent.video import CONSENT_REFERENCE, footage_reference, save_reference

        progress("consent reference", 0, 1)
        save_reference(footage_reference(footage), tmp / CONSENT_REFERENCE)
        progress("consent reference", 1, 1)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        write_json_atomic(tmp / "manifest.json", {
            "version": built.version, "avatar_id": avatar_id, "footage_sha256": sha256_file(footage),
            **built.manifest, "files": files,
        })
    try:
        key = publish_dir(bundle) if publish_dir is not None else bundle.relative_to(data.root).as_posix()
        with session_scope(engine) as s:
            avatar = Avatar(id=avatar_id, creator_id=creator_id, name=name, bundle_path=key,
                            footage_sha256=json.loads((bundle / "manifest.json").read_text())["footage_sha256"],
                            width=info.width, height=info.height, fps=info.fps, duration_s=info.duration,
                            renderer=renderer)
            s.add(avatar)
            audit.record(s, kind="avatar.created", subject_id=avatar_id,
                         data={"creator_id": creator_id, "footage_sha256": avatar.footage_sha256,
                               "renderer": renderer})
    except BaseException:
        shutil.rmtree(bundle, ignore_errors=True)
        raise
    return avatar
