"""Deletion after revocation (POLICY C5): hash what is about to go, delete it, and issue a signed certificate
that says what was deleted, when, for whom, and what was kept and why (aired segments and the audit log
are kept under C6).

Signing uses the provenance keys (`studio keys init`): ES256, ECDSA P-256 with SHA-256 over the
certificate's canonical JSON, the signature as raw r||s as in JWS. A reader checks it with our root.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from studio.storage import sha256_file
from studio.store import MediaStore, check_key

ALGORITHM = "ES256"
REASONS = ("revoked", "expired")
_P256_BYTES = 32


class DeletionError(ValueError):
    pass


class CertificateError(ValueError):
    pass


# --- what is deleted ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DeletedFile:
    """One file as it was just before deletion; `path` is relative to the data directory, with / separators.

    `missing`: it was already gone when planning or deleting reached it (a retry after a partial deletion),
    so there was nothing to hash or remove. A symlink is removed itself, never followed, and has no size or
    hash; nor has anything else that is not a regular file."""

    path: str
    size: int | None
    sha256: str | None
    missing: bool = False
    symlink: bool = False
    location: Path = field(default=Path(), repr=False, compare=False)  # where it is on this machine
    top: Path = field(default=Path(), repr=False, compare=False)  # the planned path it was found under

    def to_dict(self) -> dict:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "missing": self.missing,
                "symlink": self.symlink}


def plan_deletion(paths: list[Path], *, root: Path) -> list[DeletedFile]:
    """Every file under `paths` (directories walked, symlinks not followed), hashed before anything is deleted.

    Relative paths are taken from `root`, the data directory; a path that is not strictly inside it is
    refused with DeletionError, before any file is read."""
    root_real = Path(root).resolve()
    if not root_real.is_dir():
        raise DeletionError(f"data directory {root} does not exist")
    tops = [_inside(root_real, Path(root) / p, given=p) for p in paths]
    planned: dict[Path, DeletedFile] = {}
    for top in tops:
        for location in _walk(top):
            if location not in planned:
                planned[location] = _describe(location, root_real, top)
    return list(planned.values())


def _inside(root_real: Path, candidate: Path, *, given: Path) -> Path:
    # The directories on the way are resolved (a symlinked folder cannot lead out of the data directory);
    # the last component is not, so a symlink is deleted as a link, never its target.
    lexical = Path(os.path.abspath(candidate))
    target = lexical.parent.resolve() / lexical.name
    if target == root_real or root_real not in target.parents:
        raise DeletionError(f"refusing to delete {given}: it is not inside the data directory {root_real}"
                            + (" (it is the data directory itself)" if target == root_real else ""))
    return target


def _walk(top: Path) -> Iterator[Path]:
    try:
        st = top.lstat()
    except FileNotFoundError:
        yield top
        return
    if not stat.S_ISDIR(st.st_mode):
        yield top
        return
    for entry in sorted(os.scandir(top), key=lambda e: e.name):
        yield from _walk(Path(entry.path))


def _describe(location: Path, root_real: Path, top: Path) -> DeletedFile:
    rel = location.relative_to(root_real).as_posix()
    try:
        st = location.lstat()
    except FileNotFoundError:
        return DeletedFile(rel, None, None, missing=True, location=location, top=top)
    if stat.S_ISLNK(st.st_mode):
        return DeletedFile(rel, None, None, symlink=True, location=location, top=top)
    if not stat.S_ISREG(st.st_mode):  # a socket or fifo left behind: reading it could block
        return DeletedFile(rel, None, None, location=location, top=top)
    return DeletedFile(rel, st.st_size, sha256_file(location), location=location, top=top)


def delete_files(planned: list[DeletedFile]) -> list[DeletedFile]:
    """Delete the planned files, then the directories under each planned path that are left empty.

    Returns the entries as they turned out: one already gone comes back with `missing=True`. A directory
    that gained a file since planning is left in place, with that file."""
    unplanned = [f.path for f in planned if not f.location.is_absolute()]
    if unplanned:
        raise DeletionError(f"{unplanned[0]} has no location on disk: pass what plan_deletion returned")
    done = []
    for f in planned:
        try:
            f.location.unlink()
        except FileNotFoundError:
            f = replace(f, missing=True)
        done.append(f)
    for top in dict.fromkeys(f.top for f in planned):
        if top.is_dir() and not top.is_symlink():
            for dirpath, _, _ in os.walk(top, topdown=False):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass  # not empty: something arrived after the plan
    return done


# --- what is deleted from the media store ---------------------------------------------------------------------
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def safe_id(value: str, what: str) -> str:
    """An id fit to build a store key from; a row whose id could lead elsewhere (`..`, `/`) is refused."""
    if not isinstance(value, str) or not _ID.match(value):
        raise DeletionError(f"{what} {value!r} is not a valid id; refusing to derive store keys from it")
    return value


def plan_store_deletion(store: MediaStore, keys: list[str]) -> list[DeletedFile]:
    """Every object under `keys` (a key, or a prefix ending in / for all under it), hashed through the store
    before anything is deleted. A key not in the store, or a prefix with nothing under it, is planned as missing."""
    planned: dict[str, DeletedFile] = {}
    for key in keys:
        found = store.list(key) if key.endswith("/") else [check_key(key)]
        if not found:
            planned.setdefault(key, DeletedFile(key, None, None, missing=True))
        for k in found:
            if k not in planned:
                planned[k] = _describe_key(store, k)
    return list(planned.values())


def _describe_key(store: MediaStore, key: str) -> DeletedFile:
    size = store.size(key)
    if size is None:
        return DeletedFile(key, None, None, missing=True)
    h = hashlib.sha256()
    try:
        with store.open(key) as f:
            while block := f.read(1 << 20):
                h.update(block)
    except FileNotFoundError:
        return DeletedFile(key, None, None, missing=True)
    return DeletedFile(key, size, h.hexdigest())


def delete_from_store(store: MediaStore, planned: list[DeletedFile]) -> tuple[list[DeletedFile], list[str]]:
    """Delete the planned objects; (deleted, missing): a key the store did not have is missing, never deleted."""
    deleted, missing = [], []
    for f in planned:
        if not f.missing and store.delete(f.path):
            deleted.append(f)
        else:
            missing.append(f.path)
    return deleted, missing


# --- the certificate ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DeletionCertificate:
    """What was deleted after a consent ended, and what was kept and why; signed with `sign_certificate`.

    `retained`: one dict per thing kept, each with a `why`, e.g. {"kind": "aired_segment", "produce_id": …,
    "sha256": …, "why": "archived for audit (POLICY C6)"}. `off_air_seconds`: from revocation until the
    clone was off air (C5 asks for 2 s), None when nothing was on air."""

    id: str
    issued_at: datetime
    creator_id: str
    creator_name: str
    avatar_ids: list[str]
    consent_id: str
    reason: Literal["revoked", "expired"]
    deleted: list[DeletedFile]
    retained: list[dict]
    revoked_at: datetime | None
    off_air_seconds: float | None
    missing: list[str] = field(default_factory=list)  # keys looked for and not found: nothing deleted there

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"reason {self.reason!r} is not one of {', '.join(REASONS)}")
        unexplained = [r for r in self.retained if not str(r.get("why", "")).strip()]
        if unexplained:
            raise ValueError(f"retained item {unexplained[0]!r} does not say why it is kept: add a 'why'")

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "issued_at": _iso(self.issued_at),
            "creator_id": self.creator_id,
            "creator_name": self.creator_name,
            "avatar_ids": list(self.avatar_ids),
            "consent_id": self.consent_id,
            "reason": self.reason,
            "deleted": [f.to_dict() for f in self.deleted],
            "retained": [dict(r) for r in self.retained],
            "revoked_at": _iso(self.revoked_at) if self.revoked_at else None,
            "off_air_seconds": self.off_air_seconds,
            "missing": sorted(self.missing),
        }

    def to_json(self) -> str:
        return canonical_json(self.to_dict())


def canonical_json(value: dict) -> str:
    """Sorted keys, no whitespace, UTF-8 text kept as is: the bytes that are signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _iso(at: datetime) -> str:
    # The platform keeps naive UTC datetimes; the certificate says so explicitly.
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


