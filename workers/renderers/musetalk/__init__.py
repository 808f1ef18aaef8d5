"""Renderer `musetalk` (GPU queue; torch, diffusers, transformers): MuseTalk 1.5's network paints the mouth.

The avatar keeps what the `footage` backend builds (the creator's calm base loop with its face track, the mouth
units for the idle loop) and adds, per base-loop frame, the face box and the VAE latents of its face crop with the
lower half blanked and whole (net.py), prepared once at ingest. A render computes the speech's Whisper tokens,
sends the spoken frames' latents and tokens to the process's one GPU thread (batcher.py), which batches them with
other channels' frames, and pastes each 256x256 face back into its base frame with the same feathered,
colour-matched blend as the footage backend, on the lower face only. Frames without speech get the idle loop's
closed mouth, so the mouth never moves in silence. Exactly one frame per 1/fps of audio, as every backend.

Weights: renderer.weights_path, MuseTalk's release layout (net.py); checked by `studio config check` and at worker
start. The heavy libraries are imported only when a model is built, so listing the backends stays cheap.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from studio.config import MediaProfile, RendererConfig
from workers.media.probe import frame_rms
from workers.renderers import footage as footage_backend
from workers.renderers import register
from workers.renderers.base import Backend, BuiltBundle, BundleError, BundleSource
from workers.renderers.footage import FootageRenderer, base_path, phoneme_target
from workers.renderers.musetalk.batcher import FrameBatcher
from workers.renderers.musetalk.net import FACE, SAMPLE_RATE, ModelError, MuseTalkNet, locate, release_problems
from workers.tts.base import Speech

__all__ = ["LATENTS", "BOXES", "MusetalkRenderer", "batcher_for", "build_bundle", "face_boxes", "voiced_frames"]

MUSETALK_VERSION = 1
LATENTS, BOXES = "musetalk_latents.npy", "musetalk_boxes.npy"
# The face box, in eye distances (the track's `scale`) from the mouth centre: MuseTalk's crop runs from the brows
# to below the chin, the mouth in its lower half.
BOX_SIDE, BOX_ABOVE_MOUTH = 2.4, 0.4
PREPARE_BATCH = 16

_batchers: dict[tuple, FrameBatcher] = {}
_batchers_lock = threading.Lock()
# A forked process (a Celery pool child) has none of its parent's threads: it starts its own GPU thread.
os.register_at_fork(after_in_child=_batchers.clear)


def batcher_for(config: RendererConfig) -> FrameBatcher:
    """The process's GPU thread for these weights and this device (one per process, shared by every render)."""
    weights = str(Path(config.weights_path).expanduser().resolve()) if config.weights_path else None
    key = (weights, config.device, config.batch_frames, config.unload_after_seconds, config.gpu_memory_mb)
    with _batchers_lock:
        found = _batchers.get(key)
        if found is None:
            found = _batchers[key] = FrameBatcher(lambda: MuseTalkNet.load(weights, config.device),
                                                  batch_frames=config.batch_frames,
                                                  unload_after=config.unload_after_seconds,
                                                  memory_mb=config.gpu_memory_mb)
        return found


def check(config: RendererConfig) -> list[str]:
    """The weights' layout, configs and every weight's name and shape, without loading a weight."""
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        return [f"the musetalk backend needs torch, diffusers and transformers (the `gpu` extra): {exc}"]
    return release_problems(config.weights_path)


# --- geometry and masks ---------------------------------------------------------------------------------------------
def face_boxes(track: np.ndarray, width: int, height: int) -> np.ndarray:
    """(n, 3) int: x0, y0 and side of each base frame's square face box, from the track's mouth centre (cx, cy) and
    eye distance (scale), kept inside the frame."""
    cx, cy, scale = track[:, 0], track[:, 1], track[:, 2]
    side = np.clip(np.round(BOX_SIDE * scale), 32, min(width, height)).astype(np.int64)
    x0 = np.clip(np.round(cx - side / 2), 0, width - side).astype(np.int64)
    y0 = np.clip(np.round(cy - BOX_ABOVE_MOUTH * scale - side / 2), 0, height - side).astype(np.int64)
    return np.stack([x0, y0, side], axis=1)


