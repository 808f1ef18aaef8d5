import subprocess
import sys
import time

import pytest

from workers.media.proc import FFmpegProcess, MediaError, run_ffmpeg, scrub_url_keys


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtmp://live.example.com/app/sk_live_123", "rtmp://live.example.com/app/****"),
        ("rtmps://live-api-s.facebook.com:443/rtmp/FB-123-0-Ab", "rtmps://live-api-s.facebook.com:443/rtmp/****"),
        ("[tcp] rtmp://127.0.0.1:1935/live/secret: Connection refused",
         "[tcp] rtmp://127.0.0.1:1935/live/****: Connection refused"),
        ("[f=flv:onfail=ignore]rtmp://a/live/k1|[f=flv:onfail=ignore]rtmps://b/app/k2",
         "[f=flv:onfail=ignore]rtmp://a/live/****|[f=flv:onfail=ignore]rtmps://b/app/****"),
        ("rtmp://h/app/key?token=abc", "rtmp://h/app/****"),
        ("rtmp://h/app/key/", "rtmp://h/app/****/"),
        ("rtmp://user:pw@h/app/key", "rtmp://****@h/app/****"),
        ("RTMP://H/app/inst/key", "RTMP://H/app/inst/****"),
        ("'rtmp://h/app/key'.", "'rtmp://h/app/****'."),
    ],
)
def test_scrub_masks_stream_keys(text, expected):
    assert scrub_url_keys(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "frame=  100 fps= 25 q=-1.0 size=  512kB time=00:00:04.00",
        "https://example.com/live/not-an-rtmp-key and /local/path/file.mp4",
        "rtmp://host/app",  # application only: no key to hide
        "Stream #0:0: Video: h264 (High), yuv420p, 720x1280, 25 fps",
    ],
)
def test_scrub_leaves_other_text_alone(text):
    assert scrub_url_keys(text) == text


def test_scrub_every_url_in_a_multiline_text():
    text = "push to rtmp://a/live/one\nand rtmps://b:443/app/two failed"
    assert scrub_url_keys(text) == "push to rtmp://a/live/****\nand rtmps://b:443/app/**** failed"


def test_run_ffmpeg_missing_input_raises_with_ffmpegs_message(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(MediaError) as info:
        run_ffmpeg(["ffmpeg", "-hide_banner", "-nostdin", "-i", str(missing), "-f", "null", "-"], timeout=30)
    assert "No such file or directory" in str(info.value)
    assert str(missing) in str(info.value)
    assert info.value.returncode not in (0, None)


def test_run_ffmpeg_garbage_input_raises_with_ffmpegs_message(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(MediaError, match="Invalid data found when processing input"):
        run_ffmpeg(["ffmpeg", "-hide_banner", "-nostdin", "-i", str(junk), "-f", "null", "-"], timeout=30)


def test_run_ffmpeg_error_hides_the_stream_key():
    # Nothing listens on port 1: ffmpeg fails at once and names the URL in its message.
    with pytest.raises(MediaError) as info:
        run_ffmpeg(["ffmpeg", "-hide_banner", "-nostdin", "-f", "lavfi", "-i", "anullsrc", "-t", "1",
                    "-c:a", "aac", "-f", "flv", "rtmp://127.0.0.1:1/live/sekrit-key"], timeout=30)
    message = str(info.value)
    assert "sekrit-key" not in message
    assert "rtmp://127.0.0.1:1/live/****" in message


def test_run_ffmpeg_succeeds_and_feeds_stdin(tmp_path):
    out = tmp_path / "a.wav"
    pcm = b"\x00\x00" * 8000
    run_ffmpeg(["ffmpeg", "-hide_banner", "-y", "-f", "s16le", "-ar", "8000", "-ac", "1", "-i", "pipe:0",
                str(out)], input_bytes=pcm, timeout=30)
    assert out.stat().st_size > len(pcm)


def test_run_ffmpeg_rejects_a_shell_string():
    with pytest.raises(ValueError, match="argument list"):
        run_ffmpeg("ffmpeg -version")  # type: ignore[arg-type]


def test_process_stderr_tail_is_bounded_and_scrubbed():
    script = "import sys\nfor i in range(50): print(f'line {i} rtmp://h/app/key{i}', file=sys.stderr)"
    proc = FFmpegProcess([sys.executable, "-c", script], tail_lines=5)
    assert proc.wait(timeout=10) == 0
    lines = proc.stderr_tail().splitlines()
    assert lines == [f"line {i} rtmp://h/app/****" for i in range(45, 50)]
    assert proc.stderr_tail(2).splitlines() == lines[-2:]
    assert not proc.alive


def test_process_stop_closes_stdin_and_ffmpeg_finishes(tmp_path):
    out = tmp_path / "b.wav"
    proc = FFmpegProcess(["ffmpeg", "-hide_banner", "-y", "-f", "s16le", "-ar", "8000", "-ac", "1",
                          "-i", "pipe:0", str(out)], stdin=True)
    assert proc.alive
    proc.stdin.write(b"\x00\x00" * 8000)
    started = time.monotonic()
    assert proc.stop(timeout=5) == 0  # EOF on stdin: a clean exit, no signal needed
    assert time.monotonic() - started < 5
    assert out.stat().st_size > 16000


def test_process_stop_terminates_then_kills():
    # Ignores SIGTERM, so stop() must escalate to SIGKILL.
    script = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "print('ready', flush=True)\ntime.sleep(60)")
    proc = FFmpegProcess([sys.executable, "-c", script], stdout=True)
    assert proc.stdout.readline() == b"ready\n"
    started = time.monotonic()
    rc = proc.stop(timeout=0.5)
    assert rc == -9
    assert time.monotonic() - started < 5


def test_process_missing_program_is_a_media_error():
    with pytest.raises(MediaError, match="cannot start"):
        FFmpegProcess(["/nonexistent/ffmpeg-xyz", "-version"])


def test_process_wait_timeout():
    proc = FFmpegProcess([sys.executable, "-c", "import time; time.sleep(30)"])
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.1)
    proc.stop(timeout=2)
    assert not proc.alive
