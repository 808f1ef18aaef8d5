"""Verify a consent video (POLICY C2): the creator reads the one-time code phrase, is the person in the
avatar's footage, and is recorded live (no still image, no replay of the footage, exactly one face).

Everything runs offline: pocketsphinx (its en-us model ships in the wheel) hears the phrase, mediapipe
FaceMesh measures the face, numpy does the rest. `verify_consent_video` never raises for a bad video; its
report lists each problem with the measured value and the limit. The thresholds below were measured on
synthetic media (espeak-ng voices, workers/media/synthface faces); the numbers are in each docstring.

PHRASE_THRESHOLD 0.5, measured with `recognise_phrase` on 96 random 4-word phrases read by espeak-ng (voices
en-us, en-gb, en+f3, en-us+m3, en-gb-x-rp, en+f2 at 140, 160, 175 and 190 wpm, AAC-encoded), score counts:
  the phrase itself          0.0: 1, 0.25: 4, 0.5: 10, 0.75: 30, 1.0: 51   (below 0.5: 5 of 96, four of
                                                                           them espeak's female variants)
  another phrase, same list  0.0: 95, 0.25: 1                              (0.5 or more: 0 of 96)
  7-10 s of unrelated speech 0.0: 56, 0.25: 38, 0.5: 2                     (0.5 or more: 2 of 96)
At 0.75 the same readings give 15 of 96 genuine refusals and no unrelated speech above; 0.5 lies between
the genuine and the wrong-phrase distributions, and a fresh phrase per attempt keeps a lucky hit single.

FACE_THRESHOLD 0.8, measured with `face_distance` on synthface seeds 7-26 (8 s footage from
`make_demo_footage` against a 4-6 s consent recording of each seed, H.264 360x640): same seed 0.15-0.45
(median 0.23, n=20); different seeds 1.46-11 (1st percentile 1.61, median 4.05, n=380). synthface draws a
face's skin, hair and iris from small palettes, so seeds 7 and 15 share all three; the hairline, whose
shape the seed also sets, still puts them 1.75 apart.

Liveness limits, measured on the same videos (20 genuine recordings; stills are one frame repeated with the
right audio; replays are the footage file, a 4 s cut re-encoded at CRF 26, a copy scaled to 75% with
brighter picture, 30 fps, CRF 30 and half the volume, and the footage's picture dubbed with the phrase):
  frame_change (grey levels)    genuine 0.063-0.124    stills 0.000                limit 0.02
  mouth_motion (eye distances)  genuine 0.089-0.104    stills 0.0001               limit 0.01
  replay_frame_share            genuine 0.00-0.08      replays 1.00 (all four)     limit 0.6
Against longer footage a genuine recording finds more look-alike frames: with 32 s and 45 s footage (seeds 7
and 11, recordings from t0 = 60, 300 and 1000 s) genuine shares were 0.00-0.42, so the limit sits at 0.6,
between those and the replays' 1.00.
  replay_audio_ber              genuine 0.40-0.46      replays 0.00-0.07, dub 0.43 limit 0.3

SYNC_MIN_CORR 0.75, measured with `lip_sync` (lip gap against speech loudness, detrended, near zero lag) on
synthface readings of random 4-word phrases (6 espeak-ng voices, 140-185 wpm, seeds 7-20):
  genuine recordings              0.88-0.99 (n=30; best lag +0.02 s in every one)
  a clip of other words dubbed with the phrase, laid over the same stretch    0.10-0.43 (n=10)
  the same picture dubbed with the same phrase by another espeak voice        0.11-0.94 (n=20; 3 above 0.75)
The last case stands for a dub whose speech keeps the timing of the picture's, which is what a lip-sync model
produces: such a dub passes this check, and a reviewer's approval (consent review) is the answer to it. A real
person's lips follow their loudness less closely than synthface's do; the limit must be measured again on real
recordings before it is relied on without review.

Limits of the method: landmark geometry from FaceMesh is a fitted generic mesh and colour depends on the
lighting, so this is a consistency check, not face recognition; for real creators a reviewer looks at
the pair before the consent is granted. Replay detection catches digital copies of the footage (picture
or sound); it does not catch a screen re-filmed with a different camera angle.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import av
import numpy as np

from studio.consent_phrase import WORDS, CodePhrase, phrase_problem
from workers.media.face import POSE_LANDMARKS, head_pose
from workers.media.probe import FootageError, check_frame, open_media, probe, read_audio
from workers.speech.recording import speech_level_dbfs

MIN_SECONDS, MAX_SECONDS = 3.0, 120.0
CONSENT_REFERENCE = "consent_ref.npz"  # in each avatar bundle, written at ingest
PHRASE_THRESHOLD = 0.5      # share of the phrase's words heard in order
MIN_SPEECH_DBFS = -45.0     # the loudest tenth of 20 ms windows must reach this
FACE_THRESHOLD = 0.8        # face_distance above this: another person
ONE_FACE_SHARE = 0.8        # share of analysed frames that must show exactly one face
MIN_FRAME_CHANGE = 0.02     # grey levels: median change between consecutive frames
MIN_MOUTH_MOTION = 0.01     # std of the lip gap over the analysed frames, in eye distances
REPLAY_FRAME_DIFF = 0.035   # 95th percentile of normalised thumbnail differences below this: the same picture
REPLAY_FRAME_SHARE = 0.6    # a larger share of frames equal to footage frames in order: a replay
REPLAY_AUDIO_BER = 0.30     # fingerprint bit error rate below this: the footage's own sound
MAX_ANALYSED = 600          # FaceMesh frames per consent video at most (120 s at 5 per second)
SYNC_MIN_CORR = 0.75        # lip gap against speech loudness, near zero lag: below this the lips do not say it
SYNC_NEAR_S = 0.12          # "near zero lag": within three frames at 25 fps
SYNC_MAX_LAG_S = 0.5        # lags searched, to report where a dub's best match lies
SYNC_DETREND_S = 0.6        # detrending span (s), about two syllables

RATE = 16000
THUMB = 32                  # grey thumbnails, THUMB x THUMB, for stillness and replay
# Distances normalised by the distance between the iris centres; none involves the jaw or the lips, which
# move while speaking.
PAIRS = ((33, 133), (362, 263), (133, 362), (98, 327), (168, 1), (6, 1), (234, 454), (10, 168), (1, 234),
         (1, 454))
HAIRLINE_COLUMNS = np.linspace(-0.35, 0.35, 8)
# Descriptor layout: geometry, skin Lab, hair Lab, iris Lab, hairline heights; each group's distance is
# divided by its scale (about twice the largest same-person spread measured) and the groups add in squares.
GROUPS = (("geometry", 0, len(PAIRS), 0.05), ("skin", len(PAIRS), 3, 8.0), ("hair", len(PAIRS) + 3, 3, 8.0),
          ("iris", len(PAIRS) + 6, 3, 10.0), ("hairline", len(PAIRS) + 9, len(HAIRLINE_COLUMNS), 0.04))
MIN_HAIR_CONTRAST = 10.0    # Lab distance hair-skin below which the hairline cannot be placed


# What a reviewer sees of a report (consent review): each figure, the limit it was held to, and whether a higher
# value passes ("min") or a lower one ("max"). Keys as in the recorded verification (workers.consent.grant).
FIGURES = (
    ("phrase_score", "Phrase heard (share of its words, in order)", PHRASE_THRESHOLD, "min"),
    ("face_distance", "Face distance to the footage", FACE_THRESHOLD, "max"),
    ("liveness.lip_sync", "Lip-sync: lips against speech loudness, near zero lag", SYNC_MIN_CORR, "min"),
    ("liveness.lip_sync_best_lag_s", "Lip-sync: lag of the best match (s)", SYNC_NEAR_S, "near 0"),
    ("liveness.speech_dbfs", "Speech level (dBFS, loudest tenth)", MIN_SPEECH_DBFS, "min"),
    ("liveness.one_face_share", "Frames with exactly one face", ONE_FACE_SHARE, "min"),
    ("liveness.frame_change", "Picture change between frames (grey levels)", MIN_FRAME_CHANGE, "min"),
    ("liveness.mouth_motion", "Mouth motion (eye distances)", MIN_MOUTH_MOTION, "min"),
    ("liveness.replay_frame_share", "Frames equal to footage frames (replay)", REPLAY_FRAME_SHARE, "max"),
    ("liveness.replay_audio_ber", "Sound fingerprint against the footage's (bit error rate)", REPLAY_AUDIO_BER, "min"),
)


def report_figures(verification: dict | None) -> list[dict]:
    """The recorded check's figures as rows for a reviewer: name, label, value (None: not measured), limit, rule
    and whether the value is within it."""
    rows = []
    for key, label, limit, rule in FIGURES:
        value: object = verification or {}
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, int | float):
            ok = None
        elif rule == "min":
            ok = value >= limit
        elif rule == "max":
            ok = value <= limit
        else:
            ok = abs(value) <= limit
        rows.append({"name": key, "label": label, "value": value if isinstance(value, int | float) else None,
                     "limit": limit, "rule": rule, "ok": ok})
    return rows


class ConsentVideoError(RuntimeError):
    """A programming error or a missing tool or model; a bad consent video is a report, not this."""


@dataclass(frozen=True)
class ConsentVideoReport:
    ok: bool
    phrase_score: float
    phrase_heard: str
    face_distance: float  # nan when no single face was measured
    liveness: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


# --- phrase -------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _recogniser():
    """pocketsphinx with a grammar that loops over WORDS, plus a lock: one decoder is not thread-safe."""
    try:
        from pocketsphinx import Config, Decoder
    except ImportError:
        raise ConsentVideoError("pocketsphinx is not installed: run `make setup`") from None
    # bestpath=False: the Viterbi backtrace; the lattice rescoring costs 7x the decoding on 8 s of speech
    # for the same words.
    dec = Decoder(Config(lm=None, loglevel="FATAL", bestpath=False))
    missing = [w for w in WORDS if not dec.lookup_word(w)]
    if missing:
        raise ConsentVideoError(f"words missing from the pocketsphinx dictionary: {missing}")
    dec.add_jsgf_string("words", "#JSGF V1.0;\ngrammar words;\npublic <utt> = <w>*;\n"
                                 f"<w> = {' | '.join(WORDS)};\n")
    dec.activate_search("words")
    return dec, threading.Lock()


def _in_order(expected: tuple[str, ...], heard: list[str]) -> int:
    """Length of the longest common subsequence."""
    row = [0] * (len(heard) + 1)
    for word in expected:
        prev_diag, row[0] = 0, 0
        for j, h in enumerate(heard, 1):
            prev_diag, row[j] = row[j], prev_diag + 1 if word == h else max(row[j], row[j - 1])
    return row[-1]


def phrase_score(heard: list[str], words: tuple[str, ...], *, slack: int = 2) -> float:
    """Share of `words` heard in order within any run of len(words) + slack heard words: the phrase is read
    as one piece, so words picked up here and there in a long speech do not add up."""
    width = len(words) + slack
    runs = [heard[i:i + width] for i in range(max(1, len(heard) - width + 1))]
    return max(_in_order(words, run) for run in runs) / len(words)


def recognise_phrase(samples: np.ndarray, words: tuple[str, ...], *, passes: int = 3) -> tuple[float, str]:
    """(score, what was heard) for mono float32 speech at 16 kHz.

    The speech is brought to -21 dBFS and a faint, seeded noise floor (-44 dBFS) is added: pocketsphinx's
    cepstral normalisation breaks on digital silence, which encoders and synthetic voices produce (word
    accuracy on espeak-ng rose from about 50% to 85% with it). Each pass uses another noise seed and the
    best score counts, which evens out the recogniser's sensitivity to small changes in the signal."""
    unknown = [w for w in words if w not in WORDS]
    if unknown:
        raise ConsentVideoError(f"phrase words {unknown} are not in the consent word list")
    level = 10 ** (speech_level_dbfs(samples) / 20)
    pcm = samples * min(0.13 / max(level, 1e-9), 10 ** (40 / 20))
    dec, lock = _recogniser()
    best = (-1.0, "")
    for seed in range(passes):
        noisy = pcm + np.random.default_rng(seed).normal(0, 0.006, len(pcm))
        raw = (np.clip(noisy, -1, 1) * 32767).astype(np.int16).tobytes()
        with lock:
            dec.start_utt()
            dec.process_raw(raw, full_utt=True)
            dec.end_utt()
            hyp = dec.hyp()
        text = hyp.hypstr if hyp is not None else ""
        best = max(best, (phrase_score(text.split(), words), text), key=lambda b: b[0])
        if best[0] == 1.0:
            break
    return best


