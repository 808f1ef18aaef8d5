"""A procedural presenter that is no real person: a shaded pseudo-3-D face speaking espeak-ng audio.

The demo needs creator footage that passes the same ingest as real footage (mediapipe face detection
and face mesh, lips that follow the voice) without borrowing anyone's likeness, so the face is built
here from a seed. Everything static (wall, torso, the Lambert-shaded head sprite with eyes, brows and
hair) is drawn once per size/seed; a frame only redraws the jaw, lips and eyelids on a copy of the
head sprite and composites it with a small affine warp for natural head motion.
"""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
import tempfile
import wave
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from studio.storage import write_json_atomic

AA = cv2.LINE_AA
SKIN = np.array([(236, 196, 166), (222, 176, 140), (198, 150, 112), (166, 118, 86), (128, 88, 64)], float)
HAIR = np.array([(48, 34, 26), (86, 58, 36), (28, 24, 24), (128, 92, 56)], float)
IRIS = [(92, 60, 34), (60, 96, 130), (70, 100, 60), (50, 36, 24)]
CLOTHES = np.array([(40, 70, 120), (130, 40, 50), (50, 110, 90), (70, 70, 80), (200, 200, 205)], float)
LIGHT = np.array([-0.45, -0.55, 0.70]) / np.linalg.norm([-0.45, -0.55, 0.70])
HALFWAY = (LIGHT + [0, 0, 1]) / np.linalg.norm(LIGHT + [0, 0, 1])  # Blinn specular, viewer on +z
LASH = (25, 18, 16)
DEFAULT_SCRIPT = (
    "Hi everyone, and welcome back to the studio. "
    "Today I am showing you our new travel mug, and it keeps your coffee hot for twelve hours. "
    "The lid locks with one click, so nothing spills in your bag. "
    "It comes in five colours, and the steel is fully recyclable. "
    "Every order placed in the next hour ships for free. "
    "Drop your questions in the chat, and I will answer them live. "
    "And remember, I am a synthetic presenter made by software, not a real person."
)


def _look(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"skin": SKIN[rng.integers(len(SKIN))], "hair": HAIR[rng.integers(len(HAIR))],
            "iris": IRIS[rng.integers(len(IRIS))], "cloth": CLOTHES[rng.integers(len(CLOTHES))]}


def _paint(img: np.ndarray, mask: np.ndarray, color) -> None:
    """Alpha-paint `color` (a colour or a per-pixel image) through a [0,1] mask, in place."""
    m = mask[..., None]
    img[:] = img * (1 - m) + np.asarray(color, np.float32) * m


def _pts(arr) -> list[np.ndarray]:
    """Float points -> cv2 fixed point (shift=4): sub-pixel accurate anti-aliased edges."""
    return [np.round(np.asarray(arr) * 16).astype(np.int32)]


def _poly_mask(shape, pts) -> np.ndarray:
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(m, _pts(pts), 255, AA, 4)
    return m.astype(np.float32) / 255


def _layout(width: int, height: int, faces: int) -> list[tuple[float, float, float]]:
    """(centre x, centre y, scale s) per head; s is the half-width of the skull in pixels."""
    if faces not in (0, 1, 2):
        raise ValueError(f"faces must be 0, 1 or 2, not {faces}")
    if faces == 1:  # head about a third of the frame height: the face box stays well above 15 %
        return [(width / 2, height * 0.36, round(min(0.13 * height, 0.3 * width), 1))]
    s = round(min(0.075 * height, 0.17 * width), 1)
    return [(width * (0.27 + 0.46 * i), height * 0.42, s) for i in range(faces)]


