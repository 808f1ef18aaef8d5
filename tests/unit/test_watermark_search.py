"""Issue 20, in memory: the detector's edit search finds the mark after a mirror, a crop, a pad, a contrast or
gamma change, a picture-in-picture or a 16:9 band cut out of the 9:16 picture, says which edit it undid, still reads
version 1 and 2 marks, and finds nothing in unmarked frames given the same edits."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.unit.test_watermark import labelled_frame
from workers.media import watermark_search as search
from workers.media.watermark import (
    NO_EDIT,
    ROWS,
    ROWS_V3,
    Edit,
    Mark,
    WatermarkDetector,
    WatermarkEmbedder,
    _cell_means,
    integral,
    rect_means,
)

KEY = b"platform-watermark-key-for-search-tests"
MARK = Mark(produce_token=0x0123456789ABCDEF, avatar_ref=0xDEADBEEF)
W, H = 360, 640


def _crop(f: np.ndarray, left: float, top: float, right: float, bottom: float, *, back: bool) -> np.ndarray:
    h, w = f.shape[:2]
    part = f[round(top * h):h - round(bottom * h), round(left * w):w - round(right * w)]
    return cv2.resize(part, (w, h), interpolation=cv2.INTER_AREA) if back else part


def _lut(f: np.ndarray, fn) -> np.ndarray:
    return np.clip(fn(f.astype(np.float64)), 0, 255).astype(np.uint8)


def _pillarbox(f: np.ndarray) -> np.ndarray:
    h, w = f.shape[:2]
    out = np.zeros((h, h * 16 // 9, 3), np.uint8)
    x = (out.shape[1] - w) // 2
    out[:, x:x + w] = f
    return out


def _pip(f: np.ndarray, x: float = 0.37, y: float = 0.21) -> np.ndarray:
    """The picture at half size over another (a gradient with noise), its corner at (x, y) of the frame."""
    h, w = f.shape[:2]
    rng = np.random.default_rng(7)
    out = (np.linspace(40, 200, w)[None, :, None] + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
    small = cv2.resize(f, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    out[round(y * h):round(y * h) + h // 2, round(x * w):round(x * w) + w // 2] = small
    return out


def _band(f: np.ndarray, y: float = 0.41) -> np.ndarray:
    """A 16:9 band of the 9:16 picture, its top at y of the picture's height, shown at 16:9 (scaled up by 16/9)."""
    h, w = f.shape[:2]
    band = round(w * 9 / 16)
    top = round(y * h)
    return cv2.resize(f[top:top + band], (h, w), interpolation=cv2.INTER_LINEAR)


EDITS = {
    "mirror": lambda f: np.ascontiguousarray(f[:, ::-1]),
    "crop scaled back": lambda f: _crop(f, 0.08, 0.0, 0.0, 0.06, back=True),
    "crop on every side": lambda f: _crop(f, 0.1, 0.12, 0.05, 0.14, back=False),
    "contrast x1.3": lambda f: _lut(f, lambda v: (v - 128) * 1.3 + 128),
    "gain 0.7 offset +20": lambda f: _lut(f, lambda v: v * 0.7 + 20),
    "gamma 1.25": lambda f: _lut(f, lambda v: 255 * (v / 255) ** 1.25),
    "pillarbox": _pillarbox,
    "picture-in-picture": _pip,
    "16:9 band of 9:16": _band,
    "mirror, crop, contrast": lambda f: _lut(_crop(f[:, ::-1], 0.05, 0.1, 0.07, 0.0, back=True),
                                             lambda v: (v - 128) * 1.2 + 10),
}


@pytest.fixture(scope="module")
def frames():
    originals = [labelled_frame(i) for i in range(0, 40, 5)]
    v3 = WatermarkEmbedder(KEY, MARK, width=W, height=H)
    old = [WatermarkEmbedder(KEY, MARK, width=W, height=H, version=v) for v in (1, 2)]
    return originals, [v3.embed(f.copy()) for f in originals], *([e.embed(f.copy()) for f in originals] for e in old)


def _gray(frames) -> list[np.ndarray]:
    return [search.small_gray(f) for f in frames]