# --- signing and verifying ---------------------------------------------------------------------
def sign_certificate(cert: DeletionCertificate, *, private_key_pem: bytes, chain_pem: bytes) -> dict:
    """{"certificate", "signature", "algorithm", "chain"}: ES256 over the canonical JSON, with our chain."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CertificateError(f"unreadable signing key or chain ({exc}); run `studio keys init`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CertificateError(f"the signing key is a {type(key).__name__}, not an EC P-256 key as ES256 needs")
    if chain[0].public_key().public_numbers() != key.public_key().public_numbers():
        raise CertificateError("the signing key does not match the first certificate of the chain")
    body = cert.to_dict()
    _check_validity(chain[0], datetime.fromisoformat(body["issued_at"]))
    der = key.sign(canonical_json(body).encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
    return {"certificate": body, "signature": base64.b64encode(raw).decode(), "algorithm": ALGORITHM,
            "chain": chain_pem.decode()}


def verify_certificate(signed: dict, *, root_pem: bytes) -> None:
    """Raise CertificateError saying why unless `signed` is intact and was signed under the root `root_pem`.

    The signer's certificate must be issued by the root and be valid at the certificate's issued_at, so a
    certificate stays verifiable after the signing certificate expires."""
    try:
        body, signature, algorithm, chain_text = (signed[k] for k in ("certificate", "signature", "algorithm",
                                                                       "chain"))
    except (KeyError, TypeError):
        raise CertificateError("not a signed deletion certificate: needs certificate, signature, algorithm "
                               "and chain") from None
    if algorithm != ALGORITHM:
        raise CertificateError(f"algorithm {algorithm!r} is not {ALGORITHM}")
    try:
        root = x509.load_pem_x509_certificate(root_pem)
    except ValueError as exc:
        raise CertificateError(f"unreadable root certificate ({exc})") from None
    try:
        signer = x509.load_pem_x509_certificates(str(chain_text).encode())[0]
    except ValueError as exc:
        raise CertificateError(f"unreadable certificate chain ({exc})") from None
    try:
        signer.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(f"the signing certificate ({signer.subject.rfc4514_string()}) was not issued by "
                               f"the root {root.subject.rfc4514_string()}: the chain does not lead to it") from None
    public = signer.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
        raise CertificateError("the signing certificate does not hold an EC P-256 key as ES256 needs")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise CertificateError("the signature is not base64") from None
    if len(raw) != 2 * _P256_BYTES:
        raise CertificateError(f"the signature is {len(raw)} bytes, not the {2 * _P256_BYTES} of ES256")
    der = encode_dss_signature(int.from_bytes(raw[:_P256_BYTES], "big"), int.from_bytes(raw[_P256_BYTES:], "big"))
    try:
        public.verify(der, canonical_json(body).encode(), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, TypeError, ValueError):  # ValueError: a NaN slipped into the JSON
        raise CertificateError("the signature does not match the certificate: it was edited after signing, "
                               "or signed with another key") from None
    # Only now is issued_at known to be the signer's own word.
    try:
        issued_at = datetime.fromisoformat(body["issued_at"])
    except (KeyError, TypeError, ValueError):
        raise CertificateError("the certificate has no readable issued_at") from None
    if issued_at.tzinfo is None:
        raise CertificateError(f"issued_at {body['issued_at']!r} has no time zone")
    _check_validity(root, issued_at)
    _check_validity(signer, issued_at)


def _check_validity(cert: x509.Certificate, at: datetime) -> None:
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise CertificateError(f"certificate {cert.subject.rfc4514_string()} is valid from "
                               f"{cert.not_valid_before_utc.isoformat()} to {cert.not_valid_after_utc.isoformat()}, "
                               f"not at {at.isoformat()}")
