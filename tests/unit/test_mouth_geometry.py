"""Mouth crops are levelled (the head's roll undone) and scaled to a common mouth width."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from workers.renderers.footage import mouth_crop, speech_spans


def _bar_angle(img: np.ndarray) -> float:
    ys, xs = np.nonzero(img[..., 0] < 60)
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    pts -= pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts, full_matrices=False)
    dx, dy = vt[0]
    return float(np.degrees(np.arctan2(dy, dx))) % 180


@pytest.mark.parametrize("roll", [-15.0, 0.0, 12.0])
def test_mouth_crop_levels_a_tilted_mouth_and_scales_it(roll):
    frame = np.full((400, 400, 3), 220, np.uint8)
    cx, cy, width = 200.0, 210.0, 80.0
    dx, dy = np.cos(np.radians(roll)) * width / 2, np.sin(np.radians(roll)) * width / 2
    cv2.line(frame, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), (20, 20, 20), 6, cv2.LINE_AA)
    pose = np.array([cx, cy, width, 0.05, roll, 0.0, 0.0, 80.0])  # face scale 80 px between the eyes
    patch = mouth_crop(frame, pose, ref_scale=40.0, patch=96)
    angle = _bar_angle(patch)
    assert min(angle, 180 - angle) < 3.0, f"mouth still tilted by {angle:.1f} degrees"
    ys, xs = np.nonzero(patch[..., 0] < 60)
    assert 36 <= xs.max() - xs.min() <= 46  # face scale 80 px -> the common 40 px halves the mouth
    assert abs(xs.mean() - 48) < 2 and abs(ys.mean() - 48) < 2  # centred


def test_speech_spans_join_short_pauses_and_split_long_ones():
    fps = 25
    rms = np.zeros(200)
    rms[10:40] = 1.0
    rms[43:60] = 1.0   # 3-frame pause (0.12 s): same span
    rms[100:150] = 1.0  # 40-frame pause: a new span
    spans = speech_spans(rms, fps)
    assert spans == [[0.4, 2.4], [4.0, 6.0]]


def test_head_pose_of_a_frontal_face_and_of_a_tilted_one():
    from workers.media.face import FaceAnalyzer
    from workers.media.synthface import render_face_frame

    frame = render_face_frame(1.0, 0.3, width=360, height=640, seed=7)
    turned = cv2.warpAffine(frame, cv2.getRotationMatrix2D((180, 300), -10, 1.0), (360, 640),
                            borderMode=cv2.BORDER_REPLICATE)
    with FaceAnalyzer() as fa:
        upright = fa.mouth(frame)
    with FaceAnalyzer() as fa:
        tilted = fa.mouth(turned)
    assert abs(upright.yaw) < 10 and abs(upright.roll) < 5
    assert tilted.roll - upright.roll == pytest.approx(10, abs=3)  # clockwise as displayed is positive


def test_mouth_units_cover_both_shape_axes():
    from workers.renderers.footage import pick_mouth_units

    rng = np.random.default_rng(0)
    openness = rng.uniform(0.0, 0.1, 2000)
    spread = rng.uniform(0.6, 0.9, 2000)
    openness[7], spread[7] = 0.05, 0.99  # one very wide mouth
    openness[9], spread[9] = 0.05, 0.45  # one very round mouth
    units = pick_mouth_units(openness, spread, 16)
    assert len(units) == 16 and units[0] == int(np.argmin(openness))
    assert 7 in units and 9 in units
    assert list(openness[units]) == sorted(openness[units])
