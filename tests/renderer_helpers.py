"""A tiny renderer backend for tests: solid frames of the colour its bundle names, no weights, no footage analysis.

Import as `from tests.renderer_helpers import tiny_backend, registered` (run pytest from the repository root).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import workers.renderers
from studio.config import MediaProfile
from workers.renderers import backends, register
from workers.renderers.base import Backend, BuiltBundle, BundleError, BundleSource
from workers.tts.base import Speech

TINY_VERSION = 1


class TinyRenderer:
    """Frames of one colour: enough to show the contract (frame counts, sizes) with nothing behind it."""

    type = "tiny"

    def __init__(self, bundle: Path, profile: MediaProfile):
        try:
            spec = json.loads((bundle / "tiny.json").read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"tiny bundle {bundle} is unreadable: {exc}") from None
        if (spec["width"], spec["height"], spec["fps"]) != (profile.width, profile.height, profile.fps):
            raise BundleError(f"tiny bundle {bundle.name} was made for another profile")
        self.profile = profile
        self.colour = np.array(spec["colour"], np.uint8)

    def frame_count(self, speech: Speech) -> int:
        return speech.frame_count(self.profile.fps)

    def _frames(self, n: int, level: float) -> Iterator[np.ndarray]:
        for _ in range(n):
            frame = np.empty((self.profile.height, self.profile.width, 3), np.uint8)
            frame[:] = (self.colour * level).astype(np.uint8)
            yield frame

    def render(self, speech: Speech) -> Iterator[np.ndarray]:
        return self._frames(self.frame_count(speech), 1.0)

    def idle(self, n: int) -> Iterator[np.ndarray]:
        return self._frames(n, 0.5)


def build_tiny_bundle(src: BundleSource, out: Path) -> BuiltBundle:
    """One colour, set by the analysed footage's frame count, so a bundle shows that it was built from that footage."""
    p = src.profile
    shade = int(40 + src.analysis.frames % 200)
    (out / "tiny.json").write_text(json.dumps({"width": p.width, "height": p.height, "fps": p.fps,
                                               "colour": [shade, 90, 200]}))
    src.progress("tiny", 1, 1)
    return BuiltBundle(version=TINY_VERSION, manifest={"profile": p.model_dump(), "fps": p.fps})


def tiny_backend(name: str = "tiny", queue_kind: str = "gpu") -> Backend:
    return Backend(name=name, queue_kind=queue_kind, build_bundle=build_tiny_bundle, open=TinyRenderer)


def registered(monkeypatch, backend: Backend) -> Backend:
    """`backend` registered as a backend file would register itself, for this test only."""
    monkeypatch.setattr(workers.renderers, "_BACKENDS", backends())
    return register(backend)
