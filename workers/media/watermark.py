"""Invisible, keyed watermark in every frame (POLICY M3): which produce and avatar made a clip survives
re-encoding, scaling and the edits re-posters make, and only the key holder can read it.

Scheme: Spread-Transform Dither Modulation (STDM) on the luma means of a grid relative to the picture. STDM
quantises, so the picture does not act as noise: each projection (a keyed, balanced +-1 combination of cell means,
so a brightness offset cancels) is moved onto the lattice of the coded bit it carries. The cell changes reach the
frame through a smooth bilinear upsample (no block edges); the upsample's blur is solved for exactly at grid level,
so one linear map turns lattice errors into a grid.

Versions (the embedder writes VERSION; the detector reads every one of VERSIONS):
  1  48 x 27 cells (26.7 px squares at 720x1280); each coded bit owns a keyed set of cells over the whole frame.
  2  48 x 27 cells; each projection is a vertical pair of neighbouring cells, two or three per bit at keyed places.
  3  64 x 27 cells (26.7 x 20 px); vertical pairs with the coded bits in reading order (_layout_v3), so every band
     of a third of the picture's height holds every coded bit: a 16:9 cut out of a 9:16 picture reads.
Every frame carries the whole payload (128 bits, convolutional code, 268 coded bits), so the detector needs no
temporal sync: it adds up soft evidence over the frames of any cut. The payload ends in a 32-bit HMAC tag, so a
detection counts only when the tag verifies (about 2^-32 false positives per decode). All keyed choices derive from
HMAC(key, "studio-watermark-vN"): without the key the cells, signs and dither are unknown and the mark can be
neither read nor forged. bench/watermark.py measures all of this.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from workers.media import fec
from workers.media.allocator import decoding

# A coarser grid than 16 px cells: H.264 at CRF 28 after scaling to 50 % flattens small cells, and
# 26.7 px cells kept 95 % of raw bits per frame against 92 % for 16 px cells at the same PSNR.
ROWS, COLS = 48, 27
# Version 3's grid: 64 rows of the same columns (cells 26.7 x 20 px at 720x1280), so that a band of a third of the
# picture's height still holds a pair for every coded bit (see _layout_v3).
ROWS_V3 = 64
INFO_BITS = 128
CODED_BITS = fec.coded_length(INFO_BITS)
# Lattice step of a bit's projection, in luma levels: about 40.5 dB PSNR on talking-head frames.
DELTA = 12.0
# Codecs keep only 60-90 % of the mark's amplitude (less in moving areas), which pulls every reading
# towards the unmarked value. Overshooting by 20 % centres that error: an untouched frame lands 0.1 DELTA
# past the lattice point, a CRF 28 half-size re-encode about as far short of it.
PRE_EMPHASIS = 1.2
# Mean soft agreement with the decoded payload needed besides the tag. A genuine 720x1280 mark scores about
# 0.8 after CRF 28 + 50 % scaling, 0.9 and more untouched; unmarked video scores 0.3-0.55 (the decoder always
# finds some best path), so this also keeps a lucky tag on noise from counting.
MIN_SCORE = 0.6
# Version 2 scores unmarked video lower (0.25-0.32: a bit's evidence adds two or three independent pairs), so its
# threshold sits lower and still twice as far from noise; the tag remains the main guard.
MIN_SCORE_V2 = 0.45
_KEY_LABEL = b"studio-watermark-v1"
_KEY_LABEL_V2 = b"studio-watermark-v2"
_KEY_LABEL_V3 = b"studio-watermark-v3"
# Version 2 spreads the same energy over 648 pair projections instead of 268 sets: a smaller step keeps the
# PSNR of version 1 (the move to the lattice costs delta^2 / 12 per projection on average).
DELTA_V2 = 8.0
VERSION = 3          # what the embedder writes
VERSIONS = (3, 2, 1)  # what the detector reads, newest first
_ID_PREFIX = "ecs-"
_HEX = frozenset("0123456789abcdef")


class WatermarkError(ValueError):
    """Bad input to the watermark: wrong frame type or shape, an id or token that does not fit, no key."""


@dataclass(frozen=True)
class Mark:
    produce_token: int  # 64-bit unsigned: the ProduceID's hex digits
    avatar_ref: int     # 32-bit unsigned: the first 8 hex digits of the avatar id

    def __post_init__(self) -> None:
        for name, bits in (("produce_token", 64), ("avatar_ref", 32)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << bits:
                raise WatermarkError(f"{name} must be a {bits}-bit unsigned int, got {value!r}")


@dataclass(frozen=True)
class Edit:
    """An edit of the picture since it was marked, as the detector undoes it: where the marked picture lies in the
    frame seen (x0, y0, x1, y1 as shares of that frame's width and height: beyond 0..1 where it was cropped,
    inside where it was padded or shrunk into a picture-in-picture), whether it was mirrored, and the luma gain
    and gamma (seen = 255 * (marked / 255) ** gamma) applied to it. Scaling, aspect changes and frame rate need
    no entry: the mark is laid out relative to the picture, in every frame."""
    rect: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    mirrored: bool = False
    gain: float = 1.0
    gamma: float = 1.0

    def to_dict(self) -> dict:
        return {"rect": [round(v, 4) for v in self.rect], "mirrored": self.mirrored, "gain": round(self.gain, 3),
                "gamma": round(self.gamma, 3)}


NO_EDIT = Edit()


@dataclass(frozen=True)
class WatermarkResult:
    found: bool
    mark: Mark | None
    bit_errors: int  # coded bits whose reading disagrees with the re-encoded decoded payload
    coded_bits: int
    frames: int      # frames examined
    score: float     # mean soft agreement with the decoded payload, 0..1
    version: int = VERSION
    edit: Edit | None = None  # how the picture was edited since it was marked, where the detector searched

    def to_dict(self) -> dict:
        return {"found": self.found, "bit_errors": self.bit_errors, "coded_bits": self.coded_bits,
                "frames": self.frames, "score": round(self.score, 4), "version": self.version,
                "edit": self.edit.to_dict() if self.edit else None,
                "produce_token": f"{self.mark.produce_token:016x}" if self.mark else None,
                "avatar_ref": f"{self.mark.avatar_ref:08x}" if self.mark else None}


def produce_token_from_id(produce_id: str) -> int:
    """"ecs-" + 16 lowercase hex digits -> the 64-bit token the mark carries."""
    digits = produce_id[len(_ID_PREFIX):] if isinstance(produce_id, str) else ""
    if not (produce_id[:len(_ID_PREFIX)] == _ID_PREFIX and len(digits) == 16 and set(digits) <= _HEX):
        raise WatermarkError(f"produce id {produce_id!r} is not 'ecs-' followed by 16 lowercase hex digits")
    return int(digits, 16)


def produce_id_from_token(token: int) -> str:
    return f"{_ID_PREFIX}{Mark(token, 0).produce_token:016x}"


def avatar_ref_from_id(avatar_id: str) -> int:
    """An avatar id (a uuid, usually uuid4().hex) -> its first 32 bits, the mark's avatar reference."""
    try:
        return int(uuid.UUID(avatar_id).hex[:8], 16)
    except (ValueError, TypeError, AttributeError):
        raise WatermarkError(f"avatar id {avatar_id!r} is not a uuid (32 hex digits)") from None


