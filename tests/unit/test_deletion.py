"""Deletion after revocation and its signed certificate (POLICY C5), studio/deletion.py."""

import base64
import copy
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from studio.config import Settings
from studio.deletion import (
    CertificateError,
    DeletedFile,
    DeletionCertificate,
    DeletionError,
    canonical_json,
    delete_files,
    plan_deletion,
    sign_certificate,
    verify_certificate,
)
from studio.keys import init_provenance_keys


@pytest.fixture
def keys(tmp_path):
    return init_provenance_keys(Settings(data_dir=str(tmp_path / "keys-a")))


@pytest.fixture
def other_keys(tmp_path):
    return init_provenance_keys(Settings(data_dir=str(tmp_path / "keys-b")))


@pytest.fixture
def data(tmp_path):
    """A data directory with an avatar bundle (nested), an upload and an archive that must stay."""
    root = tmp_path / "data"
    files = {
        "bundles/av1/manifest.json": b'{"v": 1}',
        "bundles/av1/frames/000.png": b"\x89PNG frame 0",
        "bundles/av1/frames/deep/001.png": b"\x89PNG frame 1" * 1000,
        "uploads/footage-av1.mp4": b"mp4 bytes" * 333,
        "archive/show1/00000001-ecs-0011223344556677.mp4": b"aired",
    }
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    (root / "bundles/av1/empty-cache").mkdir()
    return root, files


def certificate(deleted: list[DeletedFile], **changes) -> DeletionCertificate:
    fields = dict(
        id="cert-1", issued_at=datetime.now(UTC).replace(tzinfo=None), creator_id="cr-1", creator_name="Mia Chen",
        avatar_ids=["av1"], consent_id="co-1", reason="revoked", deleted=deleted,
        retained=[{"kind": "aired_segment", "produce_id": "ecs-0011223344556677", "sha256": "ab" * 32,
                   "why": "archived aired segment kept for audit (POLICY C6)"},
                  {"kind": "audit_log", "why": "append-only audit trail kept for 3 years (POLICY C6)"}],
        revoked_at=datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=5), off_air_seconds=0.8,
    )
    fields.update(changes)
    return DeletionCertificate(**fields)


# --- plan and delete ----------------------------------------------------------------------------
def test_plan_hashes_every_file_of_a_nested_tree(data):
    root, files = data
    planned = plan_deletion([root / "bundles/av1", root / "uploads/footage-av1.mp4"], root=root)
    expected = {rel: (len(c), hashlib.sha256(c).hexdigest()) for rel, c in files.items() if "archive" not in rel}
    assert {f.path: (f.size, f.sha256) for f in planned} == expected
    assert not any(f.missing or f.symlink for f in planned)


def test_plan_takes_paths_relative_to_the_root_and_lists_each_file_once(data):
    root, files = data
    planned = plan_deletion(["bundles/av1", root / "bundles/av1/manifest.json"], root=root)
    assert sorted(f.path for f in planned) == sorted(r for r in files if r.startswith("bundles/"))


@pytest.mark.parametrize("bad", ["../elsewhere", "/etc/passwd", "bundles/../../elsewhere", ".", ""])
def test_paths_outside_the_root_are_refused(data, bad):
    root, _ = data
    with pytest.raises(DeletionError, match="not inside the data directory"):
        plan_deletion([bad], root=root)


def test_a_symlinked_folder_cannot_lead_out_of_the_root(data, tmp_path):
    root, _ = data
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (root / "uploads/escape").symlink_to(outside)
    with pytest.raises(DeletionError, match="not inside the data directory"):
        plan_deletion([root / "uploads/escape/keep.txt"], root=root)


def test_symlinks_are_deleted_as_links_never_followed(data, tmp_path):
    root, _ = data
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (root / "bundles/av1/link").symlink_to(outside)
    planned = plan_deletion([root / "bundles/av1"], root=root)
    link = next(f for f in planned if f.path == "bundles/av1/link")
    assert link.symlink and link.sha256 is None
    assert not any("keep.txt" in f.path for f in planned)
    delete_files(planned)
    assert (outside / "keep.txt").read_text() == "mine"
    assert not (root / "bundles/av1").exists()


