"""media.video_encoder: one argument builder per H.264 encoder, each asking for the stream the streamer can join
(High profile, 4:2:0, closed GOPs of gop_frames without scene cuts or B-frames, SPS/PPS on every IDR); the default
is today's libx264 command to the byte; an encoder this host's ffmpeg cannot open fails `studio config check` and
a render worker's start, naming the encoder and the setting (real ffmpeg, no mocks)."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from api.cli import app as cli
from studio.config import VIDEO_ENCODERS, ConfigError, MediaProfile, load_settings
from workers.media.encode import pipe_frames
from workers.media.encoder_check import encoder_problems, ffmpeg_encoders
from workers.media.ffmpeg_args import (
    VIDEO_ARGS,
    encoder_global_args,
    segment_encode_args,
    video_args,
    x264_video_args,
)

SMALL = dict(width=160, height=288, fps=25)

# The video options every segment and slate were encoded with before media.video_encoder existed.
TODAYS_X264 = ["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-level:v", "4.0", "-pix_fmt",
               "yuv420p", "-crf", "23", "-maxrate", "3500k", "-bufsize", "7000k", "-g", "25", "-keyint_min", "25",
               "-sc_threshold", "0", "-bf", "0", "-flags", "+cgop", "-x264-params", "repeat-headers=1", "-r", "25"]


def option(args: list[str], name: str) -> str:
    """The value given to `name` (exactly once) in an ffmpeg argument list."""
    assert args.count(name) == 1, f"{name} given {args.count(name)} times in {args}"
    return args[args.index(name) + 1]


# --- the builders -------------------------------------------------------------------------------------------------
def test_the_default_is_todays_libx264_command_byte_for_byte():
    profile = MediaProfile()
    assert profile.video_encoder == "libx264"
    assert video_args(profile) == x264_video_args(profile) == TODAYS_X264
    assert encoder_global_args(profile) == []
    args = segment_encode_args(profile, audio_path="a.wav", out_path="o.mp4", frames=50, metadata={"k": "v"})
    assert args == ["ffmpeg", "-hide_banner", "-y", "-loglevel", "error",
                    "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "720x1280", "-r", "25", "-i", "pipe:0",
                    "-i", "a.wav", "-map", "0:v:0", "-map", "1:a:0", *TODAYS_X264,
                    "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
                    "-af", "apad,atrim=0:2.000000", "-t", "2.000000",
                    "-movflags", "+faststart+use_metadata_tags", "-metadata", "k=v", "-f", "mp4", "o.mp4"]


def test_every_allowed_encoder_has_a_builder_and_no_other():
    assert set(VIDEO_ARGS) == set(VIDEO_ENCODERS) == {"libx264", "h264_nvenc", "h264_qsv", "h264_vaapi"}


# Per encoder, the options that give each property of the joinable stream.
PROPERTIES = {
    "libx264": {
        "no B-frames": {"-bf": "0"},
        "closed GOP of gop_frames, no scene cuts": {"-g": "50", "-keyint_min": "50", "-sc_threshold": "0",
                                                    "-flags": "+cgop"},
        "SPS/PPS on every IDR": {"-x264-params": "repeat-headers=1"},
        "High, 4:2:0": {"-profile:v": "high", "-pix_fmt": "yuv420p"},
        "constant quality under a cap": {"-crf": "30", "-maxrate": "2000k", "-bufsize": "4000k"},
    },
    "h264_nvenc": {
        "no B-frames": {"-bf": "0"},
        "closed GOP of gop_frames, no scene cuts": {"-g": "50", "-forced-idr": "1", "-strict_gop": "1",
                                                    "-no-scenecut": "1"},
        "SPS/PPS on every IDR": {"-bsf:v": "dump_extra=freq=keyframe"},
        "High, 4:2:0": {"-profile:v": "high", "-pix_fmt": "yuv420p"},
        "constant quality under a cap": {"-rc": "vbr", "-cq": "30", "-b:v": "0", "-maxrate": "2000k",
                                         "-bufsize": "4000k"},
    },
    "h264_qsv": {
        "no B-frames": {"-bf": "0", "-adaptive_b": "0"},
        "closed GOP of gop_frames, no scene cuts": {"-g": "50", "-idr_interval": "0", "-forced_idr": "1",
                                                    "-adaptive_i": "0"},
        "SPS/PPS on every IDR": {"-bsf:v": "dump_extra=freq=keyframe"},
        "High, 4:2:0": {"-profile:v": "high", "-pix_fmt": "nv12"},
        "constant quality under a cap": {"-global_quality": "30", "-b:v": "1500k", "-maxrate": "2000k",
                                         "-bufsize": "4000k"},
    },
    "h264_vaapi": {
        "no B-frames": {"-bf": "0"},
        "closed GOP of gop_frames, no scene cuts": {"-g": "50", "-idr_interval": "0", "-flags": "+cgop"},
        # VA-API writes its packed SPS/PPS in front of every IDR itself; a bitstream filter would double them.
        "SPS/PPS on every IDR": {"-idr_interval": "0"},
        "High, 4:2:0": {"-profile:v": "high", "-vf": "format=nv12,hwupload"},
        "constant quality under a cap": {"-rc_mode": "QVBR", "-global_quality": "30", "-b:v": "1500k",
                                         "-maxrate": "2000k", "-bufsize": "4000k"},
    },
}


@pytest.mark.parametrize("encoder", sorted(PROPERTIES))
def test_each_builder_asks_for_the_joinable_stream(encoder):
    profile = MediaProfile(video_encoder=encoder, fps=25, gop_seconds=2.0, video_crf=30, video_maxrate_kbps=2000)
    args = video_args(profile)
    assert option(args, "-c:v") == encoder and option(args, "-r") == "25"
    for prop, wanted in PROPERTIES[encoder].items():
        assert {name: option(args, name) for name in wanted} == wanted, f"{encoder}: {prop}"
    if encoder == "h264_vaapi":
        assert "-bsf:v" not in args


def test_the_hardware_encoders_read_crf_0_as_their_best_quality_not_as_auto():
    for encoder, name in (("h264_nvenc", "-cq"), ("h264_qsv", "-global_quality"), ("h264_vaapi", "-global_quality")):
        assert option(video_args(MediaProfile(video_encoder=encoder, video_crf=0)), name) == "1"


def test_vaapi_opens_its_device_before_the_inputs():
    profile = MediaProfile(video_encoder="h264_vaapi", vaapi_device="/dev/dri/renderD129", **SMALL)
    args = segment_encode_args(profile, audio_path="a.wav", out_path="o.mp4", frames=25)
    assert option(args, "-vaapi_device") == "/dev/dri/renderD129"
    assert args.index("-vaapi_device") < args.index("-i")
    for encoder in ("libx264", "h264_nvenc", "h264_qsv"):
        assert encoder_global_args(MediaProfile(video_encoder=encoder)) == []


# --- the setting ----------------------------------------------------------------------------------------------------
def test_an_unknown_encoder_is_refused_naming_the_value(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("media:\n  video_encoder: h265_nvenc\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path, env={})
    ((where, message),) = exc.value.problems
    assert where == "media.video_encoder"
    assert "'h265_nvenc'" in message and "libx264, h264_nvenc, h264_qsv, h264_vaapi" in message
    with pytest.raises(ValueError, match="unknown video encoder 'x264'"):
        MediaProfile(video_encoder="x264")


def test_the_setting_comes_from_the_environment_too(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("{}\n")
    assert load_settings(path, env={}).media.video_encoder == "libx264"
    env = {"STUDIO_MEDIA__VIDEO_ENCODER": "h264_qsv"}
    assert load_settings(path, env=env).media.video_encoder == "h264_qsv"


# --- this host's ffmpeg (real) --------------------------------------------------------------------------------------
def test_the_encoder_list_is_read_once_per_process():
    first = ffmpeg_encoders()
    assert "libx264" in first and "aac" in first and "=" not in first  # the legend is not read as encoders
    hits = ffmpeg_encoders.cache_info().hits
    assert ffmpeg_encoders() is first and ffmpeg_encoders.cache_info().hits == hits + 1


def test_libx264_opens_here():
    assert encoder_problems(MediaProfile(**SMALL)) == []


def test_a_missing_ffmpeg_is_named():
    (problem,) = encoder_problems(MediaProfile(), ffmpeg="/nonexistent/ffmpeg")
    assert "media.video_encoder is 'libx264'" in problem and "not installed" in problem


@pytest.fixture
def no_cuda(monkeypatch):
    """No CUDA device for the ffmpeg children, so that h264_nvenc cannot open here even on a host with NVENC."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")