_masks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
MASK_CACHE = 64  # face box sizes kept: one avatar's face varies by a few pixels


def lower_face_mask(side: int) -> tuple[np.ndarray, np.ndarray]:
    """The blend mask over a face box: a feathered ellipse over mouth and jaw (the part the network paints), and
    the rim where colours are matched; cached by size."""
    hit = _masks.get(side)
    if hit is None:
        m = np.zeros((side, side), np.float32)
        cv2.ellipse(m, (side // 2, int(side * 0.72)), (int(side * 0.30), int(side * 0.21)), 0, 0, 360, 1.0, -1)
        k = max(3, int(side * 0.12) | 1)
        m = cv2.GaussianBlur(m, (k, k), 0)
        rim = ((m > 0.05) & (m < 0.6)).astype(np.uint8)
        if len(_masks) >= MASK_CACHE:  # face sizes past the bound are made afresh; the first ones stay
            return m[..., None], rim
        hit = _masks[side] = (m[..., None], rim)
    return hit


def paste_face(base: np.ndarray, face: np.ndarray, box: np.ndarray) -> np.ndarray:
    """`face` (256x256 RGB from the network) scaled into `box` of `base`, blended on the lower face with its colour
    matched to the base frame on the mask's rim (the footage backend's blend)."""
    x0, y0, side = (int(v) for v in box)
    alpha, rim = lower_face_mask(side)
    patch = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA if side < FACE else cv2.INTER_LINEAR)
    region = base[y0:y0 + side, x0:x0 + side]
    shift = np.array(cv2.mean(region, rim)[:3], np.float32) - np.array(cv2.mean(patch, rim)[:3], np.float32)
    under = region.astype(np.float32)
    out = base.copy()
    out[y0:y0 + side, x0:x0 + side] = np.clip(under + (patch.astype(np.float32) + shift - under) * alpha, 0, 255)
    return out


def voiced_frames(speech: Speech, fps: int, n: int) -> np.ndarray:
    """Which of the n frames have speech: the phonemes' timings for our own TTS, else the audio's level; one frame
    of margin each side, so the mouth opens as the sound starts and closes after it ends."""
    if speech.phonemes:
        voiced = phoneme_target(speech, fps, 0.0, 1.0) > 0.05
    else:
        rms = frame_rms(speech.samples.astype(np.float32), rate=speech.sample_rate, fps=fps, frames=n)
        voiced = rms > 0.12 * (float(np.percentile(rms, 95)) if n else 0.0)
    voiced = np.convolve(voiced.astype(np.int8), np.ones(3, np.int8), mode="same") > 0
    return voiced[:n]


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import resample_poly

    samples = np.asarray(samples, np.float32)
    if rate == SAMPLE_RATE:
        return samples
    g = np.gcd(rate, SAMPLE_RATE)
    return resample_poly(samples, SAMPLE_RATE // g, rate // g).astype(np.float32)


# --- the renderer ---------------------------------------------------------------------------------------------------
class MusetalkRenderer:
    type = "musetalk"

    def __init__(self, bundle: Path, profile: MediaProfile, config: RendererConfig):
        bundle = Path(bundle)
        self.footage = FootageRenderer(bundle, profile)
        self.profile = profile
        manifest = json.loads((bundle / "manifest.json").read_text())
        ours = manifest.get("musetalk") or {}
        if ours.get("version") != MUSETALK_VERSION:
            raise BundleError(f"bundle {bundle.name} has musetalk part version {ours.get('version')}, this renderer "
                              f"reads version {MUSETALK_VERSION}; rebuild the avatar from its footage")
        try:
            release = locate(config.weights_path)
        except ModelError as exc:
            raise BundleError(str(exc)) from None
        if ours.get("vae") != release.fingerprint():
            raise BundleError(f"bundle {bundle.name} was prepared with other VAE weights than {release.vae_weights}; "
                              "rebuild the avatar from its footage")
        try:
            self.latents = np.load(bundle / LATENTS, mmap_mode="r")
            self.boxes = np.load(bundle / BOXES)
        except (OSError, ValueError) as exc:
            raise BundleError(f"avatar bundle {bundle} has no usable musetalk latents: {exc}") from None
        if len(self.latents) != self.footage.loop_frames or len(self.boxes) != self.footage.loop_frames:
            raise BundleError(f"bundle {bundle.name}: {len(self.latents)} latents and {len(self.boxes)} face boxes "
                              f"for {self.footage.loop_frames} base frames; rebuild the avatar")
        self.batcher = batcher_for(config)

    def frame_count(self, speech: Speech) -> int:
        return self.footage.frame_count(speech)

    def idle(self, n: int) -> Iterator[np.ndarray]:
        return self.footage.idle(n)

    def render(self, speech: Speech) -> Iterator[np.ndarray]:
        """Exactly one frame per 1/fps of the speech, on the same base-loop path as every backend (starting and
        ending on loop frame 0); spoken frames get the network's mouth, silent ones the idle loop's closed mouth."""
        import torch

        fps, n = self.profile.fps, self.frame_count(speech)
        voiced = voiced_frames(speech, fps, n)
        loop = base_path(n) % self.footage.loop_frames
        bases = dict(self.footage.base_frames(0, int(loop.max()) + 1))
        f = self.footage
        shut = f.mouths[int(np.argmin(f.unit_open))]
        samples = to_16k(speech.samples, speech.sample_rate)
        tokens = self.batcher.call(lambda net: net.audio_tokens(samples, n, fps)) if voiced.any() else None
        step = self.batcher.batch_frames
        for start in range(0, n, step):
            span = range(start, min(n, start + step))
            spoken = [i for i in span if voiced[i]]
            faces = {}
            if spoken:
                lat = torch.from_numpy(np.stack([np.asarray(self.latents[loop[i]]) for i in spoken]))
                made = self.batcher.generate(lat, tokens[spoken])
                faces = dict(zip(spoken, made, strict=True))
            for i in span:
                j = int(loop[i])
                if i in faces:
                    yield paste_face(bases[j], faces[i], self.boxes[j])
                else:
                    yield f._paste(bases[j], shut, f.track[j])  # noqa: SLF001 - the idle loop's closed mouth


# --- the bundle -----------------------------------------------------------------------------------------------------
def build_bundle(src: BundleSource, out: Path) -> BuiltBundle:
    """The footage backend's bundle, then per base-loop frame the face box and its 8-channel face latents."""
    from workers.media.probe import iter_frames

    config = src.config
    try:
        release = locate(config.weights_path)
    except ModelError as exc:
        raise BundleError(str(exc)) from None
    built = footage_backend.build_bundle(src, out)
    track = json.loads((out / "base_track.json").read_text())
    poses = np.array([track["cx"], track["cy"], track["scale"]], np.float32).T
    p = src.profile
    boxes = face_boxes(poses, p.width, p.height)
    batcher = batcher_for(config)
    latents: list[np.ndarray] = []
    crops: list[np.ndarray] = []
    total = len(boxes)

    def flush() -> None:
        faces = np.stack(crops)
        latents.append(batcher.call(lambda net: net.encode_faces(faces)))
        crops.clear()
        src.progress("face latents", sum(len(x) for x in latents), total)

    for i, frame in iter_frames(out / "base.mp4"):
        if i >= total:
            break
        x0, y0, side = (int(v) for v in boxes[i])
        crops.append(cv2.resize(frame[y0:y0 + side, x0:x0 + side], (FACE, FACE), interpolation=cv2.INTER_AREA))
        if len(crops) == PREPARE_BATCH:
            flush()
    if crops:
        flush()
    stacked = np.concatenate(latents) if latents else np.zeros((0, 8, 1, 1), np.float16)
    if len(stacked) != total:
        raise BundleError(f"the base loop decoded to {len(stacked)} frames, its track has {total}")
    np.save(out / LATENTS, stacked.astype(np.float16))
    np.save(out / BOXES, boxes)
    return BuiltBundle(version=built.version, manifest={
        **built.manifest, "musetalk": {"version": MUSETALK_VERSION, "face": FACE, "vae": release.fingerprint()}})


BACKEND = register(Backend(name=MusetalkRenderer.type, queue_kind="gpu", build_bundle=build_bundle,
                           open=MusetalkRenderer, takes_config=True, check=check))
