"""C2PA provenance keys: our root CA and the signing certificate it issues (studio/keys.py)."""

import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from studio.config import Settings
from studio.keys import (
    ROOT_CERT,
    ROOT_KEY,
    SIGNER_CERT,
    SIGNER_KEY,
    PolicyKeyError,
    ProvenanceKeys,
    init_provenance_keys,
    load_provenance_keys,
    provenance_dir,
)

DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=str(tmp_path / "data"))


@pytest.fixture
def keys(settings):
    return init_provenance_keys(settings)


def certs(keys: ProvenanceKeys) -> tuple[x509.Certificate, x509.Certificate]:
    signer, *rest = x509.load_pem_x509_certificates(keys.chain_pem)
    return signer, x509.load_pem_x509_certificate(keys.root_pem)


def ext(cert: x509.Certificate, kind):
    return cert.extensions.get_extension_for_class(kind)


def test_files_are_made_under_data_keys_with_private_keys_mode_600(settings, keys):
    folder = settings.data_path / "keys"
    assert provenance_dir(settings) == folder
    modes = {name: stat.S_IMODE((folder / name).stat().st_mode) for name in (ROOT_KEY, SIGNER_KEY)}
    assert modes == {ROOT_KEY: 0o600, SIGNER_KEY: 0o600}
    assert (keys.chain_path, keys.key_path, keys.root_cert_path) == (
        folder / SIGNER_CERT, folder / SIGNER_KEY, folder / ROOT_CERT)
    assert (folder / SIGNER_CERT).read_bytes() == keys.chain_pem
    assert (folder / ROOT_CERT).read_bytes() == keys.root_pem
    assert (folder / SIGNER_KEY).read_bytes() == keys.private_key_pem
    assert [p.name for p in folder.iterdir() if ".part" in p.name] == []  # no temp files left behind


def test_private_key_is_not_in_the_repr(keys):
    assert b"PRIVATE KEY" in keys.private_key_pem
    assert "PRIVATE" not in repr(keys)


def test_root_is_a_self_signed_ca_for_certificates_only(keys):
    _, root = certs(keys)
    assert root.version == x509.Version.v3
    assert root.subject == root.issuer
    bc = ext(root, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ext(root, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    root.verify_directly_issued_by(root)
    assert root.not_valid_after_utc - root.not_valid_before_utc > timedelta(days=9 * 365)


def test_signer_matches_the_c2pa_certificate_profile(keys):
    signer, root = certs(keys)
    assert signer.version == x509.Version.v3
    assert isinstance(signer.public_key(), ec.EllipticCurvePublicKey)
    assert signer.public_key().curve.name == "secp256r1"
    assert isinstance(signer.signature_hash_algorithm, hashes.SHA256)
    bc = ext(signer, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext(signer, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    ekus = set(ext(signer, x509.ExtendedKeyUsage).value)
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in ekus and DOCUMENT_SIGNING in ekus
    assert ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ekus  # c2pa refuses anyExtendedKeyUsage
    ski = ext(signer, x509.SubjectKeyIdentifier).value
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(signer.public_key()).digest
    aki = ext(signer, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(root, x509.SubjectKeyIdentifier).value.digest


def test_signer_is_issued_by_the_root_and_its_key_matches(keys):
    signer, root = certs(keys)
    assert signer.issuer == root.subject
    signer.verify_directly_issued_by(root)  # the signature verifies under the root's public key
    key = serialization.load_pem_private_key(keys.private_key_pem, password=None)
    assert key.public_key().public_numbers() == signer.public_key().public_numbers()
    chain = x509.load_pem_x509_certificates(keys.chain_pem)
    assert len(chain) == 2 and chain[1] == root  # signer first, then the root: the chain c2pa wants


def test_validity_starts_a_little_in_the_past(keys):
    signer, root = certs(keys)
    now = datetime.now(UTC)
    for cert in (signer, root):
        assert now - timedelta(days=1) < cert.not_valid_before_utc < now
    assert timedelta(days=700) < signer.not_valid_after_utc - now <= timedelta(days=731)
    assert signer.not_valid_after_utc <= root.not_valid_after_utc


def test_existing_keys_are_kept_without_force(settings, keys):
    assert init_provenance_keys(settings) == keys
    assert load_provenance_keys(settings) == keys


def test_force_replaces_root_and_signer(settings, keys):
    new = init_provenance_keys(settings, force=True)
    assert new.root_pem != keys.root_pem
    assert new.private_key_pem != keys.private_key_pem
    assert load_provenance_keys(settings) == new


def test_a_missing_signer_is_reissued_under_the_existing_root(settings, keys):
    (provenance_dir(settings) / SIGNER_KEY).unlink()
    new = init_provenance_keys(settings)
    assert new.root_pem == keys.root_pem
    assert new.private_key_pem != keys.private_key_pem
    signer, root = certs(new)
    signer.verify_directly_issued_by(root)


def test_a_signer_without_its_root_is_not_silently_replaced(settings, keys):
    (provenance_dir(settings) / ROOT_KEY).unlink()
    with pytest.raises(PolicyKeyError, match=r"studio keys init --force"):
        init_provenance_keys(settings)
    assert (provenance_dir(settings) / SIGNER_KEY).read_bytes() == keys.private_key_pem


def test_load_without_keys_says_what_to_run(settings):
    with pytest.raises(PolicyKeyError) as err:
        load_provenance_keys(settings)
    message = str(err.value)
    assert "run `studio keys init`" in message
    assert str(settings.data_path / "keys") in message


@pytest.mark.parametrize("name", [ROOT_CERT, SIGNER_CERT, SIGNER_KEY])
def test_load_names_the_missing_file(settings, keys, name):
    (provenance_dir(settings) / name).unlink()
    with pytest.raises(PolicyKeyError, match="studio keys init") as err:
        load_provenance_keys(settings)
    assert str(provenance_dir(settings) / name) in str(err.value)


def test_load_refuses_a_key_that_does_not_match_the_certificate(settings, keys, tmp_path):
    other = init_provenance_keys(Settings(data_dir=str(tmp_path / "other")))
    (provenance_dir(settings) / SIGNER_KEY).write_bytes(other.private_key_pem)
    with pytest.raises(PolicyKeyError, match="does not match"):
        load_provenance_keys(settings)


def test_load_refuses_a_garbled_file(settings, keys):
    (provenance_dir(settings) / SIGNER_CERT).write_text("not a certificate\n")
    with pytest.raises(PolicyKeyError, match="--force"):
        load_provenance_keys(settings)
