"""What a process of the platform works with: its settings, database engine, data directory, keys and media store.

The API, the CLI and every worker build one (`build_runtime`) from the same settings; a worker process keeps one for
its life (workers.runtime.runtime()). It is here, with the storage functions it wraps, so that the API and the
workers import it alike.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from sqlalchemy.engine import Engine

from studio import audit_keys
from studio.audit_keys import ROLES, AuditKeyring, parse_roles
from studio.config import Settings
from studio.db import make_engine
from studio.keys import load_audit_keyring, load_key
from studio.storage import DataDir
from studio.store import FileStore, MediaStore, StoreKeyError, check_key, key_under
from studio.stores import open_store

log = logging.getLogger(__name__)
SIDECARS = (".vtt",)  # files that travel with a segment under the same key stem (captions)
# The audit roles whose keys this process loads, set by its role command (api.cli_roles) for the runtime it builds
# later (a Celery pool process's, too); unset, a process loads every role's (the control host holds them all).
AUDIT_ROLES_ENV = "STUDIO_AUDIT_ROLES"


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    data: DataDir
    key: bytes = field(repr=False)  # the policy key: never in a log line or a traceback
    audit_keys: AuditKeyring
    store: MediaStore = field(default=None, compare=False)  # type: ignore[assignment]

    def __post_init__(self):
        if self.store is None:
            object.__setattr__(self, "store", open_store(self.settings))

    @property
    def store_is_data_dir(self) -> bool:
        """The default: keys are files under this host's data directory, nothing to copy."""
        return isinstance(self.store, FileStore) and self.store.root.resolve() == self.data.root.resolve()

    def key_of(self, path: Path) -> str:
        """The store key of a file written under the data directory (its layout is the key layout)."""
        key = key_under(self.data.root, path)
        if key is None:
            raise StoreKeyError(f"{path} is not under the data directory {self.data.root}; it has no store key")
        return key

    def publish(self, path: Path, *, sidecars: tuple[str, ...] = (), keep_local: bool = False) -> str:
        """Put a file written under the data directory (and its `sidecars`, where present) into the store under
        its key; returns the key. With the default store it is already there. Elsewhere the local copy goes
        once it is stored (unless `keep_local`: this host goes on using it): the store is the one copy, hosts
        read it through their cache."""
        key = self.key_of(path)
        if self.store_is_data_dir:
            return key
        for p in [path, *(path.with_suffix(s) for s in sidecars)]:
            if p.exists():
                self.store.put(self.key_of(p), p)
                if not keep_local:
                    p.unlink()
        return key

    def publish_dir(self, top: Path) -> str:
        """A directory under the data directory (a bundle) into the store, file by file; returns its key."""
        key = self.key_of(top)
        if self.store_is_data_dir:
            return key
        for p in sorted(top.rglob("*")):
            if p.is_file():
                self.store.put(self.key_of(p), p)
        return key

    def local(self, stored: str, *, sidecars: tuple[str, ...] = ()) -> Path:
        """A local path for a stored file: its key through the store (cache), or a legacy absolute path as is."""
        if stored.startswith("/"):
            return Path(stored)  # left by 0007_store_keys: outside the data directory
        path = self.store.get(check_key(stored))
        for s in sidecars:
            side = str(Path(stored).with_suffix(s))
            try:
                self.store.get(side)
            except FileNotFoundError:
                pass
        return path

    def local_dir(self, stored: str) -> Path:
        """A local directory holding every file under a stored directory key (a bundle)."""
        if stored.startswith("/"):
            return Path(stored)
        check_key(stored)
        if self.store_is_data_dir:
            return self.data.root / stored
        keys = self.store.list(stored + "/")
        for k in keys:
            self.store.get(k)
        root = self.store.cache.root if self.store.cache is not None else self.store.root  # type: ignore[attr-defined]
        return root / stored

    def prefetch(self, keys: list[str], *, sidecars: tuple[str, ...] = SIDECARS) -> None:
        """Fill this host's cache with `keys` in the background (the streamer, ahead of air)."""
        if self.store_is_data_dir or not keys:
            return
        _prefetcher().submit(self._prefetch, keys, sidecars)

    def _prefetch(self, keys: list[str], sidecars: tuple[str, ...]) -> None:
        for key in keys:
            try:
                if not key.startswith("/"):
                    self.local(key, sidecars=sidecars)
            except Exception:  # noqa: BLE001 - air fetches it again and reports it if it is really gone
                log.warning("prefetch of %s failed", key, exc_info=True)


@cache
def _prefetcher() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="prefetch")


def process_audit_roles() -> tuple[str, ...]:
    """The audit roles of this process: what its role command set in STUDIO_AUDIT_ROLES, else every role."""
    given = os.environ.get(AUDIT_ROLES_ENV)
    return parse_roles(given) if given else ROLES


def build_runtime(settings: Settings, *, audit_roles: tuple[str, ...] | None = None) -> Runtime:
    """The runtime of this process, its engine bound to the audit keys of `audit_roles` (default:
    `process_audit_roles`), so every event recorded through it is signed by the role that writes it."""
    keyring = load_audit_keyring(settings, audit_roles or process_audit_roles())
    engine = make_engine(settings.db_url)
    audit_keys.bind(engine, keyring)
    return Runtime(settings=settings, engine=engine, data=DataDir(settings.data_path).ensure(), key=load_key(settings),
                   audit_keys=keyring)