def test_config_check_fails_for_nvenc_on_a_host_that_cannot_open_it(tmp_path, no_cuda):
    path = tmp_path / "nvenc.yaml"
    path.write_text("media:\n  video_encoder: h264_nvenc\n")
    res = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert res.exit_code == 1, res.output
    assert "media.video_encoder is 'h264_nvenc' but this ffmpeg" in res.output
    assert "set media.video_encoder: libx264" in res.output and "ok" not in res.output


def test_config_check_passes_with_the_default_encoder(tmp_path):
    path = tmp_path / "default.yaml"
    path.write_text("media:\n  width: 160\n  height: 288\n")
    res = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert res.exit_code == 0, res.output
    assert "160x288@25 (libx264)" in res.output


@pytest.fixture
def role_start(monkeypatch, caplog):
    """`role_settings` for real, up to its first refusal; what it logged."""
    import workers.logs

    monkeypatch.setattr(workers.logs, "configure_logging", lambda role, **_: None)
    for name in ("STUDIO_ROLE", "STUDIO_AUDIT_ROLES", "STUDIO_CONFIG"):
        monkeypatch.setenv(name, "")  # put back after the test, whatever role_settings sets
    caplog.set_level("ERROR", logger="studio.role")

    def start(path: Path, *, encodes: bool) -> str:
        from api.cli_roles import role_settings

        caplog.clear()
        with pytest.raises(typer.Exit) as exc:
            role_settings(path, "worker", ("render",), encodes=encodes)
        assert exc.value.exit_code == 2
        return caplog.text

    return start


