"""ffmpeg argument builders: pure data, no processes started here.

Every segment of a channel, slate included, is encoded with exactly these settings so that the
streamer can join them without re-encoding: identical SPS/PPS, closed GOP, IDR first, no B-frames
(dts == pts keeps timestamp rewriting trivial), AAC-LC at the profile's rate.

The video encoder is the profile's `video_encoder`; each one's builder below asks for that same stream: H.264
High at level 4.0, 4:2:0 8-bit, a closed GOP of exactly gop_frames that starts on an IDR (no scene-cut
keyframes), no B-frames, SPS/PPS in-band before every IDR, constant quality from video_crf under the
video_maxrate_kbps VBV cap. NVIDIA's data-centre GPUs (H100, H200) have no NVENC: on those hosts the default
libx264 encodes on the CPU cores while the GPU renders.
"""

from __future__ import annotations

from collections.abc import Callable

from studio.config import MediaProfile


def _quality(profile: MediaProfile) -> str:
    # The hardware encoders read quality 0 as "pick one yourself"; the nearest to x264's lossless CRF 0 is 1.
    return str(max(1, profile.video_crf))


def _vbv(profile: MediaProfile) -> list[str]:
    return ["-maxrate", f"{profile.video_maxrate_kbps}k", "-bufsize", f"{profile.video_maxrate_kbps * 2}k"]


def _qvbr_target(profile: MediaProfile) -> list[str]:
    # Quick Sync and VA-API's quality-defined VBR needs an average target; one equal to maxrate would make QSV pick
    # CBR instead, so the target is three quarters of the cap and the quality level does the rest.
    return ["-b:v", f"{profile.video_maxrate_kbps * 3 // 4}k"]


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


def nvenc_video_args(profile: MediaProfile) -> list[str]:
    """NVIDIA NVENC. Not on the H100 or H200, whose chips have no NVENC engine (use libx264 there)."""
    g = profile.gop_frames
    return [
        "-c:v", "h264_nvenc",
        "-preset", "p4",
        "-tune", "ll",
        "-profile:v", "high",
        "-level:v", "4.0",
        "-pix_fmt", "yuv420p",
        # NVENC's target-quality mode: VBR with -cq and no average bitrate, bounded by maxrate.
        "-rc", "vbr",
        "-cq", _quality(profile),
        "-b:v", "0",
        *_vbv(profile),
        # idrPeriod follows -g, so every GOP starts on an IDR; without B-frames each GOP is closed.
        "-g", str(g),
        "-bf", "0",
        "-forced-idr", "1",
        "-strict_gop", "1",
        "-no-scenecut", "1",
        # NVENC repeats SPS/PPS only when the muxer wants no global header, and MP4 wants one: copy the
        # headers in front of every keyframe instead.
        "-bsf:v", "dump_extra=freq=keyframe",
        "-r", str(profile.fps),
    ]


def qsv_video_args(profile: MediaProfile) -> list[str]:
    """Intel Quick Sync (system-memory NV12 frames, uploaded by the encoder)."""
    g = profile.gop_frames
    return [
        "-c:v", "h264_qsv",
        "-preset", "medium",
        "-profile:v", "high",
        "-level:v", "40",  # level_idc: QSV takes the level as a number, 40 = 4.0
        "-pix_fmt", "nv12",
        # global_quality with maxrate and a lower target selects QVBR (constant quality under the cap).
        "-global_quality", _quality(profile),
        *_qvbr_target(profile),
        *_vbv(profile),
        # Without -flags +cgop ffmpeg asks for MFX_GOP_STRICT (the GOP length exactly as given); without
        # B-frames each GOP is closed, and idr_interval 0 makes every I-frame an IDR.
        "-g", str(g),
        "-bf", "0",
        "-idr_interval", "0",
        "-forced_idr", "1",
        "-adaptive_i", "0",
        "-adaptive_b", "0",
        "-bsf:v", "dump_extra=freq=keyframe",
        "-r", str(profile.fps),
    ]


def vaapi_video_args(profile: MediaProfile) -> list[str]:
    """VA-API on media.vaapi_device (see encoder_global_args); frames are uploaded to the device as NV12."""
    g = profile.gop_frames
    return [
        "-vf", "format=nv12,hwupload",
        "-c:v", "h264_vaapi",
        "-profile:v", "high",
        "-level:v", "40",  # level_idc: 40 = 4.0 ("4.0" would parse as level_idc 4)
        "-rc_mode", "QVBR",
        "-global_quality", _quality(profile),
        *_qvbr_target(profile),
        *_vbv(profile),
        # VA-API places I-frames at -g only (no scene-cut detection); idr_interval 0 makes each one an IDR,
        # and the encoder writes its packed SPS/PPS in front of every IDR itself (no bitstream filter needed).
        "-g", str(g),
        "-bf", "0",
        "-idr_interval", "0",
        "-flags", "+cgop",
        "-r", str(profile.fps),
    ]


# media.video_encoder -> its builder; studio.config.VIDEO_ENCODERS names the same four.
VIDEO_ARGS: dict[str, Callable[[MediaProfile], list[str]]] = {
    "libx264": x264_video_args,
    "h264_nvenc": nvenc_video_args,
    "h264_qsv": qsv_video_args,
    "h264_vaapi": vaapi_video_args,
}


def video_args(profile: MediaProfile) -> list[str]:
    """The output options of the profile's video encoder (media.video_encoder)."""
    return VIDEO_ARGS[profile.video_encoder](profile)


def encoder_global_args(profile: MediaProfile) -> list[str]:
    """Options that go before the inputs: the VA-API device that hwupload and h264_vaapi use; none otherwise."""
    return ["-vaapi_device", profile.vaapi_device] if profile.video_encoder == "h264_vaapi" else []


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
        *encoder_global_args(profile),
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{profile.width}x{profile.height}",
        "-r", str(profile.fps), "-i", "pipe:0",
        "-i", audio_path,
        "-map", "0:v:0", "-map", "1:a:0",
        *video_args(profile),
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
