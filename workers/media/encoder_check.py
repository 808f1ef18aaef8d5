"""Can this host encode with media.video_encoder? Asked by `studio config check` and before a render worker or a
streamer starts, so that a missing encoder, GPU or driver refuses the start instead of failing every segment and
slate once the channel is on air.

Two questions, both put to the real ffmpeg: does `ffmpeg -encoders` list the encoder (read once per process), and
does a one-frame trial encode with the channel's exact video arguments open it (device, driver, rate-control mode).
"""

from __future__ import annotations

import functools
import re
import subprocess

from studio.config import MediaProfile
from workers.media.ffmpeg_args import encoder_global_args, video_args

FALLBACK = "libx264"
TRIAL_TIMEOUT_S = 60
_ENCODER_LINE = re.compile(r"^\s*[VAS][A-Z.]{5}\s+(\S+)")
_LOG_PREFIX = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*")


class FFmpegMissing(RuntimeError):
    """ffmpeg cannot be run at all, or cannot list its encoders; the message says why."""


@functools.lru_cache(maxsize=4)
def ffmpeg_encoders(ffmpeg: str = "ffmpeg") -> frozenset[str]:
    """The encoder names `ffmpeg -encoders` lists (read once per process: it does not change while we run)."""
    try:
        out = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise FFmpegMissing(f"{ffmpeg} is not installed (not found on PATH); every segment is encoded with it, "
                            "install it (Debian: apt-get install ffmpeg)") from None
    except subprocess.TimeoutExpired:
        raise FFmpegMissing(f"`{ffmpeg} -encoders` did not answer in 30 s") from None
    if out.returncode != 0:
        raise FFmpegMissing(f"`{ffmpeg} -encoders` failed: {_last_line(out.stderr)}")
    # The legend above the "------" line has the same shape as an encoder line; only what follows it counts.
    _, _, table = out.stdout.partition("------")
    return frozenset(m.group(1) for line in table.splitlines() if (m := _ENCODER_LINE.match(line)))


def encoder_problems(profile: MediaProfile, *, ffmpeg: str = "ffmpeg") -> list[str]:
    """Why this host cannot encode segments with `profile.video_encoder`, in words naming the setting and the fix;
    empty when it can."""
    name = profile.video_encoder
    fix = (f"set media.video_encoder: {FALLBACK}" if name != FALLBACK
           else "install an ffmpeg built with libx264 (Debian's ffmpeg is)")
    try:
        listed = ffmpeg_encoders(ffmpeg)
    except FFmpegMissing as exc:
        return [f"media.video_encoder is {name!r} but {exc}"]
    if name not in listed:
        return [f"media.video_encoder is {name!r} but this ffmpeg has no such encoder (`{ffmpeg} -encoders` does "
                f"not list it); {fix}"]
    failed = trial_encode(profile, ffmpeg=ffmpeg)
    if failed is None:
        return []
    if name == "h264_vaapi":
        fix = f"check media.vaapi_device ({profile.vaapi_device}), or {fix}"
    return [f"media.video_encoder is {name!r} but this ffmpeg cannot open it: {failed}; {fix}"]


def trial_encode(profile: MediaProfile, *, ffmpeg: str = "ffmpeg") -> str | None:
    """Encode one black frame of the profile's size with its exact video arguments; None when that works, else
    what ffmpeg said (its line about the encoder or device, else its last line)."""
    args = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", *encoder_global_args(profile),
            "-f", "lavfi", "-i", f"color=c=black:s={profile.width}x{profile.height}:r={profile.fps}",
            "-frames:v", "1", *video_args(profile), "-f", "null", "-"]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=TRIAL_TIMEOUT_S)
    except FileNotFoundError:
        return f"{ffmpeg} is not installed (not found on PATH)"
    except subprocess.TimeoutExpired:
        return f"a one-frame trial encode did not finish in {TRIAL_TIMEOUT_S} s"
    if out.returncode == 0:
        return None
    return _reason(out.stderr, profile.video_encoder).rstrip(".") or f"ffmpeg exited with {out.returncode}"


def _reason(stderr: str, encoder: str) -> str:
    """The line that says why: the encoder's own (`[h264_nvenc @ 0x..] Cannot load libcuda.so.1`), else the first
    line of a hardware device's, else ffmpeg's last line; without the `[name @ 0x..]` prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for tag in (f"[{encoder} @", "[AVHWDeviceContext @"):
        for line in lines:
            if line.startswith(tag):
                return _LOG_PREFIX.sub("", line)
    return _last_line(stderr)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _LOG_PREFIX.sub("", lines[-1]) if lines else ""