def test_a_render_worker_refuses_to_start_with_an_encoder_this_host_cannot_open(tmp_path, role_start, no_cuda):
    path = tmp_path / "nvenc.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\nmedia:\n  video_encoder: h264_nvenc\n")
    said = role_start(path, encodes=True)
    assert "worker cannot start: media.video_encoder is 'h264_nvenc'" in said
    assert "set media.video_encoder: libx264" in said
    # A worker that encodes nothing for air (ingest, publish) is not held up by the encoder: it gets further
    # and stops at the next check (no keys in this empty data directory).
    assert "video_encoder" not in role_start(path, encodes=False)


def test_the_worker_checks_the_encoder_when_it_renders_and_the_streamer_always(monkeypatch):
    import api.cli_roles
    import workers.worker_report
    from workers.worker_report import CPU

    asked: list[bool] = []

    def refuse(config, role, audit_roles, *, encodes=False):
        asked.append(encodes)
        raise typer.Exit(2)

    monkeypatch.setattr(api.cli_roles, "role_settings", refuse)
    monkeypatch.setattr(workers.worker_report, "probe_device", lambda: CPU)
    for argv in (["worker", "--queues", "ingest,publish"], ["worker", "--queues", "render"], ["streamer"]):
        assert CliRunner().invoke(cli, argv).exit_code == 2
    assert asked == [False, True, True]