@functools.lru_cache(maxsize=16)
def _head_sprite(s: float, seed: int) -> dict:
    """Shaded head (skull, ears, hair, eyes, brows, nose) as RGBA uint8, plus anchors for animation."""
    look = _look(seed)
    w, h = int(2.7 * s), int(3.4 * s)
    cx, cy = w / 2, 1.55 * s
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    X, Y = (xx - cx) / s, (yy - cy) / s

    def bump(x0, y0, sx, sy, amp):
        return amp * np.exp(-(((X - x0) / sx) ** 2) - ((Y - y0) / sy) ** 2)

    def shade(zz, color, spec=0.10):
        """Lambert + a little Blinn specular from the height field's normals."""
        gy, gx = np.gradient(zz * s)
        n = np.dstack([-gx, -gy, np.ones_like(gx)])
        n /= np.linalg.norm(n, axis=2, keepdims=True)
        lam, hi = np.clip(n @ LIGHT, 0, 1), spec * np.clip(n @ HALFWAY, 0, 1) ** 24
        return np.clip(np.asarray(color) * (0.38 + 0.72 * lam)[..., None] + 255 * hi[..., None], 0, 255)

    # Egg-shaped skull (an ellipsoid tapering to the chin) with relief bumps given as
    # (x, y, width x, width y, height): nose tip and wings, eye sockets, brow, cheeks, chin, lips.
    v = Y / 1.3
    r = np.hypot(X / (1 - 0.25 * np.clip(v, 0, 1) ** 2), v)
    relief = sum(bump(*b) for b in [(0, 0.42, 0.1, 0.07, 0.1), (-0.13, 0.48, 0.06, 0.05, 0.05),
                                    (0.13, 0.48, 0.06, 0.05, 0.05), (-0.4, -0.02, 0.2, 0.12, -0.07),
                                    (0.4, -0.02, 0.2, 0.12, -0.07), (0, -0.22, 0.6, 0.07, 0.03),
                                    (-0.5, 0.35, 0.25, 0.2, 0.05), (0.5, 0.35, 0.25, 0.2, 0.05),
                                    (0, 1.1, 0.25, 0.12, 0.05), (0, 0.8, 0.3, 0.08, 0.03)])
    relief += 0.1 * np.exp(-((X / 0.07) ** 2)) * np.clip((Y + 0.1) / 0.5, 0, 1) * (Y < 0.44)  # nose ridge
    z = 0.9 * np.sqrt(np.clip(1 - r**2, 0, None)) + relief * (r < 1)
    rgb, alpha = np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.float32)
    hr = np.hypot(X / 1.1, (Y + 0.15) / 1.27)
    strands = 1 + 0.12 * np.sin(46 * np.arctan2(Y + 1.0, X)) * np.sin(7 * Y + seed)  # combed from the crown
    hair = shade(np.sqrt(np.clip(1 - hr**2, 0, None)), look["hair"], 0.06) * strands[..., None]
    hair_cap = np.clip((1 - hr) * s, 0, 1)
    layers = [(hair_cap * np.clip((0.15 - Y) * s / 3, 0, 1), hair)]  # back of the hair, behind everything
    for side in (-1, 1):  # ears sit behind the skull outline
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, (int(cx + side * 0.98 * s), int(cy + 0.05 * s)), (int(0.15 * s), int(0.27 * s)),
                    0, 0, 360, 255, -1, AA)
        ear = m.astype(np.float32) / 255
        inner = ear * bump(side * 0.98, 0.05, 0.06, 0.13, 1)
        layers += [(ear, look["skin"] * 0.82), (inner, look["skin"] * 0.55)]
    nose_shadow = (1 - 0.35 * bump(0, 0.56, 0.12, 0.04, 1))[..., None]
    layers.append((np.clip((1 - r) * s, 0, 1), shade(z, look["skin"]) * nose_shadow))
    for mask, color in layers:
        _paint(rgb, mask, color)
        alpha = np.maximum(alpha, mask)
    hairline = -0.82 + 0.45 * X**2 + 0.06 * np.sin(4 * X + seed)
    _paint(rgb, hair_cap * np.clip((hairline - Y) * s / 3, 0, 1), hair)  # fringe over the forehead
    for side in (-1, 1):  # nostrils
        cv2.ellipse(rgb, (int(cx + side * 0.08 * s), int(cy + 0.5 * s)), (int(0.045 * s), int(0.02 * s)),
                    side * 15, 0, 360, tuple(look["skin"] * 0.5), -1, AA)
    img = np.ascontiguousarray(rgb.clip(0, 255).astype(np.uint8))
    lids = []
    for side in (-1, 1):
        ex, ey = cx + side * 0.4 * s, cy - 0.02 * s
        ax = np.linspace(-1, 1, 15)  # almond eye, its upper arc tilted a little towards the temple
        ex_ax = ex + 0.19 * s * ax
        upper = np.stack([ex_ax, ey - 0.085 * s * (1 - ax**2) ** 0.8 * (1 + 0.15 * side * ax)], 1)
        lower = np.stack([ex_ax, ey + 0.06 * s * (1 - ax**2) ** 0.9], 1)
        eye = img.copy()
        cv2.fillPoly(eye, _pts(np.vstack([upper, lower[::-1]])), (236, 232, 226), AA, 4)
        c, k = (int(ex * 16), int((ey + 0.005 * s) * 16)), 16 * s
        for radius, color in [(0.085, tuple(0.6 * np.array(look["iris"]))), (0.072, look["iris"]),
                              (0.036, (12, 10, 10))]:
            cv2.circle(eye, c, int(radius * k), color, -1, AA, 4)
        glint = (c[0] - int(0.03 * k), c[1] - int(0.03 * k))
        cv2.circle(eye, glint, int(0.016 * k), (250, 250, 250), -1, AA, 4)
        _paint(img, _poly_mask(img.shape, np.vstack([upper, lower[::-1]])), eye)  # iris clipped to the almond
        lid = img[int(ey - 0.15 * s), int(ex)].astype(float)  # skin just above the eye
        cv2.polylines(img, _pts(upper - [0, 0.05 * s]), False, tuple(0.8 * lid), 2, AA, 4)  # crease
        cv2.polylines(img, _pts(upper), False, LASH, max(2, int(0.025 * s)), AA, 4)
        cv2.polylines(img, _pts(lower), False, tuple(0.7 * lid), 1, AA, 4)
        bx = np.linspace(-1, 1, 12)
        brow = np.stack([ex + side * 0.24 * s * bx, ey - (0.26 + 0.06 * (1 - bx**2)) * s], 1)
        brow_lo = brow + np.stack([0 * bx, (0.05 - 0.02 * side * bx) * s], 1)  # thick inner end, thin tail
        cv2.fillPoly(img, _pts(np.vstack([brow, brow_lo[::-1]])), tuple(look["hair"] * 0.9), AA, 4)
        lids.append((upper, lower, tuple(lid)))
    # Jaw warp weights: the chin moves fully; the lip line and the jaw hinges by the ears barely move.
    y0 = int(cy + 0.7 * s)
    ramp = np.clip((Y[y0:] - 0.75) / 0.4, 0, 1)
    return {"rgba": np.dstack([img, (alpha * 255).astype(np.uint8)]), "cx": cx, "cy": cy,
            "mouth_y": cy + 0.8 * s, "lids": lids, "lip": tuple(0.45 * look["skin"] + [104, 44, 47]),
            "jaw_y0": y0, "jaw_xx": xx[y0:], "jaw_yy": yy[y0:],
            "jaw_w": ramp * ramp * (3 - 2 * ramp) * np.exp(-((X[y0:] / 0.6) ** 2))}


