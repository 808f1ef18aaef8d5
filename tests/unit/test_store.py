"""The media store contract, run against both backends: the file store and S3 (moto's server on loopback)."""

from __future__ import annotations

import io
import os
import subprocess
import threading
from pathlib import Path

import pytest

from studio.config import Settings
from studio.storage import temp_beside
from studio.store import STALE_FILL_SECONDS, FileStore, LocalCache, StoreError, StoreKeyError, check_key, purge_cached
from studio.stores import S3Store, open_store, store_for

MB = 1 << 20


def s3_settings(s3_server, bucket: str, tmp_path: Path, **over) -> Settings:
    store = {"url": f"s3://{bucket}/media", "endpoint_url": s3_server["endpoint_url"], "region": "us-east-1",
             "path_style": True, "access_key_id": s3_server["access_key_id"],
             "secret_access_key": s3_server["secret_access_key"], "cache_dir": str(tmp_path / "cache"),
             "cache_max_mb": 1} | over
    return Settings(data_dir=str(tmp_path / "data"), store=store)


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        (tmp_path / "shared").mkdir()
        settings = Settings(data_dir=str(tmp_path / "data"), store={"url": f"file://{tmp_path / 'shared'}",
                                                                     "cache_dir": str(tmp_path / "cache"),
                                                                     "cache_max_mb": 1})
    else:
        settings = s3_settings(request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket"), tmp_path)
    st = store_for(settings)
    st.check()
    return st


def test_put_get_read_list(store, tmp_path):
    src = tmp_path / "seg.mp4"
    src.write_bytes(os.urandom(300_000))
    store.put("segments/ch1/00000001-p1-a1.mp4", src)
    store.put_bytes("segments/ch1/00000001-p1-a1.vtt", b"WEBVTT\n")
    store.put_bytes("bundles/av1/meta.json", b"{}")
    assert store.exists("segments/ch1/00000001-p1-a1.mp4") and not store.exists("segments/ch1/nope.mp4")
    assert store.size("segments/ch1/00000001-p1-a1.mp4") == 300_000
    assert store.read("segments/ch1/00000001-p1-a1.vtt") == b"WEBVTT\n"
    assert store.list("segments/ch1/") == ["segments/ch1/00000001-p1-a1.mp4", "segments/ch1/00000001-p1-a1.vtt"]
    assert store.list() == sorted(store.list("segments/") + store.list("bundles/"))
    local = store.get("segments/ch1/00000001-p1-a1.mp4")
    assert local.read_bytes() == src.read_bytes()
    assert local.is_relative_to(store.cache.root), "read through the host's cache"
    store.put_bytes("segments/ch1/00000001-p1-a1.vtt", b"WEBVTT\n\nnew")  # overwrite is whole
    assert store.read("segments/ch1/00000001-p1-a1.vtt") == b"WEBVTT\n\nnew"
    with pytest.raises(FileNotFoundError, match="segments/ch1/missing.mp4"):
        store.get("segments/ch1/missing.mp4")
    assert not list(store.cache.root.rglob("*.part")), "a failed fill leaves no half file in the cache"


def test_delete_reports_found_and_missing(store):
    for k in ("bundles/av1/a.bin", "bundles/av1/sub/b.bin", "bundles/av2/c.bin"):
        store.put_bytes(k, b"x")
    assert store.delete("bundles/av2/c.bin") is True
    assert store.delete("bundles/av2/c.bin") is False
    deleted, missing = store.delete_keys(["bundles/av1/a.bin", "bundles/av1/gone.bin"])
    assert (deleted, missing) == (["bundles/av1/a.bin"], ["bundles/av1/gone.bin"])
    assert store.delete_prefix("bundles/av1/") == (["bundles/av1/sub/b.bin"], [])
    assert store.list() == []


@pytest.mark.parametrize("bad", ["../etc/passwd", "/abs/key", "a\\b", "a//b", "a/./b", "a/", "", "seg\x00.mp4"])
def test_bad_keys_are_refused(store, bad):
    with pytest.raises(StoreKeyError, match="store key"):
        store.put_bytes(bad, b"x")
    with pytest.raises(StoreKeyError):
        store.get(bad)
    with pytest.raises(StoreKeyError):
        store.delete(bad)


def test_check_key_names_the_key():
    with pytest.raises(StoreKeyError, match=r"'segments/\.\./x'"):
        check_key("segments/../x")
    assert check_key("segments/ch/1.mp4") == "segments/ch/1.mp4"


def test_cache_evicts_least_recently_used_at_the_bound(store):
    assert store.cache.max_bytes == MB
    for i in range(4):
        store.put_bytes(f"segments/ch/{i}.mp4", bytes([i]) * 300_000)
    for i in range(3):
        store.get(f"segments/ch/{i}.mp4")
    os.utime(store.cache.path("segments/ch/1.mp4"), (1, 1))  # 1 is the least recently used ...
    os.utime(store.cache.path("segments/ch/0.mp4"), (2, 2))
    store.get("segments/ch/0.mp4")  # ... 0 is used again (a hit refreshes it)
    store.get("segments/ch/3.mp4")  # 4 x 300 kB > 1 MB: one goes
    assert store.cache.lookup("segments/ch/1.mp4") is None
    assert all(store.cache.lookup(f"segments/ch/{i}.mp4") for i in (0, 2, 3))
    assert store.cache.used_bytes() <= MB
    assert store.get("segments/ch/1.mp4").read_bytes() == bytes([1]) * 300_000  # filled again from the store


def test_cache_fills_are_atomic_across_threads(store):
    store.put_bytes("bundles/av/base.mp4", os.urandom(400_000))
    want = store.read("bundles/av/base.mp4")
    seen, errors = [], []

    def reader():
        try:
            seen.append(store.get("bundles/av/base.mp4").read_bytes() == want)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and seen == [True] * 6


def test_fills_a_dead_process_left_are_removed_once_stale(store):
    """A process killed mid-fill leaves its temp file (and boto3's download file beside it) in the cache: no entry,
    so never evicted or counted. The next fill removes those untouched for STALE_FILL_SECONDS; a fill in flight
    now, and cached files however old, stay."""
    cache = store.cache
    store.put_bytes("segments/ch/0.mp4", b"kept")
    store.get("segments/ch/0.mp4")
    os.utime(cache.path("segments/ch/0.mp4"), (1, 1))  # an old cached file is an entry: the bound decides
    dead = temp_beside(cache.path("segments/ch/1.mp4"))
    side = dead.with_name(dead.name + ".9aF03b7C")
    live = temp_beside(cache.path("segments/ch/2.mp4"))
    for p, data in ((dead, b"half"), (side, b"half of a download"), (live, b"writing")):
        p.write_bytes(data)
    old = os.stat(live).st_mtime - STALE_FILL_SECONDS - 5
    for p in (dead, side):
        os.utime(p, (old, old))
    store.put_bytes("segments/ch/3.mp4", b"new")
    store.get("segments/ch/3.mp4")  # a fill: it sweeps
    assert not dead.exists() and not side.exists()
    assert live.exists() and cache.lookup("segments/ch/0.mp4") and cache.lookup("segments/ch/3.mp4")


def test_purge_cached_removes_keys_from_every_cache(store, tmp_path):
    store.put_bytes("segments/ch/1.mp4", b"1")
    store.put_bytes("bundles/av/x.bin", b"2")
    store.get("segments/ch/1.mp4")
    store.get("bundles/av/x.bin")
    other = LocalCache(tmp_path / "other-cache", MB)
    other.fill("bundles/av/x.bin", lambda p: p.write_bytes(b"2"))
    removed = purge_cached(["segments/ch/1.mp4", "bundles/av/"], [store.cache.root, other.root, tmp_path / "none"])
    assert sorted(removed) == ["bundles/av/x.bin", "bundles/av/x.bin", "segments/ch/1.mp4"]
    assert not store.cache.lookup("segments/ch/1.mp4") and not other.lookup("bundles/av/x.bin")


# --- S3: what the server refuses ----------------------------------------------------------------------------------
def test_s3_missing_bucket_names_the_setting(s3_server, tmp_path):
    st = store_for(s3_settings(s3_server, "no-such-bucket-here", tmp_path))
    with pytest.raises(StoreError, match="store.url: bucket 'no-such-bucket-here'.* does not exist"):
        st.check()
    with pytest.raises(StoreError, match="store.url"):
        st.put_bytes("segments/a.mp4", b"x")


def test_s3_wrong_credentials_name_the_setting_not_the_secret(s3_server, s3_bucket, tmp_path):
    wrong_secret = "not-the-secret-0123456789"
    for over in ({"secret_access_key": wrong_secret}, {"access_key_id": "AKIANOSUCHKEY0000000"}):
        st = store_for(s3_settings(s3_server, s3_bucket, tmp_path, **over))
        with pytest.raises(StoreError, match="store.access_key_id / store.secret_access_key") as err:
            st.check()
        assert wrong_secret not in str(err.value) and s3_server["secret_access_key"] not in str(err.value)
        with pytest.raises(StoreError, match="refused the credentials"):
            st.put_bytes("segments/a.mp4", b"x")


def test_s3_unreachable_endpoint_names_the_setting(tmp_path):
    st = store_for(Settings(data_dir=str(tmp_path), store={"url": "s3://studio-media", "endpoint_url":
                                                             "http://127.0.0.1:9", "access_key_id": "a",
                                                             "secret_access_key": "b"}))
    with pytest.raises(StoreError, match="store.endpoint_url"):
        st.check()


class FailingReader(io.RawIOBase):
    """A source that fails after `limit` bytes, as a disk or a network would mid-upload."""

    def __init__(self, limit: int):
        self.left = limit

    def readable(self):
        return True

    def readinto(self, b):
        if self.left <= 0:
            raise OSError("source failed mid-upload")
        n = min(len(b), self.left)
        b[:n] = b"\x01" * n
        self.left -= n
        return n


@pytest.mark.parametrize("threshold", [64 * MB, 5 * MB], ids=["single-put", "multipart"])
def test_s3_upload_failing_midway_leaves_no_key(s3_server, s3_bucket, tmp_path, threshold):
    st = store_for(s3_settings(s3_server, s3_bucket, tmp_path))
    st.transfer.multipart_threshold = threshold
    st.transfer.multipart_chunksize = 5 * MB
    with pytest.raises((OSError, StoreError)):
        st.put_stream("segments/ch/half.mp4", io.BufferedReader(FailingReader(7 * MB)))
    assert not st.exists("segments/ch/half.mp4") and st.list("segments/") == []
    uploads = st.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert uploads == [], "a failed multipart upload is aborted"


# --- file store: a disk that fills up ----------------------------------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_file_store_full_disk_leaves_nothing_half_written(tiny_fs, tmp_path):
    st = FileStore(tiny_fs)
    st.put_bytes("segments/ch/small.mp4", b"x" * 1000)
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(2 * MB))
    with pytest.raises(StoreError, match=r"store.url: writing segments/ch/big.mp4 .*nothing was written") as err:
        st.put("segments/ch/big.mp4", big)
    assert err.value.category == "full"
    assert st.list() == ["segments/ch/small.mp4"]
    assert not [p for p in tiny_fs.rglob("*") if p.is_file() and p.name != "small.mp4"], "no temp file left"


