"""What the middleware draws, measured on the pixels it returns (POLICY V1-V3, M3): the badge's capital
letters are at least 5% of the frame's shorter side under every profile, in the profile's corner, on
every frame; the banner stays for the profile's time (never under 2 s) and then goes; the watermark is
in the same frames. No services needed."""

from __future__ import annotations

import numpy as np
import pytest

from studio.config import LabelStyle, MediaProfile
from studio.policy import CaptionCue
from studio.policy_profiles import effective_policy
from workers.media.watermark import Mark, WatermarkDetector
from workers.render.policy_middleware import PolicyMiddleware

KEY = b"0123456789abcdef0123456789abcdef"
PROFILES = [["default"], ["cn"], ["eu", "us"], ["cn", "eu"]]
SIZES = [(720, 1280), (360, 640)]


def _frames(w: int, h: int, n: int):
    rng = np.random.default_rng(7)
    base = np.clip(rng.normal(150, 25, (h // 8, w // 8, 3)), 0, 255).astype(np.uint8)
    img = np.kron(base, np.ones((8, 8, 1), np.uint8))  # a textured, light picture: the light badge is used
    return [img.copy() for _ in range(n)]


def _middleware(names, w, h):
    return PolicyMiddleware(policy=effective_policy(names), style=LabelStyle(), profile=MediaProfile(width=w, height=h),
                            key=KEY, producer="Ethical Clone Studio")


def _ink_runs(box: np.ndarray) -> list[tuple[int, int]]:
    """Runs of rows with dark ink on the light badge box: one per text line."""
    rows = (box.max(axis=2) < 90).sum(axis=1) > 0
    runs, start = [], None
    for i, ink in enumerate([*rows, False]):
        if ink and start is None:
            start = i
        elif not ink and start is not None:
            runs.append((start, i))
            start = None
    return runs


@pytest.mark.parametrize("w, h", SIZES)
@pytest.mark.parametrize("names", PROFILES, ids="+".join)
def test_badge_cap_height_is_at_least_five_percent_in_the_profile_corner_on_every_frame(names, w, h):
    """POLICY V1, V2: the badge is on every frame, inside the frame in the profile's top corner, its capital letters at
    least 5% of the frame's shorter side."""
    mw = _middleware(names, w, h)
    policy = mw.policy
    frames = list(mw.label_frames(_frames(w, h, 6), cues=[], banner_for=None, mark=Mark(1, 2)))
    x, y = mw.badge_xy
    bw, bh = mw.badge.size
    assert x + bw <= w and y + bh <= h // 5  # inside the frame, at the top
    assert (x + bw / 2 > w / 2) == (policy.corner == "top-right")
    for frame in frames:
        runs = _ink_runs(frame[y:y + bh, x:x + bw])
        assert len(runs) == len(policy.badge_lines), runs
        first = runs[0][1] - runs[0][0]  # "AI avatar": no descenders, so its ink height is the cap height
        assert first >= 0.05 * min(w, h) - 1, f"cap height {first}px < 5% of {min(w, h)}"
    if "cn" in names:
        assert policy.badge_lines == ("AI avatar", "AI生成")


@pytest.mark.parametrize("names", PROFILES, ids="+".join)
def test_banner_lasts_the_profile_time_never_under_two_seconds_then_goes(names):
    """POLICY V3: the show-start banner shows from the first frame for the profile's time, never under 2.0 s,
    then goes."""
    w, h, fps = 360, 640, 25
    mw = _middleware(names, w, h)
    n = int(4.5 * fps)
    frames = list(mw.label_frames(_frames(w, h, n), cues=[], banner_for="Ava Example", mark=Mark(1, 2)))
    bw, bh = mw.banner_patch("Ava Example").size
    bx, by = (w - bw) // 2, int(h * 0.16)
    navy = np.array([20, 20, 60])
    shown = [float(np.mean(np.abs(f[by + bh // 2 - 2:by + bh // 2 + 2, bx + 4:bx + 10].astype(int) - navy))) < 40
             for f in frames]
    on = sum(shown)
    assert shown[:on] == [True] * on and not any(shown[on:])  # one run from the first frame
    assert on / fps >= 2.0 and on == int(np.ceil(mw.policy.banner_seconds * fps))


def test_captions_show_during_their_cue_only():
    """POLICY V4: a caption is burned into the picture while its cue lasts, and only then."""
    w, h, fps = 360, 640, 25
    mw = _middleware(["default"], w, h)
    frames = list(mw.label_frames(_frames(w, h, 75), cues=[CaptionCue(1.0, 2.0, "Paid partnership.")],
                                  banner_for=None, mark=Mark(1, 2)))
    band = (slice(int(h * 0.84) - 40, int(h * 0.84)), slice(w // 3, 2 * w // 3))
    dark = [float((f[band].max(axis=2) < 60).mean()) for f in frames]
    assert all(d > 0.3 for d in dark[fps:2 * fps]) and all(d < 0.05 for d in dark[:fps] + dark[2 * fps + 2:])


def test_labelled_frames_carry_the_watermark():
    """POLICY M3: the labelled frames carry the invisible watermark, which reads back as the given mark."""
    mw = _middleware(["cn", "eu"], 360, 640)
    detector = WatermarkDetector(KEY)
    for frame in mw.label_frames(_frames(360, 640, 3), cues=[], banner_for="Ava", mark=Mark(0xABCDEF, 0x1234)):
        detector.add_frame(frame)
    assert detector.result().mark == Mark(0xABCDEF, 0x1234)


def test_spoken_disclosure_is_chosen_by_the_voice_language():
    policy = effective_policy(["cn", "eu"])
    assert "Ava" in policy.spoken_text("Ava", "en") and "本主播" not in policy.spoken_text("Ava", "en")
    assert policy.spoken_text("Ava", "zh").startswith("本主播为Ava")
    with pytest.raises(ValueError, match="speaks 'en'"):
        effective_policy(["cn"]).spoken_text("Ava", "en")
    assert effective_policy(["default"]).spoken_text("Ava", "en") is None