def _draw_mouth(img: np.ndarray, hd: dict, s: float, mouth_open: float) -> None:
    """Jaw drop (a smooth warp that pulls the chin down), then lips, teeth and the dark mouth."""
    mouth_open = float(np.clip(mouth_open, 0, 1))
    gap = mouth_open * 0.22 * s
    if gap > 0.2:
        map_y = hd["jaw_yy"] - (0.75 * gap) * hd["jaw_w"]
        img[hd["jaw_y0"]:] = cv2.remap(hd["rgba"], hd["jaw_xx"], map_y, cv2.INTER_LINEAR, borderValue=0)
    # Draw on a small contiguous patch around the mouth: far cheaper than touching the whole sprite.
    ox, oy = int(hd["cx"] - 0.5 * s), int(hd["mouth_y"] - 0.2 * s)
    rgb = np.ascontiguousarray(img[oy:oy + int(0.7 * s), ox:ox + int(s), :3])
    x = np.linspace(-1, 1, 21)
    px, my = hd["cx"] - ox + 0.36 * s * (1 - 0.08 * mouth_open) * x, hd["mouth_y"] - oy
    bow, arc = (1 - x**2) ** 0.7, np.sqrt(1 - x**2)
    in_up, in_lo = my - 0.25 * gap * bow, my + 0.75 * gap * bow
    out_up = in_up - 0.085 * s * arc * (1 - 0.3 * np.exp(-((x / 0.18) ** 2))) - 0.01 * s * bow  # cupid's bow
    out_lo = in_lo + 0.11 * s * arc

    def band(top, bottom, keep=slice(None)):
        xs = px[keep]
        return _pts(np.vstack([np.stack([xs, top[keep]], 1), np.stack([xs, bottom[keep]], 1)[::-1]]))

    lip = hd["lip"]
    if gap > 1:
        cv2.fillPoly(rgb, band(in_up, in_lo), (58, 18, 22), AA, 4)
        teeth = in_up + np.minimum(0.07 * s * arc, 0.45 * (in_lo - in_up))
        cv2.fillPoly(rgb, band(in_up, teeth, np.abs(x) < 0.72), (232, 228, 218), AA, 4)
    cv2.fillPoly(rgb, band(out_up, in_up), tuple(0.78 * c for c in lip), AA, 4)  # upper lip faces away
    cv2.fillPoly(rgb, band(in_lo, out_lo), lip, AA, 4)
    hl = np.abs(x) < 0.5
    cv2.polylines(rgb, _pts(np.stack([px[hl], (in_lo + 0.55 * (out_lo - in_lo))[hl]], 1)), False,
                  tuple(min(255, 1.25 * c) for c in lip), max(1, int(0.012 * s)), AA, 4)
    cv2.polylines(rgb, _pts(np.stack([px, in_up], 1)), False, (60, 25, 28), max(1, int(0.014 * s)), AA, 4)
    img[oy:oy + rgb.shape[0], ox:ox + rgb.shape[1], :3] = rgb


