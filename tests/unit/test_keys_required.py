"""Keys are made only by `studio keys init` (and the embedded stack's first run): loading a missing one names the
key and that command; keys from a secrets directory are used as they are; a role's schema check."""

from __future__ import annotations

import pytest

from studio.config import Settings
from studio.db import SchemaBehind, make_engine, require_current_schema, upgrade
from studio.keys import (
    SIGNER_CERT,
    MissingKeyError,
    embedded_redis_password,
    init_all_keys,
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
    stream_hex = (tmp_path / "first" / "keys" / "stream.key").read_text().strip()
    second = Settings(data_dir=str(tmp_path / "second"), secrets_dir=str(secrets), stream_key=stream_hex,
                      policy_key="p0licy-key-from-the-secrets-dir")
    require_keys(second)  # the second host makes nothing of its own
    assert load_stream_key(second) == load_stream_key(first)
    assert load_provenance_keys(second).root_pem == load_provenance_keys(first).root_pem
    assert not (tmp_path / "second").exists()


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
