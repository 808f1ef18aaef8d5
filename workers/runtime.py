"""What a worker process needs, built once per process from the environment's config."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from sqlalchemy.engine import Engine

from studio.config import Settings, load_settings
from studio.db import make_engine
from studio.keys import load_key
from studio.storage import DataDir


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    data: DataDir
    key: bytes


def build_runtime(settings: Settings) -> Runtime:
    return Runtime(settings=settings, engine=make_engine(settings.db_url), data=DataDir(settings.data_path).ensure(),
                   key=load_key(settings))


@cache
def runtime() -> Runtime:
    return build_runtime(load_settings())