@functools.lru_cache(maxsize=16)
def _blink_starts(seed: int) -> np.ndarray:
    return np.cumsum(np.random.default_rng(seed + 1000).uniform(3, 5, 1024))


def _blink(t: float, seed: int) -> float:
    """Eyelid closure in [0,1]: a 160 ms blink every 3-5 s at seed-determined times."""
    starts = _blink_starts(seed)
    t = t % starts[-1]
    i = int(np.searchsorted(starts, t, side="right")) - 1
    dt = t - starts[i] if i >= 0 else 1.0
    return math.sin(math.pi * dt / 0.16) if dt < 0.16 else 0.0


def _draw_lids(img: np.ndarray, hd: dict, closure: float, s: float) -> None:
    for upper, lower, color in hd["lids"]:
        (ox, oy), (x1, y1) = (upper.min(0) - 0.05 * s).astype(int), (lower.max(0) + 0.05 * s).astype(int)
        rgb = np.ascontiguousarray(img[oy:y1, ox:x1, :3])
        up, edge = upper - [ox, oy], upper + (lower - upper) * closure - [ox, oy]
        cv2.fillPoly(rgb, _pts(np.vstack([up - [0, 0.02 * s], edge[::-1]])), color, AA, 4)
        cv2.polylines(rgb, _pts(edge), False, LASH, max(2, int(0.025 * s)), AA, 4)
        img[oy:oy + rgb.shape[0], ox:ox + rgb.shape[1], :3] = rgb


