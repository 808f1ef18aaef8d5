"""A channel feeder airing segments, slates and refusals through real nginx-rtmp, recorded by a subscriber."""

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from studio.config import MediaProfile
from tests.media_helpers import free_port, make_test_segment
from workers.media.proc import FFmpegProcess
from workers.streamer.feeder import ChannelFeeder, SegmentRef, StreamError
from workers.streamer.nginx import NginxError, NginxRtmp, render_nginx_conf

pytestmark = [pytest.mark.integration, pytest.mark.serial]

PROFILE = MediaProfile(width=320, height=576, fps=25)
COLOURS = {  # name -> (ffmpeg colour, RGB)
    "red": ("0xff0000", (255, 0, 0)),
    "green": ("0x00ff00", (0, 255, 0)),
    "blue": ("0x0000ff", (0, 0, 255)),
    "gray": ("0x808080", (128, 128, 128)),
    "magenta": ("0xff00ff", (255, 0, 255)),
    "yellow": ("0xffff00", (255, 255, 0)),
}
AIGC = json.dumps({"Label": "1", "ContentProducer": "test-studio", "ProduceID": "seg-test"})


def nearest_colour(rgb: np.ndarray) -> str:
    return min(COLOURS, key=lambda name: float(np.sum((rgb - np.array(COLOURS[name][1])) ** 2)))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    seg = {name: make_test_segment(d / f"{name}.mp4", seconds=2, profile=PROFILE, color=COLOURS[name][0],
                                   tone_hz=220 + 110 * i)
           for i, name in enumerate(["red", "green", "blue", "magenta"])}
    seg["slate"] = make_test_segment(d / "slate.mp4", seconds=1, profile=PROFILE, color=COLOURS["gray"][0],
                                     tone_hz=1000)
    # Same settings but another size: cannot share the stream's one H.264 sequence header.
    seg["other_size"] = make_test_segment(d / "other.mp4", seconds=2, color=COLOURS["yellow"][0],
                                          profile=PROFILE.model_copy(update={"width": 256, "height": 448}))
    return seg