@dataclass(frozen=True)
class _Layout:
    """The keyed secret of one mark version: which cells make each projection and with what weights, the coded
    bit each projection carries, and each projection's dither."""
    version: int
    proj: np.ndarray    # (P, ROWS*COLS) weights of the cells in each projection
    bit: np.ndarray     # (P,) coded bit each projection carries
    dither: np.ndarray  # (P,) lattice offsets in [0, delta)
    delta: float
    min_score: float
    tag_key: bytes
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # v2, v3: cell a, cell b, sign
    rows: int = ROWS    # the grid the cells lie on, relative to the picture
    cols: int = COLS

    def project(self, means: np.ndarray) -> np.ndarray:
        """(..., rows, cols) cell means -> (..., P) projections."""
        flat = means.reshape(*means.shape[:-2], self.rows * self.cols)
        if self.pairs is not None:
            a, b, sign = self.pairs
            return (flat[..., a] - flat[..., b]) * sign
        return flat @ self.proj.T

    def evidence(self, p: np.ndarray) -> np.ndarray:
        """Projections -> soft evidence per coded bit: +1 on the lattice of a 0, -1 on that of a 1."""
        return np.bincount(self.bit, np.cos(2 * np.pi * (p - self.dither) / self.delta), CODED_BITS)

    def tag(self, data: bytes) -> bytes:
        return hmac.new(self.tag_key, data, hashlib.sha256).digest()[:4]


