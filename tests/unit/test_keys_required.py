"""Keys are made only by `studio keys init` (and the embedded stack's first run): loading a missing one names the
key and that command; keys from a secrets directory are used as they are; a role's schema check."""

from __future__ import annotations

import pytest

from studio.config import Settings
from studio.db import SchemaBehind, make_engine, require_current_schema, upgrade
from studio.keys import (
    SIGNER_CERT,
    MissingKeyError,
    PolicyKeyError,
    embedded_redis_password,
    init_all_keys,
    load_audit_keyring,
    load_provenance_keys,
    load_stream_key,
    require_keys,
)


def test_require_keys_names_the_missing_key_and_the_command(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    with pytest.raises(MissingKeyError, match=r"no policy key .*run `studio keys init`"):
        require_keys(settings)
    assert not (tmp_path / "data").exists(), "checking for keys made something"
    init_all_keys(settings)
    require_keys(settings)
    (tmp_path / "data" / "keys" / "stream.key").unlink()
    with pytest.raises(MissingKeyError, match=r"no stream key .*studio keys init"):
        require_keys(settings)
    init_all_keys(settings)
    (tmp_path / "data" / "keys" / "audit-stream.key").unlink()
    with pytest.raises(MissingKeyError, match=r"no stream audit key .*studio keys init"):
        require_keys(settings)
    require_keys(settings, audit_roles=("control", "render"))  # a process of those roles needs only theirs
    (tmp_path / "data" / "keys" / SIGNER_CERT).unlink()
    with pytest.raises(MissingKeyError, match=r"no C2PA provenance keys .*studio keys init"):
        require_keys(settings)


def test_keys_from_a_secrets_directory_need_no_key_files(tmp_path):
    first = Settings(data_dir=str(tmp_path / "first"))
    init_all_keys(first)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("c2pa-signer.pem", "c2pa-signer.key", "c2pa-root.pem"):
        (secrets / name).write_bytes((tmp_path / "first" / "keys" / name).read_bytes())
    # A render host: its role's audit key only.
    (secrets / "audit-render.key").write_bytes((tmp_path / "first" / "keys" / "audit-render.key").read_bytes())
    stream_hex = (tmp_path / "first" / "keys" / "stream.key").read_text().strip()
    second = Settings(data_dir=str(tmp_path / "second"), secrets_dir=str(secrets), stream_key=stream_hex,
                      policy_key="p0licy-key-from-the-secrets-dir")
    require_keys(second, audit_roles=("render",))  # the second host makes nothing of its own
    with pytest.raises(MissingKeyError, match="no control audit key"):
        require_keys(second)
    assert load_audit_keyring(second, ("render",)) == load_audit_keyring(first, ("render",))
    assert load_stream_key(second) == load_stream_key(first)
    assert load_provenance_keys(second).root_pem == load_provenance_keys(first).root_pem
    assert not (tmp_path / "second").exists()


def test_audit_keys_are_made_once_with_mode_600_and_never_replaced(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    init_all_keys(settings)
    files = {role: tmp_path / "data" / "keys" / f"audit-{role}.key" for role in ("control", "render", "stream",
                                                                                  "ingest", "archive")}
    before = {role: path.read_text() for role, path in files.items()}
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in files.values())
    assert len(set(before.values())) == 5, "two roles share a key"
    init_all_keys(settings, force=True)  # a new key would make every event it signed read as forged
    assert {role: path.read_text() for role, path in files.items()} == before
    files["render"].write_text("not a key")
    with pytest.raises(PolicyKeyError, match="audit key file .*audit-render.key does not hold 64 hex digits"):
        require_keys(settings)


def test_embedded_redis_password_is_made_once_with_mode_600(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    pw = embedded_redis_password(settings)
    path = tmp_path / "data" / "keys" / "redis.password"
    assert len(pw) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert embedded_redis_password(settings) == pw
    assert embedded_redis_password(Settings(data_dir=str(tmp_path / "data"),
                                            services={"redis_password": "given-pw"})) == "given-pw"


def test_schema_check_refuses_a_database_behind_and_names_the_command(tmp_path):
    url = f"sqlite:///{tmp_path / 'studio.db'}"
    engine = make_engine(url)
    with pytest.raises(SchemaBehind, match=r"is at no schema.*run `studio db upgrade` first"):
        require_current_schema(engine)
    upgrade(url)
    require_current_schema(engine)
    engine.dispose()