def test_feeder_airs_one_continuous_stream(tmp_path, media):
    host = "127.0.0.1"
    nginx = NginxRtmp(tmp_path / "nginx", host=host, rtmp_port=free_port(), http_port=free_port())
    nginx.start()
    recording = tmp_path / "out.flv"
    url = f"{nginx.rtmp_url}/test"
    # rw_timeout: the subscriber ends (writing a complete file) a few seconds after the publisher leaves.
    recorder = FFmpegProcess(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-y",
                              "-rw_timeout", "4000000", "-i", url, "-c", "copy", "-f", "flv", str(recording)])
    try:
        names = ("red", "green", "blue", "magenta", "other_size")
        refs = {name: SegmentRef(name, media[name]) for name in names}
        plan = [refs["red"], refs["green"], None, None, refs["magenta"], refs["other_size"], refs["blue"]]
        expected_seconds = ["red", "red", "green", "green", "gray", "gray", "gray", "gray", "blue", "blue"]
        aired, refused = [], []
        feeder = ChannelFeeder(
            destinations=[url],
            next_segment=lambda: plan.pop(0) if plan else None,
            slate=media["slate"],
            verify=lambda ref: ref.id != "magenta",  # the tampered one
            on_aired=lambda ref, wall, offset, seconds: aired.append((ref.id, wall, offset)),
            on_refused=lambda ref, reason: refused.append((ref.id, reason)),
            metadata={"AIGC": AIGC},
            lead_seconds=1.0,
        )
        time.sleep(0.3)  # the subscriber is waiting on the stream before anyone publishes
        started = time.time()
        feeder.run(threading.Event(), duration=len(expected_seconds))
        elapsed = time.time() - started

        assert feeder.segments_aired == 3 and feeder.slates_aired == 4 and feeder.refused == 2
        assert feeder.aired_seconds == pytest.approx(10.0)
        assert elapsed == pytest.approx(10.0 - 1.0, abs=1.0)  # paced: real time less the lead
        assert [(r, off) for r, _, off in aired] == [("red", 0.0), ("green", 2.0), ("blue", 8.0)]
        assert aired[2][1] - aired[0][1] == pytest.approx(8.0)
        assert [r for r, _ in refused] == ["magenta", "other_size"]
        assert "policy" in refused[0][1]
        assert "size 256x448 != slate 320x576" in refused[1][1]

        # HLS preview: playlist on disk and over HTTP with the right type and CORS.
        playlist = nginx.hls_dir / "test.m3u8"
        assert playlist.exists() and playlist.read_text().startswith("#EXTM3U")
        with urllib.request.urlopen(f"http://{host}:{nginx.http_port}/hls/test.m3u8", timeout=5) as resp:
            assert resp.headers["Content-Type"] == "application/vnd.apple.mpegurl"
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert resp.read().startswith(b"#EXTM3U")
        with urllib.request.urlopen(f"http://{host}:{nginx.http_port}/healthz", timeout=5) as resp:
            assert resp.status == 200

        for _ in range(100):  # the subscriber times out on the idle stream and finishes its file
            if not recorder.alive:
                break
            time.sleep(0.1)
    finally:
        recorder.stop(timeout=3)
        nginx.stop()
    assert recorder.returncode == 0, recorder.stderr_tail()

    with av.open(str(recording)) as rec:
        assert rec.metadata.get("AIGC") == AIGC
        video, audio = rec.streams.video[0], rec.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert (video.codec_context.width, video.codec_context.height) == (320, 576)
        vts, ats = [], []
        for pkt in rec.demux(video, audio):
            if pkt.size:
                (vts if pkt.stream.type == "video" else ats).append(float(pkt.dts * pkt.time_base))
    frame = 1 / PROFILE.fps
    steps = np.diff(vts)
    assert np.all(steps > 0), "video timestamps must increase strictly"
    worst = int(steps.argmax())
    assert steps[worst] <= 1.5 * frame, f"gap of {steps[worst]:.3f} s in video at {vts[worst]:.3f} s"
    assert np.all(np.diff(ats) > 0), "audio timestamps must increase strictly"
    assert len(vts) == 10 * PROFILE.fps
    assert vts[-1] + frame - vts[0] == pytest.approx(feeder.aired_seconds, abs=0.5)
    assert ats[-1] - vts[-1] < 0.05, "audio must not run past the video"

    # Picture: one sample per second in the planned order; the tampered magenta never aired.
    seen = []
    with av.open(str(recording)) as rec:
        for f in rec.decode(video=0):
            seen.append(nearest_colour(f.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)))
    assert "magenta" not in seen and "yellow" not in seen
    per_second = [seen[s * PROFILE.fps + PROFILE.fps // 2] for s in range(len(expected_seconds))]
    assert per_second == expected_seconds


def test_nginx_refuses_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        nginx = NginxRtmp(tmp_path / "nginx", host="127.0.0.1", rtmp_port=port, http_port=free_port())
        started = time.monotonic()
        with pytest.raises(NginxError, match=f"127.0.0.1:{port}"):
            nginx.start()
        assert time.monotonic() - started < 3
        assert nginx.proc is None


def test_feeder_raises_stream_error_with_scrubbed_tail(media):
    # Nothing listens on port 1: the push ffmpeg exits at once and the feeder reports what it said.
    feeder = ChannelFeeder(destinations=["rtmp://127.0.0.1:1/live/sekrit-key"], next_segment=lambda: None,
                           slate=media["slate"], verify=lambda ref: True)
    started = time.monotonic()
    with pytest.raises(StreamError) as info:
        feeder.run(threading.Event(), duration=30)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "Connection refused" in message
    assert "rtmp://127.0.0.1:1/live/****" in message and "sekrit-key" not in message


def test_feeder_stops_promptly_on_stop_event(tmp_path, media):
    with NginxRtmp(tmp_path / "nginx", rtmp_port=free_port(), http_port=free_port(), hls=False) as nginx:
        feeder = ChannelFeeder(destinations=[f"{nginx.rtmp_url}/stop"], next_segment=lambda: None,
                               slate=media["slate"], verify=lambda ref: True)
        stop = threading.Event()
        threading.Timer(1.5, stop.set).start()
        started = time.monotonic()
        feeder.run(stop)
        assert time.monotonic() - started < 3.5
        assert feeder.slates_aired >= 2  # written up to lead_seconds ahead of the wall clock


def test_feeder_rejects_an_unusable_slate(tmp_path):
    junk = tmp_path / "slate.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="slate is not usable"):
        ChannelFeeder(destinations=["rtmp://127.0.0.1/live/x"], next_segment=lambda: None, slate=junk,
                      verify=lambda ref: True)
    with pytest.raises(ValueError, match="destinations"):
        ChannelFeeder(destinations=[], next_segment=lambda: None, slate=junk, verify=lambda ref: True)


def test_render_nginx_conf_keeps_everything_in_workdir(tmp_path):
    conf = render_nginx_conf(workdir=tmp_path, rtmp_host="127.0.0.1", rtmp_port=19350, http_host="127.0.0.1",
                             http_port=19351, record=True)
    assert conf.startswith("# Generated") and "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;" in conf
    assert "daemon off;" in conf and "listen 127.0.0.1:19350;" in conf and "listen 127.0.0.1:19351;" in conf
    assert "meta copy;" in conf and f'hls_path "{tmp_path}/hls";' in conf and "record_unique on;" in conf
    for line in conf.splitlines():
        if line.strip().startswith(("pid ", "error_log \"", "access_log", "client_body_temp_path")):
            assert str(tmp_path) in line
    no_hls = render_nginx_conf(workdir=tmp_path, rtmp_host="::1", rtmp_port=1, http_host="::1", http_port=2,
                               hls=False)
    assert "hls on;" not in no_hls and "listen [::1]:1;" in no_hls
    with pytest.raises(ValueError, match="rtmp_port must be an integer port 1-65535, got 70000"):
        render_nginx_conf(workdir=tmp_path, rtmp_host="127.0.0.1", rtmp_port=70000, http_host="127.0.0.1",
                          http_port=19351)
    with pytest.raises(ValueError, match="rtmp_host must be"):
        render_nginx_conf(workdir=tmp_path, rtmp_host="127.0.0.1; evil", rtmp_port=1935, http_host="127.0.0.1",
                          http_port=19351)
    with pytest.raises(ValueError, match="absolute"):
        render_nginx_conf(workdir=Path("rel"), rtmp_host="127.0.0.1", rtmp_port=1935, http_host="127.0.0.1",
                          http_port=19351)


def test_a_slate_replaced_while_it_airs_is_cut_and_reported(tmp_path, media):
    """The clone's idle loop after a revocation: the slate callable answers the card now, and the loop airing is
    cut within CUT_CHECK_SECONDS of that (plus what was written ahead), not aired to its end."""
    idle = make_test_segment(tmp_path / "idle.mp4", seconds=4, profile=PROFILE, color=COLOURS["green"][0],
                             tone_hz=500)
    current, aired, swapped = {"slate": idle}, [], []

    def revoke() -> None:
        current["slate"] = media["slate"]
        swapped.append(time.time())

    with NginxRtmp(tmp_path / "nginx", rtmp_port=free_port(), http_port=free_port(), hls=False) as nginx:
        feeder = ChannelFeeder(destinations=[f"{nginx.rtmp_url}/idle"], next_segment=lambda: None,
                               slate=lambda: current["slate"], verify=lambda ref: True, lead_seconds=1.0,
                               on_slate_aired=lambda path, start, seconds: aired.append((path, start, seconds)))
        stop = threading.Event()
        threading.Timer(1.0, revoke).start()
        threading.Timer(3.5, stop.set).start()
        feeder.run(stop)
    assert swapped and aired, aired
    path, start, seconds = aired[0]
    assert path == idle and seconds < 3.5  # cut: the whole loop is 4 s
    # Its last frame went out no later than the swap, plus one check, plus the second written ahead of air.
    assert start + seconds <= swapped[0] + 0.25 + 1.0 + 0.3
    assert [p for p, _, _ in aired[1:]] and all(p == media["slate"] for p, _, _ in aired[1:])
    assert all(s == pytest.approx(1.0) for _, _, s in aired[1:])
