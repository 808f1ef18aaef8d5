"""The streaming benches' analysis: gaps, A/V offsets from flash + tone markers, onsets, pairing, CPU reading.

Small segments made with ffmpeg (no services); each test takes well under a second or two.
"""

import os
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from bench.channels import _last_speed, ks, tree_cpu
from bench.continuity import (
    MarkedSegment,
    Marker,
    PeerFigure,
    analyse_recording,
    find_onsets,
    make_marked_segment,
    pair_markers,
    sequence,
    timestamp_steps,
)
from studio.config import MediaProfile
from workers.streamer.feeder import ChannelFeeder, SegmentRef

pytestmark = pytest.mark.serial  # wall-clock bounds: run alone (see the Makefile's test)

PROFILE = MediaProfile(width=160, height=288, fps=25)
FRAME = 1 / 25
RATE = 48000


@pytest.fixture(scope="module")
def segments(tmp_path_factory):
    d = tmp_path_factory.mktemp("marked")
    specs = [(50, 20), (40, 10), (60, 45)]  # (frames, marker frame)
    return [MarkedSegment(make_marked_segment(d / f"m{i}.mp4", frames=n, marker_frame=m, profile=PROFILE), n, m)
            for i, (n, m) in enumerate(specs)]


def remux(src: Path, dst: Path, *, video_shift_from: int | None = None, video_shift: float = 0.0,
          audio_delay: float = 0.0) -> Path:
    """Copy an MP4 segment into FLV, moving video frames from index `video_shift_from` on by `video_shift` s
    and all audio by `audio_delay` s; packets that would fall before 0 are dropped (as the feeder drops them)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="flv") as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        vout, aout = out.add_stream(template=vin), out.add_stream(template=ain)
        out.start_encoding()
        n = 0
        for pkt in inp.demux(vin, ain):
            if pkt.dts is None or not pkt.size:
                continue
            t = pkt.dts * Fraction(pkt.time_base)
            if pkt.stream.type == "video":
                if video_shift_from is not None and n >= video_shift_from:
                    t += Fraction(str(video_shift))
                n += 1
                ostream = vout
            else:
                t += Fraction(str(audio_delay))
                ostream = aout
            if t < 0:
                continue
            pkt.stream = ostream
            pkt.time_base = ostream.time_base
            pkt.pts = pkt.dts = round(t / ostream.time_base)
            out.mux(pkt)
    return dst


# -- pure functions ---------------------------------------------------------------------------------------------
def test_timestamp_steps_counts_non_increasing_and_the_largest_step():
    ts = [0.0, 0.04, 0.08, 0.08, 0.2, 0.18, 0.22]
    s = timestamp_steps(ts)
    assert s.count == 7 and s.non_monotonic == 2  # 0.08 repeated, 0.2 -> 0.18 backwards
    assert s.max_step == pytest.approx(0.12) and s.max_step_at == pytest.approx(0.08)
    assert timestamp_steps([1.0]).non_monotonic == 0 and timestamp_steps([]).max_step == 0.0


def test_onsets_by_timestamp_and_by_sample_clock():
    # 1024-sample chunks; chunk 3 is stamped 10 ms early (overlaps chunk 2), the tone starts in chunk 5 at sample 100.
    chunks, t = [], 0.0
    for i in range(10):
        samples = np.full(1024, 0.01, dtype=np.float32)
        if i == 3:
            t -= 0.010
        if i >= 5:
            start = 100 if i == 5 else 0
            samples[start:] = np.where(np.arange(1024 - start) % 2, 0.5, -0.5)  # loud throughout the burst
        chunks.append((t, samples))
        t += 1024 / RATE
    onsets = find_onsets(chunks, RATE)
    assert len(onsets) == 1
    by_ts, by_clock = onsets[0]
    assert by_ts == pytest.approx(5 * 1024 / RATE - 0.010 + 100 / RATE)
    assert by_clock - by_ts == pytest.approx(0.010)  # every sample played in turn: the overlap makes it late


def test_onsets_need_quiet_before_them():
    loud = np.full(4800, 0.5, dtype=np.float32)
    quiet = np.zeros(4800, dtype=np.float32)
    chunks = [(0.0, loud), (0.1, quiet), (0.2, loud), (0.3, quiet), (0.4, quiet), (0.5, quiet), (0.6, loud)]
    assert [round(o[0], 3) for o in find_onsets(chunks, RATE)] == [0.0, 0.6]  # 0.1 s of quiet is not enough


def test_pairing_takes_the_nearest_onset_and_leaves_unpaired_flashes_out():
    onsets = [(1.0, 1.0), (2.08, 2.1), (5.0, 5.0)]
    markers = pair_markers([1.0, 2.0, 3.5], onsets)
    assert markers == [Marker(1.0, 0.0, 0.0), Marker(2.0, pytest.approx(0.08), pytest.approx(0.1))]
    assert pair_markers([1.0], []) == []


def test_sequence_lasts_and_never_repeats_a_segment_back_to_back():
    pool = [MarkedSegment(Path(f"{i}.mp4"), n, 5) for i, n in enumerate((50, 61, 78))]
    seq = sequence(pool, 60, 25)
    total = sum(s.seconds(25) for s in seq)
    assert total >= 60 and total - seq[-1].seconds(25) < 60
    assert all(a is not b for a, b in zip(seq, seq[1:], strict=False))
    assert seq == sequence(pool, 60, 25)  # the same order for ours and the peer


def test_channel_steps_and_progress_speed(tmp_path):
    assert ks(24) == [1, 2, 4, 8, 12, 16, 20, 24]
    assert ks(10) == [1, 2, 4, 8, 10] and ks(1) == [1] and ks(3) == [1, 2, 3]
    progress = tmp_path / "p.txt"
    progress.write_text("speed=   1x\nprogress=continue\nspeed=N/A\nspeed=0.987x\nprogress=end\n")
    assert _last_speed(progress) == pytest.approx(0.987)
    assert np.isnan(_last_speed(tmp_path / "missing.txt"))


def test_tree_cpu_sums_a_child_process():
    child = subprocess.Popen(["sleep", "5"])
    try:
        tree = tree_cpu([os.getpid()])
        assert os.getpid() in tree and child.pid in tree
        assert tree[os.getpid()][1] > 0
    finally:
        child.kill()
        child.wait()


def test_peer_figure_with_a_zero_peer_prints_and_has_no_ratio(tmp_path, monkeypatch, capsys):
    import json

    from bench import common

    f = PeerFigure("gaps", 3, "packets", "peer", 0)
    assert f.ratio is None and PeerFigure("drift", 3, "ms", "peer", 7e-12).ratio is None
    assert PeerFigure("x", 3, "s", "peer", 2).ratio == 1.5 and PeerFigure("x", 3, "s").ratio is None
    monkeypatch.setattr(common, "OUT", tmp_path)
    path = common.report("t", [f])
    assert "ratio n/a" in capsys.readouterr().out
    assert json.loads(path.read_text())["figures"][0]["ratio"] is None


# -- on real media ----------------------------------------------------------------------------------------------
def test_a_marked_segment_has_its_flash_and_tone_on_the_same_instant(segments):
    rec = analyse_recording(segments[0].path)
    assert rec.flashes == 1 and rec.onsets == 1 and len(rec.markers) == 1
    assert rec.markers[0].flash == pytest.approx(20 * FRAME, abs=1e-6)
    assert abs(rec.markers[0].offset) < 0.002 and abs(rec.markers[0].offset_clock) < 0.002
    assert rec.max_video_step_frames == pytest.approx(1.0) and rec.video.non_monotonic == 0
    assert rec.video.count == 50


def test_a_three_frame_gap_is_reported_as_three_frames(segments, tmp_path):
    flv = remux(segments[0].path, tmp_path / "gap.flv", video_shift_from=30, video_shift=2 * FRAME)
    rec = analyse_recording(flv)
    assert rec.max_video_step_frames == pytest.approx(3.0, abs=0.01)
    assert rec.video.max_step_at == pytest.approx(29 * FRAME, abs=0.001)
    assert rec.video.non_monotonic == 0 and rec.video.count == 50
    assert abs(rec.markers[0].offset) < 0.002  # the marker (frame 20) is before the gap
    clean = analyse_recording(remux(segments[0].path, tmp_path / "clean.flv"))
    assert clean.max_video_step_frames == pytest.approx(1.0, abs=0.01)


def test_audio_delayed_by_80_ms_gives_an_offset_of_80_ms(segments, tmp_path):
    rec = analyse_recording(remux(segments[2].path, tmp_path / "late.flv", audio_delay=0.080))
    assert len(rec.markers) == 1
    assert rec.markers[0].offset * 1000 == pytest.approx(80, abs=1.5)
    assert rec.markers[0].offset_clock * 1000 == pytest.approx(80, abs=1.5)
    early = analyse_recording(remux(segments[2].path, tmp_path / "early.flv", audio_delay=-0.040))
    assert early.markers[0].offset * 1000 == pytest.approx(-40, abs=1.5)


def test_every_marker_of_joined_segments_is_found_in_order(segments, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"file '{s.path}'\n" for s in segments))
    joined = tmp_path / "joined.flv"
    subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
                    "-i", str(listing), "-c", "copy", "-f", "flv", str(joined)], check=True, timeout=60)
    rec = analyse_recording(joined)
    starts = np.cumsum([0] + [s.frames for s in segments[:-1]])
    expected = [(start + s.marker_frame) * FRAME for start, s in zip(starts, segments, strict=True)]
    assert rec.flashes == 3 and rec.onsets == 3
    # The concat output starts 1024 samples later (the AAC priming made non-negative): compare the spacing.
    flashes = [m.flash for m in rec.markers]
    assert np.diff(flashes) == pytest.approx(np.diff(expected), abs=0.002)
    assert flashes[0] == pytest.approx(expected[0], abs=0.025)
    assert all(abs(m.offset) < 0.003 for m in rec.markers)


def test_feeder_counts_packets_muxed_after_their_air_time(segments, tmp_path):
    # The push ffmpeg writes a file (no server). A policy check that takes 0.6 s before the second segment,
    # with 0.2 s of lead, makes its first packets about 0.4 s late: underruns, and the largest lateness.
    slow = {"m1"}

    def verify(ref):
        if ref.id in slow:
            slow.discard(ref.id)
            time.sleep(0.6)
        return True

    plan = [SegmentRef("m0", segments[0].path), SegmentRef("m1", segments[1].path)]
    feeder = ChannelFeeder(destinations=[str(tmp_path / "out.flv")], next_segment=lambda: plan.pop(0) if plan else None,
                           slate=segments[1].path, verify=verify, lead_seconds=0.2)
    assert feeder.underruns == 0 and feeder.max_late_seconds == 0.0
    feeder.run(threading.Event(), duration=3.6)
    assert feeder.segments_aired == 2
    assert feeder.underruns > 10  # at least the video and audio of the first few frames
    assert 0.3 < feeder.max_late_seconds < 0.6