@pytest.mark.parametrize("name", list(EDITS))
def test_the_search_finds_the_mark_after_an_edit(frames, name):
    _, marked, _, _ = frames
    res = search.read_frames(_gray(EDITS[name](f) for f in marked), KEY)
    assert res.found and res.mark == MARK and res.version == 3, (name, res)
    if "mirror" in name:
        assert res.edit.mirrored
    if name == "pillarbox":
        x0, y0, x1, y1 = res.edit.rect
        assert abs(x0 - 0.34) < 0.03 and abs(x1 - 0.66) < 0.03 and abs(y0) + abs(y1 - 1) < 0.01
    if name == "picture-in-picture":  # where it lies, within a cell of the half-size picture
        x0, y0, x1, y1 = res.edit.rect
        assert abs(x0 - 0.37) < 0.5 / 27 and abs(y0 - 0.21) < 0.5 / ROWS_V3 and abs(x1 - x0 - 0.5) < 0.02, res.edit
    if name == "16:9 band of 9:16":  # the picture's full width, 16/9 x 16/9 times the frame's height, from 0.41 up
        x0, y0, x1, y1 = res.edit.rect
        height = 640 / round(360 * 9 / 16)
        cell = height / ROWS_V3  # a cell of the picture, in the frame's heights
        assert abs(x0) + abs(x1 - 1) < 0.01 and abs(y1 - y0 - height) < cell / 2 and abs(y0 + 0.41 * height) < cell / 2


# The searches with the most hypotheses (each costs about 9 s); the bench reads 64 unmarked clips after every edit.
@pytest.mark.parametrize("name", ["picture-in-picture", "16:9 band of 9:16", "mirror, crop, contrast"])
def test_unmarked_frames_given_the_same_edit_are_not_found(frames, name):
    originals, _, _, _ = frames
    res = search.read_frames(_gray(EDITS[name](f) for f in originals), KEY)
    assert not res.found and res.mark is None, (name, res)
    assert res.score < 0.4  # the threshold is 0.45; the tag alone would reject them too


@pytest.mark.parametrize("version", [1, 2])
def test_older_marks_stay_readable_as_they_are_and_mirrored(frames, version):
    old = frames[version + 1]
    res = search.read_frames(_gray(old), KEY)
    assert res.found and res.mark == MARK and res.version == version and res.edit == NO_EDIT
    res = search.read_frames(_gray(EDITS["mirror"](f) for f in old), KEY)
    assert res.found and res.mark == MARK and res.version == version and res.edit.mirrored
    assert res.to_dict()["version"] == version


def test_another_key_finds_nothing_after_the_search(frames):
    _, marked, _, _ = frames
    res = search.read_frames(_gray(EDITS["mirror"](f) for f in marked), b"another platform's key")
    assert not res.found and res.mark is None


def test_rect_means_of_the_whole_frame_are_the_cell_means_and_cells_outside_read_nothing(frames):
    gray = cv2.cvtColor(frames[0][0], cv2.COLOR_RGB2GRAY)
    means, seen = rect_means(integral(gray), np.array([NO_EDIT.rect, (0.0, -0.5, 1.0, 1.0)]))
    np.testing.assert_allclose(means[0], _cell_means(gray), atol=1e-6)
    assert seen[0].all()
    assert not seen[1][: ROWS // 3 - 1].any() and seen[1][ROWS // 3 + 1:].all()


def test_the_detector_under_an_edit_reports_it(frames):
    _, marked, _, _ = frames
    edit = Edit(mirrored=True)
    det = WatermarkDetector(KEY, edit=edit)
    det.add_frame(np.ascontiguousarray(marked[0][:, ::-1]))
    res = det.result()
    assert res.found and res.edit == edit and res.to_dict()["edit"]["mirrored"] is True


def test_bars_are_found_only_where_they_are(frames):
    originals, _, _, _ = frames
    assert search.active_rect(_gray(originals)) is None
    x0, y0, x1, y1 = search.active_rect(_gray(_pillarbox(f) for f in originals))
    assert 0.3 < x0 < 0.37 and 0.63 < x1 < 0.7 and (y0, y1) == (0.0, 1.0)
