"""The runtime of a worker process: built once, from the environment's config, with every renderer backend's name
known to the config check (studio.runtime holds the Runtime itself)."""

from __future__ import annotations

from functools import cache

from studio.config import load_settings
from studio.runtime import Runtime, build_runtime
from workers.renderers import backend_names


@cache
def runtime() -> Runtime:
    return build_runtime(load_settings(renderers=backend_names()))