# --- frames --------------------------------------------------------------------------------------------
@dataclass
class _Frames:
    thumbs: np.ndarray                              # (n, THUMB, THUMB) float32 grey, every decoded frame
    faces: list[int] = field(default_factory=list)  # faces found per analysed frame
    features: list[np.ndarray] = field(default_factory=list)  # descriptor rows of frontal one-face frames
    mouth: list[float] = field(default_factory=list)
    mouth_times: list[float] = field(default_factory=list)  # when each `mouth` value was measured (s)
    analysed_thumbs: list[np.ndarray] = field(default_factory=list)
    analysed_times: list[float] = field(default_factory=list)
    fps: float = 25.0
    seconds: float = 0.0


def _sample(lab: np.ndarray, points: np.ndarray, radius: float) -> np.ndarray:
    """Median Lab colour of square patches around `points` (pixels), pooled."""
    r = max(1, round(radius))
    h, w = lab.shape[:2]
    patches = [lab[max(0, y - r):min(h, y + r + 1), max(0, x - r):min(w, x + r + 1)].reshape(-1, 3)
               for x, y in np.round(np.atleast_2d(points)).astype(int)]
    return np.median(np.concatenate(patches), axis=0)


def _hairline(lab: np.ndarray, at: Callable[[float, float], np.ndarray], hair: np.ndarray) -> np.ndarray:
    """Height of the hairline above the eye line, in eye distances, per column across the forehead: the
    first point going up where the colour has gone half way from the forehead's to the hair's."""
    import cv2

    heights = np.linspace(0.4, 1.6, 97)
    out = []
    for u in HAIRLINE_COLUMNS:
        pts = np.array([at(u + du, v) for v in heights for du in (-0.03, 0.0, 0.03)], np.float32)
        vals = cv2.remap(lab, pts[:, :1], pts[:, 1:], cv2.INTER_LINEAR).reshape(len(heights), 3, 3).mean(1)
        ref = vals[:6].mean(0)
        axis = hair - ref
        t = (vals - ref) @ axis / max(float(axis @ axis), 1e-6)
        above = np.nonzero(t > 0.5)[0]
        if len(above) == 0 or above[0] == 0:
            out.append(heights[-1] if len(above) == 0 else heights[0])
            continue
        i = above[0]
        out.append(heights[i - 1] + (0.5 - t[i - 1]) / max(t[i] - t[i - 1], 1e-6) * (heights[1] - heights[0]))
    return np.array(out)