# --- what comes out (real encodes) ----------------------------------------------------------------------------------
def h264_facts(path: Path) -> dict:
    """What the streamer relies on, read from the MP4's samples: profile, pixel format, keyframe positions, whether
    every keyframe is an IDR carrying SPS and PPS in-band, slice types, and pts == dts (no reordering)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        size = (ctx.extradata[4] & 3) + 1  # avcC lengthSizeMinusOne
        keyframes, idr_with_headers, slice_types, reordered = [], [], set(), False
        for i, packet in enumerate(p for p in container.demux(stream) if p.size):
            nals = list(_nal_units(bytes(packet), size))
            kinds = [nal[0] & 0x1F for nal in nals]
            if packet.is_keyframe:
                keyframes.append(i)
                idr_with_headers.append({5, 7, 8} <= set(kinds) and kinds.index(5) > max(kinds.index(7),
                                                                                        kinds.index(8)))
            slice_types |= {_slice_type(nal) for nal in nals if nal[0] & 0x1F in (1, 5)}
            reordered |= packet.pts != packet.dts
        return {"profile": ctx.profile, "pix_fmt": ctx.pix_fmt, "frames": i + 1, "keyframes": keyframes,
                "idr_with_headers": all(idr_with_headers), "slice_types": slice_types, "reordered": reordered}


def _nal_units(data: bytes, size: int):
    pos = 0
    while pos + size <= len(data):
        n = int.from_bytes(data[pos:pos + size], "big")
        yield data[pos + size:pos + size + n]
        pos += size + n


def _slice_type(nal: bytes) -> str:
    """P, B or I from a slice header: first_mb_in_slice and slice_type, two Exp-Golomb codes after the NAL header
    (the first bytes of a slice header hold no emulation-prevention byte in practice at these sizes)."""
    bits = "".join(f"{b:08b}" for b in nal[1:9])
    pos, values = 0, []
    for _ in range(2):
        zeros = bits.index("1", pos) - pos
        values.append(int(bits[pos + zeros:pos + 2 * zeros + 1], 2) - 1)
        pos += 2 * zeros + 1
    return "PBI"[values[1] % 5] if values[1] % 5 < 3 else "SP/SI"


def encode_segment(profile: MediaProfile, out: Path, *, seconds: int = 3) -> Path:
    """A segment through the production command: moving noise with a hard cut off the GOP grid (a scene cut an
    encoder allowed to would mark with a keyframe)."""
    n = seconds * profile.fps
    cut = profile.gop_frames + profile.gop_frames // 2
    rng = np.random.default_rng(7)
    scenes = [rng.integers(0, 255, (profile.height, profile.width, 3), dtype=np.uint8) for _ in range(2)]
    frames = (np.roll(scenes[i >= cut], 4 * i, axis=1) for i in range(n))
    wav = out.with_suffix(".wav")
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 16000 * seconds)
    args = segment_encode_args(profile, audio_path=str(wav), out_path=str(out), frames=n)
    pipe_frames(args, frames, expect=n, shape=(profile.height, profile.width))
    return out


def assert_joinable(facts: dict, profile: MediaProfile, frames: int) -> None:
    g = profile.gop_frames
    assert facts["profile"] == "High" and facts["pix_fmt"] == "yuv420p"
    assert facts["frames"] == frames
    assert facts["keyframes"] == list(range(0, frames, g)), "a keyframe off the GOP grid (scene cut?)"
    assert facts["idr_with_headers"], "a keyframe that is not an IDR with SPS and PPS in front of it"
    assert "B" not in facts["slice_types"] and not facts["reordered"]


def test_a_libx264_segment_is_joinable(tmp_path):
    profile = MediaProfile(**SMALL)
    facts = h264_facts(encode_segment(profile, tmp_path / "x264.mp4"))
    assert_joinable(facts, profile, 3 * profile.fps)
    assert facts["slice_types"] == {"I", "P"}


# Errors ffmpeg gives when the GPU has no NVENC engine (H100, H200, A100) or the driver lacks its library.
NO_NVENC = ("No capable devices found", "unsupported device", "Cannot load libnvidia-encode", "Cannot load libcuda",
            "no CUDA-capable device")


@pytest.mark.gpu
def test_an_nvenc_segment_is_joinable(tmp_path):
    profile = MediaProfile(video_encoder="h264_nvenc", **SMALL)
    problems = encoder_problems(profile)
    if problems and any(sign in problems[0] for sign in NO_NVENC):
        pytest.skip("this NVIDIA GPU has no NVENC engine that ffmpeg can open (the data-centre H100 and H200 have "
                    f"none; libx264 encodes there): {problems[0]}")
    assert problems == []
    facts = h264_facts(encode_segment(profile, tmp_path / "nvenc.mp4"))
    assert_joinable(facts, profile, 3 * profile.fps)


def test_the_checks_catch_an_encoding_the_streamer_could_not_join(tmp_path, monkeypatch):
    """libx264 left to its defaults: B-frames, a keyframe at the scene cut, SPS/PPS only in the MP4 header."""
    import workers.media.ffmpeg_args as ffmpeg_args

    monkeypatch.setitem(ffmpeg_args.VIDEO_ARGS, "libx264",
                        lambda p: ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "25"])
    profile = MediaProfile(**SMALL)
    facts = h264_facts(encode_segment(profile, tmp_path / "plain.mp4"))
    assert "B" in facts["slice_types"] and facts["reordered"]
    assert not facts["idr_with_headers"]
    assert facts["keyframes"] != list(range(0, 3 * profile.fps, profile.gop_frames))


# --- slates kept in the store ---------------------------------------------------------------------------------------
def test_a_slate_encoded_with_other_video_options_is_not_reused(tmp_path):
    """A streamer reuses a stored slate only when it was encoded with this profile's video options: after a change
    of media.video_encoder its SPS/PPS would not match the segments rendered now, and every one would be refused."""
    from types import SimpleNamespace

    from studio.audit_keys import AuditKeyring
    from studio.config import Settings
    from studio.policy import REQUIRED_LABELS, make_stamp
    from studio.runtime import Runtime
    from studio.storage import DataDir, sha256_file
    from workers.streamer.supervisor import ChannelRunner

    def runner(**media):
        settings = Settings(data_dir=str(tmp_path / "data"), media=media)
        rt = Runtime(settings=settings, engine=None, data=DataDir(settings.data_path).ensure(), key=b"k" * 32,
                     audit_keys=AuditKeyring({}))
        return SimpleNamespace(rt=rt, channel=SimpleNamespace(id="ch1"))

    x264 = runner()
    slate = x264.rt.data.segments / "ch1" / "slate-card.mp4"
    slate.parent.mkdir(parents=True)
    slate.write_bytes(b"a slate")
    stamp = make_stamp(x264.rt.key, segment_id="slate-ch1", channel_id="ch1", produce_id="p", labels=REQUIRED_LABELS,
                       sha256=sha256_file(slate), policy="policy-digest")
    ChannelRunner._publish_slate(x264, slate, stamp, None)
    assert ChannelRunner._reused(x264, slate, avatar_id=None, policy="policy-digest")
    assert not ChannelRunner._reused(runner(video_encoder="h264_nvenc"), slate, avatar_id=None, policy="policy-digest")
    assert not ChannelRunner._reused(runner(video_crf=30), slate, avatar_id=None, policy="policy-digest")
