"""One media store for every host: files named by relative keys, kept by a backend chosen by URL.

Every file the platform keeps (uploads, consent videos, bundles, segments, captions, slates, archives,
recordings, certificates) is named by a key such as `segments/<channel_id>/<seq>-<produce_id>-a1.mp4` in the
database and in task arguments, never by an absolute path. `file:///abs/dir` (the default: the data directory,
or a shared mount) lives here; `s3://bucket/prefix` lives in workers/store_s3.py (boto3 is an edge).

Writes are atomic: the file backend writes a temporary name beside the final one and renames it over; the S3
backend relies on PUT atomicity (see workers/store_s3.py). A reader therefore sees the whole file or nothing.

`LocalCache` keeps the objects a host reads (bundles for the render worker, segments ahead of air for the
streamer) under a size bound, least recently used out, safe for several processes on one host.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from studio.storage import atomic_path, filled_name

MIN_FREE_BYTES = 64 << 20  # readiness fails below this: the next segment or upload would not fit


class StoreError(RuntimeError):
    """The store cannot be used as configured; the message names the setting, never a secret. `category` is the
    short word the API's readiness check shows (its message may name a host or a path, so it is not shown)."""

    def __init__(self, message: str, *, category: str = "failed"):
        super().__init__(message)
        self.category = category


class StoreKeyError(ValueError):
    """A key that cannot name a file in the store."""


def check_key(key: str) -> str:
    """`key` if it is a relative key with / separators and no empty, `.` or `..` parts; StoreKeyError otherwise."""
    if not isinstance(key, str) or not key:
        raise StoreKeyError(f"store key {key!r}: must be a non-empty string")
    why = None
    if key.startswith("/"):
        why = "is absolute; keys are relative to the store"
    elif "\\" in key:
        why = "contains a backslash; keys use / separators"
    elif any(ord(c) < 32 for c in key):
        why = "contains a control character"
    elif any(part in ("", ".", "..") for part in key.split("/")):
        why = "has an empty, '.' or '..' part"
    if why:
        raise StoreKeyError(f"store key {key!r} {why}")
    return key


def check_prefix(prefix: str) -> str:
    """A prefix is a key that ends with /: `bundles/<avatar_id>/`."""
    if not prefix.endswith("/"):
        raise StoreKeyError(f"store prefix {prefix!r} must end with /")
    check_key(prefix[:-1])
    return prefix


def key_under(root: Path, path: str | Path) -> str | None:
    """The key of an absolute `path` inside the directory `root` (symlinks not followed), None when outside."""
    p = Path(os.path.abspath(path))
    r = Path(os.path.abspath(root))
    if r not in p.parents:
        return None
    return check_key(p.relative_to(r).as_posix())


# --- the local cache ------------------------------------------------------------------------------------------
# A fill's temp file untouched this long was left by a process that died while writing it (studio.storage.FILL_FILE).
STALE_FILL_SECONDS = 3600.0


