"""Lip-sync metric definitions on hand-made landmarks (no video, no mesh)."""

from __future__ import annotations

import numpy as np
import pytest

from workers.eval.lipsync import compare
from workers.eval.metrics import best_lag, closed_level, lmd_pct, openness, pearson, silent_frames
from workers.media.face import LIP_LANDMARKS


def _lips(gap: float, width: float = 40.0, at=(100.0, 200.0)) -> np.ndarray:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(len(LIP_LANDMARKS), 2)) * 3 + at
    pts[LIP_LANDMARKS.index(61)] = (at[0] - width / 2, at[1])
    pts[LIP_LANDMARKS.index(291)] = (at[0] + width / 2, at[1])
    pts[LIP_LANDMARKS.index(13)] = (at[0], at[1] - gap / 2)
    pts[LIP_LANDMARKS.index(14)] = (at[0], at[1] + gap / 2)
    return pts


def test_openness_is_gap_per_mouth_width():
    assert openness(_lips(10.0)) == pytest.approx(0.25)
    assert openness(_lips(10.0, width=80.0)) == pytest.approx(0.125)


def test_lmd_ignores_translation_and_is_in_percent_of_mouth_width():
    ref = _lips(10.0)
    assert lmd_pct(ref, ref + (30.0, -12.0)) == pytest.approx(0.0, abs=1e-9)
    shifted = ref.copy()
    shifted[:, 1] += np.where(np.arange(len(ref)) % 2 == 0, 2.0, -2.0)  # every point 2 px off, centroid kept
    assert lmd_pct(ref, shifted) == pytest.approx(2.0 / 40.0 * 100, rel=0.05)


def test_pearson_is_none_when_undefined():
    assert pearson(np.ones(10), np.arange(10.0)) is None
    assert pearson(np.arange(2.0), np.arange(2.0)) is None
    assert pearson(np.arange(10.0), np.arange(10.0)) == pytest.approx(1.0)


def test_silence_and_closed_rules():
    rms = np.array([0.0, 0.001, 0.2, 0.2, 0.2, 0.01, 0.3])
    assert silent_frames(rms).tolist() == [True, True, False, False, False, True, False]
    assert closed_level(np.array([0.02] * 19 + [0.42])) == pytest.approx(0.02 + 0.25 * (np.percentile(
        [0.02] * 19 + [0.42], 95) - 0.02))


def test_compare_needs_both_baselines_beaten():
    def c(corr, lmd):
        return {"correlation": corr, "lmd_pct": lmd}

    out = compare({"renderer": c(0.8, 3.0), "loudness": c(0.7, 3.5), "plain_loop": c(None, 6.0)})
    assert out["beats_baselines"] == {"correlation": True, "lmd": True}
    assert out["margins"]["loudness"]["correlation"] == pytest.approx(0.1)
    assert out["margins"]["plain_loop"]["correlation"] == pytest.approx(0.8)  # undefined counts as 0
    assert out["margins"]["loudness"]["lmd_pct"] == pytest.approx(0.5)
    out = compare({"renderer": c(0.8, 3.0), "loudness": c(0.9, 2.5), "plain_loop": c(0.0, 6.0)})
    assert out["beats_baselines"] == {"correlation": False, "lmd": False}
    assert compare({"renderer": c(None, None), "loudness": c(0.1, 1), "plain_loop": c(0, 1)})["beats_baselines"] \
        == {"correlation": False, "lmd": False}


def test_best_lag_finds_a_late_candidate_and_skips_missing_meshes():
    gaps = np.random.default_rng(1).uniform(2, 14, 60)
    ref = [_lips(g) for g in gaps]
    late = [_lips(gaps[0])] * 2 + [_lips(g) for g in gaps[:-2]]  # the same mouth, two frames late
    late[10] = None
    lag, corr = best_lag(late, ref)
    assert lag == 2 and corr == pytest.approx(1.0)
    assert best_lag(ref, late)[0] == -2
    assert best_lag([None] * 60, ref) == (None, None)


def test_compare_reports_recognition_against_the_audio_map_and_the_baselines():
    def c(corr, lmd, lag=0):
        return {"correlation": corr, "lmd_pct": lmd, "best_lag_frames": lag}

    out = compare({"renderer": c(0.8, 3.0), "recognition": c(0.85, 2.5, -1), "loudness": c(0.7, 3.5),
                   "plain_loop": c(None, 6.0)})
    assert out["beats_baselines"] == {"correlation": True, "lmd": True}  # the renderer's verdict, as before
    rec = out["recognition"]
    assert rec["vs_audio_map"]["correlation"] == pytest.approx(0.05)
    assert rec["vs_audio_map"]["lmd_pct"] == pytest.approx(0.5)
    assert rec["vs_audio_map"]["beats"] == {"correlation": True, "lmd": True}
    assert rec["beats_baselines"] == {"correlation": True, "lmd": True} and rec["lag_within_one_frame"]
    out = compare({"renderer": c(0.8, 3.0), "recognition": c(0.75, 3.2, 2), "loudness": c(0.7, 3.5),
                   "plain_loop": c(0.0, 6.0)})
    assert out["recognition"]["vs_audio_map"]["beats"] == {"correlation": False, "lmd": False}
    assert not out["recognition"]["lag_within_one_frame"]
