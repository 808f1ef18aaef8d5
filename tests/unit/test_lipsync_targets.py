"""Mouth targets: from phoneme timings, from a learned audio-to-mouth map, and the loudness baseline."""

from __future__ import annotations

import numpy as np
import pytest

from workers.media.audio_features import AudioMouthMap, check_audio_map, fit_audio_map, frame_features
from workers.renderers.footage import (
    MIN_SPEAKING_FRAMES,
    SPEECH_LEVELS,
    choose_units,
    creator_phoneme_target,
    loudness_target,
    phoneme_openness,
    phoneme_target,
    speaking_openness,
    speech_share,
)
from workers.tts.base import Speech, Timed

FPS = 25


def _voice(seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A buzz whose loudness follows a random envelope with pauses; the 'true' mouth opening is that
    envelope smoothed over a few frames, as a real jaw lags the voice."""
    rng = np.random.default_rng(seed)
    frames = int(seconds * FPS)
    env = np.clip(rng.normal(0.5, 0.35, frames), 0, 1)
    env[rng.random(frames) < 0.25] = 0.0
    hop = 16000 // FPS
    t = np.arange(frames * hop) / 16000
    carrier = np.sign(np.sin(2 * np.pi * 140 * t)) * 0.3 + rng.normal(0, 0.02, len(t))
    samples = (carrier * np.repeat(env, hop)).astype(np.float32)
    mouth = np.convolve(env, [0.2, 0.3, 0.3, 0.2], mode="same") * 0.1 + 0.01
    return samples, mouth


def test_learned_map_beats_loudness_on_held_out_audio():
    samples, mouth = _voice(40, seed=1)
    frames = len(mouth)
    feats = frame_features(samples, 16000, FPS, frames)
    cut = int(frames * 0.7)
    amap = fit_audio_map(feats[:cut], mouth[:cut])
    predicted = amap.predict(feats)[cut:]
    loud = loudness_target(Speech(samples, 16000), FPS, 0.0, 1.0)[cut:]
    learned_r = np.corrcoef(predicted, mouth[cut:])[0, 1]
    loud_r = np.corrcoef(loud, mouth[cut:])[0, 1]
    assert learned_r > 0.9 and learned_r > loud_r + 0.02, (learned_r, loud_r)


def test_audio_map_round_trips_and_refuses_other_settings():
    samples, mouth = _voice(10, seed=2)
    feats = frame_features(samples, 16000, FPS, len(mouth))
    amap = fit_audio_map(feats, mouth)
    again = AudioMouthMap.from_dict(amap.to_dict())
    assert np.allclose(again.predict(feats), amap.predict(feats), atol=1e-5)
    bad = {**amap.to_dict(), "context": 99}
    with pytest.raises(ValueError, match="rebuild the avatar"):
        AudioMouthMap.from_dict(bad)


def test_features_do_not_depend_on_the_input_rate():
    samples, mouth = _voice(4, seed=3)
    at16 = frame_features(samples, 16000, FPS, len(mouth))
    up = np.interp(np.arange(len(samples) * 3) / 3, np.arange(len(samples)), samples).astype(np.float32)
    at48 = frame_features(up, 48000, FPS, len(mouth))
    assert np.corrcoef(at16[:, -1], at48[:, -1])[0, 1] > 0.99


def test_phoneme_openness_orders_mouth_shapes():
    assert phoneme_openness("p") == phoneme_openness("m") == phoneme_openness("_:") == 0.0
    assert phoneme_openness("a") > phoneme_openness("e") > phoneme_openness("i") > phoneme_openness("f")


def test_phoneme_target_closes_in_pauses_and_covers_every_frame():
    speech = Speech(np.zeros(16000 * 2, np.float32), 16000,
                    phonemes=[Timed("m", 0.2, 0.3), Timed("a", 0.3, 0.6), Timed("p", 0.6, 0.7), Timed("i", 1.2, 1.4)])
    target = phoneme_target(speech, FPS, lo=0.01, hi=0.11)
    assert len(target) == speech.frame_count(FPS) == 50
    assert target[:3].max() == pytest.approx(0.01)          # silence before speech: closed
    assert target[int(0.45 * FPS)] > target[int(1.3 * FPS)]  # 'a' wider than 'i'
    assert target[int(0.9 * FPS)] == pytest.approx(0.01)    # the pause between: closed again
    assert target.min() >= 0.01 - 1e-6 and target.max() <= 0.11 + 1e-6


# A passage that is not the demo's script, read to find how often each opening comes up in speech.
REFERENCE_PASSAGE = (
    "When the morning train pulled into the station, the old man folded his newspaper and looked out at the rain. He "
    "had lived in this town for forty years, and he still remembered the summer the river flooded the bakery on the "
    "corner. Children were running along the platform with yellow umbrellas. A woman in a blue coat asked him "
    "whether the museum would open before noon, and he laughed, because nobody in the family had ever been on time "
    "for anything. Outside, the clouds were breaking up over the hills.")


def _reference_levels(voices=(("en-us", 160), ("en-gb", 160), ("en-us", 200), ("en-us+f3", 140))) -> np.ndarray:
    from workers.tts.espeak import EspeakTTS

    levels = []
    for voice, wpm in voices:
        level = phoneme_target(EspeakTTS(voice, wpm).synthesize(REFERENCE_PASSAGE), FPS, 0.0, 1.0)
        levels.append(level[level > 0.02])
    return np.concatenate(levels)


def test_speech_levels_are_those_of_the_reference_passage():
    """SPEECH_LEVELS is what its comment says: the passage's phoneme levels, read again here (libespeak-ng's timing
    moves by a few milliseconds between syntheses, so within 0.02)."""
    assert np.all(np.diff(SPEECH_LEVELS) > 0) and SPEECH_LEVELS[-1] == 1.0
    assert np.quantile(_reference_levels(), np.linspace(0, 1, len(SPEECH_LEVELS))) == pytest.approx(
        SPEECH_LEVELS, abs=0.02)


def _creator(low: float, high: float, frames: int = 400) -> np.ndarray:
    """A creator's openness over their footage's speech: mostly between `low` and `high`, sometimes closed."""
    rng = np.random.default_rng(3)
    return np.where(rng.random(frames) < 0.15, 0.005, rng.uniform(low, high, frames))


def test_the_phoneme_path_opens_the_mouth_as_far_and_as_often_as_the_creator_does():
    """The same speech on two creators: one who talks with a small mouth, one who opens wide. Each is driven within
    their own range, as often wide as in their footage; the order of the sounds stays the phoneme table's, pauses
    and closures stay closed. Before, every creator's mouth was spread linearly up to their units' 90th percentile,
    whatever they do while speaking (bench lipsync: LMD 2.01 -> 1.66 % on the phonemes said)."""
    speech = Speech(np.zeros(16000 * 2, np.float32), 16000,
                    phonemes=[Timed("m", 0.2, 0.3), Timed("a", 0.3, 0.6), Timed("p", 0.6, 0.7), Timed("I", 0.7, 0.8),
                              Timed("s", 0.8, 0.9), Timed("e", 0.9, 1.0), Timed("i", 1.2, 1.4)])
    level = phoneme_target(speech, FPS, 0.0, 1.0)
    voiced = level > 0.02
    small, wide = _creator(0.01, 0.04), _creator(0.02, 0.16)
    lo, hi = 0.005, 0.12  # both creators' units: closed .. their 90th percentile
    for speaking in (small, wide):
        target = creator_phoneme_target(level, speaking, lo, hi)
        assert target[~voiced] == pytest.approx(lo + level[~voiced] * (hi - lo))  # pauses, closures: closed
        assert target[voiced].min() >= speaking.min() and target[voiced].max() <= speaking.max()
        order = np.argsort(level[voiced], kind="stable")
        assert np.all(np.diff(target[voiced][order]) >= -1e-12)  # wider sound, wider mouth
    widest = {name: creator_phoneme_target(level, c, lo, hi).max() for name, c in (("small", small), ("wide", wide))}
    assert widest["small"] <= 0.04 < widest["wide"]
    # Speech like the reference passage opens the mouth past the creator's median about half the time.
    ref = _reference_levels(voices=(("en-us", 160),))
    share = np.mean(creator_phoneme_target(ref, wide, lo, hi) > np.median(wide))
    assert 0.4 < share < 0.6, share
    # The wider of the two shares of speech takes the wider opening; unseen levels stay in 0..1.
    assert speech_share(np.array([0.0, 0.3, 0.7, 1.0, 2.0])).tolist() == pytest.approx(
        [0.0, 0.2, 0.85, 1.0, 1.0], abs=0.01)


def test_without_enough_of_the_creators_speech_levels_spread_linearly():
    level = np.array([0.0, 0.5, 1.0])
    linear = [0.01, 0.06, 0.11]
    assert creator_phoneme_target(level, None, 0.01, 0.11) == pytest.approx(linear)
    few = _creator(0.02, 0.2, frames=MIN_SPEAKING_FRAMES - 1)
    assert creator_phoneme_target(level, few, 0.01, 0.11) == pytest.approx(linear)
    assert creator_phoneme_target(level, _creator(0.02, 0.2), 0.01, 0.11)[2] == pytest.approx(0.2, abs=0.005)


def test_the_creators_speaking_openness_is_read_from_the_bundles_analysis(tmp_path):
    import json

    (tmp_path / "analysis.json").write_text(json.dumps({
        "fps": 10, "openness": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], "speech_spans": [[0.1, 0.3], [0.6, 0.75]]}))
    assert speaking_openness(tmp_path).tolist() == [0.1, 0.2, 0.6, 0.7]  # frames 1, 2 and 6, 7
    (tmp_path / "analysis.json").write_text("{}")
    assert speaking_openness(tmp_path) is None  # a bundle without it: linear, as before
    assert speaking_openness(tmp_path / "missing") is None


def test_phoneme_target_is_centred_on_the_sound_and_keeps_short_closures():
    speech = Speech(np.zeros(16000 * 2, np.float32), 16000,
                    phonemes=[Timed("a", 0.40, 0.60), Timed("p", 1.00, 1.04), Timed("a", 1.04, 1.30),
                              Timed("a", 0.90, 1.00), Timed("i", 1.595, 1.605)])
    target = phoneme_target(speech, FPS, lo=0.0, hi=1.0)
    # One vowel on its own (frames 10-14): as open before its centre (frame 12) as after, neither early nor late.
    assert target[8:17] == pytest.approx(target[8:17][::-1], abs=1e-6)
    assert target[8] < 0.05 and target[12] > 0.95
    # A 40 ms 'p' between vowels closes its frame more than the vowels around it; the old per-frame maximum let
    # the neighbouring vowel open it fully.
    assert target[25] < target[24] - 0.3 and target[25] < target[27] - 0.3
    # A 10 ms brush with a vowel barely opens a frame.
    assert target[40] < 0.2


def test_unit_choice_follows_target_but_avoids_jitter():
    units = np.linspace(0, 1, 11)
    target = np.array([0.0, 0.0, 0.52, 0.48, 0.52, 0.48, 1.0, 1.0])
    smooth = units[choose_units(target, units, smooth=0.5)]
    greedy = units[choose_units(target, units, smooth=0.0)]
    assert np.abs(greedy - target).max() <= 0.05
    assert np.abs(np.diff(smooth)).sum() <= np.abs(np.diff(greedy)).sum()
    assert smooth[0] == 0.0 and smooth[-1] > 0.8


@pytest.mark.parametrize("n", [1, 2, 3, 50, 101, 137, 250, 251])
def test_base_path_starts_and_ends_on_loop_frame_zero_at_real_speed(n):
    from workers.renderers.footage import base_path

    path = base_path(n, max_reach=50)
    assert len(path) == n and path[0] == 0 and path[-1] == 0
    assert path.max() <= 50
    if n > 2:
        steps = np.abs(np.diff(path))
        assert steps.max() <= 2 and steps.mean() > 0.8  # about one loop frame per output frame, no jumps


def test_spread_decides_between_units_of_equal_openness():
    units_open = np.array([0.0, 0.5, 0.5, 1.0])
    units_spread = np.array([0.7, 0.5, 0.9, 0.7])  # unit 1 round, unit 2 wide, same opening
    target = np.full(6, 0.5)
    wide = choose_units(target, units_open, spread_target=np.full(6, 0.9), unit_spread=units_spread)
    round_ = choose_units(target, units_open, spread_target=np.full(6, 0.5), unit_spread=units_spread)
    assert set(wide) == {2} and set(round_) == {1}


def test_phoneme_spread_rounds_oo_and_widens_ee():
    from workers.renderers.footage import phoneme_spread

    speech = Speech(np.zeros(16000 * 2, np.float32), 16000,
                    phonemes=[Timed("u:", 0.2, 0.6), Timed("i:", 1.2, 1.6)])
    spread = phoneme_spread(speech, FPS, narrow=0.5, neutral=0.7, wide=0.9)
    assert len(spread) == 50
    assert spread[int(0.4 * FPS)] == pytest.approx(0.5, abs=0.02)
    assert spread[int(1.4 * FPS)] == pytest.approx(0.9, abs=0.02)
    assert spread[int(0.9 * FPS)] == pytest.approx(0.7, abs=0.02)


def _speech_frames(samples: np.ndarray, frames: int) -> np.ndarray:
    feats = frame_features(samples, 16000, FPS, frames)
    return feats, feats[:, -1] > 0.15 * np.percentile(feats[:, -1], 95)


def test_map_check_keeps_a_map_that_beats_loudness_on_held_out_speech():
    samples, mouth = _voice(40, seed=1)
    feats, spoken = _speech_frames(samples, len(mouth))
    check = check_audio_map(feats, mouth, spoken)
    assert check.chosen == "map" and check.map_r > check.loudness_r and check.held_out_frames >= 25, check


def test_map_check_falls_back_to_loudness_when_the_fit_does_not_hold_on_unseen_speech():
    """A map fitted where the mouth did not follow the voice (here: the fitted part's openings shuffled, as a few
    seconds of mumbling, smiling or chewing would give) predicts unseen speech worse than loudness: loudness drives."""
    samples, mouth = _voice(40, seed=4)
    feats, spoken = _speech_frames(samples, len(mouth))
    garbled = mouth.copy()
    cut = int(np.flatnonzero(spoken)[int(len(np.flatnonzero(spoken)) * 0.75)])
    garbled[:cut] = np.random.default_rng(0).permutation(mouth[:cut])
    check = check_audio_map(feats, garbled, spoken)
    assert check.chosen == "loudness" and check.loudness_r > check.map_r, check
    assert check.to_dict()["chosen"] == "loudness"


def test_map_check_with_too_little_speech_takes_loudness():
    samples, mouth = _voice(3, seed=5)
    feats, spoken = _speech_frames(samples, len(mouth))
    check = check_audio_map(feats, mouth, spoken)
    assert check.chosen == "loudness" and check.held_out_frames < 25


def test_a_renderer_whose_map_lost_drives_recorded_audio_by_loudness():
    from studio.config import MediaProfile
    from workers.renderers.footage import FootageRenderer

    samples, _ = _voice(4, seed=6)
    speech = Speech(samples, 16000)
    renderer = object.__new__(FootageRenderer)  # only what target_for reads
    renderer.profile, renderer.unit_open = MediaProfile(fps=FPS), np.linspace(0.01, 0.11, 12, dtype=np.float32)
    renderer.audio_drive = "loudness"
    lo, hi = renderer.open_range
    assert np.allclose(renderer.target_for(speech), loudness_target(speech, FPS, lo, hi))
    renderer.audio_drive, renderer.audio_map = "map", fit_audio_map(*_map_inputs(samples))
    assert not np.allclose(renderer.target_for(speech), loudness_target(speech, FPS, lo, hi))


def test_a_renderer_drives_phonemes_in_its_creators_own_terms():
    """target_for: our TTS's (or an aligned voice-over's) phonemes are mapped onto the creator's speaking openness
    when the bundle records it, and spread linearly over the units' range when it does not."""
    from studio.config import MediaProfile
    from workers.renderers.footage import FootageRenderer

    speech = Speech(np.zeros(16000, np.float32), 16000, phonemes=[Timed("a", 0.2, 0.5), Timed("i", 0.6, 0.8)])
    renderer = object.__new__(FootageRenderer)  # only what target_for reads
    renderer.profile, renderer.unit_open = MediaProfile(fps=FPS), np.linspace(0.01, 0.11, 12, dtype=np.float32)
    lo, hi = renderer.open_range
    renderer.speaking_open = None
    assert np.allclose(renderer.target_for(speech), phoneme_target(speech, FPS, lo, hi))
    renderer.speaking_open = _creator(0.01, 0.03)
    target = renderer.target_for(speech)
    assert target.max() <= 0.03 < phoneme_target(speech, FPS, lo, hi).max()
    assert target[int(0.35 * FPS)] > target[int(0.7 * FPS)]  # 'a' still wider than 'i'


def _map_inputs(samples):
    n = len(samples) * FPS // 16000
    feats = frame_features(samples, 16000, FPS, n)
    return feats, np.random.default_rng(1).random(n).astype(np.float32)
