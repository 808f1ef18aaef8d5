"""The whole path on real services: `studio demo` starts redis-server, Celery workers, the API, nginx-rtmp
and the streamer, ingests the synthetic creator, and airs a show to an RTMP server that is not ours
(an `ffmpeg -listen` recorder). The recording and the ingest's HLS output are then checked."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from studio.policy import verify_aigc_metadata
from tests.conftest import STUDIO, ocr, require, studio_env
from tests.media_helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
AIR_SECONDS = 20


@pytest.fixture(scope="module")
def aired(tmp_path_factory, demo_footage):
    require("redis-server", "nginx", "ffmpeg", "espeak-ng")
    tmp = tmp_path_factory.mktemp("demo")
    data = tmp / "data"
    (data / "demo").mkdir(parents=True)
    shutil.copy(demo_footage, data / "demo" / "footage.mp4")  # the demo reuses it instead of generating
    listen_port = free_port()
    recording = tmp / "check.flv"
    recorder = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "warning", "-y", "-listen", "1",
                                 "-i", f"rtmp://127.0.0.1:{listen_port}/live/check", "-c", "copy", str(recording)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    http_port, api_port = free_port(), free_port()
    env = studio_env(data, api=api_port, redis=free_port(), rtmp=free_port(), http=http_port)
    hls = tmp / "hls"
    hls.mkdir()
    demo = subprocess.Popen([STUDIO, "demo", "--duration", str(AIR_SECONDS), "--rtmp",
                             f"rtmp://127.0.0.1:{listen_port}/live/check"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ops_page: dict = {}
    try:
        deadline = time.monotonic() + 400
        while demo.poll() is None and time.monotonic() < deadline:
            _fetch_hls(http_port, data / "nginx" / "hls", hls)
            if not ops_page:
                ops_page = _ops_page(api_port, data)
            time.sleep(1.0)
        out, err = demo.communicate(timeout=60)
        try:
            recorder.wait(timeout=30)
        except subprocess.TimeoutExpired:  # the push never came (the demo failed first) or never ended
            pytest.fail(f"the receiver was still waiting 30 s after the demo ended (rc {demo.returncode}):\n"
                        f"{out[-4000:]}\n{err[-4000:]}")
    finally:
        for proc in (demo, recorder):
            if proc.poll() is None:
                proc.kill()
    assert demo.returncode == 0, f"demo failed:\n{out}\n{err}"
    return {"data": data, "recording": recording, "stdout": out, "tmp": tmp, "hls": hls, "env": env,
            "ops_page": ops_page}


def _ops_page(api_port: int, data: Path) -> dict:
    """Once the channel airs (HLS fragments exist) and the demo's sign-ins are written: the ops page, in Debian's
    chromium, as the demo's ops sign-in sees it. {} until then."""
    logins_file = data / "keys" / "demo-logins.json"
    fragments = list((data / "nginx" / "hls").glob("*.ts"))
    if not logins_file.exists() or len(fragments) < 2:
        return {}
    from playwright.sync_api import sync_playwright

    password = json.loads(logins_file.read_text())["ops@demo.local"]
    base = f"http://127.0.0.1:{api_port}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            page.goto(base + "/login")
            page.fill("input[name=email]", "ops@demo.local")
            page.fill("input[name=password]", password)
            page.click("#login-form button[type=submit]")
            page.wait_for_url(base + "/ops")
            page.wait_for_function("() => { const i = document.getElementById('preview-img'); "
                                   "return i && i.complete && i.naturalWidth > 0; }")
            Path("test-artifacts/pages").mkdir(parents=True, exist_ok=True)
            page.screenshot(path="test-artifacts/pages/demo-ops.png", full_page=True)
            return {"queues": page.locator("#queues").inner_text(), "channels": page.locator("#channels").inner_text(),
                    "preview_width": page.eval_on_selector("#preview-img", "i => i.naturalWidth"),
                    "html": page.content()}
        finally:
            browser.close()


def _fetch_hls(http_port: int, hls_dir: Path, dest: Path) -> None:
    """While the show airs, read the channel's HLS back from the ingest over HTTP, as a browser would."""
    for playlist in hls_dir.glob("*.m3u8"):
        base = f"http://127.0.0.1:{http_port}/hls/"
        try:
            text = urllib.request.urlopen(base + playlist.name, timeout=2).read().decode()
            (dest / playlist.name).write_text(text)
            for line in text.splitlines():
                if line.endswith(".ts") and not (dest / line).exists():
                    (dest / line).write_bytes(urllib.request.urlopen(base + line, timeout=2).read())
        except OSError:
            pass  # the playlist rolls over while we read; the next pass catches up


def _packets(path: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"video": [], "audio": []}
    with av.open(str(path)) as c:
        for pkt in c.demux():
            if pkt.dts is not None:
                times[pkt.stream.type].append(float(pkt.dts * pkt.time_base))
    return times