class LocalCache:
    """Objects of a store copied to this host, at most `max_bytes` in all, least recently used evicted first.

    Several processes may share one cache directory: a fill is written to a temporary name and renamed (no
    reader sees half a file), use is recorded in the file's mtime, eviction runs under an flock. An evicted file
    that a process still has open stays readable by it (Linux keeps the inode until the last close)."""

    def __init__(self, root: Path, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def lookup(self, key: str) -> Path | None:
        p = self.path(key)
        try:
            os.utime(p)  # most recently used
        except FileNotFoundError:
            return None
        return p

    def fill(self, key: str, write: Callable[[Path], None]) -> Path:
        """Write `key` into the cache with `write(tmp_path)`; the file appears whole or not at all."""
        final = self.path(key)
        with atomic_path(final) as tmp:
            write(tmp)
        self.evict(keep=final)
        return final

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _walk(self) -> tuple[list[tuple[float, int, Path]], list[tuple[float, Path]]]:
        """(entries: (mtime, size, path) of every cached file, fills in flight: (mtime, path) of each)."""
        entries, fills = [], []
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                # In-flight files are no entries: a fill's temp file (".name.XXXX.part") and whatever its writer
                # makes beside it (boto3 downloads into "<temp>.XXXXXXXX" and renames): all start with a dot.
                in_flight = name.startswith(".") or name.endswith(".part")
                if in_flight and filled_name(name) is None:
                    continue  # the lock file, or another writer's: neither an entry nor a fill
                p = Path(dirpath) / name
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                if in_flight:
                    fills.append((st.st_mtime, p))
                else:
                    entries.append((st.st_mtime, st.st_size, p))
        return entries, fills

    def _entries(self) -> list[tuple[float, int, Path]]:
        return self._walk()[0]

    def used_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def evict(self, *, keep: Path | None = None) -> list[str]:
        """Remove least recently used files until the cache fits its bound; `keep` (just filled) stays. Fills in
        flight untouched for STALE_FILL_SECONDS go too: their writer died (a copy or a download writes as it goes),
        and nothing else would ever remove them or count them against the bound."""
        evicted = []
        now = time.time()
        with self._locked():
            entries, fills = self._walk()
            for mtime, p in fills:
                if now - mtime > STALE_FILL_SECONDS:
                    p.unlink(missing_ok=True)
                    evicted.append(p.relative_to(self.root).as_posix())
            entries.sort()
            total = sum(size for _, size, _ in entries)
            for _, size, p in entries:
                if total <= self.max_bytes:
                    break
                if p == keep:
                    continue
                p.unlink(missing_ok=True)
                total -= size
                evicted.append(p.relative_to(self.root).as_posix())
        return evicted

    def purge(self, keys: Iterable[str]) -> list[str]:
        """Remove `keys` (a key ending in / removes everything under it); returns the keys removed."""
        removed = []
        for key in keys:
            if key.endswith("/"):
                top = self.root / check_prefix(key)
                if top.is_dir():
                    removed += [p.relative_to(self.root).as_posix() for p in sorted(top.rglob("*")) if p.is_file()]
                    shutil.rmtree(top, ignore_errors=True)
                continue
            p = self.path(key)
            if p.is_file() or p.is_symlink():
                p.unlink(missing_ok=True)
                removed.append(key)
        return removed


def purge_cached(keys: Iterable[str], cache_dirs: Iterable[Path]) -> list[str]:
    """Remove `keys` from every local cache directory of this host; returns what was removed (with repeats
    when several caches held a key). The fleet pushes the same call to other hosts."""
    keys = list(keys)
    removed = []
    for root in dict.fromkeys(Path(d) for d in cache_dirs):
        if root.is_dir():
            removed += LocalCache(root, max_bytes=0).purge(keys)
    return removed


# --- the store --------------------------------------------------------------------------------------------------
class MediaStore(ABC):
    """Files by key. Backends implement the primitives; `get` goes through the cache when there is one."""

    url: str
    cache: LocalCache | None = None

    @abstractmethod
    def put(self, key: str, local_file: Path) -> None: ...

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A binary reader; FileNotFoundError naming the key when it is not there."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int | None:
        """Bytes of `key`, None when it is not there."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Delete `key`; True when it was there."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under `prefix` (a key prefix ending in /, or "" for all), sorted."""

    @abstractmethod
    def _download(self, key: str, dest: Path) -> None: ...

    @abstractmethod
    def check(self) -> None:
        """Raise StoreError naming the setting when the store cannot be reached or used."""

    def read(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def get(self, key: str) -> Path:
        """A local path holding `key`: from the cache (filled on a miss) or, with no cache, the file itself."""
        check_key(key)
        if self.cache is None:
            return self._direct(key)
        hit = self.cache.lookup(key)
        if hit is not None:
            return hit
        return self.cache.fill(key, lambda tmp: self._download(key, tmp))

    def prefetch(self, keys: Iterable[str]) -> list[str]:
        """Fill the cache with `keys` ahead of use; returns those that were not in the store."""
        missing = []
        for key in keys:
            try:
                self.get(key)
            except FileNotFoundError:
                missing.append(key)
        return missing

    def _direct(self, key: str) -> Path:
        raise StoreError(f"store {self.url}: this backend needs a local cache (store.cache_dir)")

    def delete_keys(self, keys: Iterable[str]) -> tuple[list[str], list[str]]:
        """Delete each key; returns (deleted, missing): a key not found is reported missing, never deleted."""
        deleted, missing = [], []
        for key in dict.fromkeys(keys):
            (deleted if self.delete(key) else missing).append(key)
        return deleted, missing

    def delete_prefix(self, prefix: str) -> tuple[list[str], list[str]]:
        """Delete every key under `prefix`; (deleted, missing) where missing holds keys gone meanwhile."""
        return self.delete_keys(self.list(check_prefix(prefix)))


class FileStore(MediaStore):
    """Keys as files under one directory: the data directory, or a mount shared by the hosts."""

    def __init__(self, root: Path, *, cache: LocalCache | None = None):
        self.root = Path(root)
        self.url = f"file://{self.root}"
        self.cache = cache

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def check(self) -> None:
        if not self.root.is_dir():
            raise StoreError(f"store.url: directory {self.root} does not exist", category="missing")
        if not os.access(self.root, os.W_OK):
            raise StoreError(f"store.url: directory {self.root} is not writable", category="not writable")
        free = shutil.disk_usage(self.root).free
        if free < MIN_FREE_BYTES:
            raise StoreError(f"store.url: directory {self.root} has {free >> 20} MiB free, under the "
                             f"{MIN_FREE_BYTES >> 20} MiB a segment and its upload need", category="full")

    def _write(self, key: str, write: Callable[[Path], None]) -> None:
        try:
            with atomic_path(self.path(key)) as tmp:
                write(tmp)
        except OSError as exc:
            category = "full" if exc.errno == errno.ENOSPC else "failed"
            raise StoreError(f"store.url: writing {key} under {self.root} failed ({exc.strerror or exc}); "
                             f"nothing was written", category=category) from exc

    def put(self, key: str, local_file: Path) -> None:
        self._write(key, lambda tmp: shutil.copyfile(local_file, tmp))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda tmp: tmp.write_bytes(data))

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except FileNotFoundError:
            raise FileNotFoundError(f"store key {key} not found in {self.url}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> bool:
        p = self.path(key)
        try:
            p.unlink()
        except FileNotFoundError:
            return False
        # Empty directories left behind go too, but not the top-level ones (uploads/, segments/, ...): with the
        # data directory as the store, other code writes into those directly.
        for parent in p.parents:
            if parent == self.root or parent.parent == self.root or self.root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break
        return True

    def list(self, prefix: str = "") -> list[str]:
        top = self.root / check_prefix(prefix) if prefix else self.root
        if not top.is_dir():
            return []
        keys = []
        for dirpath, _, names in os.walk(top):
            for name in names:
                if name.endswith(".part"):
                    continue  # a write in progress
                keys.append((Path(dirpath) / name).relative_to(self.root).as_posix())
        return sorted(keys)

    def _download(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self.path(key), dest)
        except FileNotFoundError:
            raise FileNotFoundError(f"store key {key} not found in {self.url}") from None

    def _direct(self, key: str) -> Path:
        p = self.path(key)
        if not p.is_file():
            raise FileNotFoundError(f"store key {key} not found in {self.url}")
        return p


BACKENDS: dict[str, Callable[..., MediaStore]] = {
    "file": lambda url, root, cache, **_: FileStore(root, cache=cache),
}


def parse_file_url(url: str, *, setting: str = "store.url") -> Path:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
        raise StoreError(f"{setting}: a file store URL is file:///absolute/dir, got {url!r}")
    return Path(unquote(parsed.path))
