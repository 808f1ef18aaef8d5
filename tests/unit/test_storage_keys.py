"""Atomic writes (invariant 5) and the policy key file."""

import hashlib
import json
import re
import stat

import pytest

from studio.config import Settings
from studio.keys import PolicyKeyError, init_key, key_file, load_key
from studio.storage import DataDir, atomic_dir, atomic_path, sha256_file, write_json_atomic


class Boom(Exception):
    pass


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".part" in p.name)


# --- atomic_path --------------------------------------------------------------------------------
def test_atomic_path_publishes_the_file_when_the_block_succeeds(tmp_path):
    final = tmp_path / "segments" / "ch" / "00000001-abc.mp4"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp != final
        tmp.write_bytes(b"payload")
        assert not final.exists()  # nothing visible under the final name until the block ends
    assert final.read_bytes() == b"payload"
    assert leftovers(final.parent) == []


def test_atomic_path_leaves_nothing_when_the_block_raises(tmp_path):
    final = tmp_path / "out.mp4"
    with pytest.raises(Boom):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half a segm")
            raise Boom
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_the_old_file_when_a_rewrite_fails(tmp_path):
    final = tmp_path / "state.json"
    final.write_text("old")
    with pytest.raises(Boom):
        with atomic_path(final) as tmp:
            tmp.write_text("new but broken")
            raise Boom
    assert final.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_atomic_path_replaces_an_existing_file_on_success(tmp_path):
    final = tmp_path / "state.json"
    final.write_text("old")
    with atomic_path(final) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_json_atomic_round_trips(tmp_path):
    path = tmp_path / "deep" / "cert.json"
    write_json_atomic(path, {"b": [1, 2], "a": "x"})
    assert json.loads(path.read_text()) == {"a": "x", "b": [1, 2]}
    assert leftovers(path.parent) == []


# --- atomic_dir ---------------------------------------------------------------------------------
def test_atomic_dir_publishes_the_directory_when_the_block_succeeds(tmp_path):
    final = tmp_path / "bundles" / "av-1"
    with atomic_dir(final) as tmp:
        assert tmp.is_dir() and tmp.parent == final.parent
        (tmp / "manifest.json").write_text("{}")
        (tmp / "mouth").mkdir()
        (tmp / "mouth" / "0.png").write_bytes(b"png")
        assert not final.exists()
    assert (final / "manifest.json").read_text() == "{}"
    assert (final / "mouth" / "0.png").read_bytes() == b"png"
    assert leftovers(final.parent) == []


def test_atomic_dir_leaves_nothing_when_the_block_raises(tmp_path):
    final = tmp_path / "bundles" / "av-1"
    with pytest.raises(Boom):
        with atomic_dir(final) as tmp:
            (tmp / "manifest.json").write_text("{}")
            raise Boom
    assert not final.exists()
    assert list(final.parent.iterdir()) == []


def test_atomic_dir_never_overwrites_an_existing_directory(tmp_path):
    final = tmp_path / "av-1"
    final.mkdir()
    (final / "keep.txt").write_text("original")
    with pytest.raises(FileExistsError):
        with atomic_dir(final) as tmp:
            (tmp / "keep.txt").write_text("replacement")
    assert (final / "keep.txt").read_text() == "original"
    assert leftovers(tmp_path) == []


# --- data dir helpers ---------------------------------------------------------------------------
def test_data_dir_ensure_creates_the_layout(tmp_path):
    data = DataDir(tmp_path / "data").ensure()
    for d in (data.bundles, data.segments, data.uploads, data.logs, data.run, data.keys):
        assert d.is_dir() and d.parent == data.root


def test_segment_paths_sort_in_air_order(tmp_path):
    data = DataDir(tmp_path)
    seqs = [10, 2, 100, 1, 99999]
    by_name = sorted(seqs, key=lambda seq: data.segment_path("ch", seq, "p").name)
    assert by_name == sorted(seqs)
    assert data.segment_path("ch", 1, "p").parent == data.segments / "ch"


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    payload = bytes(range(256)) * 5000
    path.write_bytes(payload)
    assert sha256_file(path, chunk=4096) == hashlib.sha256(payload).hexdigest()


# --- policy key ---------------------------------------------------------------------------------
def settings(tmp_path, **kw) -> Settings:
    return Settings(data_dir=str(tmp_path / "data"), **kw)


def test_init_key_makes_a_private_file_of_64_hex_chars(tmp_path):
    s = settings(tmp_path)
    path = init_key(s)
    assert path == key_file(s) == s.data_path / "keys" / "policy.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", path.read_text())
    assert [p.name for p in path.parent.iterdir()] == ["policy.key"]  # no temp file left behind


def test_init_key_does_not_overwrite_without_force(tmp_path):
    s = settings(tmp_path)
    first = init_key(s).read_text()
    assert init_key(s).read_text() == first
    replaced = init_key(s, force=True).read_text()
    assert replaced != first
    assert re.fullmatch(r"[0-9a-f]{64}", replaced)
    assert stat.S_IMODE(key_file(s).stat().st_mode) == 0o600


def test_load_key_reads_the_key_file(tmp_path):
    s = settings(tmp_path)
    path = init_key(s)
    assert load_key(s) == path.read_text().encode()


def test_load_key_prefers_the_configured_key(tmp_path):
    configured = "configured-secret-0123456789"
    s = settings(tmp_path, policy_key=configured)
    init_key(s)
    assert load_key(s) == configured.encode()


def test_load_key_without_any_key_names_the_expected_path(tmp_path):
    s = settings(tmp_path)
    with pytest.raises(PolicyKeyError) as exc:
        load_key(s)
    assert str(key_file(s)) in str(exc.value)
    assert "studio keys init" in str(exc.value)


def test_load_key_refuses_a_truncated_key_file(tmp_path):
    s = settings(tmp_path)
    path = key_file(s)
    path.parent.mkdir(parents=True)
    path.write_text("abc123\n")
    with pytest.raises(PolicyKeyError, match="too short"):
        load_key(s)