def test_file_store_check_reports_too_little_free_space(tiny_fs, tmp_path):
    with pytest.raises(StoreError, match=r"store.url: directory .* has 1 MiB free, under the 64 MiB") as err:
        FileStore(tiny_fs).check()
    assert err.value.category == "full"
    FileStore(tmp_path).check()  # the test machine's disk has room
    with pytest.raises(StoreError, match="does not exist") as err:
        FileStore(tmp_path / "gone").check()
    assert err.value.category == "missing"


def test_default_store_is_the_data_dir_without_cache(tmp_path):
    st = open_store(Settings(data_dir=str(tmp_path)))
    assert isinstance(st, FileStore) and st.root == tmp_path.resolve() and st.cache is None
    st.put_bytes("segments/ch/1.mp4", b"1")
    assert st.get("segments/ch/1.mp4") == tmp_path.resolve() / "segments/ch/1.mp4"
    assert open_store(Settings(data_dir=str(tmp_path))) is st


def test_unknown_scheme_is_refused(tmp_path):
    with pytest.raises(StoreError, match="store.url: unknown scheme 'ftp'"):
        store_for(Settings(data_dir=str(tmp_path), store={"url": "ftp://host/x"}))


def test_store_settings_from_the_environment(tmp_path):
    from studio.config import load_settings

    s = load_settings(env={"STUDIO_STORE__URL": "s3://b/p", "STUDIO_STORE__SECRET_ACCESS_KEY": "s3cr3t-value",
                           "STUDIO_STORE__CACHE_MAX_MB": "64", "STUDIO_STORE__PATH_STYLE": "true"})
    assert (s.store.url, s.store.cache_max_mb, s.store.path_style) == ("s3://b/p", 64, True)
    assert "s3cr3t-value" not in repr(s.store)
    with pytest.raises(StoreError, match="store.access_key_id and store.secret_access_key: set both"):
        store_for(s)
    s = load_settings(env={"STUDIO_STORE__URL": "s3://b/p", "STUDIO_STORE__SECRET_ACCESS_KEY": "s3cr3t-value",
                           "STUDIO_STORE__ACCESS_KEY_ID": "AKIA0"})
    assert isinstance(store_for(s), S3Store)