def test_prints_where_to_watch(aired):
    out = aired["stdout"]
    assert "/hls/" in out and ".m3u8" in out
    assert "ffplay rtmp://127.0.0.1:" in out
    assert "rtmp://127.0.0.1:" in out and "/live/****" in out  # the external key is masked


def test_the_ops_page_shows_the_demo_channel_live_with_its_queue(aired):
    ops = aired["ops_page"]
    assert ops, "the ops page was never checked while the demo aired"
    assert "Dashboard http://127.0.0.1:" in aired["stdout"] and "/ops" in aired["stdout"]
    assert ops["preview_width"] > 0  # a still of the channel's live HLS preview
    assert "render.cpu" in ops["queues"]
    assert "demo" in ops["channels"] and "airing" in ops["channels"]
    assert "/live/check" not in ops["html"]  # the destination's stream key never reaches the page


def test_recording_is_h264_aac_with_continuous_timestamps(aired):
    with av.open(str(aired["recording"])) as c:
        codecs = {s.type: s.codec_context.name for s in c.streams}
    assert codecs == {"video": "h264", "audio": "aac"}
    t = _packets(aired["recording"])
    video, audio = np.array(t["video"]), np.array(t["audio"])
    assert video[-1] >= AIR_SECONDS - 1, f"only {video[-1]:.1f} s of video recorded"
    dv = np.diff(video)
    # Every join between segments (and slates) is seamless: one frame apart, never more.
    assert dv.min() > 0 and dv.max() <= 0.04 * 1.5, f"video dts steps {dv.min():.3f}..{dv.max():.3f} s"
    da = np.diff(audio)
    assert da.min() > 0 and da.max() <= 1024 / 48000 * 1.5, f"audio dts steps {da.min():.3f}..{da.max():.3f} s"
    assert abs(audio[-1] - video[-1]) < 0.1


