"""The frame pipe to ffmpeg: frames produced ahead on a thread, in order, errors surfaced, counts checked."""

from __future__ import annotations

import time

import numpy as np
import pytest

from workers.media.encode import _ahead, encode_video_only
from workers.media.proc import MediaError


def test_ahead_keeps_order_and_raises_producer_errors():
    assert list(_ahead(iter(range(50)))) == list(range(50))

    def broken():
        yield 1
        raise ValueError("renderer failed at frame 2")

    got = []
    with pytest.raises(ValueError, match="frame 2"):
        for x in _ahead(broken()):
            got.append(x)
    assert got == [1]


def test_ahead_stops_its_producer_when_the_consumer_leaves():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    gen = _ahead(endless(), depth=2)
    assert next(gen) == 0
    gen.close()
    n = len(produced)
    time.sleep(0.5)
    assert len(produced) == n and n <= 5  # bounded look-ahead, and it stopped


def test_encoder_refuses_a_frame_of_the_wrong_size(tmp_path):
    frames = [np.zeros((64, 64, 3), np.uint8)] * 3 + [np.zeros((32, 64, 3), np.uint8)]
    with pytest.raises(MediaError, match="frame 3 is 64x32, expected 64x64"):
        encode_video_only(iter(frames), tmp_path / "out.mp4", width=64, height=64, fps=25)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left


def test_encoder_writes_every_frame(tmp_path):
    import av

    frames = (np.full((64, 96, 3), i * 8, np.uint8) for i in range(30))
    assert encode_video_only(frames, tmp_path / "out.mp4", width=96, height=64, fps=25) == 30
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) == 30