def test_store_deletion_plan_hashes_then_reports_deleted_and_missing_apart(store):
    import hashlib

    from studio.deletion import delete_from_store, plan_store_deletion

    store.put_bytes("bundles/av1/base.mp4", b"face" * 1000)
    store.put_bytes("bundles/av1/units.json", b"{}")
    store.put_bytes("segments/ch/00000001-p1-a1.mp4", b"seg")
    store.put_bytes("segments/ch/00000009-other-a1.mp4", b"not the clone's")
    planned = plan_store_deletion(store, ["bundles/av1/", "segments/ch/00000001-p1-a1.mp4",
                                          "segments/ch/00000001-p1-a1.vtt", "consents/c1/"])
    by_key = {f.path: f for f in planned}
    assert by_key["bundles/av1/base.mp4"].sha256 == hashlib.sha256(b"face" * 1000).hexdigest()
    assert by_key["bundles/av1/base.mp4"].size == 4000
    store.delete("bundles/av1/units.json")  # gone between plan and delete (another host's revocation)
    deleted, missing = delete_from_store(store, planned)
    assert [f.path for f in deleted] == ["bundles/av1/base.mp4", "segments/ch/00000001-p1-a1.mp4"]
    assert missing == ["bundles/av1/units.json", "segments/ch/00000001-p1-a1.vtt", "consents/c1/"]
    assert store.list() == ["segments/ch/00000009-other-a1.mp4"]


@pytest.mark.parametrize("bad", ["..", "a/b", "../../etc", "", "x" * 200, "id with space"])
def test_keys_are_derived_only_from_valid_ids(bad):
    from studio.deletion import DeletionError, safe_id

    with pytest.raises(DeletionError, match="not a valid id"):
        safe_id(bad, "avatar")
    assert safe_id("a1B2-c_3", "avatar") == "a1B2-c_3"
