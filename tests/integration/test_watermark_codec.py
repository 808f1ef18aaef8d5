"""POLICY M3 end to end: a marked segment, encoded as the product encodes it, still names its produce and
avatar after someone re-encodes it at CRF 28, scales it to half size, does both, or cuts a second out."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_watermark import labelled_frame
from workers.media.encode import pipe_frames
from workers.media.proc import run_ffmpeg
from workers.media.watermark import CODED_BITS, Mark, WatermarkEmbedder, WatermarkError, read_watermark

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = b"platform-watermark-key-for-codec-tests"
MARK = Mark(produce_token=0x0123456789ABCDEF, avatar_ref=0xDEADBEEF)
W, H, FPS, SECONDS = 720, 1280, 25, 3
FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error"]


def _encode(frames, out: Path) -> Path:
    """rgb24 frames -> H.264 CRF 23 yuv420p, the product's settings for a segment."""
    pipe_frames([*FFMPEG, "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", str(FPS), "-i", "-",
                 "-c:v", "libx264", "-crf", "23", "-pix_fmt", "yuv420p", str(out)], frames, shape=(H, W))
    return out


def _reencode(src: Path, out: Path, *args: str) -> Path:
    run_ffmpeg([*FFMPEG, "-i", str(src), *args, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)], timeout=120)
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """3 s of a labelled talking head at 720x1280, marked and unmarked, each encoded at CRF 23."""
    root = tmp_path_factory.mktemp("watermark")
    originals = [labelled_frame(i, width=W, height=H) for i in range(SECONDS * FPS)]
    embedder = WatermarkEmbedder(KEY, MARK, width=W, height=H)
    marked = _encode((embedder.embed(f.copy()) for f in originals), root / "marked.mp4")
    return {"marked": marked, "unmarked": _encode(iter(originals), root / "unmarked.mp4")}


def test_the_segment_as_encoded_carries_the_mark(videos):
    res = read_watermark(videos["marked"], KEY)
    assert res.found and res.mark == MARK and res.frames == SECONDS * FPS
    assert res.bit_errors == 0 and res.score > 0.8
    assert read_watermark(videos["marked"], KEY, max_frames=5).frames == 5


@pytest.mark.parametrize(("name", "args"), [
    ("crf28", ["-crf", "28"]),
    ("half", ["-vf", "scale=iw/2:ih/2"]),
    ("crf28-half", ["-vf", "scale=iw/2:ih/2", "-crf", "28"]),
])
def test_survives_reencoding_and_scaling(videos, tmp_path, name, args):
    """POLICY M3: the mark still decodes after an H.264 re-encode at CRF 28, scaling to 50%, or both."""
    out = _reencode(videos["marked"], tmp_path / f"{name}.mp4", *args)
    res = read_watermark(out, KEY)
    assert res.found and res.mark == MARK, res
    assert res.bit_errors < 0.05 * CODED_BITS  # raw coded bits: the code has plenty left to correct
    assert not read_watermark(out, b"some other platform's key").found


def test_a_one_second_cut_from_the_middle_still_reads(videos, tmp_path):
    cut = _reencode(videos["marked"], tmp_path / "cut.mp4", "-ss", "1", "-t", "1", "-crf", "23")
    res = read_watermark(cut, KEY)
    assert res.found and res.mark == MARK and res.frames == FPS


def test_unmarked_video_is_not_found(videos, tmp_path):
    """POLICY M3: unmarked video, as encoded and after a re-encode, reads as unmarked."""
    for path in (videos["unmarked"], _reencode(videos["unmarked"], tmp_path / "u.mp4", "-vf", "scale=iw/2:ih/2",
                                               "-crf", "28")):
        res = read_watermark(path, KEY)
        assert not res.found and res.mark is None and res.frames > 0, res


def test_a_file_without_video_is_named(tmp_path):
    audio = tmp_path / "voice-only.m4a"
    run_ffmpeg([*FFMPEG, "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(audio)],
               timeout=60)
    with pytest.raises(WatermarkError, match="voice-only.m4a.*no video stream"):
        read_watermark(audio, KEY)
