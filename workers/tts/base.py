"""Speech as the renderer contract sees it: audio plus word and phoneme timings."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Timed:
    """One word or phoneme: its text and where it sits in the audio, in seconds."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Speech:
    samples: np.ndarray  # mono float32 in [-1, 1]
    sample_rate: int
    words: list[Timed] = field(default_factory=list)
    phonemes: list[Timed] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def frame_count(self, fps: int) -> int:
        """Frames needed to cover the audio: one frame per 1/fps, rounded up."""
        return max(1, -(-len(self.samples) * fps // self.sample_rate))


class SpeechError(RuntimeError):
    """Speech synthesis failed; the message names the text or the voice."""
