"""Renderer `footage` (default, CPU, no weights).

The creator's own footage is the base loop (natural head motion and blinks); for each output frame a
mouth unit cut from the footage is chosen to match the speech and blended onto the base frame's mouth
with a feathered, colour-matched mask. Exactly one frame per 1/fps of audio, so A/V never drift.

The bundle it reads is built here too (`build_bundle`, from the footage ingest has validated and analysed): the
calmest few seconds as a ping-pong base loop with its face track, mouth units spanning the shapes the creator
makes, and the creator's own audio-to-mouth map.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from studio.config import MediaProfile
from studio.storage import write_json_atomic
from workers.media.audio_features import AudioMouthMap, check_audio_map, fit_audio_map, frame_features
from workers.media.encode import encode_video_only
from workers.media.probe import frame_rms, iter_frames
from workers.renderers import register
from workers.renderers.base import Backend, BuiltBundle, BundleError, BundleSource
from workers.tts.base import Speech

if TYPE_CHECKING:
    from workers.media.face import MouthPose

__all__ = ["BUNDLE_VERSION", "BundleError", "FootageRenderer", "build_bundle"]

BUNDLE_VERSION = 5  # 2: learned audio map; 3: head pose, levelled mouths; 4: lip spread, face scale;
# 5: consent_ref.npz, the footage's face, frames and sound for the consent-video check


# How open the mouth is for each espeak-ng phoneme (0 closed .. 1 widest), by its first letter(s).
# Lips meet for p/b/m, nearly for f/v; open vowels widest, close vowels and most consonants in between.
_OPEN_VOWELS = ("a", "A", "0", "V", "O", "aI", "aU", "OI")
_MID_VOWELS = ("e", "E", "@", "3", "o", "eI", "oU", "e@", "i@", "U@")
_CLOSE_VOWELS = ("i", "I", "u", "U")
_LIPS_CLOSED = ("p", "b", "m")
_LIPS_NEAR = ("f", "v", "w")


def phoneme_openness(symbol: str) -> float:
    core = symbol.strip("'`,:;")
    if not core or core.startswith("_"):
        return 0.0
    if core.startswith(_OPEN_VOWELS):
        return 1.0
    if core.startswith(_MID_VOWELS):
        return 0.7
    if core.startswith(_CLOSE_VOWELS):
        return 0.4
    if core[0] in _LIPS_CLOSED:
        return 0.0
    if core[0] in _LIPS_NEAR:
        return 0.15
    return 0.3


GRID_HZ = 1000  # phoneme times are laid on a 1 ms grid before each frame takes its share
# How far the mouth's opening is smoothed across phoneme boundaries (sd of a centred Gaussian): the jaw and lips
# glide between shapes. Centred, so the mouth neither leads nor lags the sound (see phoneme_target).
COARTICULATION_S = 0.02


def phoneme_target(speech: Speech, fps: int, lo: float, hi: float) -> np.ndarray:
    """Mouth opening per frame from phoneme timings (our own TTS, an aligned or a recognised recording): closed in
    pauses, lips shut on p/b/m.

    Each frame shows the mean opening over its 1/fps window, not the widest phoneme it touches: a 10 ms brush with
    a vowel no longer opens a whole frame, so short closures (p/b/m, a stop) stay visible. The smoothing is centred
    on the sound. The earlier per-frame maximum under an uneven 4-tap kernel ([.15 .35 .35 .15], centred half a
    frame late) trailed the sound: rendering the held-out part of make_demo_footage(mouth="articulation") from
    espeak-ng's own phoneme times and measuring it against the real frames as `studio eval lipsync` does, it was
    best at lag +1 frame and correlated 0.76 (0.76 with another voice held out); this target is best at lag 0 and
    correlates 0.83 (0.83). Against the voice's loudness in a render of our TTS the mouth's peak moved from 1.3
    frames late to 0.7 (the rest is the target's shape, not its timing: espeak-ng's phoneme times match the
    sound's onsets to 1.4 ms)."""
    n = speech.frame_count(fps)
    grid = np.zeros(int(np.ceil(n * GRID_HZ / fps)), np.float32)
    for ph in speech.phonemes:
        grid[max(0, int(round(ph.start * GRID_HZ))):max(0, int(round(ph.end * GRID_HZ)))] = phoneme_openness(ph.text)
    grid = gaussian_filter1d(grid, COARTICULATION_S * GRID_HZ, mode="constant")
    edges = np.round(np.arange(n + 1) * GRID_HZ / fps).astype(int)
    level = np.add.reduceat(grid, edges[:-1]) / np.diff(edges)
    return lo + np.clip(level, 0, 1) * (hi - lo)


# How often each opening comes up in speech as the phoneme path sees it: phoneme_target's level (0 closed .. 1
# widest) over the voiced frames of a reference English passage (not the demo's script) read by espeak-ng in four
# voices and rates (en-us and en-gb at 160 words a minute, en-us at 200, en-us+f3 at 140; 2,661 frames at 25 fps),
# as its quantiles every 5 %. tests/unit/test_lipsync_targets.py reads the passage again and checks them.
SPEECH_LEVELS = np.array([0.021, 0.138, 0.203, 0.272, 0.300, 0.304, 0.318, 0.336, 0.354, 0.373, 0.390, 0.400, 0.450,
                          0.511, 0.585, 0.633, 0.680, 0.700, 0.824, 0.968, 1.000])
VOICED_LEVEL = 0.02  # a frame below this level is a pause or a closure: it stays at the closed mouth
MIN_SPEAKING_FRAMES = 50  # the creator's own openness while speaking calibrates the phoneme path from 2 s of speech


def speech_share(level: np.ndarray) -> np.ndarray:
    """Where each phoneme level falls among the levels of speech (SPEECH_LEVELS), 0..1."""
    return np.interp(np.asarray(level, np.float64), SPEECH_LEVELS, np.linspace(0.0, 1.0, len(SPEECH_LEVELS)))


def creator_phoneme_target(level: np.ndarray, speaking: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Mouth opening per frame from phoneme levels (phoneme_target with lo 0, hi 1), in this creator's own terms:
    a voiced frame opens as wide as the creator's mouth is open at the same share of their speech (`speaking`:
    the openness of the footage's frames inside its speech spans), so a creator who talks with a small mouth keeps
    it small and one who opens wide does so as often as in their footage; pauses and closures stay at `lo`, and
    the order of the sounds (which opens wider) is the phoneme table's. Without enough of the creator's speech the
    levels are spread linearly from `lo` to `hi`, as before."""
    out = lo + np.clip(level, 0, 1) * (hi - lo)
    if speaking is None or len(speaking) < MIN_SPEAKING_FRAMES:
        return out
    voiced = level > VOICED_LEVEL
    out[voiced] = np.quantile(speaking, speech_share(level[voiced]))
    return out


_ROUNDED = ("u", "U", "o", "O", "w", "oU", "OI")
_SPREAD = ("i", "I", "e", "E", "eI", "j")


def phoneme_spread(speech: Speech, fps: int, narrow: float, neutral: float, wide: float) -> np.ndarray:
    """Lip spread per frame from phoneme timings: rounded for "oo"/"w", wide for "ee", neutral elsewhere."""
    n = speech.frame_count(fps)
    level = np.full(n, neutral, np.float32)
    for ph in speech.phonemes:
        core = ph.text.strip("'`,:;")
        value = narrow if core.startswith(_ROUNDED) else wide if core.startswith(_SPREAD) else None
        if value is not None:
            a, b = int(ph.start * fps), max(int(ph.start * fps) + 1, int(np.ceil(ph.end * fps)))
            level[a:min(b, n)] = value
    return np.convolve(np.pad(level, 2, mode="edge"), [0.15, 0.2, 0.3, 0.2, 0.15], mode="valid")


def loudness_target(speech: Speech, fps: int, lo: float, hi: float) -> np.ndarray:
    """The naive baseline: mouth opened by loudness alone."""
    n = speech.frame_count(fps)
    rms = frame_rms(speech.samples.astype(np.float32), rate=speech.sample_rate, fps=fps, frames=n)
    ref = np.percentile(rms, 95) if n else 1.0
    return lo + np.clip(rms / max(ref, 1e-6), 0, 1) * (hi - lo)


def choose_units(target: np.ndarray, unit_open: np.ndarray, *, smooth: float = 0.25,
                 spread_target: np.ndarray | None = None, unit_spread: np.ndarray | None = None,
                 spread_weight: float = 0.35) -> np.ndarray:
    """Viterbi path over mouth units: match the target shape, penalise jumps between frames.

    The shape is openness, and lip spread when both spread arrays are given; each axis is measured in
    units of its range over the creator's mouth units, so neither dominates by scale alone.

    `smooth` weighs a jump against a miss. 0.25 rather than the earlier 0.5: `python -m bench lipsync` (three
    synthetic creators, mouths shaped by the phonemes said, two voices, and one opened by loudness) measured every
    path a little closer to the real mouth, e.g. our TTS's phonemes 0.82 -> 0.83 and 0.80 -> 0.82 in correlation,
    the audio map 0.83 -> 0.85 and 1.68 -> 1.61 % in LMD; the rendered mouth still moves less from frame to frame
    than the real one (mean step 0.086 of its range against 0.165).
    """
    n, k = len(target), len(unit_open)
    o_scale = max(float(np.ptp(unit_open)), 1e-6)
    match = ((unit_open[None, :] - target[:, None]) / o_scale) ** 2
    jump = smooth * ((unit_open[:, None] - unit_open[None, :]) / o_scale) ** 2
    if spread_target is not None and unit_spread is not None:
        s_scale = max(float(np.ptp(unit_spread)), 1e-6)
        # Spread only counts as the mouth opens: a closed mouth is closed, whatever its width.
        opening = np.clip((target - unit_open.min()) / o_scale * 2, 0, 1)[:, None]
        match = match + spread_weight * opening * ((unit_spread[None, :] - spread_target[:, None]) / s_scale) ** 2
        jump = jump + smooth * spread_weight * ((unit_spread[:, None] - unit_spread[None, :]) / s_scale) ** 2
    cost = match[0].copy()
    back = np.zeros((n, k), dtype=np.int32)
    for t in range(1, n):
        total = cost[:, None] + jump
        back[t] = np.argmin(total, axis=0)
        cost = total[back[t], np.arange(k)] + match[t]
    path = np.empty(n, dtype=np.int32)
    path[-1] = int(np.argmin(cost))
    for t in range(n - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def base_path(n: int, *, max_reach: int = 50) -> np.ndarray:
    """Idle-loop frame for each of n frames: out and back at real speed, in as few swings as reach allows.

    Every segment starts and ends on loop frame 0, so whatever airs next (another segment, the idle loop)
    joins without a jump in head position; no swing goes further than `max_reach` frames, which bounds
    the frames a render holds in memory.
    """
    if n <= 1:
        return np.zeros(max(n, 0), dtype=np.int64)
    swings = max(1, int(np.ceil((n - 1) / (2 * max_reach))))
    period = (n - 1) / swings
    phase = (np.arange(n) / period) % 1.0
    return np.round((1 - np.abs(1 - 2 * phase)) * period / 2).astype(np.int64)


# Turned and scaled masks one renderer keeps: a base loop has a few hundred poses (face size x half-degree roll).
MASK_CACHE = 1024


def feather_mask(size: int) -> np.ndarray:
    """Soft ellipse: opaque over the lips and jaw line, fading to nothing well inside the patch edge."""
    m = np.zeros((size, size), np.float32)
    cv2.ellipse(m, (size // 2, int(size * 0.54)), (int(size * 0.34), int(size * 0.30)), 0, 0, 360, 1.0, -1)
    k = max(3, int(size * 0.16) | 1)
    return cv2.GaussianBlur(m, (k, k), 0)[..., None]


class FootageRenderer:
    type = "footage"

    def __init__(self, bundle: Path, profile: MediaProfile):
        bundle = Path(bundle)
        try:
            manifest = json.loads((bundle / "manifest.json").read_text())
            track = json.loads((bundle / "base_track.json").read_text())
            units = json.loads((bundle / "units.json").read_text())
            self.mouths = np.load(bundle / "mouths.npy")
        except (OSError, ValueError) as exc:
            raise BundleError(f"avatar bundle {bundle} is unreadable: {exc}") from None
        if manifest.get("version") != BUNDLE_VERSION:
            raise BundleError(f"bundle {bundle.name} is version {manifest.get('version')}, this renderer reads "
                              f"version {BUNDLE_VERSION}; rebuild the avatar from its footage")
        size = (manifest["profile"]["width"], manifest["profile"]["height"], manifest["fps"])
        if size != (profile.width, profile.height, profile.fps):
            raise BundleError(f"bundle {bundle.name} is {size[0]}x{size[1]}@{size[2]}, channel profile is "
                              f"{profile.width}x{profile.height}@{profile.fps}; rebuild the avatar")
        self.base = bundle / "base.mp4"
        self.profile = profile
        self.loop_frames = int(manifest["loop_frames"])
        self.track = np.array([track["cx"], track["cy"], track["scale"], track["roll"]], dtype=np.float32).T
        self.unit_open = np.array(units["openness"], dtype=np.float32)
        self.unit_spread = np.array(units["spread"], dtype=np.float32)
        self.speaking_open = speaking_openness(bundle)
        self.ref_scale = float(units["ref_scale"])
        self.mask = feather_mask(self.mouths.shape[1])
        self._masks: dict[tuple[int, float], tuple] = {}
        try:
            maps = json.loads((bundle / "audio_map.json").read_text())
            self.audio_map = AudioMouthMap.from_dict(maps["openness"])
            self.spread_map = AudioMouthMap.from_dict(maps["spread"])
            # Bundles from before the check have none: their map drives, as it did when they were built.
            self.audio_drive = (maps.get("check") or {}).get("chosen", "map")
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"avatar bundle {bundle} has no usable audio map: {exc}") from None

    def frame_count(self, speech: Speech) -> int:
        return speech.frame_count(self.profile.fps)

    @property
    def open_range(self) -> tuple[float, float]:
        """Closed and wide-open mouth, as openness values of this creator's own mouth units."""
        return float(self.unit_open.min()), float(np.percentile(self.unit_open, 90))

    def target_for(self, speech: Speech) -> np.ndarray:
        """Phoneme timings when the speech has them (our own TTS, an aligned voice-over, or phonemes recognised in
        a recording: workers.speech.recognize.with_recognised_phonemes); else the creator's learned audio-to-mouth
        map, or loudness alone where the map did worse than loudness on the footage's own held-out speech at
        ingest."""
        lo, hi = self.open_range
        fps = self.profile.fps
        if speech.phonemes:
            return creator_phoneme_target(phoneme_target(speech, fps, 0.0, 1.0), self.speaking_open, lo, hi)
        n = speech.frame_count(fps)
        if self.audio_drive == "loudness":  # the map did worse than loudness on the footage's held-out speech
            return loudness_target(speech, fps, lo, hi)
        feats = frame_features(speech.samples, speech.sample_rate, fps, n)
        predicted = np.clip(self.audio_map.predict(feats), lo, float(self.unit_open.max()))
        # Regression leaves the lips slightly apart in pauses and quiet tails; fade it out with the voice.
        loud = feats[:, -1]
        presence = np.clip(loud / (0.3 * np.percentile(loud, 95) + 1e-9), 0, 1)
        return lo + (predicted - lo) * presence

    def spread_for(self, speech: Speech) -> np.ndarray:
        """Lip spread wanted per frame, in the creator's own range: phonemes, else the learned map."""
        narrow, neutral, wide = (float(v) for v in np.percentile(self.unit_spread, [10, 50, 90]))
        fps = self.profile.fps
        if speech.phonemes:
            return phoneme_spread(speech, fps, narrow, neutral, wide)
        feats = frame_features(speech.samples, speech.sample_rate, fps, speech.frame_count(fps))
        return np.clip(self.spread_map.predict(feats), narrow, wide)

    def render(self, speech: Speech, *, target: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Exactly one new frame per 1/fps of the speech; every segment starts and ends on loop frame 0.

        `target` overrides the openness the renderer would choose (the lips then keep a neutral spread).
        """
        n = self.frame_count(speech)
        if target is None:
            target, spread = self.target_for(speech), self.spread_for(speech)
        else:
            spread = np.full(n, float(np.median(self.unit_spread)), np.float32)
        if len(target) != n:
            raise ValueError(f"target has {len(target)} frames, the speech needs {n}")
        path = choose_units(target, self.unit_open, spread_target=spread, unit_spread=self.unit_spread)
        loop = base_path(n) % self.loop_frames
        bases = dict(self.base_frames(0, int(loop.max()) + 1))
        for i, j in enumerate(loop):
            yield self._paste(bases[int(j)], self.mouths[path[i]], self.track[int(j)])

    def idle(self, n: int, *, closed: bool = True) -> Iterator[np.ndarray]:
        """n frames of the idle loop along the same path a render takes; with `closed`, the creator's most
        closed mouth unit is blended in, so the avatar never seems to mouth words while it says nothing."""
        loop = base_path(n) % self.loop_frames
        bases = dict(self.base_frames(0, int(loop.max()) + 1)) if n else {}
        shut = self.mouths[int(np.argmin(self.unit_open))]
        for j in loop:
            yield self._paste(bases[int(j)], shut, self.track[int(j)]) if closed else bases[int(j)].copy()

    def base_frames(self, start: int, count: int) -> Iterator[tuple[int, np.ndarray]]:
        """The plain idle loop from `start`, wrapping around: (loop index, frame)."""
        j = start % self.loop_frames
        produced = 0
        while produced < count:
            for idx, frame in iter_frames(self.base, start=j):
                yield idx, frame
                produced += 1
                if produced == count:
                    return
            j = 0

    def _mask_at(self, scaled: int, roll: float) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
        """The feather mask turned and scaled for a paste, its colour-matching rim, and its bounding box;
        cached, since the base loop repeats a few hundred poses."""
        key = (scaled, round(roll * 2) / 2)
        hit = self._masks.get(key)
        if hit is None:
            size = self.mask.shape[0]
            m = cv2.getRotationMatrix2D((size / 2, size / 2), -key[1], scaled / size)
            m[:, 2] += (scaled / 2 - size / 2, scaled / 2 - size / 2)
            mask = cv2.warpAffine(self.mask[..., 0], m, (scaled, scaled), flags=cv2.INTER_LINEAR)
            rim = ((mask > 0.05) & (mask < 0.6)).astype(np.uint8)
            ys, xs = np.nonzero(mask > 0.002)
            box = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
            if len(self._masks) >= MASK_CACHE:  # poses past the bound are made afresh; the first ones stay
                return mask[box][..., None], rim, box
            hit = self._masks[key] = (mask[box][..., None], rim, box)
        return hit

    def _paste(self, base: np.ndarray, unit: np.ndarray, pose: np.ndarray) -> np.ndarray:
        cx, cy, face_scale, roll = (float(v) for v in pose[:4])
        size = unit.shape[0]
        scaled = max(8, int(round(size * face_scale / self.ref_scale)))
        x0, y0 = int(round(cx - scaled / 2)), int(round(cy - scaled / 2))
        h, w = base.shape[:2]
        if x0 < 0 or y0 < 0 or x0 + scaled > w or y0 + scaled > h:
            return base.copy()
        # One similarity warp: the levelled unit turned to this frame's roll and scaled to its face size.
        m = cv2.getRotationMatrix2D((size / 2, size / 2), -roll, scaled / size)
        m[:, 2] += (scaled / 2 - size / 2, scaled / 2 - size / 2)
        patch = cv2.warpAffine(unit, m, (scaled, scaled), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        alpha, rim, box = self._mask_at(scaled, roll)
        region = base[y0:y0 + scaled, x0:x0 + scaled]
        # Match colour on the mask's soft rim so lighting changes in the base loop leave no seam.
        shift = np.array(cv2.mean(region, rim)[:3], np.float32) - np.array(cv2.mean(patch, rim)[:3], np.float32)
        under = region[box].astype(np.float32)
        blended = under + (patch[box].astype(np.float32) + shift - under) * alpha
        out = base.copy()
        out[y0:y0 + scaled, x0:x0 + scaled][box] = np.clip(blended, 0, 255).astype(np.uint8)
        return out


# --- the bundle: built from the footage ingest has validated and analysed -------------------------------------------
POSE_COLUMNS = ("cx", "cy", "width", "openness", "roll", "yaw", "pitch", "scale")
PIXEL_COLUMNS = (0, 1, 2, 7)  # columns in pixels, which follow the crop and resize to the profile


def build_bundle(src: BundleSource, out: Path) -> BuiltBundle:
    """Write this backend's files into `out` (ingest's temporary bundle directory): the base loop (base.mp4,
    base_track.json), the mouth units (mouths.npy, units.json), the audio map and the analysis."""
    a, info, profile, limits = src.analysis, src.info, src.profile, src.limits
    track = _interp_poses(a.poses)
    track[:, PIXEL_COLUMNS] *= a.scale  # source pixels
    x0, y0, cw, ch = crop_box(info.width, info.height, float(np.median(track[:, 0])),
                              float(np.median(track[:, 1]) - 0.1 * info.height), profile)
    k = profile.width / cw
    prof = track.copy()
    prof[:, 0] = (track[:, 0] - x0) * k
    prof[:, 1] = (track[:, 1] - y0) * k
    prof[:, 2] = track[:, 2] * k
    prof[:, 7] = track[:, 7] * k
    spread = prof[:, 2] / prof[:, 7]  # mouth width for the face's size: wide for "ee", narrow for "oo"

    loop_len = min(a.frames, int(limits.base_loop_seconds * info.fps))
    start = choose_base_window(prof[:, 3], a.rms, loop_len)
    units = pick_mouth_units(prof[:, 3], spread, limits.mouth_units)
    # Units are cut at one face scale (not one mouth width), so a wide or a rounded mouth stays so.
    ref_scale = float(np.median(prof[:, 7]))
    patch = int(round(float(np.max(spread[units])) * ref_scale * 1.9 / 2) * 2)
    # How this creator's mouth follows their voice: drives the mouth for recorded audio without timings.
    feats = frame_features(a.audio, 16000, info.fps, a.frames)
    spoken = np.zeros(len(feats), bool)  # the footage's speech frames, as ingest's speech share counts them
    loud = a.rms[:len(feats)] > 0.15 * (float(np.percentile(a.rms, 95)) if len(a.rms) else 0.0)
    spoken[:len(loud)] = loud
    checked = check_audio_map(feats, prof[:, 3], spoken)
    audio_map = {"openness": fit_audio_map(feats, prof[:, 3]).to_dict(),
                 "spread": fit_audio_map(feats, spread).to_dict(), "check": checked.to_dict()}
    unit_set = set(units.tolist())
    wanted = set(range(start, start + loop_len)) | unit_set

    base_frames: list[np.ndarray] = []
    crops: dict[int, np.ndarray] = {}
    last = max(wanted)
    for i, rgb in iter_frames(src.footage):
        if i in wanted:
            frame = cv2.resize(rgb[y0:y0 + ch, x0:x0 + cw], (profile.width, profile.height),
                               interpolation=cv2.INTER_AREA)
            if start <= i < start + loop_len:
                base_frames.append(frame)
            if i in unit_set:
                crops[i] = mouth_crop(frame, prof[i], ref_scale, patch)
        src.progress("extract", i + 1, last + 1)
        if i >= last:
            break
    # Ping-pong: forward then back, so the loop never jumps at its seam.
    loop = base_frames + base_frames[-2:0:-1]
    loop_track = np.concatenate([prof[start:start + loop_len], prof[start:start + loop_len][-2:0:-1]])
    encode_video_only(loop, out / "base.mp4", width=profile.width, height=profile.height,
                      fps=profile.fps, gop=profile.gop_frames)
    del base_frames, loop
    np.save(out / "mouths.npy", np.stack([crops[i] for i in units]))
    write_json_atomic(out / "units.json", {"openness": [float(prof[i, 3]) for i in units],
                                           "spread": [float(spread[i]) for i in units],
                                           "source_frames": [int(i) for i in units],
                                           "ref_scale": ref_scale, "patch": patch})
    write_json_atomic(out / "audio_map.json", audio_map)
    write_json_atomic(out / "base_track.json", {name: loop_track[:, k].tolist()
                                                for k, name in enumerate(POSE_COLUMNS)})
    write_json_atomic(out / "analysis.json", {
        "fps": info.fps, **{name: prof[:, k].round(5).tolist() for k, name in enumerate(POSE_COLUMNS)},
        "speech_spans": speech_spans(a.rms, info.fps), "base_loop_start": start,
    })
    return BuiltBundle(version=BUNDLE_VERSION, manifest={
        "profile": profile.model_dump(), "crop": [x0, y0, cw, ch], "fps": profile.fps,
        "loop_frames": len(loop_track)})


def crop_box(src_w: int, src_h: int, face_cx: float, face_cy: float, profile: MediaProfile) -> tuple[int, ...]:
    """Largest profile-aspect crop of the source, centred on the face as far as the frame allows."""
    aspect = profile.width / profile.height
    if src_w / src_h > aspect:
        ch, cw = src_h, int(round(src_h * aspect))
    else:
        cw, ch = src_w, int(round(src_w / aspect))
    x0 = int(np.clip(face_cx - cw / 2, 0, src_w - cw))
    y0 = int(np.clip(face_cy - ch / 2, 0, src_h - ch))
    return x0, y0, cw, ch


def _interp_poses(poses: list[MouthPose | None]) -> np.ndarray:
    """(n, len(POSE_COLUMNS)) array with gaps filled from neighbours."""
    arr = np.full((len(poses), len(POSE_COLUMNS)), np.nan)
    for i, p in enumerate(poses):
        if p is not None:
            arr[i] = (p.cx, p.cy, p.width, p.openness, p.roll, p.yaw, p.pitch, p.eye_dist)
    idx = np.arange(len(poses))
    for k in range(len(POSE_COLUMNS)):
        good = ~np.isnan(arr[:, k])
        arr[:, k] = np.interp(idx, idx[good], arr[good, k])
    return arr


def speaking_openness(bundle: Path) -> np.ndarray | None:
    """The mouth's openness in the footage's frames inside its speech spans (analysis.json), or None when the bundle
    has no such record (creator_phoneme_target then spreads levels linearly)."""
    try:
        a = json.loads((Path(bundle) / "analysis.json").read_text())
        openness, fps = np.asarray(a["openness"], np.float64), float(a["fps"])
        at = np.arange(len(openness)) / fps
        inside = np.zeros(len(openness), bool)
        for start, end in a["speech_spans"]:
            inside |= (at >= start) & (at < end)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    kept = openness[inside & np.isfinite(openness)]
    return kept if len(kept) else None


def choose_base_window(openness: np.ndarray, rms: np.ndarray, length: int) -> int:
    """Start of the calmest window: mouth mostly closed, little speech, so the idle loop is quiet."""
    if len(openness) <= length:
        return 0
    score = openness / (np.max(openness) + 1e-6) + rms / (np.max(rms) + 1e-6)
    csum = np.concatenate([[0.0], np.cumsum(score)])
    sums = csum[length:] - csum[:-length]
    return int(np.argmin(sums))


def speech_spans(rms: np.ndarray, fps: float, *, min_gap: float = 0.25) -> list[list[float]]:
    """[start, end] seconds of the footage's own speech; pauses shorter than `min_gap` do not split."""
    loud = rms > 0.15 * (np.percentile(rms, 95) if len(rms) else 0.0)
    spans: list[list[float]] = []
    for i in np.flatnonzero(loud):
        t = i / fps
        if spans and t - spans[-1][1] <= min_gap:
            spans[-1][1] = round(t + 1 / fps, 3)
        else:
            spans.append([round(t, 3), round(t + 1 / fps, 3)])
    return spans


def pick_mouth_units(openness: np.ndarray, spread: np.ndarray, count: int) -> np.ndarray:
    """Frames whose mouth shapes (openness, spread) cover what the footage shows, closed mouth first.

    Farthest-point sampling on the two shape axes, each scaled to its 5-95% range: every pick is the
    shape least like those already picked, so rare shapes (a wide "ee", a round "oo") are kept.
    """
    def unit_range(x: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(x, [5, 95])
        return (x - lo) / max(hi - lo, 1e-6)

    pts = np.stack([unit_range(openness), unit_range(spread)], axis=1)
    picks = [int(np.argmin(openness))]
    dist = np.linalg.norm(pts - pts[picks[0]], axis=1)
    while len(picks) < min(count, len(pts)):
        nxt = int(np.argmax(dist))
        if dist[nxt] <= 0:
            break
        picks.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(pts - pts[nxt], axis=1))
    picks_arr = np.array(picks)
    return picks_arr[np.argsort(openness[picks_arr], kind="stable")]


def mouth_crop(frame: np.ndarray, pose: np.ndarray, ref_scale: float, patch: int) -> np.ndarray:
    """A square patch centred on the mouth, levelled (roll undone) and scaled to a common face size
    (`ref_scale` pixels between the eyes): the renderer then only turns and scales it to each base frame."""
    cx, cy, roll, scale = float(pose[0]), float(pose[1]), float(pose[4]), float(pose[7])
    m = cv2.getRotationMatrix2D((cx, cy), roll, ref_scale / max(scale, 1.0)).astype(np.float32)
    m[:, 2] += (patch / 2 - cx, patch / 2 - cy)
    return cv2.warpAffine(frame, m, (patch, patch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


BACKEND = register(Backend(name=FootageRenderer.type, queue_kind="cpu", build_bundle=build_bundle,
                           open=FootageRenderer))
