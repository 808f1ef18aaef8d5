"""Keys made by `studio keys init`: the policy key (settings/environment, else a key file), the C2PA
provenance keys (a root CA and the signing certificate it issues), the stream key that seals destination
URLs at rest, and one audit key per role (studio.audit_keys).

Only `studio keys init` and the embedded `studio up` / `studio demo` (on their first run) make keys; every
other command and role loads them and stops with `MissingKeyError` naming the key and `studio keys init`, so a
second host never makes keys of its own. In a fleet they come from the secrets directory
(`settings.secrets_dir`: policy_key, stream_key, c2pa-signer.pem, c2pa-signer.key, c2pa-root.pem, and the
audit-ROLE.key files of the roles that host runs)."""

from __future__ import annotations

import os
import secrets
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from studio.audit_keys import ROLES, AuditKeyring
from studio.config import EMBEDDED_REDIS_PASSWORD, Settings
from studio.storage import atomic_path


class PolicyKeyError(RuntimeError):
    pass


class MissingKeyError(PolicyKeyError):
    """A key that only `studio keys init` makes is not there."""

    def __init__(self, key: str, path: Path):
        self.key, self.path = key, path
        super().__init__(f"no {key} (expected {path}): run `studio keys init` on the first host and share the keys "
                         f"(secrets directory, STUDIO_SECRETS_DIR) with the others")


def key_file(settings: Settings) -> Path:
    return settings.data_path / "keys" / "policy.key"


def init_key(settings: Settings, *, force: bool = False) -> Path:
    """Create a random 256-bit key file (mode 600) unless one exists."""
    path = key_file(settings)
    if path.exists() and not force:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    os.replace(tmp, path)
    return path


def load_key(settings: Settings) -> bytes:
    if settings.policy_key:
        return settings.policy_key.encode()
    path = key_file(settings)
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        raise MissingKeyError("policy key (or STUDIO_POLICY_KEY)", path) from None
    if len(value) < 32:
        raise PolicyKeyError(f"policy key file {path} is too short; run `studio keys init --force`")
    return value.encode()


# --- stream key -------------------------------------------------------------------------------------
# Seals destination URLs at rest (studio.secrets). A key of its own rather than one derived from the policy
# key: render workers hold the policy key, and rotating it (`studio keys init --force`) must not make every
# channel's destinations unreadable. It is created once, on first need, and never replaced here: a new key
# would orphan every sealed URL.


def _create_once(path: Path, value: str) -> Path:
    """Write `value` to `path` (mode 600) unless the file exists; safe when processes race to create it: each
    writes a temporary file and links it into place, and the first link wins."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(value)
        try:
            os.link(tmp, path)  # fails if another process made one first: theirs is kept
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return path

STREAM_KEY = "stream.key"


def stream_key_file(settings: Settings) -> Path:
    return settings.data_path / "keys" / STREAM_KEY


def init_stream_key(settings: Settings) -> Path:
    """Create the 256-bit stream key file (mode 600) unless one exists; safe when processes race to create it."""
    path = stream_key_file(settings)
    return _create_once(path, secrets.token_hex(32))


def load_stream_key(settings: Settings, *, create: bool = False) -> bytes:
    """The 32-byte stream key (settings `stream_key`, e.g. from the secrets directory, else the key file);
    `create` makes the file first if missing (`studio keys init`, the embedded demo), else PolicyKeyError says
    what to do."""
    if settings.stream_key:
        return _key_bytes(settings.stream_key, "setting stream_key (secrets directory or STUDIO_STREAM_KEY)")
    path = init_stream_key(settings) if create else stream_key_file(settings)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise PolicyKeyError(f"no stream key at {path}: run `studio keys init` (on a host that sealed destinations "
                             "before, restore the file from a backup instead, or enter the channels' destinations "
                             "again)") from None
    return _key_bytes(text, f"stream key file {path}")


def _key_bytes(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise PolicyKeyError(f"{where} does not hold 64 hex digits; restore it from a backup")
    return key


def embedded_redis_password(settings: Settings) -> str:
    """The embedded redis-server's password: settings `services.redis_password` when given, else the file in
    data/keys (mode 600), made on the embedded stack's first start."""
    if settings.services.redis_password:
        return settings.services.redis_password
    path = settings.data_path / "keys" / EMBEDDED_REDIS_PASSWORD
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic_path(path) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def init_all_keys(settings: Settings, *, force: bool = False) -> tuple[Path, ProvenanceKeys, Path]:
    """What `studio keys init` (and the embedded stack's first run) makes: policy key, C2PA set, stream key, and
    the audit keys (never replaced, even with `force`: see `init_audit_keys`)."""
    init_metrics_token(settings)
    init_audit_keys(settings)
    return init_key(settings, force=force), init_provenance_keys(settings, force=force), init_stream_key(settings)