def _keys(key: bytes, label: bytes) -> tuple[bytes, np.random.Generator]:
    if not isinstance(key, bytes | bytearray) or not key:
        shown = f"{len(key)} bytes" if isinstance(key, bytes | bytearray) else type(key).__name__
        raise WatermarkError(f"the watermark key must be non-empty bytes, got {shown}")
    wm_key = hmac.new(bytes(key), label, hashlib.sha256).digest()
    return wm_key, np.random.default_rng(int.from_bytes(hmac.new(wm_key, b"layout", hashlib.sha256).digest(), "big"))


def _layout_v1(key: bytes) -> _Layout:
    wm_key, rng = _keys(key, _KEY_LABEL)
    cells = ROWS * COLS
    # Even set sizes (n or n + 2 cells) so that every set balances; together they use every cell but an odd one.
    n = 2 * (cells // (2 * CODED_BITS))
    bigger = (cells - n * CODED_BITS) // 2
    sizes = rng.permutation(np.r_[np.full(bigger, n + 2), np.full(CODED_BITS - bigger, n)])
    used = int(sizes.sum())
    bits = np.repeat(np.arange(CODED_BITS), sizes)
    # Every set starts at an even offset, so alternating signs balance each; then shuffle within each set.
    signs = np.where(np.arange(used) % 2, -1.0, 1.0)[np.lexsort((rng.random(used), bits))]
    cells_used = rng.permutation(cells)[:used]
    proj = np.zeros((CODED_BITS, cells))
    proj[bits, cells_used] = signs / np.sqrt(sizes[bits])
    return _Layout(1, proj, np.arange(CODED_BITS), rng.uniform(0, DELTA, CODED_BITS), DELTA, MIN_SCORE,
                   hmac.new(wm_key, b"tag", hashlib.sha256).digest())


def _vertical_pairs(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Cells a and b of every vertical pair of neighbouring cells (rows 0-1, 2-3, ...) in reading order; which of
    the two is the minuend is keyed."""
    top = (np.arange(rows // 2)[:, None] * 2 * COLS + np.arange(COLS)[None, :]).ravel()
    flip = rng.random(top.size) < 0.5
    return np.where(flip, top + COLS, top), np.where(flip, top, top + COLS)


def _pair_layout(version: int, wm_key: bytes, rng: np.random.Generator, a: np.ndarray, b: np.ndarray,
                 bit: np.ndarray, rows: int) -> _Layout:
    sign = np.full(a.size, 1 / np.sqrt(2))
    proj = np.zeros((a.size, rows * COLS))
    proj[np.arange(a.size), a], proj[np.arange(a.size), b] = sign, -sign
    return _Layout(version, proj, bit, rng.uniform(0, DELTA_V2, a.size), DELTA_V2, MIN_SCORE_V2,
                   hmac.new(wm_key, b"tag", hashlib.sha256).digest(), (a, b, sign), rows, COLS)


def _layout_v2(key: bytes) -> _Layout:
    """Version 2: every projection is a vertical pair of neighbouring cells, and each coded bit owns two or three
    pairs at keyed places far apart. A crop, a pad or a picture-in-picture loses whole pairs, not a share of every
    bit; the other pairs of a bit still carry it. A neighbour difference is small, so a gain or gamma change moves
    it little, and an offset cancels."""
    wm_key, rng = _keys(key, _KEY_LABEL_V2)
    a, b = _vertical_pairs(rng, ROWS)
    order = rng.permutation(a.size)
    return _pair_layout(2, wm_key, rng, a[order], b[order], np.arange(a.size) % CODED_BITS, ROWS)


# Version 3's interleaver: the i-th pair in reading order carries coded bit i * _SPREAD mod CODED_BITS. 165 is
# coprime to 268 and near 268 / golden ratio, so neighbouring pairs carry bits far apart in the code, and a run of
# pairs too short to hold every bit misses bits spread evenly over the code (three gap sizes at most), not a burst.
_SPREAD = 165


def _layout_v3(key: bytes) -> _Layout:
    """Version 3: version 2's vertical pairs and step on a grid of ROWS_V3 rows, with the coded bits laid out in
    reading order, so that every run of CODED_BITS pairs carries each coded bit once (864 pairs: three copies of
    every bit). A band of the picture (a 16:9 cut out of 9:16 keeps 32 % of its height: 10 of the 32 pair rows,
    270 pairs) then still holds every coded bit. Version 2 placed the pairs of each bit at random on 24 pair rows:
    such a band held 7 of them, about 160 different bits with the lost ones in bursts, and never decoded; 48 rows in
    reading order gave 189 bits, the 79 lost spread evenly, and decoded only where the band was found to a
    sixteenth of a cell. Which cell of a pair is the minuend, each pair's dither and where the sequence starts are
    keyed, as the pairs' order is in version 2. The energy per pixel and so the PSNR at the same step do not
    depend on the grid (every cell is in one pair)."""
    wm_key, rng = _keys(key, _KEY_LABEL_V3)
    a, b = _vertical_pairs(rng, ROWS_V3)
    start = int(rng.integers(CODED_BITS))
    return _pair_layout(3, wm_key, rng, a, b, ((np.arange(a.size) + start) * _SPREAD) % CODED_BITS, ROWS_V3)


@functools.lru_cache(maxsize=16)
def _layout_cached(key: bytes, version: int) -> _Layout:
    return {1: _layout_v1, 2: _layout_v2, 3: _layout_v3}[version](key)


def _layout(key: bytes, version: int = VERSION) -> _Layout:
    if version not in VERSIONS:
        raise WatermarkError(f"mark version {version!r} is not one of {VERSIONS}")
    _keys(key, b"")  # names a bad key before the cache sees it
    return _layout_cached(bytes(key), version)


def _payload(mark: Mark, layout: _Layout) -> np.ndarray:
    data = mark.produce_token.to_bytes(8, "big") + mark.avatar_ref.to_bytes(4, "big")
    return np.unpackbits(np.frombuffer(data + layout.tag(data), np.uint8))


def payload_bits(key: bytes, mark: Mark, *, version: int = VERSION) -> np.ndarray:
    """The 128 info bits (token, avatar ref, tag) that `mark` carries under `key`; fec.encode gives the
    coded bits. For measuring accuracy against a detector's `evidence`."""
    return _payload(mark, _layout(key, version))


def _luma(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        raise WatermarkError(f"frame must be a uint8 numpy array, got {getattr(frame, 'dtype', type(frame).__name__)}")
    if frame.ndim == 3 and frame.shape[2] == 3 and frame.shape[0] and frame.shape[1]:
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if frame.ndim == 2 and frame.size:
        return frame
    raise WatermarkError(f"frame must be RGB (H, W, 3) or gray (H, W), got shape {frame.shape}")


def _coverage(cells: int, pixels: int) -> np.ndarray:
    """(cells, pixels): the share of each pixel in each of `cells` equal spans, divided by the span length."""
    edges = np.linspace(0, pixels, cells + 1)
    k = np.arange(pixels)
    overlap = np.minimum(k + 1, edges[1:, None]) - np.maximum(k, edges[:-1, None])
    return np.clip(overlap, 0, None) * (cells / pixels)


def _cell_means(gray: np.ndarray, rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    """Exact area means of the rows x cols cells (cv2 INTER_AREA's result for any size), at a fraction of its
    cost when cells are not a whole number of pixels: the integral image is bilinear within each pixel, so
    interpolating it at the cell edges gives exact sums."""
    h, w = gray.shape
    total = cv2.integral(gray, sdepth=cv2.CV_32S if h * w < 1 << 23 else cv2.CV_64F)
    sampled = []
    for axis, (cells, pixels) in enumerate(((rows, h), (cols, w))):
        edges = np.linspace(0, pixels, cells + 1)
        lo = np.minimum(edges.astype(np.int64), pixels - 1)
        frac = edges - lo
        shape = (-1, 1) if axis == 0 else (1, -1)
        sampled.append((lo, frac.reshape(shape)))
    (ry, fy), (cx, fx) = sampled
    lines = total[ry] * (1 - fy) + total[ry + 1] * fy  # float64 from here: only (rows + 1) lines
    corners = lines[:, cx] * (1 - fx) + lines[:, cx + 1] * fx
    return np.diff(np.diff(corners, axis=0), axis=1) * (rows * cols / (h * w))


def integral(gray: np.ndarray) -> np.ndarray:
    return cv2.integral(gray, sdepth=cv2.CV_64F)


def rect_means(total: np.ndarray, rects: np.ndarray, rows: int = ROWS,
               cols: int = COLS) -> tuple[np.ndarray, np.ndarray]:
    """Cell means of the marked picture for each hypothesis of where it lies in a frame, from the frame's integral
    image: rects (K, 4) as Edit.rect -> means (K, rows, cols) and whether each cell is at least 60 % in the frame
    (the part outside is gone; a cell mostly outside reads nothing)."""
    h, w = total.shape[0] - 1, total.shape[1] - 1
    rects = np.asarray(rects, np.float64).reshape(-1, 4)
    axes = []
    for lo, hi, cells, pixels in ((1, 3, rows, h), (0, 2, cols, w)):
        start, span = rects[:, lo:lo + 1], rects[:, hi:hi + 1] - rects[:, lo:lo + 1]
        edges = pixels * (start + span * np.linspace(0, 1, cells + 1))
        seen = np.clip(edges, 0, pixels)
        low = np.minimum(seen.astype(np.int64), pixels - 1)
        axes.append((edges, seen, low, seen - low))
    (ye, ys, y0, fy), (xe, xs, x0, fx) = axes
    y0, fy, x0, fx = y0[:, :, None], fy[:, :, None], x0[:, None, :], fx[:, None, :]
    corners = ((total[y0, x0] * (1 - fx) + total[y0, x0 + 1] * fx) * (1 - fy)
               + (total[y0 + 1, x0] * (1 - fx) + total[y0 + 1, x0 + 1] * fx) * fy)
    sums = np.diff(np.diff(corners, axis=1), axis=2)
    area = np.diff(ys)[:, :, None] * np.diff(xs)[:, None, :]
    full = np.abs(np.diff(ye)[:, :, None] * np.diff(xe)[:, None, :])
    return sums / np.maximum(area, 1e-9), area >= 0.6 * np.maximum(full, 1e-9)


def undo_luma(means: np.ndarray, gamma: float) -> np.ndarray:
    return means if gamma == 1.0 else 255.0 * (np.clip(means, 0, 255) / 255.0) ** (1.0 / gamma)


@functools.lru_cache(maxsize=8)
def _response(cells: int, pixels: int) -> np.ndarray:
    """(cells, cells): what a bilinear upsample to `pixels` does to the cell means, along one axis.

    Both the upsample and the means are separable, so two such matrices give the 2-D effect exactly."""
    up = cv2.resize(np.eye(cells, dtype=np.float32), (cells, pixels), interpolation=cv2.INTER_LINEAR)
    return _coverage(cells, pixels) @ up


class WatermarkEmbedder:
    """Marks RGB frames of one size with one Mark, in place: the invisible watermark of every frame that airs,
    128 bits (the 64-bit ProduceID token, the avatar reference, a keyed tag) under a convolutional code
    (POLICY M3); about 3 ms a frame at 720x1280 on 2 cores."""

    def __init__(self, key: bytes, mark: Mark, *, width: int, height: int, version: int = VERSION):
        if not isinstance(mark, Mark):
            raise WatermarkError(f"mark must be a Mark, got {type(mark).__name__}")
        layout = _layout(key, version)
        if not all(isinstance(v, int) for v in (width, height)) or width < 2 * layout.cols or height < 2 * layout.rows:
            raise WatermarkError(f"frame size {width}x{height} is too small to mark; need at least "
                                 f"{2 * layout.cols}x{2 * layout.rows}")
        self.width, self.height, self.mark = width, height, mark
        self._layout = layout
        self._target = layout.dither + fec.encode(_payload(mark, layout))[layout.bit] * (layout.delta / 2)
        # Minimum-norm grid delta g with W A g = r (W: the bits' weights, A: the upsample's effect on the
        # cell means), g = (W A)^T (W A (W A)^T)^-1 r, as one (cells x coded bits) matrix.
        a_rows, a_cols = _response(layout.rows, height), _response(layout.cols, width)
        count = layout.proj.shape[0]
        wa = (a_rows.T @ layout.proj.reshape(count, layout.rows, layout.cols) @ a_cols).reshape(count, -1)
        self._solve = (PRE_EMPHASIS * wa.T @ np.linalg.inv(wa @ wa.T)).astype(np.float32)

    def embed(self, frame: np.ndarray) -> np.ndarray:
        gray = _luma(frame)
        if frame.shape != (self.height, self.width, 3) or not frame.flags.c_contiguous:
            raise WatermarkError(f"frame must be a C-contiguous RGB array of shape ({self.height}, {self.width}, 3), "
                                 f"got {frame.shape}{'' if frame.flags.c_contiguous else ' (not contiguous)'}")
        delta = self._layout.delta
        error = self._layout.project(_cell_means(gray, self._layout.rows, self._layout.cols)) - self._target
        move = delta * np.round(error / delta) - error  # to the nearest point of each projection's lattice
        grid = (self._solve @ move.astype(np.float32)).reshape(self._layout.rows, self._layout.cols)
        # The same delta on R, G and B moves luma by exactly that delta. Two saturating uint8 passes (up,
        # then down) cost a third of float arithmetic on the frame; clipped pixels just carry less.
        for part, op in ((grid, cv2.add), (-grid, cv2.subtract)):
            cells = np.clip(np.rint(part), 0, 255).astype(np.uint8)
            if cells.any():
                up = cv2.resize(cells, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
                op(frame, cv2.cvtColor(up, cv2.COLOR_GRAY2RGB), dst=frame)
        return frame


class WatermarkDetector:
    """Adds up soft evidence from frames of any size, in any order, from any cut of a marked video, for one mark
    version and one hypothesis of how the picture was edited; a mark is found only when its keyed tag verifies
    and its score clears MIN_SCORE, so unmarked video reads as unmarked (POLICY M3)."""

    def __init__(self, key: bytes, *, version: int = VERSION, edit: Edit = NO_EDIT):
        self._layout = _layout(key, version)
        self.edit = edit
        self._evidence = np.zeros(CODED_BITS)
        self._weight = np.zeros(CODED_BITS)
        self._frames = 0

    @property
    def frames_seen(self) -> int:
        return self._frames

    @property
    def evidence(self) -> np.ndarray:
        """Soft evidence per coded bit summed over the frames seen: > 0 reads as 0, < 0 as 1."""
        return self._evidence.copy()

    def add_frame(self, frame: np.ndarray) -> None:
        gray = _luma(frame)
        grid = self._layout.rows, self._layout.cols
        if self.edit.rect == NO_EDIT.rect:
            means, seen = _cell_means(gray, *grid), None
        else:
            means, seen = (a[0] for a in rect_means(integral(gray), np.array([self.edit.rect]), *grid))
        self.add_means(means, seen)

    def add_means(self, means: np.ndarray, seen: np.ndarray | None = None) -> None:
        """Add one frame's (rows, cols) cell means of the marked picture, with which cells the frame still shows."""
        layout, edit = self._layout, self.edit
        if edit.mirrored:
            means = means[:, ::-1]
            seen = seen[:, ::-1] if seen is not None else None
        p = layout.project(undo_luma(means, edit.gamma)) / edit.gain
        # +1 on the lattice of a 0 bit, -1 on that of a 1 bit, near 0 where the reading is ambiguous.
        votes = np.cos(2 * np.pi * (p - layout.dither) / layout.delta)
        counted = np.ones_like(votes) if seen is None else (np.abs(layout.proj) @ ~seen.ravel() == 0).astype(float)
        self._evidence += np.bincount(layout.bit, votes * counted, CODED_BITS)
        self._weight += np.bincount(layout.bit, counted, CODED_BITS)
        self._frames += 1

    def result(self) -> WatermarkResult:
        layout = self._layout
        if not self._frames or not self._weight.any():
            return WatermarkResult(False, None, CODED_BITS, CODED_BITS, self._frames, 0.0, layout.version, self.edit)
        info = fec.decode(self._evidence)
        agree = self._evidence * (1.0 - 2.0 * fec.encode(info))
        score = float(np.clip(agree.sum() / self._weight.sum(), 0.0, 1.0))
        data = np.packbits(info).tobytes()
        found = hmac.compare_digest(layout.tag(data[:12]), data[12:]) and score >= layout.min_score
        mark = Mark(int.from_bytes(data[:8], "big"), int.from_bytes(data[8:12], "big")) if found else None
        return WatermarkResult(found, mark, int((agree <= 0).sum()), CODED_BITS, self._frames, score,
                               layout.version, self.edit)


def read_watermark(path: str | Path, key: bytes, *, max_frames: int = 250) -> WatermarkResult:
    """Read the watermark from the first `max_frames` frames of the video file at `path` (POLICY M3): every mark
    version as the frames are, then under the edits that watermark_search finds (crop, pad, mirror, luma)."""
    from workers.media.watermark_search import read_frames, small_gray

    if not isinstance(max_frames, int) or max_frames < 1:
        raise WatermarkError(f"max_frames must be a positive int, got {max_frames!r}")
    grays = []
    try:
        with decoding(av.open(str(path))) as container:
            if not container.streams.video:
                raise WatermarkError(f"{path} has no video stream to read a watermark from")
            container.streams.video[0].thread_type = "AUTO"
            for frame in container.decode(video=0):
                if len(grays) >= max_frames:
                    break
                # Luma straight from the decoder's Y plane: no colour-matrix guess, no chroma round trip.
                grays.append(small_gray(frame.to_ndarray(format="gray")))
    except (av.FFmpegError, OSError) as exc:
        raise WatermarkError(f"cannot decode video {path}: {exc}") from exc
    if not grays:
        raise WatermarkError(f"{path} has no decodable video frames")
    return read_frames(grays, key)
