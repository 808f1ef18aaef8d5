"""The synthetic presenter must pass the same mediapipe checks as real creator footage."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from workers.media.synthface import make_demo_footage, render_face_frame

mp = pytest.importorskip("mediapipe")
av = pytest.importorskip("av")

W, H = 360, 640


def _detector():
    return mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)


def test_frame_is_deterministic_rgb():
    a = render_face_frame(1.234, 0.4, width=W, height=H, seed=7)
    assert a.shape == (H, W, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_face_frame(1.234, 0.4, width=W, height=H, seed=7))
    assert not np.array_equal(a, render_face_frame(1.234, 0.4, width=W, height=H, seed=8))


def test_one_face_detected_and_lips_follow_mouth_open():
    mouth = np.clip(np.abs(np.sin(np.arange(40) * 0.45)) * 1.2 - 0.1, 0, 1)
    ones, lips, used = 0, [], []
    with _detector() as fd, mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False, max_num_faces=2, refine_landmarks=False
    ) as fm:
        for i, m in enumerate(mouth):
            frame = render_face_frame(i * 0.37, float(m), width=W, height=H, seed=7)
            dets = fd.process(frame).detections or []
            if len(dets) == 1:
                ones += 1
                assert dets[0].score[0] > 0.6
                assert dets[0].location_data.relative_bounding_box.height >= 0.15
            mesh = fm.process(frame).multi_face_landmarks
            if mesh:
                pts = mesh[0].landmark
                ys = [p.y for p in pts]
                lips.append(abs(pts[14].y - pts[13].y) / (max(ys) - min(ys)))
                used.append(m)
    assert ones / len(mouth) >= 0.95
    assert len(lips) >= 0.95 * len(mouth)
    assert np.corrcoef(lips, used)[0, 1] > 0.6


@pytest.mark.parametrize(("faces", "expected"), [(2, 2), (0, 0)])
def test_face_count_variants(faces, expected):
    with _detector() as fd:
        for t in (0.0, 1.1, 2.7, 4.3):
            frame = render_face_frame(t, 0.5, width=W, height=H, seed=7, faces=faces)
            assert len(fd.process(frame).detections or []) == expected


needs_tools = pytest.mark.skipif(
    not (shutil.which("ffmpeg") and shutil.which("espeak-ng")), reason="needs ffmpeg and espeak-ng"
)


@needs_tools
def test_make_demo_footage_encodes_h264_aac(tmp_path):
    out = make_demo_footage(tmp_path / "demo.mp4", seconds=4, width=W, height=H)
    assert out == tmp_path / "demo.mp4"
    assert [p.name for p in tmp_path.iterdir()] == ["demo.mp4"]  # no temp file left behind
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        assert (v.codec_context.width, v.codec_context.height) == (W, H)
        assert a.codec_context.name == "aac" and a.rate == 48000 and a.channels == 2
        assert abs(c.duration / 1e6 - 4.0) <= 0.2
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == 100


@needs_tools
def test_video_only_footage_has_no_audio(tmp_path):
    out = make_demo_footage(tmp_path / "mute.mp4", seconds=1, width=W, height=H, with_audio=False)
    with av.open(str(out)) as c:
        assert len(c.streams.video) == 1 and not c.streams.audio


@needs_tools
def test_encoder_failure_reports_ffmpeg_stderr_and_leaves_nothing(tmp_path):
    # yuv420p needs even dimensions, so libx264 refuses an odd width.
    with pytest.raises(RuntimeError, match="divisible by 2"):
        make_demo_footage(tmp_path / "bad.mp4", seconds=1, width=W + 1, height=H)
    assert list(tmp_path.iterdir()) == []


def test_articulated_mouth_follows_the_phonemes_not_the_loudness():
    from workers.media.synthface import _articulated_track

    rate, fps = 16000, 25
    audio = np.zeros(2 * rate, np.int16)
    audio[int(0.4 * rate):int(1.2 * rate)] = 8000  # one level all through: loudness alone would not move
    phones = [("m", 0.40, 0.56), ("A:", 0.56, 0.80), ("p", 0.80, 0.92), ("i:", 0.92, 1.20)]
    mouth = _articulated_track(phones, audio, rate, fps, 2 * fps)
    assert mouth[:8].max() < 0.02 and mouth[35:].max() < 0.02  # closed in the pauses
    assert mouth[int(0.68 * fps)] > 0.7 > mouth[int(1.06 * fps)] > 0.15  # 'ah' wide, 'ee' nearly closed
    assert mouth[int(0.86 * fps)] < 0.5 * mouth[int(0.68 * fps)]  # lips come together for the 'p'


def test_an_unknown_mouth_model_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match="'jaw'"):
        make_demo_footage(tmp_path / "x.mp4", seconds=1, width=W, height=H, mouth="jaw")
    assert list(tmp_path.iterdir()) == []


@needs_tools
def test_articulated_footage_speaks_and_moves_its_mouth(tmp_path):
    out = make_demo_footage(tmp_path / "said.mp4", seconds=3, width=W, height=H, mouth="articulation", voice="en-gb")
    with av.open(str(out)) as c:
        assert c.streams.audio and abs(c.duration / 1e6 - 3.0) <= 0.2
        mouths = [frame.to_ndarray(format="rgb24")[int(0.45 * H):int(0.55 * H), int(0.4 * W):int(0.6 * W)]
                  for frame in c.decode(video=0)]
    assert len(mouths) == 75
    assert np.std([m.mean() for m in mouths]) > 0.5  # the lips move with the speech
