"""The musetalk backend end to end on CPU with tiny random models in MuseTalk's release layout: ingest prepares the
face latents, a segment is rendered through the policy middleware and aired by the streamer, the mouth is the
network's only where there is speech, and a missing weights path is refused by `studio config check` and at worker
start. Tests that need CUDA are in test_musetalk_gpu.py, marked `gpu`."""

from __future__ import annotations

import json
import subprocess

import av
import numpy as np
import pytest

pytest.importorskip("diffusers", reason="the musetalk backend needs the `gpu` extra (diffusers)")

from sqlmodel import select  # noqa: E402

from studio.db import session_scope  # noqa: E402
from studio.models import Avatar, Channel, Segment  # noqa: E402
from studio.policy import PolicyStamp, check_stamp  # noqa: E402
from studio.storage import sha256_file  # noqa: E402
from tests.conftest import STUDIO, has_badge  # noqa: E402
from tests.integration.conftest import air_and_record, ingested, plan_segment, segment_row, world_rows  # noqa: E402
from tests.musetalk_helpers import make_tiny_release  # noqa: E402
from workers.render.segment import render_segment_direct, render_slate  # noqa: E402
from workers.renderers import make_renderer  # noqa: E402
from workers.renderers.musetalk import BOXES, LATENTS, batcher_for  # noqa: E402
from workers.tts.base import Speech  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_footage):
    tmp = tmp_path_factory.mktemp("musetalk")
    models = make_tiny_release(tmp / "models")
    rt, ids = world_rows(*ingested(tmp, small_footage(), renderer="musetalk",
                                   renderer_settings={"weights_path": str(models), "batch_frames": 16,
                                                      "device": "cpu"}))
    return rt, ids, models


def _bundle(rt, ids):
    with session_scope(rt.engine) as s:
        return rt.local_dir(s.get(Avatar, ids["avatar"]).bundle_path)


def test_musetalk_ingest_prepares_each_base_frames_face_latents(world):
    from workers.queue_policy import render_queue

    rt, ids, _ = world
    bundle = _bundle(rt, ids)
    manifest = json.loads((bundle / "manifest.json").read_text())
    latents, boxes = np.load(bundle / LATENTS), np.load(bundle / BOXES)
    assert latents.shape == (manifest["loop_frames"], 8, 32, 32) and latents.dtype == np.float16
    assert manifest["musetalk"]["version"] == 1 and len(manifest["musetalk"]["vae"]) == 16
    x0, y0, side = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + side <= 360).all() and (y0 + side <= 640).all()
    assert 40 < float(np.median(side)) < 300  # a face, not the frame
    assert {LATENTS, BOXES, "base.mp4", "manifest.json"} <= {p.name for p in bundle.iterdir()}
    with session_scope(rt.engine) as s:
        avatar = s.get(Avatar, ids["avatar"])
        assert avatar.renderer == "musetalk" and render_queue(avatar) == "render.gpu"


def test_musetalk_mouth_moves_only_with_speech_and_only_on_the_lower_face(world):
    rt, ids, _ = world
    renderer = make_renderer("musetalk", _bundle(rt, ids), rt.settings.media, rt.settings.renderer)
    rate, fps = 16000, rt.settings.media.fps
    t = np.arange(rate * 2) / rate
    voice = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t)) / 2).astype(np.float32)
    samples = np.concatenate([np.zeros(rate * 2, np.float32), voice])  # 2 s of silence, then 2 s of "voice"
    speech = Speech(samples=samples, sample_rate=rate)
    frames = list(renderer.render(speech))
    assert len(frames) == renderer.frame_count(speech) == 4 * fps
    idle = list(renderer.idle(len(frames)))  # the same loop path, the closed mouth
    for i in range(0, 2 * fps - 2):  # silence: exactly the idle loop, the mouth closed
        assert np.array_equal(frames[i], idle[i]), i
    boxes = np.load(_bundle(rt, ids) / BOXES)
    changed = 0
    plain = list(renderer.footage.idle(len(frames), closed=False))  # the base frames, nothing pasted
    for i in range(2 * fps + 2, 4 * fps):  # speech: the network's lower face on the base frame, nothing else
        diff = np.abs(frames[i].astype(int) - plain[i].astype(int)).sum(axis=2)
        x0, y0, side = (int(v) for v in boxes[renderer_loop_index(renderer, i, len(frames))])
        top = y0 + int(side * 0.4)
        outside = diff.copy()
        outside[top:y0 + side, x0:x0 + side] = 0
        assert outside.max() == 0, i
        changed += diff[top:y0 + side, x0:x0 + side].mean() > 1.0
    assert changed >= fps, "the mouth did not change while speaking"


def renderer_loop_index(renderer, i: int, n: int) -> int:
    from workers.renderers.footage import base_path

    return int((base_path(n) % renderer.footage.loop_frames)[i])


def test_musetalk_segment_is_labelled_stamped_and_aired(world, tmp_path):
    rt, ids, _ = world
    seg_id = plan_segment(rt, ids, 0)
    assert render_segment_direct(rt, seg_id) == "ready"
    seg = segment_row(rt, seg_id)
    path = rt.local(seg.path)
    check_stamp(rt.key, PolicyStamp.from_dict(seg.stamp), channel_id=ids["channel"], sha256=sha256_file(path))
    assert {"badge", "captions", "aigc_metadata", "watermark"} <= set(seg.stamp["labels"])
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    assert len(frames) == round(seg.duration_s * rt.settings.media.fps)
    assert all(has_badge(f[18:50, 230:345]) for f in frames[::10])
    assert batcher_for(rt.settings.renderer).stats.frames > 0  # the frames went through the shared GPU thread

    with session_scope(rt.engine) as s:
        channel = s.get(Channel, ids["channel"])
    slate = rt.data.segments / ids["channel"] / "slate.mp4"
    render_slate(rt, channel=channel, out=slate, bundle=_bundle(rt, ids), avatar_id=ids["avatar"])
    recording = air_and_record(rt, ids["channel"], slate, tmp_path, seconds=seg.duration_s + 3)
    with session_scope(rt.engine) as s:
        assert s.exec(select(Segment).where(Segment.id == seg_id)).one().state == "aired"
    with av.open(str(recording)) as c:
        assert sum(1 for _ in c.decode(c.streams.video[0])) >= len(frames)


def test_musetalk_missing_weights_refused_by_config_check_and_worker_start(tmp_path):
    missing = tmp_path / "no-such-models"
    config = tmp_path / "musetalk.yaml"
    config.write_text(f"renderer:\n  type: musetalk\n  weights_path: {missing}\n")
    res = subprocess.run([STUDIO, "config", "check", str(config)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and f"renderer.weights_path {missing} does not exist" in res.stderr, res

    env = {"STUDIO_DATA_DIR": str(tmp_path / "data"), "STUDIO_RENDERER__TYPE": "musetalk",
           "STUDIO_RENDERER__WEIGHTS_PATH": "TMElyralab/MuseTalk"}
    import os

    env = {**os.environ, **env}
    for step in (["keys", "init"], ["db", "upgrade"]):  # a fleet host's setup, so only the weights are wrong
        assert subprocess.run([STUDIO, *step], env=env, capture_output=True, timeout=120).returncode == 0, step
    res = subprocess.run([STUDIO, "worker", "--queues", "ingest"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode != 0
    assert "worker cannot start: renderer musetalk" in res.stderr + res.stdout
    assert "looks like a Hugging Face hub id" in res.stderr + res.stdout
