"""Audio features per video frame, and the per-avatar audio-to-mouth mapping fitted on them.

The mapping is ridge regression from log band energies (with a few frames of context either side) to
mouth openness, fitted at ingest on the creator's own footage, so that arbitrary recorded audio drives
the mouth the way this creator's mouth moves, not just by loudness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 16000
BAND_EDGES_HZ = (80, 250, 500, 800, 1200, 1800, 2600, 3600, 5000, 7600)
CONTEXT = 3  # frames either side


def frame_features(samples: np.ndarray, rate: int, fps: float, frames: int) -> np.ndarray:
    """(frames, bands + 2): log energy per band and overall, and plain loudness, for each 1/fps window.

    Log band energies tell vowels apart; plain loudness keeps the strong linear link between level and
    opening that log features alone blur.
    """
    if rate != RATE:
        n = int(round(len(samples) * RATE / rate))
        samples = np.interp(np.arange(n) * rate / RATE, np.arange(len(samples)), samples).astype(np.float32)
    hop = RATE / fps
    win = int(round(2 * hop))  # a two-frame window centred on the frame: smoother spectra
    freqs = np.fft.rfftfreq(win, 1 / RATE)
    bands = [(freqs >= lo) & (freqs < hi) for lo, hi in zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:], strict=True)]
    window = np.hanning(win).astype(np.float32)
    out = np.zeros((frames, len(bands) + 2), np.float32)
    padded = np.concatenate([np.zeros(win, np.float32), samples.astype(np.float32), np.zeros(2 * win, np.float32)])
    for i in range(frames):
        centre = win + int((i + 0.5) * hop)
        seg = padded[centre - win // 2:centre - win // 2 + win]
        power = np.abs(np.fft.rfft(seg * window)) ** 2
        out[i, :-2] = [np.log(power[b].sum() + 1e-6) for b in bands]
        energy = float(np.mean(seg * seg))
        out[i, -2] = np.log(energy + 1e-8)
        out[i, -1] = np.sqrt(energy)
    return out


def with_context(feats: np.ndarray, context: int = CONTEXT) -> np.ndarray:
    padded = np.pad(feats, ((context, context), (0, 0)), mode="edge")
    n = len(feats)
    return np.concatenate([padded[k:k + n] for k in range(2 * context + 1)], axis=1)


@dataclass(frozen=True)
class AudioMouthMap:
    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray  # includes the bias as the last entry

    def predict(self, feats: np.ndarray) -> np.ndarray:
        x = (with_context(feats) - self.mean) / self.std
        return x @ self.weights[:-1] + self.weights[-1]

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "weights": self.weights.tolist(),
                "context": CONTEXT, "bands_hz": list(BAND_EDGES_HZ), "rate": RATE}

    @classmethod
    def from_dict(cls, d: dict) -> AudioMouthMap:
        if d.get("context") != CONTEXT or tuple(d.get("bands_hz", ())) != BAND_EDGES_HZ:
            raise ValueError("audio map was fitted with other feature settings; rebuild the avatar")
        return cls(np.array(d["mean"], np.float32), np.array(d["std"], np.float32),
                   np.array(d["weights"], np.float32))


def fit_audio_map(feats: np.ndarray, openness: np.ndarray, *, ridge: float = 10.0) -> AudioMouthMap:
    """Least squares with an L2 penalty, on standardised features; closed form, no iterations."""
    x = with_context(feats)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / std
    z1 = np.concatenate([z, np.ones((len(z), 1), np.float32)], axis=1)
    reg = ridge * np.eye(z1.shape[1], dtype=np.float64)
    reg[-1, -1] = 0.0
    w = np.linalg.solve(z1.T @ z1 + reg, z1.T @ openness.astype(np.float64))
    return AudioMouthMap(mean.astype(np.float32), std.astype(np.float32), w.astype(np.float32))


HELD_OUT = 0.25  # the last quarter of the footage's speech checks a map fitted on the rest
MIN_HELD_OUT_FRAMES = 25  # a second of speech at 25 fps: fewer, and the check says nothing


@dataclass(frozen=True)
class MapCheck:
    """How a map fitted on the footage's first speech predicts its held-out last quarter, beside loudness alone.
    `chosen` is what drives the mouth for recorded audio: the map only when it beats loudness on speech it never
    saw (a map fitted on a few seconds of speech can be worse than loudness; then loudness drives)."""

    map_r: float
    loudness_r: float
    held_out_frames: int
    chosen: str  # "map" or "loudness"

    def to_dict(self) -> dict:
        return {"map_r": round(self.map_r, 4), "loudness_r": round(self.loudness_r, 4),
                "held_out_frames": self.held_out_frames, "chosen": self.chosen}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or float(np.std(a)) < 1e-9 or float(np.std(b)) < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def check_audio_map(feats: np.ndarray, openness: np.ndarray, speech: np.ndarray, *,
                    held_out: float = HELD_OUT) -> MapCheck:
    """Fit on the speech frames before the last `held_out` share of them, and compare on the rest: the map's
    predicted opening and plain loudness (the features' last column), each correlated with the real opening.
    Held-out frames are the footage's last speech, in one piece, so context frames cannot leak across."""
    spoken = np.flatnonzero(speech)
    n_out = int(len(spoken) * held_out)
    if n_out < MIN_HELD_OUT_FRAMES:  # too little speech to check: loudness, which needs no fit, is the safe drive
        return MapCheck(0.0, 0.0, n_out, "loudness")
    cut = int(spoken[len(spoken) - n_out])
    fitted = fit_audio_map(feats[:cut], openness[:cut])
    test = spoken[spoken >= cut]
    predicted = fitted.predict(feats)[test]
    map_r, loud_r = _corr(predicted, openness[test]), _corr(feats[test, -1], openness[test])
    return MapCheck(map_r, loud_r, len(test), "map" if map_r > loud_r else "loudness")