def _face_row(rgb: np.ndarray, pts: np.ndarray) -> np.ndarray | None:
    """One frame's descriptor row (see GROUPS), or None when the head is turned more than 20 degrees."""
    import cv2

    h, w = rgb.shape[:2]
    yaw, pitch = head_pose(pts[list(POSE_LANDMARKS)], w, h)
    if abs(yaw) > 20 or abs(pitch) > 20:
        return None
    left, right = pts[468], pts[473]
    iod = float(np.linalg.norm(right - left))
    ex = (right - left) / iod
    ey = np.array([-ex[1], ex[0]]) * (1 if ex[0] >= 0 else -1)  # points down the face

    def at(u: float, v: float) -> np.ndarray:  # face coordinates (eye distances, v up from the eyes)
        return (left + right) / 2 + u * iod * ex - v * iod * ey

    lab = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    geometry = np.array([np.linalg.norm(pts[a] - pts[b]) for a, b in PAIRS]) / iod
    skin = _sample(lab, pts[[50, 280, 151, 5]], 0.06 * iod)
    hair = _sample(lab, np.array([at(u, 1.3) for u in (-0.2, 0.0, 0.2)]), 0.06 * iod)
    iris_r = float(np.mean(np.linalg.norm(pts[469:473] - pts[468], axis=1)))
    iris = _sample(lab, np.array([pts[c] + d * 0.6 * iris_r * ex for c in (468, 473) for d in (-1, 1)]),
                   0.15 * iris_r)
    hairline = _hairline(lab, at, hair)
    if np.linalg.norm(hair - skin) < MIN_HAIR_CONTRAST:
        hairline[:] = np.nan
    return np.concatenate([geometry, skin, hair, iris, hairline])


