"""Test media: ffmpeg lavfi sources encoded with exactly the channel settings (x264 + AAC args).

Import as `from tests.media_helpers import make_test_segment` (run pytest from the repository root).
"""

from __future__ import annotations

import socket
import subprocess
from fractions import Fraction
from pathlib import Path

from studio.config import MediaProfile
from workers.media.ffmpeg_args import aac_audio_args, x264_video_args
from workers.media.proc import run_ffmpeg

PATTERNS = ("testsrc2", "testsrc", "smptebars", "rgbtestsrc")


def make_test_segment(
    path: Path,
    *,
    seconds: float,
    profile: MediaProfile,
    color: str | None = None,
    pattern: str = "testsrc2",
    tone_hz: float = 440.0,
) -> Path:
    """Write an MP4 segment: `color` (an ffmpeg colour such as "red" or "0x00ff00") or a test `pattern`,
    with a sine tone; exactly seconds * fps frames and the audio trimmed to the same length."""
    frames = Fraction(str(seconds)) * profile.fps
    if frames <= 0 or frames.denominator != 1:
        raise ValueError(
            f"seconds * fps must be a whole number of frames > 0, got {seconds} s at {profile.fps} fps"
        )
    if color is None and pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if not tone_hz > 0:
        raise ValueError(f"tone_hz must be > 0, got {tone_hz!r}")
    size, fps = f"{profile.width}x{profile.height}", profile.fps
    source = f"color=c={color}:s={size}:r={fps}" if color is not None else f"{pattern}=s={size}:r={fps}"
    duration = f"{float(frames / fps):.6f}"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg([
        "ffmpeg", "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
        "-f", "lavfi", "-i", source,
        "-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate={profile.audio_rate}",
        "-map", "0:v:0", "-map", "1:a:0",
        *x264_video_args(profile),
        *aac_audio_args(profile),
        "-af", f"apad,atrim=0:{duration}",
        # -t, not -frames:v: ffmpeg 5.x ends every stream when one hits its -frames limit (audio cut short).
        "-t", duration,
        "-movflags", "+faststart",
        "-f", "mp4", str(path),
    ], timeout=120)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop a child as a supervisor would: terminate, wait, kill."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