@functools.lru_cache(maxsize=8)
def _scene(width: int, height: int, seed: int, faces: int) -> np.ndarray:
    """Studio wall (vertical gradient, soft key light) plus neck and clothed torso per head."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    top, bottom = np.array([206, 200, 194], np.float32), np.array([120, 128, 140], np.float32)
    glow = np.exp(-(((xx - width * 0.45) / (0.6 * width)) ** 2) - ((yy - height * 0.3) / (0.5 * height)) ** 2)
    img = (top + (bottom - top) * (yy / height)[..., None]) * (0.8 + 0.25 * glow)[..., None]
    for i, (cx, cy, s) in enumerate(_layout(width, height, faces)):
        look = _look(seed + i)
        nx = np.clip((xx - cx) / (0.5 * s), -1, 1)
        chin_shadow = 1 - 0.4 * np.exp(-(((yy - cy - 1.2 * s) / (0.35 * s)) ** 2))
        neck = look["skin"] * (0.45 + 0.6 * np.sqrt(1 - nx**2) * chin_shadow)[..., None]
        _paint(img, np.clip(0.5 * s - np.abs(xx - cx), 0, 1) * (yy > cy + 0.5 * s), neck)
        # Shoulders: a gentle trapezius slope from the neck, then a rounded shoulder joint.
        sh_y, half, xo = cy + 1.7 * s, 2.25 * s, np.linspace(0, 2.25 * s, 40)
        edge = sh_y + 0.15 * xo + 0.75 * s - np.sqrt(((0.75 * s) ** 2 - (xo - 1.5 * s).clip(0) ** 2).clip(0))
        outline = np.vstack([np.stack([cx - xo[::-1], edge[::-1]], 1), np.stack([cx + xo, edge], 1),
                             [(cx + half, height + 1), (cx - half, height + 1)]])
        bx = np.clip((xx - cx) / half, -1, 1)
        cloth = look["cloth"] * (0.5 + 0.6 * np.sqrt(1 - bx**2))[..., None]
        _paint(img, _poly_mask(img.shape, outline), cloth)
        vneck = [(cx - 0.5 * s, sh_y - 0.05 * s), (cx, sh_y + 0.7 * s), (cx + 0.5 * s, sh_y - 0.05 * s)]
        _paint(img, _poly_mask(img.shape, vneck), neck)
        cv2.polylines(img, _pts(vneck), False, tuple(look["cloth"] * 0.6), max(2, int(0.05 * s)), AA, 4)
    return img.clip(0, 255).astype(np.uint8)


def render_face_frame(t: float, mouth_open: float, *, width: int, height: int, seed: int,
                      faces: int = 1) -> np.ndarray:
    """One RGB uint8 (height, width, 3) frame at time `t` s with the mouth `mouth_open` in [0,1] open.

    `faces` is 1 for the presenter, 2 for two smaller people side by side, 0 for an empty set.
    """
    frame = _scene(width, height, seed, faces).copy()
    for i, (cx, cy, s) in enumerate(_layout(width, height, faces)):
        hd = _head_sprite(s, seed + i)
        sp = hd["rgba"].copy()
        _draw_mouth(sp, hd, s, mouth_open)
        closure = _blink(t, seed + i)
        if closure > 0:
            _draw_lids(sp, hd, closure, s)
        ph, w = 1.7 * i + 0.37 * seed, 2 * math.pi * t  # each head sways on its own phase
        dx = s * (0.03 * math.sin(w / 5.3 + ph) + 0.012 * math.sin(w / 2.3 + 2 * ph))
        dy = s * (0.02 * math.sin(w / 3.7 + ph) + 0.008 * math.sin(w / 1.9))
        angle = 1.8 * math.sin(w / 6.1 + ph) + 0.6 * math.sin(w / 2.9)
        # Tilt about the neck so it reads as a head tilt, then place the sprite (clipped to the frame).
        m = cv2.getRotationMatrix2D((hd["cx"], hd["cy"] + 1.2 * s), angle, 1.0)
        ox, oy = cx - hd["cx"] + dx, cy - hd["cy"] + dy
        x0, y0 = max(0, int(ox) - 8), max(0, int(oy) - 8)
        x1, y1 = min(width, int(ox) + sp.shape[1] + 8), min(height, int(oy) + sp.shape[0] + 8)
        m[:, 2] += (ox - x0, oy - y0)
        warped = cv2.warpAffine(sp, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=0)
        a = warped[..., 3].astype(np.float32) * (1 / 255)
        roi = np.ascontiguousarray(frame[y0:y1, x0:x1])
        frame[y0:y1, x0:x1] = cv2.blendLinear(np.ascontiguousarray(warped[..., :3]), roi, a, 1 - a)
    return frame


def _speech(text: str, seconds: float, seed: int, tmp: Path, voice: str = "en-us") -> tuple[np.ndarray, int]:
    """espeak-ng speech, one sentence at a time with seeded 0.4-1.0 s pauses, looped to `seconds`.

    Sentence-by-sentence synthesis gives clear silence spans (about a quarter of the total), so the
    lip-sync check sees the mouth close as well as open.
    """
    clips, rate = [], 22050
    for i, sentence in enumerate(x for x in re.split(r"(?<=[.!?])\s+", text) if x):
        wav = tmp / f"sentence{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(wav), "--", sentence],
                       check=True, capture_output=True)
        with wave.open(str(wav)) as w:
            rate = w.getframerate()
            clips.append(np.frombuffer(w.readframes(w.getnframes()), np.int16))
    rng, total = np.random.default_rng(seed), round(seconds * rate)
    parts = [np.zeros(int(0.3 * rate), np.int16)]
    while sum(map(len, parts)) < total:
        pause = np.zeros(int(rng.uniform(0.4, 1.0) * rate), np.int16)
        parts += [clips[(len(parts) // 2) % len(clips)], pause]
    return np.concatenate(parts)[:total], rate


def _mouth_track(audio: np.ndarray, rate: int, fps: int, frames: int) -> np.ndarray:
    """Per-frame mouth opening in [0,1]: RMS per 1/fps window, lightly smoothed, 0 in silence."""
    edges = np.round(np.arange(frames + 1) * rate / fps).astype(int)
    energy = np.concatenate([[0.0], np.cumsum((audio.astype(np.float64) / 32768) ** 2)])
    rms = np.sqrt((energy[edges[1:]] - energy[edges[:-1]]) / np.maximum(np.diff(edges), 1))
    voiced = rms > 0.01
    smooth = np.convolve(rms, [0.25, 0.5, 0.25], "same")
    ref = np.percentile(smooth[voiced], 90) if voiced.any() else 1.0
    return np.where(voiced, np.clip(smooth / ref, 0, 1) ** 0.8, 0.0)


# Jaw and lip opening (0 closed .. 1 widest) by espeak-ng phoneme, from vowel height and place of articulation:
# its own finer table, not the renderer's (workers.renderers.footage.phoneme_openness), so an eval on articulated
# footage does not reward a renderer for sharing it.
_VOWEL_OPEN = {"a": 0.95, "A": 1.0, "0": 0.85, "O": 0.8, "V": 0.75, "E": 0.65, "3": 0.55, "@": 0.5, "e": 0.5,
               "o": 0.55, "I": 0.35, "U": 0.35, "i": 0.25, "u": 0.25}
_CONSONANT_OPEN = {"p": 0.0, "b": 0.0, "m": 0.0, "f": 0.08, "v": 0.08, "w": 0.15, "T": 0.2, "D": 0.2, "s": 0.2,
                   "z": 0.2, "t": 0.25, "d": 0.25, "n": 0.25, "l": 0.3, "r": 0.3, "S": 0.3, "Z": 0.3, "j": 0.3,
                   "k": 0.35, "g": 0.35, "N": 0.35, "h": 0.45, "?": 0.2}
MOUTH_MODELS = ("loudness", "articulation")


def _articulation(symbol: str) -> tuple[float, float]:
    """(opening at the phoneme's start, at its end): a diphthong glides from its first vowel to its second."""
    core = symbol.strip("'`,:;#-2")
    if not core:
        return 0.0, 0.0
    first = _VOWEL_OPEN.get(core[0], _CONSONANT_OPEN.get(core[0], 0.3))
    last = _VOWEL_OPEN.get(core[-1], first) if len(core) > 1 and core[0] in _VOWEL_OPEN else first
    return first, last


def _timed_speech(text: str, seconds: float, seed: int, voice: str = "en-us"
                  ) -> tuple[np.ndarray, int, list[tuple[str, float, float]]]:
    """As `_speech`, from libespeak-ng with its phoneme events: (int16 audio, rate, (phoneme, start, end) in s)."""
    from workers.tts.espeak import EspeakTTS

    tts = EspeakTTS(voice, 160)
    said = [tts.synthesize(x) for x in re.split(r"(?<=[.!?])\s+", text) if x]
    rate = said[0].sample_rate
    rng, total = np.random.default_rng(seed), round(seconds * rate)
    parts, phones, at = [np.zeros(int(0.3 * rate), np.float32)], [], int(0.3 * rate)
    k = 0
    while at < total:
        sp = said[k % len(said)]
        k += 1
        phones += [(p.text, at / rate + p.start, at / rate + p.end) for p in sp.phonemes]
        pause = np.zeros(int(rng.uniform(0.4, 1.0) * rate), np.float32)
        parts += [sp.samples, pause]
        at += len(sp.samples) + len(pause)
    audio = np.concatenate(parts)[:total]
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16), rate, [p for p in phones if p[1] < total / rate]


