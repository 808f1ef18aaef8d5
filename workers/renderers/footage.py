"""Renderer `footage` (default, CPU, no weights).

The creator's own footage is the base loop (natural head motion and blinks); for each output frame a
mouth unit cut from the footage is chosen to match the speech and blended onto the base frame's mouth
with a feathered, colour-matched mask. Exactly one frame per 1/fps of audio, so A/V never drift.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from studio.config import MediaProfile
from workers.media.probe import iter_frames
from workers.tts.base import Speech


class BundleError(RuntimeError):
    """The avatar bundle is missing, incomplete, or was made for another media profile."""


def target_openness(speech: Speech, fps: int, lo: float, hi: float) -> np.ndarray:
    """Mouth opening wanted per frame: loudness inside words, closed outside them."""
    n = speech.frame_count(fps)
    hop = speech.sample_rate / fps
    x = speech.samples.astype(np.float32)
    rms = np.array([np.sqrt(np.mean(x[int(i * hop):int((i + 1) * hop)] ** 2) + 1e-12) for i in range(n)])
    voiced = np.zeros(n, bool)
    for w in speech.words:
        voiced[int(max(0.0, w.start - 0.03) * fps):int(np.ceil((w.end + 0.03) * fps))] = True
    ref = np.percentile(rms[voiced], 90) if voiced.any() else 1.0
    level = np.clip(rms / max(ref, 1e-6), 0, 1) * voiced
    level = np.convolve(level, [0.25, 0.5, 0.25], mode="same")
    return lo + level * (hi - lo)


def choose_units(target: np.ndarray, unit_open: np.ndarray, *, smooth: float = 0.5) -> np.ndarray:
    """Viterbi path over mouth units: match the target, penalise jumps between frames."""
    n, k = len(target), len(unit_open)
    match = (unit_open[None, :] - target[:, None]) ** 2
    jump = smooth * (unit_open[:, None] - unit_open[None, :]) ** 2
    cost = match[0].copy()
    back = np.zeros((n, k), dtype=np.int32)
    for t in range(1, n):
        total = cost[:, None] + jump
        back[t] = np.argmin(total, axis=0)
        cost = total[back[t], np.arange(k)] + match[t]
    path = np.empty(n, dtype=np.int32)
    path[-1] = int(np.argmin(cost))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def feather_mask(size: int) -> np.ndarray:
    """Soft ellipse: opaque over the lips and jaw line, fading to nothing well inside the patch edge."""
    m = np.zeros((size, size), np.float32)
    cv2.ellipse(m, (size // 2, int(size * 0.54)), (int(size * 0.34), int(size * 0.30)), 0, 0, 360, 1.0, -1)
    k = max(3, int(size * 0.16) | 1)
    return cv2.GaussianBlur(m, (k, k), 0)[..., None]


class FootageRenderer:
    type = "footage"

    def __init__(self, bundle: Path, profile: MediaProfile):
        bundle = Path(bundle)
        try:
            manifest = json.loads((bundle / "manifest.json").read_text())
            track = json.loads((bundle / "base_track.json").read_text())
            units = json.loads((bundle / "units.json").read_text())
            self.mouths = np.load(bundle / "mouths.npy")
        except (OSError, ValueError) as exc:
            raise BundleError(f"avatar bundle {bundle} is unreadable: {exc}") from None
        size = (manifest["profile"]["width"], manifest["profile"]["height"], manifest["fps"])
        if size != (profile.width, profile.height, profile.fps):
            raise BundleError(f"bundle {bundle.name} is {size[0]}x{size[1]}@{size[2]}, channel profile is "
                              f"{profile.width}x{profile.height}@{profile.fps}; rebuild the avatar")
        self.base = bundle / "base.mp4"
        self.profile = profile
        self.loop_frames = int(manifest["loop_frames"])
        self.track = np.array([track["cx"], track["cy"], track["width"]], dtype=np.float32).T
        self.unit_open = np.array(units["openness"], dtype=np.float32)
        self.mouth_w = float(units["mouth_width"])
        self.mask = feather_mask(self.mouths.shape[1])

    def frame_count(self, speech: Speech) -> int:
        return speech.frame_count(self.profile.fps)

    def render(self, speech: Speech, *, start_frame: int = 0) -> Iterator[np.ndarray]:
        lo, hi = float(self.unit_open.min()), float(np.percentile(self.unit_open, 90))
        target = target_openness(speech, self.profile.fps, lo, hi)
        path = choose_units(target, self.unit_open)
        for i, (j, base) in enumerate(self._base_frames(start_frame, len(path))):
            yield self._paste(base, self.mouths[path[i]], self.track[j])

    def _base_frames(self, start: int, count: int) -> Iterator[tuple[int, np.ndarray]]:
        j = start % self.loop_frames
        produced = 0
        while produced < count:
            for idx, frame in iter_frames(self.base, start=j):
                yield idx, frame
                produced += 1
                if produced == count:
                    return
            j = 0

    def _paste(self, base: np.ndarray, unit: np.ndarray, pose: np.ndarray) -> np.ndarray:
        cx, cy, width = float(pose[0]), float(pose[1]), float(pose[2])
        size = unit.shape[0]
        scaled = max(8, int(round(size * width / self.mouth_w)))
        patch = cv2.resize(unit, (scaled, scaled), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        mask = cv2.resize(self.mask, (scaled, scaled))[..., None]
        x0, y0 = int(round(cx - scaled / 2)), int(round(cy - scaled / 2))
        h, w = base.shape[:2]
        if x0 < 0 or y0 < 0 or x0 + scaled > w or y0 + scaled > h:
            return base
        region = base[y0:y0 + scaled, x0:x0 + scaled].astype(np.float32)
        # Match colour on the mask's soft rim so lighting changes in the base loop leave no seam.
        rim = ((mask > 0.05) & (mask < 0.6))[..., 0]
        if rim.any():
            patch += region[rim].mean(axis=0) - patch[rim].mean(axis=0)
        out = base.copy()
        out[y0:y0 + scaled, x0:x0 + scaled] = np.clip(patch * mask + region * (1 - mask), 0, 255).astype(np.uint8)
        return out
