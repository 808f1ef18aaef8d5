"""Renderer backends, chosen by the config field `renderer.type` (one file per backend)."""

from __future__ import annotations

from pathlib import Path

from studio.config import MediaProfile, RendererConfig
from workers.renderers.footage import BundleError, FootageRenderer

RENDERERS = {FootageRenderer.type: FootageRenderer}


def make_renderer(cfg: RendererConfig, bundle: Path, profile: MediaProfile) -> FootageRenderer:
    try:
        cls = RENDERERS[cfg.type]
    except KeyError:
        raise BundleError(f"unknown renderer type {cfg.type!r}; known: {', '.join(RENDERERS)}") from None
    return cls(bundle, profile)


def bundle_usable(cfg: RendererConfig, bundle: Path, profile: MediaProfile) -> bool:
    """True when this version of the renderer reads the bundle; an older one must be rebuilt."""
    try:
        make_renderer(cfg, bundle, profile)
    except BundleError:
        return False
    return True
