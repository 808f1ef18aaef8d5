"""Finding the mark in a clip that was edited after it left (POLICY M3, M5): mirrored, cropped, padded into
another aspect ratio, cut to another aspect ratio, shrunk into a picture-in-picture, its contrast, brightness or
gamma changed.

The mark is laid out relative to the picture, so scaling, aspect stretches and frame-rate or speed changes
need nothing. For the rest the detector searches, as template-free watermark detectors do, over a bounded set
of hypotheses of where the marked picture lies in the frame and how its luma was changed:

1. the frame, and the picture inside flat bars (letterbox, pillarbox) when there are any;
2. crops of each of those by 0-15 % on every side (steps of one cell), mirrored or not, each at a few luma gains;
3. a band of a 9:16 or 16:9 picture shown at the frame's aspect (a 16:9 cut out of 9:16 keeps 32 % of its
   height), anywhere along it, at half a cell a step, mirrored or not, at the same gains;
4. a picture-in-picture at half size anywhere in the frame, mirrored or not, at half a cell a step (at one cell
   a step it was missed: the statistic's basin is narrower than that), at unit gain only;
5. the best few of all those refined: moved whole by up to half a cell at an eighth of a cell a step with finer
   gains, resized by up to half a percent, then every edge by half a cell down to a thirty-second (climbing at
   each step), then gammas.
Every hypothesis of 2-4 is scored on PRUNE_FRAMES frames first, and the best PRUNE_KEEP of each mirroring on the
ranking frames; refinement reads SEARCH_FRAMES frames.

Versions 1 and 2 (marks written before version 3) are read as they are and mirrored only.

Hypotheses are ranked by a keyed statistic that needs no payload: how close the projections lie to the lattice
of either bit value (cos of twice the phase). Unmarked video and a wrong hypothesis put them anywhere, so the
statistic is about 0; the marked picture under the right one puts them near a lattice point. Only the best
CANDIDATES hypotheses (and the picture inside bars, mirrored or not) are then decoded over every frame, each
counting only when its keyed tag verifies: with the three versions read as they are and the two older ones
mirrored, at most 11 decodes a clip, so the false-positive bound is 11 x 2^-32 per clip, and the score threshold
lowers it further. The search reads SEARCH_FRAMES frames; its cost is fixed whatever the clip's length (6-13 s a
clip on this project's 2-core machine, decoding included; bench/watermark.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import replace

import cv2
import numpy as np

from workers.media.watermark import (
    COLS,
    NO_EDIT,
    ROWS,
    VERSION,
    VERSIONS,
    Edit,
    WatermarkDetector,
    WatermarkResult,
    _layout,
    integral,
    rect_means,
    undo_luma,
)

SEARCH_FRAMES = 12   # frames, spread over the clip: every other one ranks the hypotheses, all refine the best
RANK_EVERY = 2
PRUNE_FRAMES = 2     # frames that score every hypothesis first
PRUNE_KEEP = 64      # hypotheses of each mirroring scored on all the ranking frames
CANDIDATES = 4       # best hypotheses decoded in full, per version
MAX_CROP = 0.15      # share of the picture cut from any one side
PIP_SCALE = 0.5      # a picture-in-picture: the picture at this share of the frame's width and height
COARSE_GAINS = (0.8, 1.0, 1.25)
FINE_GAINS = (0.9, 0.95, 1.0, 1.05, 1.1)
GAMMAS = (0.8, 0.9, 1.0, 1.12, 1.25)
BAR_FLATNESS = 10.0  # luma range along a row or column of a letterbox bar (codec ringing included)
_CHUNK = 512
# Aspect ratios (width / height) of the pictures the platform marks: a frame of another aspect may show a band cut
# out of one of them, scaled to fit. Bands of up to MAX_BAND of the picture are searched; wider ones are crops.
PICTURE_ASPECTS = (9 / 16, 16 / 9)
MAX_BAND = 0.75
# Refinement steps, as shares of a cell on every edge: a band cut out of the picture and scaled up reads only within
# a sixteenth of a cell (two pixels of 1280 lost it: the cell means then mix in the content of their neighbours).
REFINE_STEPS = (0.5, 0.25, 0.125, 0.0625, 0.03125)
CLIMBS = 3           # moves at most at each refinement step
# The picture's size around the coarse one, with the moves: a band cut out of 9:16 is 404 or 405 rows of 1280 as
# ffmpeg rounds it, a quarter of a percent, which the band's scaled-up cells feel.
SCALES = (0.995, 0.9975, 1.0, 1.0025, 1.005)
MIRRORED = Edit(mirrored=True)


def _crops(base: tuple[float, float, float, float], rows: int, cols: int) -> np.ndarray:
    """Rects of the picture when `base` (where it lay before) was cropped by 0..MAX_CROP on each side."""
    bx0, by0, bx1, by1 = base
    xs = np.arange(0, MAX_CROP + 1e-9, 1 / cols)
    ys = np.arange(0, MAX_CROP + 1e-9, 1 / rows)
    out = []
    for left, right, top, bottom in itertools.product(xs, xs, ys, ys):
        sx, sy = (bx1 - bx0) / (1 - left - right), (by1 - by0) / (1 - top - bottom)
        out.append((bx0 - left * sx, by0 - top * sy, bx0 - left * sx + sx, by0 - top * sy + sy))
    return np.array(out)


def _pips(rows: int, cols: int) -> np.ndarray:
    """Rects of the picture shrunk to PIP_SCALE of the frame anywhere in it, at half a (shrunk) cell a step: the
    statistic's basin is about half a cell wide, so at one cell a step a picture lying between two steps can rank
    below the noise of the other hypotheses."""
    free = 1 - PIP_SCALE
    xs = np.arange(0, free + 1e-9, PIP_SCALE / cols / 2)
    ys = np.arange(0, free + 1e-9, PIP_SCALE / rows / 2)
    return np.array([(x, y, x + PIP_SCALE, y + PIP_SCALE) for x in xs for y in ys])


def _bands(frame_aspect: float, rows: int, cols: int) -> np.ndarray:
    """Rects of a picture of each PICTURE_ASPECTS of which the frame shows a band at the frame's own aspect: the full
    width of a taller picture (a 16:9 cut out of 9:16 keeps 32 % of its height) or the full height of a wider one,
    anywhere along it, at half a cell a step."""
    out = []
    for aspect in PICTURE_ASPECTS:
        share = aspect / frame_aspect  # of the picture's height the frame shows, where it shows its full width
        if share < MAX_BAND:
            out += [(0.0, -y / share, 1.0, (1 - y) / share) for y in np.arange(0, 1 - share + 1e-9, 0.5 / rows)]
        elif 1 / share < MAX_BAND:
            share = 1 / share
            out += [(-x / share, 0.0, (1 - x) / share, 1.0) for x in np.arange(0, 1 - share + 1e-9, 0.5 / cols)]
    return np.array(out).reshape(-1, 4)


def active_rect(grays: list[np.ndarray]) -> tuple[float, float, float, float] | None:
    """Where the picture lies inside flat bars that every sampled frame shares, as Edit.rect; None without bars."""
    h, w = grays[0].shape
    rows = np.max([np.ptp(g, axis=1) for g in grays], axis=0) < BAR_FLATNESS
    cols = np.max([np.ptp(g, axis=0) for g in grays], axis=0) < BAR_FLATNESS

    def run(flat: np.ndarray) -> int:
        return int(np.argmin(flat)) if not flat.all() else 0

    top, bottom, left, right = run(rows), run(rows[::-1]), run(cols), run(cols[::-1])
    if max(top + bottom, 0) < 0.02 * h and left + right < 0.02 * w:
        return None
    if h - top - bottom < 2 * ROWS or w - left - right < 2 * COLS:
        return None
    return (left / w, top / h, (w - right) / w, (h - bottom) / h)


def _rank(totals: list[np.ndarray], layout, rects: np.ndarray, mirrors: tuple[bool, ...], gains: Iterable[float],
          gamma: float) -> np.ndarray:
    """Lattice statistic (a z-score) of every mirror x rect x gain, summed over the sampled frames:
    (len(mirrors), len(rects), gains)."""
    gains = np.asarray(list(gains), np.float32)
    z_sum = np.zeros((len(mirrors), len(rects), gains.size))
    n_sum = np.zeros((len(mirrors), len(rects)))
    a, b, _ = layout.pairs if layout.pairs is not None else (None, None, None)
    dither = layout.dither.astype(np.float32)
    for start in range(0, len(rects), _CHUNK):
        part = rects[start:start + _CHUNK]
        rows = slice(start, start + len(part))
        for total in totals:
            means, seen = rect_means(total, part, layout.rows, layout.cols)
            means = undo_luma(means, gamma).astype(np.float32)
            for m, mirrored in enumerate(mirrors):
                mm, ss = (means[:, :, ::-1], seen[:, :, ::-1]) if mirrored else (means, seen)
                p = layout.project(mm)
                flat = ss.reshape(len(part), -1)
                valid = (flat[:, a] & flat[:, b] if a is not None
                         else (~flat).astype(float) @ np.abs(layout.proj).T == 0)
                phase = np.float32(4 * np.pi / layout.delta) * (p[:, None, :] / gains[None, :, None] - dither)
                z_sum[m, rows] += (np.cos(phase) * valid[:, None, :]).sum(axis=2)
                n_sum[m, rows] += valid.sum(axis=1)
    return z_sum / np.sqrt(np.maximum(n_sum, 1.0))[:, :, None]


def _best(every: list[np.ndarray], layout, rects: np.ndarray, gains: tuple[float, ...]) -> list[tuple[float, Edit]]:
    """The CANDIDATES best of `rects` x gains, mirrored and not, with their statistic over every other frame of
    `every`. Every hypothesis is first scored on PRUNE_FRAMES frames; only the PRUNE_KEEP best of each mirroring are
    scored on the rest: a marked picture's statistic on those few frames is still about twice the noise's maximum
    over ten thousand hypotheses, and the search costs a third."""
    totals = every[::RANK_EVERY]
    quick = _rank(totals[::len(totals) // PRUNE_FRAMES or 1][:PRUNE_FRAMES], layout, rects, (False, True), gains, 1.0)
    out = []
    for mirrored, zq in zip((False, True), quick, strict=True):
        kept = np.argsort(zq.max(axis=1))[::-1][:PRUNE_KEEP]
        z = _rank(totals, layout, rects[kept], (mirrored,), gains, 1.0)[0]
        for i in np.argsort(z.max(axis=1))[::-1][:CANDIDATES]:
            g = int(np.argmax(z[i]))
            out.append((float(z[i, g]), Edit(tuple(rects[kept[i]]), mirrored, gains[g])))
    return out


def find_edits(grays: list[np.ndarray], key: bytes, *, version: int) -> list[Edit]:
    """The CANDIDATES most likely edits of the picture in these sampled gray frames, best first."""
    layout = _layout(key, version)
    every = [integral(g) for g in grays]
    bases = [NO_EDIT.rect]
    bars = active_rect(grays)
    if bars is not None:
        bases.append(bars)
    h, w = grays[0].shape
    grid = layout.rows, layout.cols
    rects = np.concatenate([_crops(b, *grid) for b in bases] + [_bands(w / h, *grid)])
    # A picture-in-picture: at unit gain only (a third of the cost), its z-scores ranked with the crops'.
    scored = _best(every, layout, rects, COARSE_GAINS) + _best(every, layout, _pips(*grid), (1.0,))
    scored.sort(key=lambda s: -s[0])
    # The picture inside bars is decoded whatever its rank: shrunk to a third (a 9:16 picture padded into 16:9
    # and back) its statistic can fall among the noise of a thousand crops, yet it decodes.
    framed = [(0.0, Edit(bars, m)) for m in (False, True)] if bars is not None else []
    refined = [_refine(every, layout, edit) for _, edit in scored[:CANDIDATES] + framed]
    refined.sort(key=lambda s: -s[0])
    return [edit for _, edit in refined]


def _refine(totals: list[np.ndarray], layout, edit: Edit) -> tuple[float, Edit]:
    """First the picture moved as a whole by up to half a cell, an eighth of a cell a step, with finer gains around
    the coarse one; then resized by SCALES around its centre, with the moves next to the best one; then every edge
    by each of REFINE_STEPS, climbing at each step up to CLIMBS times while a move improves the statistic; then the
    gammas at the best of those.

    The statistic's ridge is narrow where the picture was scaled up: a band cut out of 9:16 and shown at 16:9 reads
    only within a sixteenth of a cell of its place and height (two pixels of 1280 lost it), while the coarse search
    steps half a cell. Edges moved one at a time from there fall off the ridge; the picture moved whole stays on it.
    A picture shrunk to a third (pad and back) reads only within a quarter cell."""
    x0, y0, x1, y1 = edit.rect
    dx, dy = (x1 - x0) / layout.cols / 8, (y1 - y0) / layout.rows / 8
    gains = [edit.gain * g for g in FINE_GAINS]
    moves = np.arange(-4, 5)
    rects = np.array([(x0 + a * dx, y0 + b * dy, x1 + a * dx, y1 + b * dy) for a in moves for b in moves])
    z = _rank(totals, layout, rects, (edit.mirrored,), gains, 1.0)[0]
    i, g = np.unravel_index(int(np.argmax(z)), z.shape)
    best = replace(edit, rect=tuple(rects[i]), gain=gains[g])
    # Then its size, around its centre, with the moves next to the best one.
    x0, y0, x1, y1 = best.rect
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    rects = np.array([(cx + a * dx - k * hw, cy + b * dy - k * hh, cx + a * dx + k * hw, cy + b * dy + k * hh)
                      for k in SCALES for a in (-1, 0, 1) for b in (-1, 0, 1)])
    z = _rank(totals, layout, rects, (edit.mirrored,), [best.gain], 1.0)[0, :, 0]
    best = replace(best, rect=tuple(rects[int(np.argmax(z))]))
    for share in REFINE_STEPS:
        for _ in range(CLIMBS):  # at a step, climb while a move improves the statistic
            x0, y0, x1, y1 = best.rect
            dx, dy = share * (x1 - x0) / layout.cols, share * (y1 - y0) / layout.rows
            rects = np.array([(x0 + a * dx, y0 + b * dy, x1 + c * dx, y1 + d * dy)
                              for a, b, c, d in itertools.product((-1, 0, 1), repeat=4)])
            z = _rank(totals, layout, rects, (edit.mirrored,), [best.gain], 1.0)[0, :, 0]
            i = int(np.argmax(z))
            best = replace(best, rect=tuple(rects[i]))
            if i == len(rects) // 2:  # staying put was best
                break
    scores = {gamma: float(_rank(totals, layout, np.array([best.rect]), (edit.mirrored,), [best.gain], gamma)[0, 0, 0])
              for gamma in GAMMAS}
    gamma = max(scores, key=scores.get)
    return scores[gamma], replace(best, gamma=gamma)


def search_frames(grays: list[np.ndarray]) -> list[np.ndarray]:
    """SEARCH_FRAMES frames spread evenly over the clip."""
    idx = np.unique(np.linspace(0, len(grays) - 1, min(SEARCH_FRAMES, len(grays))).round().astype(int))
    return [grays[i] for i in idx]


def read_frames(grays: list[np.ndarray], key: bytes) -> WatermarkResult:
    """The mark in these gray frames of one clip: as they are first (every version), then under the edits the
    search finds. The first result found wins; else the unedited reading of the newest version."""
    plain = []
    for version in VERSIONS:
        det = WatermarkDetector(key, version=version)
        for g in grays:
            det.add_frame(g)
        res = det.result()
        if res.found:
            return res
        plain.append(res)
    for version in VERSIONS:
        edits = find_edits(search_frames(grays), key, version=version) if version == VERSION else [MIRRORED]
        res = decode_edits(grays, key, version=version, edits=edits)
        if res is not None:
            return res
    return plain[0]


def decode_edits(grays: list[np.ndarray], key: bytes, *, version: int, edits: list[Edit]) -> WatermarkResult | None:
    """Decode every frame under each edit; the first found, else None."""
    detectors = [WatermarkDetector(key, version=version, edit=e) for e in edits]
    rects = np.array([e.rect for e in edits])
    layout = _layout(key, version)
    for g in grays:
        means, seen = rect_means(integral(g), rects, layout.rows, layout.cols)
        for det, m, s in zip(detectors, means, seen, strict=True):
            det.add_means(m, s)
    for det in detectors:
        res = det.result()
        if res.found:
            return res
    return None


def small_gray(frame: np.ndarray, longest: int = 640) -> np.ndarray:
    """A gray copy whose longer side is at most `longest`: cell means of a frame shrunk by area equal those of
    the frame, and 250 of them fit in 60 MB."""
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    if max(h, w) <= longest:
        return gray
    f = longest / max(h, w)
    return cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