def require_keys(settings: Settings, *, audit_roles: tuple[str, ...] = ROLES) -> None:
    """Check that every key a process needs is there (of the audit keys, those of `audit_roles`: its role's, or
    all on the control host); MissingKeyError names the first missing one."""
    load_key(settings)
    load_provenance_keys(settings)
    if not settings.stream_key and not stream_key_file(settings).exists():
        raise MissingKeyError("stream key", stream_key_file(settings))
    load_audit_keyring(settings, audit_roles)


# --- audit keys ---------------------------------------------------------------------------------------
# One per role (studio.audit_keys): each host gets only the keys of the roles it runs, and the control host,
# which verifies the log, all of them. Made once and never replaced: a new key would make every event it
# signed read as forged.


def audit_key_file(settings: Settings, role: str) -> Path:
    """`audit-ROLE.key` in the secrets directory when it is there (a fleet), else in data/keys."""
    name = f"audit-{role}.key"
    if settings.secrets_dir and (Path(settings.secrets_dir) / name).exists():
        return Path(settings.secrets_dir) / name
    return settings.data_path / "keys" / name


def init_audit_keys(settings: Settings) -> list[Path]:
    """Create each role's 256-bit audit key file (mode 600) unless it exists; safe when processes race."""
    return [_create_once(audit_key_file(settings, role), secrets.token_hex(32)) for role in ROLES]


def load_audit_keyring(settings: Settings, roles: tuple[str, ...]) -> AuditKeyring:
    """The audit keys of `roles`; MissingKeyError names a missing one, PolicyKeyError a damaged one."""
    keys = {}
    for role in roles:
        path = audit_key_file(settings, role)
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            raise MissingKeyError(f"{role} audit key", path) from None
        keys[role] = _key_bytes(text, f"audit key file {path}")
    return AuditKeyring(keys)


# --- metrics token ------------------------------------------------------------------------------------
# The bearer token Prometheus sends to /metrics (infra/prometheus.yml reads the same file with
# `credentials_file`). The setting `metrics_token` (STUDIO_METRICS_TOKEN) wins over the file.

METRICS_TOKEN = "metrics.token"


def metrics_token_file(settings: Settings) -> Path:
    return settings.data_path / "keys" / METRICS_TOKEN


def init_metrics_token(settings: Settings) -> Path:
    """Create the metrics token file (mode 600) unless one exists; safe when processes race to create it."""
    path = metrics_token_file(settings)
    return _create_once(path, secrets.token_urlsafe(32))


def load_metrics_token(settings: Settings) -> str | None:
    """The token /metrics asks for, or None when neither the setting nor the file gives one (then /metrics
    answers nobody)."""
    if settings.metrics_token:
        return settings.metrics_token
    try:
        return metrics_token_file(settings).read_text().strip() or None
    except FileNotFoundError:
        return None


# --- C2PA provenance keys ---------------------------------------------------------------------------
# Our own two-level PKI: a root CA (the trust anchor readers are given) and an end-entity signing
# certificate it issues. c2pa refuses self-signed or CA certificates for signing, so two levels are the
# minimum. ES256 (EC P-256) because every C2PA validator must support it.

