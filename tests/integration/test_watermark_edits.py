"""Issue 20, the sample that `make test` runs (the full corpus is in `make bench`): each kind of re-poster's edit
once, with random parameters, on a marked 720x1280 clip re-encoded at CRF 28; the mark names its produce and
avatar after each edit the detector searches, and unmarked clips given the edits with the widest search
are never found.

The parameters come from WATERMARK_ATTACK_SEED (default 20), printed with each failure so a run can be repeated."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.unit.test_watermark import labelled_frame
from workers.media import watermark_attacks as attacks
from workers.media.encode import pipe_frames
from workers.media.proc import run_ffmpeg
from workers.media.watermark import Mark, WatermarkEmbedder, read_watermark

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = b"platform-watermark-key-for-edit-tests"
MARK = Mark(produce_token=0x0123456789ABCDEF, avatar_ref=0xDEADBEEF)
W, H, FPS, SECONDS = 720, 1280, 25, 3
SEED = int(os.environ.get("WATERMARK_ATTACK_SEED", "20"))
# Edits the mark is not expected to survive (README, issue 20); for them the reading must still never be wrong.
# Empty since version 3: a 16:9 band cut out of the 9:16 picture reads.
NOT_MET: set[str] = set()
# Unmarked clips are read after these edits only, the ones whose search is widest (bands, bars, an inset, a chain):
# a search of an unmarked clip costs 8-13 s on two cores; the bench reads 64 after every kind, the unit tests of
# the search read unmarked frames in memory.
UNMARKED_AFTER = ("aspect_cut", "pad", "pip", "chain3")


def _encode(frames, out: Path) -> Path:
    pipe_frames([*attacks.FFMPEG, "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", str(FPS), "-i",
                 "-", "-c:v", "libx264", "-crf", "23", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(out)],
                frames, shape=(H, W))
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("watermark-edits")
    embedder = WatermarkEmbedder(KEY, MARK, width=W, height=H)
    n = SECONDS * FPS
    marked = _encode((embedder.embed(labelled_frame(i, width=W, height=H)) for i in range(n)), root / "marked.mp4")
    unmarked = root / "unmarked.mp4"
    run_ffmpeg([*attacks.FFMPEG, "-f", "lavfi", "-i", f"mandelbrot=r={FPS}", "-t", str(SECONDS), "-vf",
                f"scale={W}:{H}", "-c:v", "libx264", "-crf", "23", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                str(unmarked)], timeout=120)
    other = _encode((labelled_frame(i, width=W, height=H, seed=3) for i in range(n)), root / "other.mp4")
    return {"marked": marked, "unmarked": unmarked, "other": other}


@pytest.mark.parametrize("kind", attacks.KINDS)
def test_each_edit_once(clips, tmp_path, kind):
    rng = np.random.default_rng([SEED, attacks.KINDS.index(kind)])
    attack = attacks.draw(kind, rng, width=W, height=H)
    res = read_watermark(attacks.apply(attack, clips["marked"], tmp_path / "edited.mp4"), KEY)
    context = (f"seed {SEED}", attack.describe(), res)
    if kind in NOT_MET:
        assert not res.found or res.mark == MARK, context
    else:
        assert res.found and res.mark == MARK, context
    if kind not in UNMARKED_AFTER:
        return
    # Unmarked video given the same edit: another presenter or a test source, in turn.
    name = ("other", "unmarked")[UNMARKED_AFTER.index(kind) % 2]
    plain = read_watermark(attacks.apply(attack, clips[name], tmp_path / f"{name}.mp4"), KEY)
    assert not plain.found and plain.mark is None, (f"seed {SEED}", attack.describe(), name, plain)


def test_attack_kinds_are_named():
    with pytest.raises(ValueError, match="'tilt'.*mirror"):
        attacks.draw("tilt", np.random.default_rng(0), width=W, height=H)