def _articulated_track(phones: list[tuple[str, float, float]], audio: np.ndarray, rate: int, fps: int,
                       frames: int) -> np.ndarray:
    """Per-frame mouth opening in [0,1] from the phonemes: each phoneme's opening (gliding through a diphthong) on a
    1 ms grid, smoothed (a 20 ms Gaussian) as the jaw and lips move between shapes, averaged over each frame, then
    scaled by 0.7-1.0 with the voice's level (a louder voice opens wider). Closed in pauses."""
    ms = np.zeros(int(np.ceil(frames * 1000 / fps)) + 1, np.float32)
    for symbol, start, end in phones:
        a, b = int(start * 1000), max(int(start * 1000) + 1, int(end * 1000))
        first, last = _articulation(symbol)
        ms[a:b] = np.linspace(first, last, b - a)[:len(ms[a:b])]
    ms = gaussian_filter1d(ms, 20.0, mode="constant")
    edges = np.round(np.arange(frames + 1) * 1000 / fps).astype(int)
    shape = np.array([ms[a:b].mean() for a, b in zip(edges[:-1], edges[1:], strict=True)])
    level = _mouth_track(np.pad(audio, (0, rate)), rate, fps, frames)
    return np.clip(shape * (0.7 + 0.3 * level), 0, 1)


