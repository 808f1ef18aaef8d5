"""Renderer backends, one file per backend, each registering its `Backend` (base.py) when imported.

Every module of this package is imported on first use, so a new backend file needs no edit elsewhere: the config's
`renderer.type` is checked against these names, a new avatar is built by the backend it names and keeps it
(Avatar.renderer), and its segments are rendered by that backend on the render queue of the backend's kind
(workers.queue_policy).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path

from studio.config import MediaProfile, RendererConfig
from workers.renderers.base import Backend, BundleError, Renderer

__all__ = ["Backend", "BundleError", "Renderer", "backend", "backend_names", "backends", "bundle_usable",
           "chosen_renderer", "config_problems", "make_renderer",
           "register"]

_BACKENDS: dict[str, Backend] = {}
_INTERNAL = {"base"}  # modules of this package that are not backends


def register(new: Backend) -> Backend:
    """Make `new` known by its name (a backend module calls this when imported); a second backend of the same
    name is refused, since avatars name their backend."""
    known = _BACKENDS.get(new.name)
    if known is not None and known is not new:
        raise ValueError(f"renderer backend {new.name!r} is registered twice; give the new one another name")
    _BACKENDS[new.name] = new
    return new


@cache
def _discover() -> None:
    """Import every module of this package, once; each backend module registers itself."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _INTERNAL:
            importlib.import_module(f"{__name__}.{module.name}")


def backends() -> dict[str, Backend]:
    """Every known backend by name."""
    _discover()
    return dict(_BACKENDS)


def backend_names() -> list[str]:
    """The names `renderer.type` and Avatar.renderer may take, sorted."""
    return sorted(backends())


def backend(name: str) -> Backend:
    """The backend named `name`; BundleError naming the known ones when there is none."""
    found = backends().get(name)
    if found is None:
        raise BundleError(f"unknown renderer type {name!r}; known: {', '.join(backend_names())}")
    return found


def make_renderer(kind: str, bundle: Path, profile: MediaProfile, config: RendererConfig | None = None) -> Renderer:
    """Backend `kind` (an avatar's `renderer`) reading `bundle`, with the renderer settings `config`."""
    return backend(kind).open_bundle(Path(bundle), profile, config)


def bundle_usable(kind: str, bundle: Path, profile: MediaProfile, config: RendererConfig | None = None) -> bool:
    """True when this version of backend `kind` reads the bundle; an older one must be rebuilt."""
    try:
        found = backend(kind)
    except BundleError:
        return False
    return found.bundle_usable(Path(bundle), profile, config)


def config_problems(config: RendererConfig) -> list[str]:
    """What keeps the backend that `renderer.type` names from working with these settings (weights path, layout,
    shapes), for `studio config check` and worker start; empty when it will work."""
    try:
        return backend(config.type).problems(config)
    except BundleError as exc:
        return [str(exc)]


def chosen_renderer(config: RendererConfig, name: str | None) -> RendererConfig:
    """The renderer settings a new avatar is built with: the config's, or backend `name` chosen at its creation
    (one deployment runs CPU and GPU avatars side by side). BundleError naming the value and the known backends
    for a name no backend has; ValueError with the backend's problems (weights, layout) when it cannot work here."""
    if name is None or name == config.type:
        return config
    backend(name)  # BundleError: unknown, naming the known ones
    chosen = config.model_copy(update={"type": name})
    problems = config_problems(chosen)
    if problems:
        raise ValueError(f"renderer {name!r} cannot build avatars on this deployment: {'; '.join(problems)}")
    return chosen

