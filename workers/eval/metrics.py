"""Lip-sync metrics: one rendered (or baseline) frame stream against the held-out real frames.

Every measure uses the same face mesh (mediapipe lip landmarks) on both sides, so mesh bias cancels:
  openness     inner-lip gap (landmarks 13-14) per mouth width (61-291), per frame
  correlation  Pearson of the candidate's and the reference's openness series
  lmd          mean distance between corresponding lip landmarks after removing each frame's lip
               centroid, in % of the reference's mouth width
  silent_closed share of silent frames in which the candidate's mouth is closed
  seam         mean |image gradient across the blend ring| in the candidate / the same in the reference
  psnr_outside PSNR over the pixels the renderer's mouth blend never touches
  best_lag     the shift of the candidate's openness series (whole frames, within MAX_LAG) that correlates best with
               the reference's: positive = the candidate's mouth moves later than the real one
Frames where either mesh fails are dropped from the landmark measures and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from workers.media.face import LIP_LANDMARKS

_UP, _LOW = LIP_LANDMARKS.index(13), LIP_LANDMARKS.index(14)
_LEFT, _RIGHT = LIP_LANDMARKS.index(61), LIP_LANDMARKS.index(291)
CLOSED_RULE = "openness below min + 0.25 * (95th percentile - min) of the reference's openness"
MAX_LAG = 5  # frames either way: 200 ms at 25 fps, beyond any offset a renderer could have
SILENCE_RULE = "audio RMS of the frame's 1/fps window below 15% of the held-out audio's 95th percentile"


def openness(lips: np.ndarray) -> float:
    return float(np.linalg.norm(lips[_UP] - lips[_LOW]) / max(np.linalg.norm(lips[_LEFT] - lips[_RIGHT]), 1e-6))


def lmd_pct(ref: np.ndarray, cand: np.ndarray) -> float:
    """Landmark distance after removing translation, in % of the reference's mouth width."""
    width = max(float(np.linalg.norm(ref[_LEFT] - ref[_RIGHT])), 1e-6)
    d = (cand - cand.mean(axis=0)) - (ref - ref.mean(axis=0))
    return float(np.linalg.norm(d, axis=1).mean() / width * 100)


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """None when undefined (fewer than 3 frames, or a constant series)."""
    if len(a) < 3 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def best_lag(cand: list[np.ndarray | None], ref: list[np.ndarray | None], *, max_lag: int = MAX_LAG
             ) -> tuple[int | None, float | None]:
    """(lag, correlation at it): the shift in frames that makes the candidate's openness follow the reference's
    best, positive when the candidate is late (its frame i + lag matches real frame i). None when undefined."""
    co = np.array([np.nan if x is None else openness(x) for x in cand])
    ro = np.array([np.nan if x is None else openness(x) for x in ref])
    best: tuple[int | None, float | None] = (None, None)
    for lag in range(-max_lag, max_lag + 1):
        c, r = (co[lag:], ro[:len(ro) - lag]) if lag >= 0 else (co[:lag], ro[-lag:])
        both = ~np.isnan(c) & ~np.isnan(r)
        corr = pearson(c[both], r[both])
        if corr is not None and (best[1] is None or corr > best[1]):
            best = (lag, corr)
    return best


def silent_frames(rms: np.ndarray) -> np.ndarray:
    return rms < 0.15 * float(np.percentile(rms, 95)) if len(rms) else np.zeros(0, bool)


def closed_level(ref_openness: np.ndarray) -> float:
    lo = float(np.min(ref_openness))
    return lo + 0.25 * (float(np.percentile(ref_openness, 95)) - lo)


