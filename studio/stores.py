"""The media store of this process (`open_store(settings)`), and its S3 backend through boto3.

Atomicity on S3: an object becomes visible only when its upload completes. A single PUT is stored whole or
not at all (S3 checks Content-Length and the payload checksum before it commits), and a multipart upload
creates nothing until CompleteMultipartUpload; boto3 aborts a multipart upload that fails. So no reader ever
sees half a segment, without the extra copy a temporary key would cost; a failed upload leaves no final key
(tests/unit/test_store.py checks both cases against a real S3 API).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from studio.config import Settings
from studio.store import (
    BACKENDS,
    FileStore,
    LocalCache,
    MediaStore,
    StoreError,
    check_key,
    check_prefix,
    parse_file_url,
    purge_cached,
)
from studio.tls import certificate_problem

# Refusals that mean the credentials are wrong, not the bucket.
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "403",
               "AuthorizationHeaderMalformed", "ExpiredToken"}
MULTIPART_THRESHOLD = 64 << 20


class S3Store(MediaStore):
    def __init__(self, url: str, *, endpoint_url: str | None, region: str, path_style: bool,
                 access_key_id: str | None, secret_access_key: str | None, cache: LocalCache,
                 verify: str | bool = True, multipart_threshold: int = MULTIPART_THRESHOLD):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        parsed = urlparse(url)
        if not parsed.netloc:
            raise StoreError(f"store.url: an S3 store URL is s3://bucket/prefix, got {url!r}")
        self.url, self.bucket = url, parsed.netloc
        self.prefix = parsed.path.strip("/") + "/" if parsed.path.strip("/") else ""
        if self.prefix:
            check_prefix(self.prefix)
        if (access_key_id is None) != (secret_access_key is None):
            raise StoreError("store.access_key_id and store.secret_access_key: set both, or neither (then boto3 "
                             "finds credentials in its usual places)")
        self.endpoint_url, self.verify = endpoint_url, verify
        self.cache = cache
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key, verify=verify,
            config=Config(s3={"addressing_style": "path" if path_style else "auto"},
                          retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30))
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=max(
            5 << 20, multipart_threshold // 4), use_threads=False)

    def _k(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _error(self, exc: Exception, what: str) -> Exception:
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"bucket {self.bucket!r}" + (f" at store.endpoint_url {self.endpoint_url}" if self.endpoint_url else "")
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchBucket",) or (code == "404" and what == "check"):
                return StoreError(f"store.url: {where} does not exist", category="missing")
            if code in _AUTH_CODES:
                return StoreError(f"store.access_key_id / store.secret_access_key: {where} refused the "
                                  f"credentials ({code}) while {what}", category="credentials refused")
            if code in ("NoSuchKey", "404"):
                return FileNotFoundError(f"store key {what} not found in {self.url}")
            return StoreError(f"store.url: {where}: {code} while {what}")
        if isinstance(exc, BotoCoreError) and (tls := certificate_problem(
                exc, section="store", ca_file=self.verify if isinstance(self.verify, str) else None)):
            return StoreError(f"{tls} (while {what})", category="certificate refused")
        if isinstance(exc, BotoCoreError):
            return StoreError(f"store.endpoint_url: {where} cannot be reached while {what} ({type(exc).__name__})",
                              category="unreachable")
        return exc

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - translated to a StoreError naming the setting
            raise self._error(exc, "check") from None

    def put(self, key: str, local_file: Path) -> None:
        with open(local_file, "rb") as f:
            self.put_stream(key, f)

    def put_stream(self, key: str, reader: BinaryIO) -> None:
        try:
            self.client.upload_fileobj(reader, self.bucket, self._k(key), Config=self.transfer)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, f"writing {key}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put_stream(key, io.BytesIO(data))

    def open(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"]
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, key) from None

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._k(key))["ContentLength"]
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                return None
            raise self._error(exc, f"looking up {key}") from None

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def delete(self, key: str) -> bool:
        # S3's DELETE answers 204 whether or not the key was there: look first, so a missing key is reported so.
        if not self.exists(key):
            return False
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._k(key))
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, f"deleting {key}") from None
        return True

    def list(self, prefix: str = "") -> list[str]:
        if prefix:
            check_prefix(prefix)
        keys = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                             Prefix=self.prefix + prefix):
                keys += [o["Key"][len(self.prefix):] for o in page.get("Contents", [])]
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, f"listing {prefix or '(all)'}") from None
        return sorted(keys)

    def _download(self, key: str, dest: Path) -> None:
        try:
            self.client.download_file(self.bucket, self._k(key), str(dest), Config=self.transfer)
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, key) from None


def _s3(url: str, root: Path, cache: LocalCache | None, settings: Settings) -> S3Store:
    st = settings.store
    return S3Store(url, endpoint_url=st.endpoint_url, region=st.region, path_style=st.path_style,
                   access_key_id=st.access_key_id, secret_access_key=st.secret_access_key, verify=settings.s3_verify,
                   cache=cache or LocalCache(settings.cache_path, st.cache_max_mb << 20))


BACKENDS.setdefault("s3", _s3)


def store_for(settings: Settings) -> MediaStore:
    """A new store built from `settings.store` (the backend chosen by the URL's scheme)."""
    url = settings.store_url
    scheme = urlparse(url).scheme
    if scheme not in BACKENDS:
        known = " or ".join(f"{s}://" for s in BACKENDS)
        raise StoreError(f"store.url: unknown scheme {scheme!r} in {url!r}; use {known}")
    if scheme == "file":
        root = parse_file_url(url)
        # The data directory on this host needs no cache; a shared mount (store.url set) is read through one.
        cache = LocalCache(settings.cache_path, settings.store.cache_max_mb << 20) if settings.store.url else None
        return FileStore(root, cache=cache)
    return BACKENDS[scheme](url=url, root=None, cache=None, settings=settings)


_STORES: dict[str, MediaStore] = {}


def open_store(settings: Settings) -> MediaStore:
    """The store of this process for `settings` (one client per process and configuration)."""
    ident = settings.model_dump_json(include={"data_dir", "store"})
    if ident not in _STORES:
        _STORES[ident] = store_for(settings)
    return _STORES[ident]


def purge_host_caches(settings: Settings, keys: list[str]) -> list[str]:
    """`purge_cached` on every cache directory this host's settings name."""
    return purge_cached(keys, [settings.cache_path])