def _thumb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="gray", width=THUMB, height=THUMB).astype(np.float32)


def _read_frames(video: Path, *, max_frames: int) -> _Frames:
    """Decode every frame into a thumbnail; run FaceMesh (up to two faces) on `max_frames` evenly spaced
    ones. Decode errors are FootageError."""
    from workers.media.face import face_mesh

    info = probe(video)
    stride = max(1, math.ceil(info.duration * (info.fps or 25) / max_frames))
    scale = min(1.0, 960 / max(info.width, info.height))
    size = (round(info.width * scale) // 2 * 2, round(info.height * scale) // 2 * 2)
    thumbs, out = [], _Frames(thumbs=np.zeros(0), fps=info.fps or 25.0)
    last_t = 0.0
    with face_mesh(static_image_mode=True, max_num_faces=2, refine_landmarks=True) as mesh:
        try:
            with open_media(video) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    check_frame(video, info, frame, i + 1)
                    if frame.pts is not None:
                        last_t = float(frame.pts * stream.time_base)
                    thumbs.append(_thumb(frame))
                    if i % stride:
                        continue
                    rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                    found = mesh.process(rgb).multi_face_landmarks or []
                    out.faces.append(len(found))
                    out.analysed_thumbs.append(thumbs[-1])
                    out.analysed_times.append(last_t)
                    if len(found) != 1:
                        continue
                    pts = np.array([(p.x * size[0], p.y * size[1]) for p in found[0].landmark])
                    iod = float(np.linalg.norm(pts[473] - pts[468]))
                    out.mouth.append(float(np.linalg.norm(pts[13] - pts[14])) / iod)
                    out.mouth_times.append(last_t)
                    row = _face_row(rgb, pts)
                    if row is not None:
                        out.features.append(row)
        except av.error.FFmpegError as exc:
            raise FootageError(f"{video.name}: video is truncated or corrupt ({exc})") from None
    out.thumbs = np.array(thumbs, np.float32).reshape(-1, THUMB, THUMB)
    out.seconds = last_t + 1 / (info.fps or 25) if thumbs else 0.0
    return out


def _descriptor(rows: list[np.ndarray]) -> np.ndarray:
    if not rows:
        raise FootageError("no frontal face (head turned less than 20 degrees) in any analysed frame")
    rows = np.array(rows)
    return np.array([np.median(c[~np.isnan(c)]) if (~np.isnan(c)).any() else np.nan for c in rows.T])


def face_descriptor(video: Path, *, max_frames: int = 60) -> np.ndarray:
    """The face's descriptor (see GROUPS) over up to `max_frames` frames: store it with the footage at
    ingest and pass it to `verify_consent_video`. FootageError when the video has no usable face."""
    return _descriptor(_read_frames(Path(video), max_frames=max_frames).features)


def face_distance(a: np.ndarray, b: np.ndarray) -> float:
    """0 for the same descriptor; measured same-person values stay below FACE_THRESHOLD."""
    total = 0.0
    for _, start, size, scale in GROUPS:
        d = a[start:start + size] - b[start:start + size]
        if np.isnan(d).any():  # a hairline that could not be placed in one of them
            continue
        total += (float(np.sqrt(np.mean(d**2))) if size > 3 else float(np.linalg.norm(d))) ** 2 / scale**2
    return math.sqrt(total)


# --- lips and speech -------------------------------------------------------------------------------
def speech_envelope(samples: np.ndarray, times: np.ndarray, *, window: float = 0.04) -> np.ndarray:
    """RMS of the speech in a `window` s window centred on each of `times` (s); 0 outside the recording."""
    half = int(window * RATE / 2)
    out = np.zeros(len(times))
    for i, t in enumerate(times):
        c = int(round(t * RATE))
        chunk = samples[max(0, c - half):max(0, c + half)]
        out[i] = float(np.sqrt(np.mean(chunk**2))) if len(chunk) else 0.0
    return out


def _detrended(x: np.ndarray, times: np.ndarray, span: float) -> np.ndarray:
    """`x` less its mean over `span` s around each point: what is left is syllable-scale motion, which a dub
    cannot share with the picture by being placed over the same stretch of the clip."""
    out = np.empty_like(x)
    for i, t in enumerate(times):
        near = np.abs(times - t) <= span / 2
        out[i] = x[i] - x[near].mean()
    return out


def lip_sync(mouth: np.ndarray, times: np.ndarray, samples: np.ndarray, *, max_lag: float = SYNC_MAX_LAG_S,
             step: float = 0.02) -> tuple[float, float, float]:
    """How the lip gap follows the speech: (correlation near zero lag, best lag in s, correlation there).

    Both series are taken only over the stretch where the phrase is spoken (speech above a tenth of its
    loudest level) and detrended over SYNC_DETREND_S, then correlated with the sound shifted by each lag in
    [-max_lag, max_lag]; the mouth opens with the sound it makes, so a genuine recording peaks at a lag near 0.
    "Near zero" is the best correlation within SYNC_NEAR_S of it."""
    mouth, times = np.asarray(mouth, float), np.asarray(times, float)
    env = speech_envelope(samples, times)
    loud = env >= 0.1 * (np.percentile(env, 95) if len(env) else 0.0)
    if loud.sum() < 8:
        return 0.0, 0.0, 0.0
    first, last = np.nonzero(loud)[0][[0, -1]]
    keep = slice(first, last + 1)
    m, ts = mouth[keep], times[keep]
    m = _detrended(m, ts, SYNC_DETREND_S)
    lags = np.arange(-max_lag, max_lag + step / 2, step)
    corrs = []
    for lag in lags:
        e = _detrended(speech_envelope(samples, ts + lag), ts, SYNC_DETREND_S)
        sd = m.std() * e.std()
        corrs.append(float(np.mean((m - m.mean()) * (e - e.mean())) / sd) if sd > 0 else 0.0)
    corrs = np.array(corrs)
    best = int(np.argmax(corrs))
    near = float(corrs[np.abs(lags) <= SYNC_NEAR_S + 1e-9].max())
    return near, float(lags[best]), float(corrs[best])


# --- replay and stillness --------------------------------------------------------------------------
def _normalised(thumbs: np.ndarray) -> np.ndarray:
    """Zero mean, unit spread per thumbnail: a copy shown brighter or darker still matches."""
    flat = thumbs.reshape(len(thumbs), -1)
    return (flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1.0)


def replay_frame_share(frames: np.ndarray, times: np.ndarray, footage: np.ndarray, fps: float) -> float:
    """Share of `frames` (thumbnails at `times` s) that equal the footage frame at the same time plus the one
    offset that fits best: a replay copies the footage's frames in order, while a new recording matches a
    footage frame at most here and there, even in the same room and clothes.

    Frames are equal when the 95th percentile of their normalised pixel differences is below
    REPLAY_FRAME_DIFF: a copy differs by coding noise spread evenly, a new recording by a moved head or
    mouth in one place. Candidate offsets are the three with the lowest median mean difference."""
    if len(frames) == 0 or len(footage) == 0:
        return 0.0
    a, b = _normalised(frames), _normalised(footage)
    mean = np.concatenate([np.abs(a[:, None, :] - b[None, i:i + 128, :]).mean(2) for i in range(0, len(b), 128)], 1)
    base = np.round(np.asarray(times) * fps).astype(int)
    offsets = np.arange(-int(base.max()), len(b))
    cols = base[:, None] + offsets[None, :]
    valid = (cols >= 0) & (cols < len(b))
    cost = np.where(valid, mean[np.arange(len(a))[:, None], np.clip(cols, 0, len(b) - 1)], np.nan)
    enough = valid.sum(0) >= min(len(a), 10)
    if not enough.any():
        return 0.0
    with np.errstate(all="ignore"):
        median = np.where(enough, np.nanmedian(cost, axis=0), np.inf)
    best = 0.0
    for k in np.argsort(median)[:3]:
        rows = np.nonzero(valid[:, k])[0]
        diff = np.percentile(np.abs(a[rows] - b[cols[rows, k]]), 95, axis=1)
        best = max(best, float(np.sum(diff < REPLAY_FRAME_DIFF)) / len(a))
    return best


def audio_fingerprint(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bits, voiced): 16 bits per 16 ms hop from the signs of band-energy differences across bands and
    time (after Haitsma and Kalker), and which hops carry sound; mono float32 at 16 kHz."""
    n_fft, hop = 2048, 256
    if len(samples) < n_fft + hop:
        return np.zeros((0, 16), bool), np.zeros(0, bool)
    edges = np.round(np.geomspace(300, 3000, 18) * n_fft / RATE).astype(int)
    starts, window, bands, energy = np.arange(0, len(samples) - n_fft, hop), np.hanning(n_fft), [], []
    for chunk in range(0, len(starts), 1024):  # bounded memory for two minutes of sound
        idx = starts[chunk:chunk + 1024, None] + np.arange(n_fft)
        spec = np.abs(np.fft.rfft(samples[idx] * window, axis=1)) ** 2
        bands.append(np.stack([spec[:, a:b].sum(1) for a, b in zip(edges[:-1], edges[1:], strict=True)], 1))
        energy.append(spec[:, edges[0]:edges[-1]].sum(1))
    logs, energy = np.log(np.concatenate(bands) + 1e-10), np.concatenate(energy)[1:]
    diff = logs[:, :-1] - logs[:, 1:]
    bits = (diff[1:] - diff[:-1]) > 0
    voiced = energy > max(1e-3 * float(energy.max(initial=0)), 1e-4)
    return bits, voiced


def audio_replay_ber(consent: tuple[np.ndarray, np.ndarray], footage: tuple[np.ndarray, np.ndarray]
                     ) -> tuple[float, float]:
    """(lowest bit error rate, footage offset in s) of the consent's voiced hops against the footage's at any
    offset where they overlap voiced footage for half the consent's sound or 80% of the footage's (a
    consent video that contains the whole footage); (0.5, 0) when no offset overlaps that much."""
    (bc, vc), (bf, vf) = consent, footage
    if not vc.any() or not vf.any():
        return 0.5, 0.0
    n = len(bc) + len(bf)
    size = 1 << (n - 1).bit_length()

    def corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """sum_t x[t] * y[t + k] for k = -(len(x)-1) .. len(y)-1."""
        full = np.fft.irfft(np.conj(np.fft.rfft(x, size)) * np.fft.rfft(y, size), size)
        return np.round(np.concatenate([full[size - len(x) + 1:], full[:len(y)]]))

    mc, mf = vc.astype(float), vf.astype(float)
    overlap = corr(mc, mf)
    agree = sum(corr(mc * (2 * bc[:, k] - 1), mf * (2 * bf[:, k] - 1)) for k in range(bc.shape[1]))
    ber = 0.5 - agree / np.maximum(2 * overlap * bc.shape[1], 1)
    ber[overlap < max(min(0.5 * vc.sum(), 0.8 * vf.sum()), 30)] = 0.5
    k = int(np.argmin(ber))
    return float(ber[k]), (k - len(bc) + 1) * 256 / RATE


# --- footage reference -----------------------------------------------------------------------------
@dataclass(frozen=True)
class FootageReference:
    """What the check needs from the footage; computed once per footage file."""

    descriptor: np.ndarray
    thumbs: np.ndarray
    fps: float
    audio_bits: np.ndarray
    audio_voiced: np.ndarray


def footage_reference(footage: Path, *, workdir: Path | None = None, max_frames: int = 60) -> FootageReference:
    """The footage's face descriptor, frame thumbnails and audio fingerprint, cached in `workdir` (keyed by the
    file's SHA-256) when one is given. ConsentVideoError when the footage itself is unusable."""
    footage = Path(footage)
    try:
        with footage.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()[:24]
    except OSError as exc:
        raise ConsentVideoError(f"cannot read the footage {footage}: {exc}") from None
    cache = Path(workdir) / f"footage-{digest}.npz" if workdir is not None else None
    if cache is not None and cache.is_file():
        return load_reference(cache)
    try:
        frames = _read_frames(footage, max_frames=max_frames)
        descriptor = _descriptor(frames.features)
        samples = read_audio(footage, rate=RATE) if probe(footage).has_audio else np.zeros(0, np.float32)
    except FootageError as exc:
        raise ConsentVideoError(f"the avatar's footage is unusable for the consent check: {exc}") from None
    bits, voiced = audio_fingerprint(samples)
    ref = FootageReference(descriptor, np.round(frames.thumbs).astype(np.uint8), frames.fps, bits, voiced)
    if cache is not None:
        save_reference(ref, cache)
    return ref


def save_reference(ref: FootageReference, path: Path) -> Path:
    """Write `ref` to `path` (.npz) atomically; ingest keeps one in each avatar bundle, since the footage
    itself is not kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.stem}.{os.getpid()}.part.npz")
    np.savez_compressed(part, descriptor=ref.descriptor, thumbs=ref.thumbs, fps=ref.fps, audio_bits=ref.audio_bits,
                        audio_voiced=ref.audio_voiced)
    part.replace(path)
    return path


def load_reference(path: Path) -> FootageReference:
    """A reference written by save_reference; ConsentVideoError when missing or unreadable."""
    try:
        with np.load(Path(path)) as z:
            return FootageReference(z["descriptor"], z["thumbs"], float(z["fps"]), z["audio_bits"], z["audio_voiced"])
    except (OSError, KeyError, ValueError) as exc:
        raise ConsentVideoError(f"cannot read the footage reference {path}: {exc}") from None


# --- the check -------------------------------------------------------------------------------------
def verify_consent_video(video: Path, *, footage: Path | None = None, phrase: CodePhrase, now: datetime,
                         workdir: Path | None = None, reference: FootageReference | None = None
                         ) -> ConsentVideoReport:
    """Check `video` against the avatar's `footage` (or its saved `reference`) and the issued `phrase` at `now`
    (POLICY C2).

    `workdir` (optional) caches the footage's reference between calls. Never raises for a bad video."""
    if (footage is None) == (reference is None):
        raise TypeError("give exactly one of footage and reference")
    video = Path(video)
    problems: list[str] = []
    if (expired := phrase_problem(phrase, now=now)) is not None:
        problems.append(expired)
    liveness: dict[str, float] = {}

    def report(score: float = 0.0, heard: str = "", distance: float = math.nan) -> ConsentVideoReport:
        return ConsentVideoReport(ok=not problems, phrase_score=score, phrase_heard=heard, face_distance=distance,
                                  liveness=liveness, problems=problems)

    try:
        info = probe(video)
    except FootageError as exc:
        problems.append(f"the consent video is not a readable video: {exc}")
        return report()
    if not MIN_SECONDS <= info.duration <= MAX_SECONDS:
        problems.append(f"the consent video is {info.duration:.1f} s long; it must be {MIN_SECONDS:.0f} to "
                        f"{MAX_SECONDS:.0f} s")
        return report()
    if not info.has_audio:
        problems.append("the consent video has no audio track: the creator must read the code phrase aloud")
        return report()
    ref = reference if reference is not None else footage_reference(footage, workdir=workdir)
    try:
        # About 12 analysed frames a second (at least 60 in all): the lip-sync check needs the mouth at the pace
        # of syllables.
        frames = _read_frames(video, max_frames=min(MAX_ANALYSED, max(60, math.ceil(info.duration * 12.5))))
        samples = read_audio(video, rate=RATE)
    except FootageError as exc:
        problems.append(f"the consent video cannot be decoded: {exc}")
        return report()
    if frames.seconds < 0.9 * info.duration:
        problems.append(f"the consent video is truncated: {frames.seconds:.1f} s of {info.duration:.1f} s decode")
        return report()

    score, heard = _check_phrase(samples, phrase, problems, liveness)
    distance = _check_face(frames, ref, problems, liveness)
    _check_live(frames, samples, ref, problems, liveness)
    return report(score, heard, distance)


def _check_phrase(samples: np.ndarray, phrase: CodePhrase, problems: list[str], liveness: dict[str, float]
                  ) -> tuple[float, str]:
    level = speech_level_dbfs(samples)
    liveness["speech_dbfs"] = round(level, 1)
    if level < MIN_SPEECH_DBFS:
        problems.append(f"no speech in the consent video: loudest level {level:.0f} dBFS "
                        f"(need {MIN_SPEECH_DBFS:.0f} dBFS); read the code phrase aloud")
        return 0.0, ""
    score, heard = recognise_phrase(samples, phrase.words)
    if score < PHRASE_THRESHOLD:
        shown = heard if len(heard) <= 80 else heard[:80].rsplit(" ", 1)[0] + " ..."
        problems.append(f"the phrase was not heard: recognised {shown!r} for {phrase.text!r} "
                        f"(score {score:.2f}, need {PHRASE_THRESHOLD:.2f})")
    return score, heard


def _check_face(frames: _Frames, ref: FootageReference, problems: list[str], liveness: dict[str, float]) -> float:
    counts = np.array(frames.faces)
    one = float(np.mean(counts == 1)) if len(counts) else 0.0
    liveness["one_face_share"] = round(one, 3)
    if one < ONE_FACE_SHARE:
        none, many = int(np.sum(counts == 0)), int(np.sum(counts > 1))
        what = (f"no face in {none}" if none >= many else f"two or more faces in {many}")
        problems.append(f"{what} of {len(counts)} analysed frames; the consent video must show the creator "
                        f"alone, face to the camera, in at least {ONE_FACE_SHARE:.0%} of frames "
                        f"(found {one:.0%})")
        return math.nan
    if not frames.features:
        problems.append("the face is never frontal (head turned more than 20 degrees in every analysed frame)")
        return math.nan
    distance = face_distance(_descriptor(frames.features), ref.descriptor)
    if distance > FACE_THRESHOLD:
        problems.append(f"the face does not match the avatar's footage: distance {distance:.2f} "
                        f"(same person up to {FACE_THRESHOLD:.2f})")
    return distance


def _check_live(frames: _Frames, samples: np.ndarray, ref: FootageReference, problems: list[str],
                liveness: dict[str, float]) -> None:
    steps = np.abs(np.diff(frames.thumbs, axis=0)).mean((1, 2)) if len(frames.thumbs) > 1 else np.zeros(1)
    change = float(np.median(steps))
    mouth = float(np.std(frames.mouth)) if len(frames.mouth) > 1 else 0.0
    share = replay_frame_share(np.array(frames.analysed_thumbs), np.array(frames.analysed_times),
                               ref.thumbs.astype(np.float32), ref.fps)
    ber, offset = audio_replay_ber(audio_fingerprint(samples), (ref.audio_bits, ref.audio_voiced))
    sync, lag, best = lip_sync(np.array(frames.mouth), np.array(frames.mouth_times), samples)
    liveness.update(frame_change=round(change, 4), mouth_motion=round(mouth, 4), replay_frame_share=round(share, 3),
                    replay_audio_ber=round(ber, 3), lip_sync=round(sync, 3), lip_sync_best_lag_s=round(lag, 2))
    if change < MIN_FRAME_CHANGE:
        problems.append(f"the picture does not change (median change between frames {change:.3f} grey levels, "
                        f"need {MIN_FRAME_CHANGE}): a still image is not a consent recording")
    if frames.mouth and mouth < MIN_MOUTH_MOTION:
        problems.append(f"the mouth does not move (lip gap varies by {mouth:.4f} eye distances, need "
                        f"{MIN_MOUTH_MOTION}): the creator must be seen reading the phrase")
    spoken = speech_level_dbfs(samples) >= MIN_SPEECH_DBFS  # silence is reported as such, above
    if spoken and frames.mouth and mouth >= MIN_MOUTH_MOTION and sync < SYNC_MIN_CORR:
        problems.append(f"the lips do not follow the speech: correlation {sync:.2f} near zero lag (need "
                        f"{SYNC_MIN_CORR:.2f}; best {best:.2f} at {lag:+.2f} s): the picture and the sound are "
                        f"not one recording")
    if share > REPLAY_FRAME_SHARE:
        problems.append(f"the video replays the avatar's footage: {share:.0%} of analysed frames equal footage "
                        f"frames (limit {REPLAY_FRAME_SHARE:.0%})")
    if ber < REPLAY_AUDIO_BER:
        problems.append(f"the sound replays the avatar's footage from {offset:.1f} s: fingerprint bit error rate "
                        f"{ber:.2f} (a new recording is near 0.5; replay below {REPLAY_AUDIO_BER})")
