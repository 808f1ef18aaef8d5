"""Ingest: reference footage -> validated, analysed, versioned avatar bundle + Avatar row.

Validation happens before any file is written; the bundle directory appears only when complete,
and the Avatar row only after it, so a refused or failed upload leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy.engine import Engine

from studio import audit
from studio.config import IngestLimits, MediaProfile
from studio.db import session_scope
from studio.models import Avatar, Creator, new_id
from studio.storage import DataDir, atomic_dir, sha256_file, write_json_atomic
from workers.media.audio_features import fit_audio_map, frame_features
from workers.media.encode import encode_video_only
from workers.media.face import FaceAnalyzer, MouthPose
from workers.media.probe import FootageError, frame_rms, iter_frames, probe, read_audio
from workers.renderers.footage import BUNDLE_VERSION

ANALYSIS_HEIGHT = 640
Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


@dataclass
class Analysis:
    frames: int
    poses: list[MouthPose | None]
    faces_per_sample: list[int]
    face_heights: list[float]
    rms: np.ndarray
    audio: np.ndarray  # mono, 16 kHz
    scale: float  # analysis pixels -> source pixels


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


def crop_box(src_w: int, src_h: int, face_cx: float, face_cy: float, profile: MediaProfile) -> tuple[int, ...]:
    """Largest profile-aspect crop of the source, centred on the face as far as the frame allows."""
    aspect = profile.width / profile.height
    if src_w / src_h > aspect:
        ch, cw = src_h, int(round(src_h * aspect))
    else:
        cw, ch = src_w, int(round(src_w / aspect))
    x0 = int(np.clip(face_cx - cw / 2, 0, src_w - cw))
    y0 = int(np.clip(face_cy - ch / 2, 0, src_h - ch))
    return x0, y0, cw, ch


POSE_COLUMNS = ("cx", "cy", "width", "openness", "roll", "yaw", "pitch", "scale")
PIXEL_COLUMNS = (0, 1, 2, 7)  # columns in pixels, which follow the crop and resize to the profile


def _interp_poses(poses: list[MouthPose | None]) -> np.ndarray:
    """(n, len(POSE_COLUMNS)) array with gaps filled from neighbours."""
    arr = np.full((len(poses), len(POSE_COLUMNS)), np.nan)
    for i, p in enumerate(poses):
        if p is not None:
            arr[i] = (p.cx, p.cy, p.width, p.openness, p.roll, p.yaw, p.pitch, p.eye_dist)
    idx = np.arange(len(poses))
    for k in range(len(POSE_COLUMNS)):
        good = ~np.isnan(arr[:, k])
        arr[:, k] = np.interp(idx, idx[good], arr[good, k])
    return arr


def choose_base_window(openness: np.ndarray, rms: np.ndarray, length: int) -> int:
    """Start of the calmest window: mouth mostly closed, little speech, so the idle loop is quiet."""
    if len(openness) <= length:
        return 0
    score = openness / (np.max(openness) + 1e-6) + rms / (np.max(rms) + 1e-6)
    csum = np.concatenate([[0.0], np.cumsum(score)])
    sums = csum[length:] - csum[:-length]
    return int(np.argmin(sums))


def ingest_direct(*, engine: Engine, data: DataDir, profile: MediaProfile, limits: IngestLimits,
                  creator_id: str, name: str, footage: Path, renderer: str, progress: Progress = _no_progress,
                  publish_dir: Callable[[Path], str] | None = None) -> Avatar:
    """`renderer`: the backend the avatar's segments are rendered with (the config's renderer.type), which
    decides their render queue. `publish_dir(bundle)` puts the finished bundle into the media store and returns
    its key (the Avatar row holds the key, never a path); without it the bundle stays in `data` under its key."""
    footage = Path(footage)
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

    track = _interp_poses(a.poses)
    track[:, PIXEL_COLUMNS] *= a.scale  # source pixels
    x0, y0, cw, ch = crop_box(info.width, info.height, float(np.median(track[:, 0])),
                              float(np.median(track[:, 1]) - 0.1 * info.height), profile)
    k = profile.width / cw
    prof = track.copy()
    prof[:, 0] = (track[:, 0] - x0) * k
    prof[:, 1] = (track[:, 1] - y0) * k
    prof[:, 2] = track[:, 2] * k
    prof[:, 7] = track[:, 7] * k
    spread = prof[:, 2] / prof[:, 7]  # mouth width for the face's size: wide for "ee", narrow for "oo"

    loop_len = min(a.frames, int(limits.base_loop_seconds * info.fps))
    start = choose_base_window(prof[:, 3], a.rms, loop_len)
    units = pick_mouth_units(prof[:, 3], spread, limits.mouth_units)
    # Units are cut at one face scale (not one mouth width), so a wide or a rounded mouth stays so.
    ref_scale = float(np.median(prof[:, 7]))
    patch = int(round(float(np.max(spread[units])) * ref_scale * 1.9 / 2) * 2)
    # How this creator's mouth follows their voice: drives the mouth for recorded audio without timings.
    feats = frame_features(a.audio, 16000, info.fps, a.frames)
    audio_map = {"openness": fit_audio_map(feats, prof[:, 3]).to_dict(),
                 "spread": fit_audio_map(feats, spread).to_dict()}
    unit_set = set(units.tolist())
    wanted = set(range(start, start + loop_len)) | unit_set

    avatar_id = new_id()
    bundle = data.bundle_dir(avatar_id)
    base_frames: list[np.ndarray] = []
    crops: dict[int, np.ndarray] = {}
    with atomic_dir(bundle) as tmp:
        last = max(wanted)
        for i, rgb in iter_frames(footage):
            if i in wanted:
                frame = cv2.resize(rgb[y0:y0 + ch, x0:x0 + cw], (profile.width, profile.height),
                                   interpolation=cv2.INTER_AREA)
                if start <= i < start + loop_len:
                    base_frames.append(frame)
                if i in unit_set:
                    crops[i] = mouth_crop(frame, prof[i], ref_scale, patch)
            progress("extract", i + 1, last + 1)
            if i >= last:
                break
        # Ping-pong: forward then back, so the loop never jumps at its seam.
        loop = base_frames + base_frames[-2:0:-1]
        loop_track = np.concatenate([prof[start:start + loop_len], prof[start:start + loop_len][-2:0:-1]])
        encode_video_only(loop, tmp / "base.mp4", width=profile.width, height=profile.height,
                          fps=profile.fps, gop=profile.gop_frames)
        del base_frames, loop
        np.save(tmp / "mouths.npy", np.stack([crops[i] for i in units]))
        write_json_atomic(tmp / "units.json", {"openness": [float(prof[i, 3]) for i in units],
                                               "spread": [float(spread[i]) for i in units],
                                               "source_frames": [int(i) for i in units],
                                               "ref_scale": ref_scale, "patch": patch})
        write_json_atomic(tmp / "audio_map.json", audio_map)
        write_json_atomic(tmp / "base_track.json", {name: loop_track[:, k].tolist()
                                                    for k, name in enumerate(POSE_COLUMNS)})
        # The footage is not kept: what the consent-video check (POLICY C2) compares against is kept instead.
        from workers.consent_video import CONSENT_REFERENCE, footage_reference, save_reference

        progress("consent reference", 0, 1)
        save_reference(footage_reference(footage), tmp / CONSENT_REFERENCE)
        progress("consent reference", 1, 1)
        write_json_atomic(tmp / "analysis.json", {
            "fps": info.fps, **{name: prof[:, k].round(5).tolist() for k, name in enumerate(POSE_COLUMNS)},
            "speech_spans": speech_spans(a.rms, info.fps), "base_loop_start": start,
        })
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        write_json_atomic(tmp / "manifest.json", {
            "version": BUNDLE_VERSION, "avatar_id": avatar_id, "footage_sha256": sha256_file(footage),
            "profile": profile.model_dump(), "crop": [x0, y0, cw, ch], "fps": profile.fps,
            "loop_frames": len(loop_track), "files": files,
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


def speech_spans(rms: np.ndarray, fps: float, *, min_gap: float = 0.25) -> list[list[float]]:
    """[start, end] seconds of the footage's own speech; pauses shorter than `min_gap` do not split."""
    loud = rms > 0.15 * (np.percentile(rms, 95) if len(rms) else 0.0)
    spans: list[list[float]] = []
    for i in np.flatnonzero(loud):
        t = i / fps
        if spans and t - spans[-1][1] <= min_gap:
            spans[-1][1] = round(t + 1 / fps, 3)
        else:
            spans.append([round(t, 3), round(t + 1 / fps, 3)])
    return spans