def test_delete_removes_the_files_and_the_emptied_directories(data):
    root, _ = data
    planned = plan_deletion([root / "bundles/av1", root / "uploads/footage-av1.mp4"], root=root)
    done = delete_files(planned)
    assert done == planned and not any(f.missing for f in done)
    assert not (root / "bundles/av1").exists()  # nested and empty folders included
    assert (root / "bundles").is_dir() and (root / "uploads").is_dir()  # only what was planned goes
    assert (root / "archive/show1/00000001-ecs-0011223344556677.mp4").exists()


def test_a_file_already_gone_is_recorded_as_missing(data):
    root, _ = data
    (root / "uploads/footage-av1.mp4").unlink()  # a retry after a partial deletion
    planned = plan_deletion([root / "uploads/footage-av1.mp4", root / "bundles/av1/manifest.json"], root=root)
    assert planned[0].missing and planned[0].sha256 is None and planned[0].path == "uploads/footage-av1.mp4"
    os.remove(root / "bundles/av1/manifest.json")  # vanished between planning and deleting
    done = delete_files(planned)
    assert [f.missing for f in done] == [True, True]
    assert done[1].sha256 == planned[1].sha256  # what it was when planned is still said


def test_a_directory_that_gained_a_file_after_planning_keeps_it(data):
    root, _ = data
    planned = plan_deletion([root / "bundles/av1"], root=root)
    (root / "bundles/av1/frames/late.png").write_bytes(b"late")
    delete_files(planned)
    assert (root / "bundles/av1/frames/late.png").exists()
    assert not (root / "bundles/av1/manifest.json").exists()


# --- certificate --------------------------------------------------------------------------------
def test_certificate_json_is_canonical_and_complete(data):
    root, _ = data
    cert = certificate(plan_deletion([root / "uploads/footage-av1.mp4"], root=root))
    text = cert.to_json()
    body = json.loads(text)
    assert text == canonical_json(body) and list(body) == sorted(body)
    assert '", "' not in text and '": ' not in text  # no whitespace between tokens
    assert body["deleted"][0] == {"path": "uploads/footage-av1.mp4", "size": 9 * 333, "missing": False,
                                  "symlink": False, "sha256": hashlib.sha256(b"mp4 bytes" * 333).hexdigest()}
    assert body["issued_at"].endswith("+00:00") and body["reason"] == "revoked"
    assert {r["kind"] for r in body["retained"]} == {"aired_segment", "audit_log"}
    assert str(root) not in text  # paths are relative to the data directory


def test_certificate_refuses_unknown_reason_and_unexplained_retention():
    with pytest.raises(ValueError, match="reason 'bored'"):
        certificate([], reason="bored")
    with pytest.raises(ValueError, match="does not say why"):
        certificate([], retained=[{"kind": "audit_log"}])


def test_signed_certificate_verifies(data, keys):
    """POLICY C5: the deletion certificate is signed and verifies under the project's root."""
    root, _ = data
    cert = certificate(delete_files(plan_deletion([root / "bundles/av1"], root=root)))
    signed = sign_certificate(cert, private_key_pem=keys.private_key_pem, chain_pem=keys.chain_pem)
    assert signed["algorithm"] == "ES256" and len(base64.b64decode(signed["signature"])) == 64
    assert signed["certificate"] == json.loads(cert.to_json())
    verify_certificate(signed, root_pem=keys.root_pem)
    verify_certificate(json.loads(json.dumps(signed)), root_pem=keys.root_pem)  # as read back from a file


@pytest.mark.parametrize("edit", [
    lambda c: c.update(creator_name="Someone Else"),
    lambda c: c["deleted"][0].update(sha256="0" * 64),
    lambda c: c["retained"].pop(),
    lambda c: c.update(off_air_seconds=0.5),
], ids=["name", "hash", "retained", "off-air"])
def test_edited_certificate_fails(data, keys, edit):
    root, _ = data
    signed = sign_certificate(certificate(plan_deletion([root / "bundles/av1"], root=root)),
                              private_key_pem=keys.private_key_pem, chain_pem=keys.chain_pem)
    edited = copy.deepcopy(signed)
    edit(edited["certificate"])
    with pytest.raises(CertificateError, match="edited after signing"):
        verify_certificate(edited, root_pem=keys.root_pem)


