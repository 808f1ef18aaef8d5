"""Audio at segment joins: the feeder keeps the audio sample clock with the video, so that a player or a
transcoder that plays decoded audio back to back (not by timestamp) does not drift a little at every join.

Segments whose length is not a whole number of AAC frames end in a trimmed packet that still decodes to 1024
samples once the MP4 edit list is gone (FLV has none); each new segment also starts with a priming packet. Kept
as they are, every join adds 0-21 ms of audio; over a night, seconds. No services: the push ffmpeg writes a file.
"""

import threading

import av
import pytest

from bench.continuity import analyse_recording, make_marked_segment
from studio.config import MediaProfile
from workers.streamer.feeder import ChannelFeeder, SegmentRef

PROFILE = MediaProfile(width=160, height=288, fps=25)
HALF_AAC_FRAME = 512 / 48000
# Lengths that leave 0-21 ms of the last AAC frame over at each join, and a marker in each segment.
SPECS = [(50, 10), (37, 20), (61, 30), (43, 12), (55, 40), (49, 25), (58, 33), (41, 9)]


@pytest.fixture(scope="module")
def segments(tmp_path_factory):
    d = tmp_path_factory.mktemp("joins")
    return [make_marked_segment(d / f"j{i}.mp4", frames=n, marker_frame=m, profile=PROFILE)
            for i, (n, m) in enumerate(SPECS)]


def test_audio_sample_clock_stays_with_the_video_across_joins(segments, tmp_path):
    plan = [SegmentRef(f"j{i}", p) for i, p in enumerate(segments)]
    out = tmp_path / "joined.flv"
    total = sum(n for n, _ in SPECS) / 25
    feeder = ChannelFeeder(destinations=[str(out)], next_segment=lambda: plan.pop(0) if plan else None,
                           slate=segments[0], verify=lambda ref: True, lead_seconds=60.0)  # no pacing
    feeder.run(threading.Event(), duration=total)
    assert feeder.segments_aired == len(SPECS)
    rec = analyse_recording(out)
    assert len(rec.markers) == len(SPECS)
    # By timestamps and by the sample clock, every marker within half an AAC frame of where it was made.
    for m in rec.markers:
        assert abs(m.offset) <= HALF_AAC_FRAME + 0.001, m
        assert abs(m.offset_clock) <= HALF_AAC_FRAME + 0.001, m
    assert rec.audio_overlap_s == 0.0
    # The decoded audio is as long as the video, within half an AAC frame, and its timestamps only increase.
    with av.open(str(out)) as c:
        audio = [p.dts for p in c.demux(c.streams.audio[0]) if p.dts is not None]
    assert len(audio) * 1024 / 48000 == pytest.approx(total, abs=HALF_AAC_FRAME + 0.001)
    assert all(b > a for a, b in zip(audio, audio[1:], strict=False))