class BlendGeometry:
    """Where the renderer blends its mouth patch on base-loop frame j, from the bundle's base track.

    Mirrors the renderer's paste: a `patch`-pixel square mask (the renderer's feather mask) scaled by
    face scale / the units' reference scale and centred on the track's mouth (the roll is ignored: the ring is
    an ellipse turned by a few degrees at most). The ring is the mask's soft rim
    (0.1 < alpha < 0.9) with its normal (the mask gradient); `outside` is everything alpha leaves at 0.
    """

    def __init__(self, track: np.ndarray, *, ref_scale: float, patch: int, frame_hw: tuple[int, int], mask_fn):
        self.track, self.ref_scale, self.patch, self.hw = track, ref_scale, patch, frame_hw
        self._mask = np.asarray(mask_fn(patch), np.float32).reshape(patch, patch)
        self._cache: dict[int, tuple] = {}

    def _scaled(self, s: int) -> tuple:
        if s not in self._cache:
            m = cv2.resize(self._mask, (s, s))
            gx, gy = cv2.Sobel(m, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(m, cv2.CV_32F, 0, 1, ksize=3)
            norm = np.hypot(gx, gy) + 1e-12
            ring = (m > 0.1) & (m < 0.9)
            support = cv2.dilate((m > 0.002).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            self._cache[s] = (ring, gx / norm, gy / norm, support)
        return self._cache[s]

    def place(self, j: int) -> tuple[int, int, int] | None:
        cx, cy, w = (float(v) for v in self.track[j % len(self.track)][:3])
        s = max(8, int(round(self.patch * w / self.ref_scale)))
        x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
        h, wd = self.hw
        return None if x0 < 0 or y0 < 0 or x0 + s > wd or y0 + s > h else (x0, y0, s)

    def ring_jump(self, rgb: np.ndarray, j: int) -> float | None:
        """Mean |gradient . ring normal| of the grey image over the blend ring of base-loop frame j."""
        at = self.place(j)
        if at is None:
            return None
        x0, y0, s = at
        ring, nx, ny, _ = self._scaled(s)
        grey = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y0 + s, x0:x0 + s]), cv2.COLOR_RGB2GRAY).astype(np.float32)
        gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        return float(np.abs(gx * nx + gy * ny)[ring].mean()) if ring.any() else None

    def outside(self, j: int) -> np.ndarray:
        keep = np.ones(self.hw, bool)
        at = self.place(j)
        if at is not None:
            x0, y0, s = at
            keep[y0:y0 + s, x0:x0 + s] &= ~self._scaled(s)[3]
        return keep


@dataclass
class Stream:
    """Per-frame measurements of one frame stream (a candidate, or the reference)."""

    lips: list[np.ndarray | None] = field(default_factory=list)
    ring: list[float | None] = field(default_factory=list)
    sse: float = 0.0
    pixels: int = 0

    def add(self, lips: np.ndarray | None, ring: float | None) -> None:
        self.lips.append(lips)
        self.ring.append(ring)

    def add_error(self, cand: np.ndarray, ref: np.ndarray, keep: np.ndarray) -> None:
        d = cand[keep].astype(np.float32) - ref[keep].astype(np.float32)
        self.sse += float(np.sum(d * d))
        self.pixels += int(d.size)


def reference_levels(ref: Stream) -> dict:
    op = np.array([openness(x) for x in ref.lips if x is not None])
    if len(op) == 0:
        raise ValueError("no face mesh in any held-out reference frame")
    return {"closed_level": closed_level(op), "min_openness": float(op.min())}


def summarise(cand: Stream, ref: Stream, silent: np.ndarray, closed: float) -> dict:
    both = [i for i, (c, r) in enumerate(zip(cand.lips, ref.lips, strict=True)) if c is not None and r is not None]
    co = np.array([openness(cand.lips[i]) for i in both])
    ro = np.array([openness(ref.lips[i]) for i in both])
    corr = pearson(co, ro)
    lmd = float(np.mean([lmd_pct(ref.lips[i], cand.lips[i]) for i in both])) if both else None
    quiet = [i for i in range(len(cand.lips)) if silent[i] and cand.lips[i] is not None]
    shut = float(np.mean([openness(cand.lips[i]) < closed for i in quiet])) if quiet else None
    pairs = [(c, r) for c, r in zip(cand.ring, ref.ring, strict=True) if c is not None and r is not None]
    seam = float(np.mean([c for c, _ in pairs]) / max(np.mean([r for _, r in pairs]), 1e-9)) if pairs else None
    lag, lag_corr = best_lag(cand.lips, ref.lips)
    mse = cand.sse / max(cand.pixels, 1)
    psnr = min(100.0, float(10 * np.log10(255.0 ** 2 / mse))) if mse > 0 else 100.0  # capped: JSON has no inf
    return {
        "correlation": corr, "lmd_pct": lmd, "silent_closed": shut, "seam": seam, "psnr_outside_db": psnr,
        "frames_compared": len(both), "mesh_dropped": len(cand.lips) - len(both), "silent_frames_measured": len(quiet),
        "mean_openness": float(co.mean()) if len(co) else None,
        "best_lag_frames": lag, "correlation_at_best_lag": lag_corr,
    }
