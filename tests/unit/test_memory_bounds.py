"""Bounds as a net under the memory fixes (issue 21): the pool settings Celery gets, decoders freed with their
container, and every cache with a size bound."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from studio.config import Settings, WorkerPoolConfig
from workers.app import make_celery, pool_bounds
from workers.media import allocator, preview
from workers.renderers import footage, musetalk
from workers.streamer.preview_share import PreviewShare

ROOT = Path(__file__).resolve().parents[2]


def test_the_pool_bounds_reach_celery_in_its_units():
    assert pool_bounds(WorkerPoolConfig()) == {"worker_max_tasks_per_child": 500,
                                               "worker_max_memory_per_child": 1024 * 1024}  # KiB
    assert pool_bounds(WorkerPoolConfig(max_tasks_per_child=None, max_memory_per_child_mb=None)) == {
        "worker_max_tasks_per_child": None, "worker_max_memory_per_child": None}
    app = make_celery(pool=WorkerPoolConfig(max_tasks_per_child=3, max_memory_per_child_mb=256))
    assert (app.conf.worker_max_tasks_per_child, app.conf.worker_max_memory_per_child) == (3, 256 * 1024)


def test_the_default_config_file_states_the_pool_bounds():
    doc = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    assert Settings(**doc).worker == WorkerPoolConfig()


def test_a_pool_bound_below_what_a_worker_needs_is_refused():
    with pytest.raises(ValueError, match="max_memory_per_child_mb"):
        WorkerPoolConfig(max_memory_per_child_mb=10)
    with pytest.raises(ValueError, match="max_tasks_per_child"):
        WorkerPoolConfig(max_tasks_per_child=0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=128x96:rate=25:duration=0.4", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(path)], check=True)
    return path


def test_a_container_left_by_decoding_has_its_decoders_closed(clip):
    with allocator.decoding(av.open(str(clip))) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.is_open
    assert len(frames) == 10 and not stream.codec_context.is_open


def test_a_container_left_by_an_error_has_its_decoders_closed_too(clip):
    with pytest.raises(RuntimeError), allocator.decoding(av.open(str(clip))) as container:
        stream = container.streams.video[0]
        next(container.decode(stream))
        raise RuntimeError("the caller's own error")
    assert not stream.codec_context.is_open


def test_the_allocator_is_tuned_and_trimmed_on_glibc():
    assert allocator.tune() is (allocator._glibc() is not None)
    allocator.release()  # collects and trims; nothing to return


def test_the_preview_cache_keeps_the_streams_read_last(tmp_path, monkeypatch):
    monkeypatch.setattr(preview, "CACHE_STREAMS", 2)
    monkeypatch.setattr(preview, "_cache", type(preview._cache)())
    monkeypatch.setattr(preview, "first_frame_jpeg", lambda path: path.name.encode())
    for stream in ("a", "b", "c"):
        (tmp_path / f"{stream}.m3u8").write_text(f"#EXTM3U\n{stream}-1.ts\n")
    preview.latest_preview_jpeg(tmp_path, "a")
    preview.latest_preview_jpeg(tmp_path, "b")
    preview.latest_preview_jpeg(tmp_path, "a")  # read again: now the newest
    preview.latest_preview_jpeg(tmp_path, "c")
    assert list(preview._cache) == ["a", "c"]
    assert preview.latest_preview_jpeg(tmp_path, "b") == b"b-1.ts"  # evicted, decoded again


def test_a_footage_renderer_keeps_a_bounded_number_of_masks(monkeypatch):
    monkeypatch.setattr(footage, "MASK_CACHE", 3)
    renderer = footage.FootageRenderer.__new__(footage.FootageRenderer)
    renderer.mask, renderer._masks = footage.feather_mask(64), {}
    shapes = [renderer._mask_at(64, roll)[0].shape for roll in (0.0, 1.0, 2.0, 3.0, 4.0)]
    assert len(renderer._masks) == 3
    fresh, kept = renderer._mask_at(64, 4.0), renderer._mask_at(64, 0.0)
    assert fresh[0].shape == shapes[-1] and kept is renderer._masks[(64, 0.0)]


def test_the_musetalk_masks_are_bounded(monkeypatch):
    monkeypatch.setattr(musetalk, "MASK_CACHE", 2)
    monkeypatch.setattr(musetalk, "_masks", {})
    masks = [musetalk.lower_face_mask(side) for side in (40, 41, 42, 43)]
    assert len(musetalk._masks) == 2 and [m[0].shape[0] for m in masks] == [40, 41, 42, 43]
    assert np.array_equal(musetalk.lower_face_mask(43)[0], masks[3][0])


class _Redis:
    def delete(self, key):
        pass


def test_a_streamer_forgets_the_preview_state_of_a_channel_gone_off_air(tmp_path):
    share = PreviewShare(_Redis(), tmp_path, every=5.0, max_bytes=1024)
    assert share.publish(["gone"]) == 0 and "gone" in share.skipped  # no playlist: skipped, with the reason
    share.forget("gone")
    assert share.skipped == {}


def test_a_process_without_tasks_collects_on_a_timer(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "release", lambda: calls.append(1))
    stop = threading.Event()
    thread = allocator.collect_every(stop, seconds=0.02)
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        stop.wait(0.01)
    stop.set()
    thread.join(1)
    assert len(calls) >= 3 and not thread.is_alive()
