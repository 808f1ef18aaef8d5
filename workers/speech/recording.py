"""A recorded voice-over, decoded and checked: mono float32 at 16 kHz, or a RecordingError that says why not.

The file is someone's upload: ffmpeg reads it as a plain file only (`file:` and `-protocol_whitelist file`), and only
with the demuxers of ALLOWED_FORMATS (`-format_whitelist`, decided by ffmpeg probing the content, whatever the name
says), so a playlist or concat list cannot make it read other files on the server (another creator's recording,
footage, keys): with `file` allowed, an HLS playlist naming an MP3 or MP4 elsewhere on disk was decoded as the upload.
Text files that would name other files are refused by their first bytes with a reason (workers.media.probe.sniff);
the demuxer allowlist refuses any other. No shell, no stdin, a time limit, and at most `max_seconds` plus one of it
decoded. The duration is probed first, so a three-hour file is refused without being decoded; a
browser's MediaRecorder file (WebM/Opus) often has no duration in its header, and is bounded by the decode instead.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np

RATE = 16000
SILENT_DBFS = -50.0        # speech level below this: nothing was said (a room's noise floor is around -60)
CLIPPED_SHARE = 0.001      # more than 0.1 % of samples in runs at full scale: the level was too high
_FULL_SCALE = 0.985
_TIMEOUT_S = 120
# ffmpeg demuxer names: WAV, MP3, ISO BMFF/QuickTime (M4A, MP4, a phone's recording), Matroska/WebM (Chrome's
# MediaRecorder), Ogg (Firefox's) and FLAC. Nothing that names other files (hls, concat, playlists, image2).
ALLOWED_FORMATS = ("wav", "mp3", "mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "ogg", "flac")
_INPUT = ["-protocol_whitelist", "file", "-format_whitelist", ",".join(ALLOWED_FORMATS)]
_TAKEN = "WAV, MP3, M4A/MP4, WebM, Ogg or FLAC"


class RecordingError(ValueError):
    """A recording that cannot be used; the message names the reason and the value."""


def _ffprobe(path: Path) -> dict:
    try:
        out = subprocess.run(["ffprobe", "-v", "error", *_INPUT, "-show_entries",
                              "format=duration,format_name:stream=codec_type,codec_name", "-of", "json",
                              f"file:{path}"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RecordingError("not an audio file: ffprobe could not read it within 30 s") from None
    if out.returncode != 0:
        if refused := re.search(r"\[(\w+) @ [^]]*\] Format not on whitelist", out.stderr):
            raise RecordingError(f"not an audio file in a format taken here ({_TAKEN}): ffmpeg reads it as "
                                 f"{refused.group(1)!r}, which is refused")
        raise RecordingError("not an audio file: ffmpeg cannot read it ("
                             + (out.stderr.strip().splitlines() or ["unknown format"])[-1][:200] + ")")
    return json.loads(out.stdout or "{}")


def speech_level_dbfs(samples: np.ndarray, rate: int = RATE) -> float:
    """Level of the loudest tenth of 20 ms windows, dBFS: what a listener hears as the speech's loudness."""
    win = rate // 50
    n = len(samples) // win
    if n == 0:
        return -math.inf
    rms = np.sqrt(np.mean(samples[:n * win].astype(np.float64).reshape(n, win) ** 2, axis=1))
    return 20 * math.log10(max(float(np.percentile(rms, 90)), 1e-9))


def clipped_share(samples: np.ndarray) -> float:
    """Share of samples in runs of three or more at full scale (a single peak at 0 dBFS is a normalised file, not
    clipping)."""
    hot = np.abs(samples) >= _FULL_SCALE
    if not hot.any():
        return 0.0
    run = hot[:-2] & hot[1:-1] & hot[2:]
    return float(run.sum()) / len(samples)


def load_recording(path: Path, *, min_seconds: float = 1.0, max_seconds: float = 120.0) -> np.ndarray:
    """Decode `path` to mono float32 at 16 kHz and check it is a usable recording of speech."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise RecordingError(f"cannot read the recording: {exc.strerror}") from None
    if size == 0:
        raise RecordingError("the recording is an empty file (0 bytes)")
    from workers.media.probe import sniff

    if (what := sniff(path, kind="audio")) is not None:
        raise RecordingError(f"not an audio file: this is {what}")
    info = _ffprobe(path)
    streams = info.get("streams") or []
    if not any(s.get("codec_type") == "audio" for s in streams):
        kinds = sorted({s.get("codec_type", "?") for s in streams}) or ["no streams"]
        raise RecordingError(f"not an audio file: ffmpeg found no audio stream in it ({', '.join(kinds)})")
    declared = info.get("format", {}).get("duration")
    if declared not in (None, "N/A"):
        seconds = float(declared)
        if seconds > max_seconds + 0.5:
            raise RecordingError(f"the recording is {seconds:.1f} s long; at most {max_seconds:.0f} s")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", *_INPUT, "-t", f"{max_seconds + 1:.3f}",
           "-i", f"file:{path}", "-vn", "-ac", "1", "-ar", str(RATE), "-f", "f32le", "pipe:1"]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RecordingError(f"the recording could not be decoded within {_TIMEOUT_S} s") from None
    samples = np.frombuffer(out.stdout, "<f4").astype(np.float32)
    if out.returncode != 0 and not len(samples):
        raise RecordingError("not an audio file: ffmpeg could not decode its audio ("
                             + (out.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1][:200] + ")")
    seconds = len(samples) / RATE
    if seconds > max_seconds + 0.5:
        raise RecordingError(f"the recording is longer than {max_seconds:.0f} s")
    if seconds < min_seconds:
        raise RecordingError(f"the recording is {seconds:.2f} s long; at least {min_seconds:.0f} s")
    level = speech_level_dbfs(samples)
    if level < SILENT_DBFS:
        raise RecordingError(f"the recording is silent: its speech level is {level:.0f} dBFS (below "
                             f"{SILENT_DBFS:.0f} dBFS)")
    share = clipped_share(samples)
    if share > CLIPPED_SHARE:
        raise RecordingError(f"the recording is clipped: {share:.1%} of its samples are at full scale (at most "
                             f"{CLIPPED_SHARE:.1%}); record it again at a lower level")
    return np.clip(samples, -1.0, 1.0)