def test_another_root_fails(keys, other_keys):
    signed = sign_certificate(certificate([]), private_key_pem=keys.private_key_pem, chain_pem=keys.chain_pem)
    with pytest.raises(CertificateError, match="does not lead to it"):
        verify_certificate(signed, root_pem=other_keys.root_pem)


def test_a_chain_swapped_for_another_fails(keys, other_keys):
    # Signed with our key, but the chain claims another signer issued by the trusted root.
    signed = sign_certificate(certificate([]), private_key_pem=keys.private_key_pem, chain_pem=keys.chain_pem)
    forged = sign_certificate(certificate([]), private_key_pem=other_keys.private_key_pem,
                              chain_pem=other_keys.chain_pem)
    with pytest.raises(CertificateError, match="edited after signing, or signed with another key"):
        verify_certificate({**forged, "chain": signed["chain"]}, root_pem=keys.root_pem)


def test_broken_signature_fails(keys):
    signed = sign_certificate(certificate([]), private_key_pem=keys.private_key_pem, chain_pem=keys.chain_pem)
    with pytest.raises(CertificateError, match="not base64"):
        verify_certificate({**signed, "signature": "%%%"}, root_pem=keys.root_pem)
    with pytest.raises(CertificateError, match="not the 64 of ES256"):
        verify_certificate({**signed, "signature": base64.b64encode(b"short").decode()}, root_pem=keys.root_pem)
    with pytest.raises(CertificateError, match="is not ES256"):
        verify_certificate({**signed, "algorithm": "none"}, root_pem=keys.root_pem)
    with pytest.raises(CertificateError, match="needs certificate, signature"):
        verify_certificate({"certificate": signed["certificate"]}, root_pem=keys.root_pem)


def old_pki() -> tuple[bytes, bytes, bytes]:
    """A root made 60 days ago and a signing certificate under it whose validity ended a day ago:
    (chain PEM, signer key PEM, root PEM)."""
    now = datetime.now(UTC)

    def issue(subject: str, key, issuer: x509.Name, issuer_key, start, end, ca: bool) -> x509.Certificate:
        return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
                .sign(issuer_key, hashes.SHA256()))

    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Old root")])
    root = issue("Old root", root_key, root_name, root_key, now - timedelta(days=60), now + timedelta(days=60), True)
    signer = issue("Expired signer", key, root_name, root_key, now - timedelta(days=30), now - timedelta(days=1),
                   False)
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return signer.public_bytes(pem) + root.public_bytes(pem), key_pem, root.public_bytes(pem)


def test_signing_outside_the_signer_validity_is_refused():
    chain_pem, key_pem, _ = old_pki()
    with pytest.raises(CertificateError, match="is valid from .* not at"):
        sign_certificate(certificate([]), private_key_pem=key_pem, chain_pem=chain_pem)


def test_certificate_stays_verifiable_after_the_signer_expires_but_not_one_dated_after():
    chain_pem, key_pem, root_pem = old_pki()
    issued_in_term = datetime.now(UTC) - timedelta(days=3)
    signed = sign_certificate(certificate([], issued_at=issued_in_term, revoked_at=None),
                              private_key_pem=key_pem, chain_pem=chain_pem)
    verify_certificate(signed, root_pem=root_pem)
    # Signed after expiry with the stale key (sign_certificate refuses, an attacker would not): rejected.
    body = certificate([], issued_at=datetime.now(UTC), revoked_at=None).to_dict()
    key = serialization.load_pem_private_key(key_pem, None)
    r, s = decode_dss_signature(key.sign(canonical_json(body).encode(), ec.ECDSA(hashes.SHA256())))
    late = {**signed, "certificate": body,
            "signature": base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode()}
    with pytest.raises(CertificateError, match="Expired signer is valid from .* not at"):
        verify_certificate(late, root_pem=root_pem)


def test_a_key_that_does_not_match_the_chain_is_refused(keys, other_keys):
    with pytest.raises(CertificateError, match="does not match the first certificate"):
        sign_certificate(certificate([]), private_key_pem=other_keys.private_key_pem, chain_pem=keys.chain_pem)