def test_badge_is_legible_on_sampled_frames_from_first_to_last_second(aired):
    tmp = aired["tmp"]
    with av.open(str(aired["recording"])) as c:
        stream = c.streams.video[0]
        frames = [(float(f.pts * stream.time_base), f) for f in c.decode(stream)]
    last = frames[-1][0]
    wanted = [0.0, *np.arange(3.0, last, 3.0), last]  # the very first and very last frames included
    checked = []
    for target in wanted:
        t, frame = min(frames, key=lambda tf: abs(tf[0] - target))
        for width in (720, 360):  # full size, and as a viewer on a small screen gets it
            rgb = frame.to_ndarray(format="rgb24", width=width, height=width * 16 // 9)
            h, w = rgb.shape[:2]
            texts = ocr(rgb[: int(h * 0.12), w // 2:], tmp)
            assert any("AI avatar" in t for t in texts), \
                f"badge not read at t={t:.1f}s, width {width}: OCR gave {texts!r}"
        checked.append(t)
    assert checked[0] < 0.1 and checked[-1] > last - 0.1 and len(checked) >= AIR_SECONDS // 3


def test_verify_finds_the_watermark_in_the_recording(aired):
    res = subprocess.run([STUDIO, "verify", str(aired["recording"]), "--json"], env=aired["env"],
                         capture_output=True, text=True, timeout=300)
    report = json.loads(res.stdout)
    assert res.returncode == 0 and report["verdict"] == "genuine", report["marks"]
    assert report["kind"] == "stream" and report["watermark"]["found"], report["watermark"]
    db = sqlite3.connect(aired["data"] / "studio.db")
    aired_ids = {pid for (pid,) in db.execute("SELECT produce_id FROM segment WHERE state='aired'")}
    slates = {json.loads(d)["produce_id"] for (d,) in
              db.execute("SELECT data FROM auditevent WHERE kind='slate.rendered'")}
    named = {run["produce_id"] for run in report["watermark"]["marks"]}
    assert named & aired_ids, "no aired segment named by its watermark"
    assert named <= aired_ids | slates, f"watermarks of clips that never aired: {named - aired_ids - slates}"
    assert report["aigc_metadata"]["signature_valid"] and report["visible_label"]["found"]


def test_demo_leaves_a_signed_recording_of_the_show(aired):
    line = next(ln for ln in aired["stdout"].splitlines() if "recording for audit:" in ln)
    path = line.split("recording for audit:")[1].split()[0]
    res = subprocess.run([STUDIO, "verify", path, "--json", "--no-ocr"], env=aired["env"], capture_output=True,
                         text=True, timeout=300)
    report = json.loads(res.stdout)
    assert res.returncode == 0, report
    assert report["kind"] == "recording" and report["marks"] == {"aigc_metadata": "intact", "watermark": "intact",
                                                                 "c2pa": "intact"}
    db = sqlite3.connect(aired["data"] / "studio.db")
    archived = db.execute("SELECT count(*) FROM segment WHERE state='aired' AND manifest_id IS NOT NULL").fetchone()
    assert archived[0] == len(report["c2pa"]["ingredient_manifest_ids"]) > 0


def test_stream_metadata_carries_signed_aigc(aired):
    with av.open(str(aired["recording"])) as c:
        value = {k.lower(): v for k, v in c.metadata.items()}.get("aigc")
    assert value, "no AIGC key in the recording's metadata"
    key = (aired["data"] / "keys" / "policy.key").read_text().strip().encode()
    fields = verify_aigc_metadata(key, value)
    assert fields["Label"] == "1"


def test_segments_aired_in_order_and_are_audited(aired):
    db = sqlite3.connect(aired["data"] / "studio.db")
    rows = db.execute("SELECT seq, state, path, stamp FROM segment WHERE state='aired' ORDER BY aired_at").fetchall()
    assert rows, "no segment aired"
    seqs = [r[0] for r in rows]
    assert seqs == sorted(seqs), f"aired out of plan order: {seqs}"
    for _, _, path, stamp in rows:
        assert json.loads(stamp)["labels"]  # stamped by the middleware
        with av.open(str(aired["data"] / path)) as c:  # a store key under the data dir (file store)
            assert "AIGC" in c.metadata
    kinds = [k for (k,) in db.execute("SELECT kind FROM auditevent ORDER BY id")]
    assert kinds.count("segment.aired") == len(rows)
    assert "consent.granted" in kinds and "avatar.created" in kinds


def test_local_ingest_serves_hls_of_the_channel(aired):
    playlists = list(aired["hls"].glob("*.m3u8"))
    assert playlists, "no HLS playlist could be read from the ingest while the show aired"
    assert playlists[0].read_text().startswith("#EXTM3U")
    fragments = sorted(aired["hls"].glob("*.ts"))
    assert len(fragments) >= 3
    with av.open(str(fragments[-1])) as c:
        assert {s.type for s in c.streams} >= {"video", "audio"}
        frame = next(c.decode(c.streams.video[0])).to_ndarray(format="rgb24")
    assert any("AI avatar" in t for t in ocr(frame[: frame.shape[0] * 12 // 100, frame.shape[1] // 2:],
                                              aired["tmp"]))


def test_a_second_demo_run_airs_its_own_show(aired):
    """Run again on the same data: the earlier show is stopped before the streamer starts, the avatar
    is reused, and the new show goes on air."""
    data = aired["data"]
    db = sqlite3.connect(data / "studio.db")
    avatars_before = db.execute("SELECT count(*) FROM avatar").fetchone()[0]
    res = subprocess.run([STUDIO, "demo", "--duration", "6"], env=aired["env"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "on air" in res.stdout
    shows = db.execute("SELECT id, status FROM show ORDER BY starts_at").fetchall()
    assert [status for _, status in shows] == ["stopped", "scheduled"]
    status = json.loads(next((data / "run").glob("channel-*.json")).read_text())
    assert status["show_id"] == shows[-1][0]
    assert db.execute("SELECT count(*) FROM avatar").fetchone()[0] == avatars_before
    stale = db.execute("SELECT count(*) FROM segment WHERE show_id=? AND state NOT IN "
                       "('aired','cancelled','skipped','refused')", (shows[0][0],)).fetchone()[0]
    assert stale == 0


def test_demo_airs_the_creators_recorded_voiceover_with_captions_from_the_alignment(aired):
    """The demo's creator records its scripts (a second espeak-ng voice standing in for them): each is checked and
    aligned, the avatar speaks with the recordings, and what airs is a recording's part, captioned by its words."""
    db = sqlite3.connect(aired["data"] / "studio.db")
    vos = db.execute("SELECT speaker, approved_at, parts, words FROM voiceover").fetchall()
    assert len(vos) == 3 and all(sp == "creator" and ok for sp, ok, _, _ in vos)
    parts = {p[2]: p[1] - p[0] for _, _, ps, _ in vos for p in json.loads(ps)}
    assert db.execute("SELECT voice FROM avatar WHERE name='Ava'").fetchone() == ("recorded",)
    rows = db.execute("SELECT text, path, duration_s, show_start FROM segment WHERE state='aired' AND kind='segment' "
                      "ORDER BY seq").fetchall()
    assert rows
    for text, path, duration, show_start in rows:
        assert text in parts, f"aired {text!r}, which is no part of a recording"
        vtt = (aired["data"] / path).with_suffix(".vtt").read_text()
        said = " ".join(line for line in vtt.splitlines()[2:] if line and "-->" not in line)
        assert said.endswith(text)  # after the spoken disclosure, where the profile asks for one (V6)
        if not show_start:
            assert duration == pytest.approx(parts[text], abs=0.08)  # the recording's part, to a frame or two
