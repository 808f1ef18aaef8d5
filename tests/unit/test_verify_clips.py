"""What `studio verify` opens: the formats a clip comes in (MP4, MPEG-TS, a show's FLV recording, Matroska) by an
allowed demuxer only, and nothing that names other files. PyAV 13 crashed the process (SIGSEGV) opening FLV with
open options, so an FLV recording is opened by its demuxer named outright; run in a child so a crash fails the test
instead of ending the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

OPEN = """
import sys
from pathlib import Path
from workers.provenance.verify import _open_clip
with _open_clip(Path(sys.argv[1])) as c:
    print(c.format.name, sum(1 for _ in c.decode(video=0)))
"""


def _open_in_child(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", OPEN, str(path)], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[2])


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    out = {"mp4": d / "clip.mp4", "ts": d / "clip.ts", "flv": d / "clip.flv", "mkv": d / "clip.mkv"}
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=1",
                    "-c:v", "libx264", str(out["mp4"])], check=True)
    for kind in ("ts", "flv", "mkv"):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(out["mp4"]), "-c", "copy", str(out[kind])], check=True)
    # a playlist naming the MP4, which FFmpeg's HLS demuxer would follow (a NUL byte keeps it from the sniffer)
    out["playlist"] = d / "recording.m3u8"
    out["playlist"].write_bytes(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{out['mp4']}\n\x00".encode())
    return out


@pytest.mark.parametrize(("kind", "demuxer"), [("mp4", "mov,mp4,m4a,3gp,3g2,mj2"), ("ts", "mpegts"), ("flv", "flv"),
                                               ("mkv", "matroska,webm")])
def test_the_formats_a_clip_comes_in_open_with_every_frame(clips, kind, demuxer):
    res = _open_in_child(clips[kind])
    assert res.returncode == 0, (res.returncode, res.stderr[-500:])
    assert res.stdout.split() == [demuxer, "25"]


def test_a_playlist_is_not_opened(clips):
    res = _open_in_child(clips["playlist"])
    assert res.returncode == 1 and "Invalid argument" in res.stderr, (res.returncode, res.stderr[-500:])
    assert res.stdout == ""
