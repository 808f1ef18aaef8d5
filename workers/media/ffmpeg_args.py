"""ffmpeg argument builders: pure data, no processes started here.

Every segment of a channel, slate included, is encoded with exactly these settings so that the
streamer can join them without re-encoding: identical SPS/PPS, closed GOP, IDR first, no B-frames
(dts == pts keeps timestamp rewriting trivial), AAC-LC at the profile's rate.
"""

from __future__ import annotations

from studio.config import MediaProfile


def x264_video_args(profile: MediaProfile) -> list[str]:
    g = profile.gop_frames
    return [
        "-c:v", "libx264",
        "-preset", profile.x264_preset,
        "-profile:v", "high",
        "-level:v", "4.0",
        "-pix_fmt", "yuv420p",
        "-crf", str(profile.video_crf),
        "-maxrate", f"{profile.video_maxrate_kbps}k",
        "-bufsize", f"{profile.video_maxrate_kbps * 2}k",
        "-g", str(g),
        "-keyint_min", str(g),
        "-sc_threshold", "0",
        "-bf", "0",
        "-flags", "+cgop",
        # In-band SPS/PPS on every IDR, so a player that joins mid-stream or at a join decodes at once.
        "-x264-params", "repeat-headers=1",
        "-r", str(profile.fps),
    ]


def aac_audio_args(profile: MediaProfile) -> list[str]:
    return [
        "-c:a", "aac",
        "-b:a", f"{profile.audio_kbps}k",
        "-ar", str(profile.audio_rate),
        "-ac", str(profile.audio_channels),
    ]


def segment_encode_args(
    profile: MediaProfile,
    *,
    audio_path: str,
    out_path: str,
    frames: int,
    metadata: dict[str, str] | None = None,
) -> list[str]:
    """Raw RGB frames on stdin + a WAV file -> one MP4 segment of exactly `frames` frames.

    The audio is padded or cut to the video length so that a segment's audio and video end together.
    Frames beyond `frames` on stdin are dropped (the output is cut at frames / fps seconds).
    """
    duration = frames / profile.fps
    args = [
        "ffmpeg", "-hide_banner", "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{profile.width}x{profile.height}",
        "-r", str(profile.fps), "-i", "pipe:0",
        "-i", audio_path,
        "-map", "0:v:0", "-map", "1:a:0",
        *x264_video_args(profile),
        *aac_audio_args(profile),
        "-af", f"apad,atrim=0:{duration:.6f}",
        # Cut by time, not with -frames:v: ffmpeg 5.x closes EVERY stream of the output as soon as one
        # reaches its -frames limit, which truncated the audio by ~0.5 s (audio gaps at every join).
        "-t", f"{duration:.6f}",
        "-movflags", "+faststart+use_metadata_tags",
    ]
    for key, value in (metadata or {}).items():
        args += ["-metadata", f"{key}={value}"]
    args += ["-f", "mp4", out_path]
    return args


def concat_args(list_file: str, out_path: str, *, metadata: dict[str, str]) -> list[str]:
    """Join segments that share one encoding into one MP4 without re-encoding (a show's recording).

    The source files' own tags are dropped (`-map_metadata -1`): the recording carries its own AIGC mark.
    """
    args = ["ffmpeg", "-hide_banner", "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", list_file,
            "-map", "0", "-c", "copy", "-map_metadata", "-1", "-movflags", "+faststart+use_metadata_tags"]
    for key, value in metadata.items():
        args += ["-metadata", f"{key}={value}"]
    return [*args, "-f", "mp4", out_path]


def push_args(destinations: list[str], *, input_format: str = "flv") -> list[str]:
    """One ffmpeg that reads our already-timed FLV on stdin and copies it to every destination.

    The tee muxer with onfail=ignore keeps the other destinations alive when one fails.
    """
    if not destinations:
        raise ValueError("push_args needs at least one destination URL")
    if len(destinations) == 1:
        out = ["-f", "flv", destinations[0]]
    else:
        out = ["-f", "tee", "|".join(f"[f=flv:onfail=ignore]{d}" for d in destinations)]
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "warning", "-nostdin",
        "-f", input_format, "-i", "pipe:0",
        "-map", "0", "-c", "copy",
        "-flvflags", "no_duration_filesize",
        *out,
    ]