ROOT_CERT, ROOT_KEY = "c2pa-root.pem", "c2pa-root.key"
SIGNER_CERT, SIGNER_KEY = "c2pa-signer.pem", "c2pa-signer.key"
ROOT_VALIDITY = timedelta(days=3650)
SIGNER_VALIDITY = timedelta(days=730)
# Backdated so a verifier whose clock runs a little behind ours still sees the certificate as valid.
BACKDATE = timedelta(hours=1)
# c2pa-rs 0.91 accepts emailProtection; documentSigning is the C2PA 2.x profile's own purpose but is
# refused on its own by that release's default EKU list, so the signer carries both.
SIGNER_EKUS = (ExtendedKeyUsageOID.EMAIL_PROTECTION, x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36"))


@dataclass(frozen=True)
class ProvenanceKeys:
    """PEM bytes for signing C2PA manifests: the chain (signer cert, then root), its key, the root; and the
    files they were read from (None for a set built in memory)."""

    chain_pem: bytes
    private_key_pem: bytes = field(repr=False)
    root_pem: bytes
    chain_path: Path | None = None
    key_path: Path | None = None
    root_cert_path: Path | None = None


def provenance_dir(settings: Settings) -> Path:
    """The secrets directory when it holds the C2PA signing certificate (a fleet), else data/keys."""
    if settings.secrets_dir and (Path(settings.secrets_dir) / SIGNER_CERT).exists():
        return Path(settings.secrets_dir)
    return settings.data_path / "keys"


def init_provenance_keys(settings: Settings, *, force: bool = False) -> ProvenanceKeys:
    """Create the root CA and signing certificate (keys mode 600) unless a usable set exists.

    Without `force` an existing root is kept, so files signed earlier stay trusted; only a missing or
    expired signing certificate is issued anew under it."""
    folder = provenance_dir(settings)
    have = {name: (folder / name).exists() for name in (ROOT_CERT, ROOT_KEY, SIGNER_CERT, SIGNER_KEY)}
    new_root = force or not (have[ROOT_CERT] and have[ROOT_KEY])
    files: dict[str, tuple[bytes, int]] = {}
    if new_root:
        if not force and (have[SIGNER_CERT] or have[SIGNER_KEY]):
            raise PolicyKeyError(f"{folder} holds a C2PA signing certificate but not the root that issued it; "
                                 "run `studio keys init --force` to make a new set")
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_cert = _make_root(root_key, settings.producer)
        files[ROOT_KEY] = (_key_pem(root_key), 0o600)
        files[ROOT_CERT] = (_cert_pem(root_cert), 0o644)
    else:
        root_key = _read_private_key(folder / ROOT_KEY)
        root_cert = _read_cert(folder / ROOT_CERT)
        if not _still_valid(root_cert):
            raise PolicyKeyError(f"C2PA root {folder / ROOT_CERT} expired on {root_cert.not_valid_after_utc:%Y-%m-%d}; "
                                 "run `studio keys init --force` and give readers the new root")
        if have[SIGNER_CERT] and have[SIGNER_KEY] and _still_valid(_read_cert(folder / SIGNER_CERT)):
            return load_provenance_keys(settings)
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer_cert = _make_signer(signer_key, root_cert, root_key, settings.producer)
    files[SIGNER_KEY] = (_key_pem(signer_key), 0o600)
    files[SIGNER_CERT] = (_cert_pem(signer_cert) + _cert_pem(root_cert), 0o644)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Every file is written to its temp name before any is renamed, so a failure leaves the old set whole.
    with ExitStack() as stack:
        for name, (data, mode) in files.items():
            tmp = stack.enter_context(atomic_path(folder / name))
            tmp.write_bytes(data)
            tmp.chmod(mode)
    return load_provenance_keys(settings)


def load_provenance_keys(settings: Settings) -> ProvenanceKeys:
    """Read and check the set made by `init_provenance_keys`; PolicyKeyError says what to run."""
    folder = provenance_dir(settings)
    try:
        chain_pem = (folder / SIGNER_CERT).read_bytes()
        key_pem = (folder / SIGNER_KEY).read_bytes()
        root_pem = (folder / ROOT_CERT).read_bytes()
    except FileNotFoundError as exc:
        raise MissingKeyError("C2PA provenance keys", Path(exc.filename)) from None
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        root = x509.load_pem_x509_certificate(root_pem)
    except ValueError as exc:
        raise PolicyKeyError(f"unreadable C2PA key file in {folder} ({exc}); run `studio keys init --force`") from None
    if chain[0].public_key().public_numbers() != key.public_key().public_numbers():
        raise PolicyKeyError(f"{folder / SIGNER_KEY} does not match {folder / SIGNER_CERT}; "
                             "run `studio keys init --force`")
    if chain[-1] != root:
        raise PolicyKeyError(f"{folder / SIGNER_CERT} does not end with the root in {folder / ROOT_CERT}; "
                             "run `studio keys init --force`")
    if not _still_valid(chain[0]):
        raise PolicyKeyError(f"C2PA signing certificate {folder / SIGNER_CERT} expired on "
                             f"{chain[0].not_valid_after_utc:%Y-%m-%d}; run `studio keys init` to issue a new one")
    return ProvenanceKeys(chain_pem=chain_pem, private_key_pem=key_pem, root_pem=root_pem,
                          chain_path=folder / SIGNER_CERT, key_path=folder / SIGNER_KEY,
                          root_cert_path=folder / ROOT_CERT)


def _make_root(key: ec.EllipticCurvePrivateKey, org: str) -> x509.Certificate:
    name = _name(f"{org} C2PA Root CA", org)
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + ROOT_VALIDITY)
        # path_length=0: this root signs end-entity certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _make_signer(key: ec.EllipticCurvePrivateKey, root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey,
                 org: str) -> x509.Certificate:
    now = datetime.now(UTC)
    # Never outlive the root: a chain whose root expired first would stop verifying early.
    not_after = min(now + SIGNER_VALIDITY, root.not_valid_after_utc)
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(_name(f"{org} C2PA Signer", org)).issuer_name(root.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(SIGNER_EKUS)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
        .sign(root_key, hashes.SHA256())
    )


def _name(common_name: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False,
               crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
                         crl_sign=crl_sign, encipher_only=False, decipher_only=False)


def _still_valid(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc > datetime.now(UTC)


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise PolicyKeyError(f"unreadable certificate {path} ({exc}); run `studio keys init --force`") from None


def _read_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise PolicyKeyError(f"unreadable key {path} ({exc}); run `studio keys init --force`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PolicyKeyError(f"{path} is a {type(key).__name__}, not an EC key; run `studio keys init --force`")
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