def pick_mouth_units(openness: np.ndarray, spread: np.ndarray, count: int) -> np.ndarray:
    """Frames whose mouth shapes (openness, spread) cover what the footage shows, closed mouth first.

    Farthest-point sampling on the two shape axes, each scaled to its 5-95% range: every pick is the
    shape least like those already picked, so rare shapes (a wide "ee", a round "oo") are kept.
    """
    def unit_range(x: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(x, [5, 95])
        return (x - lo) / max(hi - lo, 1e-6)

    pts = np.stack([unit_range(openness), unit_range(spread)], axis=1)
    picks = [int(np.argmin(openness))]
    dist = np.linalg.norm(pts - pts[picks[0]], axis=1)
    while len(picks) < min(count, len(pts)):
        nxt = int(np.argmax(dist))
        if dist[nxt] <= 0:
            break
        picks.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(pts - pts[nxt], axis=1))
    picks_arr = np.array(picks)
    return picks_arr[np.argsort(openness[picks_arr], kind="stable")]


def mouth_crop(frame: np.ndarray, pose: np.ndarray, ref_scale: float, patch: int) -> np.ndarray:
    """A square patch centred on the mouth, levelled (roll undone) and scaled to a common face size
    (`ref_scale` pixels between the eyes): the renderer then only turns and scales it to each base frame."""
    cx, cy, roll, scale = float(pose[0]), float(pose[1]), float(pose[4]), float(pose[7])
    m = cv2.getRotationMatrix2D((cx, cy), roll, ref_scale / max(scale, 1.0)).astype(np.float32)
    m[:, 2] += (patch / 2 - cx, patch / 2 - cy)
    return cv2.warpAffine(frame, m, (patch, patch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
