"""Renderer backends, one file per backend. A new avatar is made for the backend the config's `renderer.type`
names and keeps it (Avatar.renderer); its segments are rendered with that backend, on the render queue of the
backend's device class (workers.queue_policy.RENDERER_DEVICES)."""

from __future__ import annotations

from pathlib import Path

from studio.config import MediaProfile
from workers.renderers.footage import BundleError, FootageRenderer

RENDERERS = {FootageRenderer.type: FootageRenderer}


def make_renderer(kind: str, bundle: Path, profile: MediaProfile) -> FootageRenderer:
    """Backend `kind` (an avatar's `renderer`) reading `bundle`."""
    try:
        cls = RENDERERS[kind]
    except KeyError:
        raise BundleError(f"unknown renderer type {kind!r}; known: {', '.join(RENDERERS)}") from None
    return cls(bundle, profile)


def bundle_usable(kind: str, bundle: Path, profile: MediaProfile) -> bool:
    """True when this version of backend `kind` reads the bundle; an older one must be rebuilt."""
    try:
        make_renderer(kind, bundle, profile)
    except BundleError:
        return False
    return True
