"""The renderer contract: what every backend under workers/renderers/ provides, and what ingest hands it.

A backend is one file here that registers a `Backend` (workers.renderers.register) when imported. Ingest
validates the footage and analyses it once, then the avatar's backend builds its own part of the bundle
(`build_bundle`); at render time the backend reads it back (`open`) and returns a `Renderer`. A backend file
keeps heavy imports (torch, diffusers) inside its functions, so listing the backends stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from studio.config import IngestLimits, MediaProfile, RendererConfig
from workers.tts.base import Speech

if TYPE_CHECKING:
    from workers.media.face import MouthPose
    from workers.media.probe import MediaInfo

QueueKind = Literal["cpu", "gpu"]
_NAME = re.compile(r"[a-z][a-z0-9_-]*")
Progress = Callable[[str, int, int], None]


class BundleError(RuntimeError):
    """The avatar bundle is missing, incomplete, or was made for another media profile."""


class Renderer(Protocol):
    """One avatar's bundle, opened for rendering at one media profile."""

    type: str

    def frame_count(self, speech: Speech) -> int:
        """Frames `render` yields for `speech`: exactly one per 1/fps of its audio."""

    def render(self, speech: Speech) -> Iterator[np.ndarray]:
        """The talking frames (RGB, profile size), exactly `frame_count(speech)` of them."""

    def idle(self, n: int) -> Iterator[np.ndarray]:
        """n frames of the idle loop with the mouth at rest (the slate shows them), joining a render's first and
        last frame without a jump."""


@dataclass
class Analysis:
    """What ingest learnt from the footage, once, for whichever backend builds the bundle."""

    frames: int
    poses: list[MouthPose | None]
    faces_per_sample: list[int]
    face_heights: list[float]
    rms: np.ndarray
    audio: np.ndarray  # mono, 16 kHz
    scale: float  # analysis pixels -> source pixels


@dataclass(frozen=True)
class BundleSource:
    """Validated footage and its analysis: what a backend builds an avatar's bundle from."""

    footage: Path
    info: MediaInfo
    analysis: Analysis
    profile: MediaProfile
    limits: IngestLimits
    progress: Progress
    config: RendererConfig = field(default_factory=RendererConfig)  # renderer.*: weights, device, batch


@dataclass(frozen=True)
class BuiltBundle:
    """A backend's part of the manifest: its bundle format `version` (what its `open` checks) and its own entries,
    written after the avatar id and footage hash and before the file hashes."""

    version: int
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Backend:
    """A renderer backend: its name (an avatar's `renderer`, the config's `renderer.type`), the render queue kind
    its renders need (`render.cpu` or `render.gpu`), how it builds its part of a bundle into a directory, and
    how it opens a bundle as a Renderer (raising BundleError when it cannot). A backend that reads the renderer
    settings (weights, device) sets `takes_config`: `open` then gets them as a third argument. `check` says what
    in those settings stops it (missing weights, a wrong layout), for `studio config check` and worker start, so
    no setting fails at air time."""

    name: str
    queue_kind: QueueKind
    build_bundle: Callable[[BundleSource, Path], BuiltBundle]
    open: Callable[..., Renderer]
    takes_config: bool = False
    check: Callable[[RendererConfig], list[str]] | None = None

    def __post_init__(self) -> None:
        if self.queue_kind not in ("cpu", "gpu"):
            raise ValueError(f"backend {self.name!r}: queue_kind {self.queue_kind!r} must be 'cpu' or 'gpu'")
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"backend name {self.name!r} must be lower-case letters, digits, '_' or '-', starting "
                             "with a letter (it is what `renderer.type` and Avatar.renderer hold)")

    @property
    def queue(self) -> str:
        """The render queue this backend's renders go to."""
        return f"render.{self.queue_kind}"

    def problems(self, config: RendererConfig) -> list[str]:
        """What in the renderer settings keeps this backend from rendering (empty when nothing)."""
        return list(self.check(config)) if self.check is not None else []

    def open_bundle(self, bundle: Path, profile: MediaProfile, config: RendererConfig | None = None) -> Renderer:
        if self.takes_config:
            return self.open(bundle, profile, config if config is not None else RendererConfig())
        return self.open(bundle, profile)

    def bundle_usable(self, bundle: Path, profile: MediaProfile, config: RendererConfig | None = None) -> bool:
        """True when this version of the backend reads `bundle` at `profile`; an older one must be rebuilt."""
        try:
            self.open_bundle(bundle, profile, config)
        except BundleError:
            return False
        return True