def make_demo_footage(out_path: str | os.PathLike, *, seconds: float = 45.0, width: int = 720,
                      height: int = 1280, fps: int = 25, seed: int = 7, text: str | None = None,
                      faces: int = 1, with_audio: bool = True, mouth: str = "loudness", voice: str = "en-us",
                      phonemes_out: str | os.PathLike | None = None) -> Path:
    """Write an MP4 (H.264 yuv420p, plus AAC 48 kHz stereo when `with_audio`) of the synthetic
    presenter speaking `text` (default: a product-demo monologue); deterministic for a given seed.

    `mouth`: "loudness" opens the mouth with the voice's level alone; "articulation" shapes it from the spoken
    phonemes as a real jaw and lips move (closed on p/b/m, wide on "ah", nearly closed on "ee", with coarticulation)
    and scales it a little with the level, so a lip-sync eval can tell a renderer that follows the sounds from one
    that follows loudness. Its speech comes from libespeak-ng with phoneme events, whose samples can differ by a few
    milliseconds from run to run (workers.tts.espeak), so only "loudness" footage is bit-for-bit repeatable.
    `voice`: the espeak-ng voice that speaks (en-us; en-gb, en+f3 ... for another speaker).
    `phonemes_out`: write the phonemes that were spoken (and shaped the mouth) with their times there, as JSON
    (`{"phonemes": [[symbol, start s, end s], ...]}`, what `studio eval lipsync --phonemes` reads); only for
    "articulation" footage, whose speech comes with its phoneme times."""
    if mouth not in MOUTH_MODELS:
        raise ValueError(f"mouth must be one of {MOUTH_MODELS}, got {mouth!r}")
    if phonemes_out is not None and mouth != "articulation":
        raise ValueError(f"phoneme times are known only for mouth='articulation' footage, not {mouth!r}")
    from workers.tts.espeak import EspeakTTS

    EspeakTTS(voice, 160)  # SpeechError naming the voice now, not a failed espeak-ng run later
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = max(1, round(seconds * fps))
    with tempfile.TemporaryDirectory(prefix="synthface-") as tmp:
        tmp = Path(tmp)
        # The mouth follows the voice even for video-only footage: the face still "speaks".
        script = (text or "").strip() or DEFAULT_SCRIPT
        if mouth == "articulation":
            audio, rate, phones = _timed_speech(script, frames / fps, seed, voice)
            mouth_open = _articulated_track(phones, audio, rate, fps, frames)
        else:
            audio, rate = _speech(script, frames / fps, seed, tmp, voice)
            mouth_open = _mouth_track(audio, rate, fps, frames)
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0"]
        if with_audio:
            with wave.open(str(tmp / "voice.wav"), "wb") as w:
                w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
                w.writeframes(audio.tobytes())
            cmd += ["-i", str(tmp / "voice.wav"), "-map", "0:v:0", "-map", "1:a:0",
                    "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"]
        fd, part = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
        os.close(fd)
        cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
                "-g", str(2 * fps), "-movflags", "+faststart", "-f", "mp4", part]
        try:
            # stderr goes to a file, not a pipe, so a chatty ffmpeg can never block on a full pipe;
            # stdin is unbuffered so closing it after ffmpeg died cannot raise from a final flush.
            with open(tmp / "ffmpeg.log", "wb") as log:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log,
                                        bufsize=0)
                try:
                    for i in range(frames):
                        proc.stdin.write(render_face_frame(i / fps, mouth_open[i], width=width, height=height,
                                                           seed=seed, faces=faces))
                except BrokenPipeError:
                    pass  # ffmpeg died; its exit status and log say why
                finally:
                    proc.stdin.close()
                    rc = proc.wait()
            if rc != 0:
                raise RuntimeError(f"ffmpeg exited {rc}: {(tmp / 'ffmpeg.log').read_text(errors='replace')}")
            os.chmod(part, 0o644)  # mkstemp makes it owner-only; the footage is meant to be shared
            if phonemes_out is not None:
                write_json_atomic(Path(phonemes_out), {"phonemes": [[p, round(a, 4), round(b, 4)]
                                                                    for p, a, b in phones]})
            os.replace(part, out)
        except BaseException:
            Path(part).unlink(missing_ok=True)
            raise
    return out
