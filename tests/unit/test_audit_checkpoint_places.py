"""The audit checkpoint's places (studio.audit_checkpoint), without services: two media stores in directories stand
for the two shared places (Redis and the store copy; Redis itself in
tests/integration/test_audit_checkpoint_shared.py). The newest valid document wins, a bad MAC is reported wherever
it lies, nothing moves back, and the local file of older releases is read only while no shared one exists."""

from __future__ import annotations

import json
import re

import pytest

from studio.audit_checkpoint import (
    STORE_KEY,
    AuditError,
    Checkpoint,
    CheckpointPlaces,
    StoreSlot,
    document_position,
    parse_checkpoint,
)
from studio.store import FileStore

GENESIS_HASH = "0" * 64
KEY, POLICY_KEY, OTHER_KEY = b"control key" * 3, b"policy key" * 3, b"not the platform's key"


def cp(last_id: int | None, count: int | None = None) -> Checkpoint:
    return Checkpoint(last_id=last_id, last_hash=f"{last_id or 0:064x}" if last_id else GENESIS_HASH,
                      count=count if count is not None else (last_id or 0), at=f"2025-01-01T00:00:{last_id or 0:02d}")


@pytest.fixture
def first(tmp_path) -> StoreSlot:
    return StoreSlot(FileStore(tmp_path / "first"))


@pytest.fixture
def copy(tmp_path) -> StoreSlot:
    slot = StoreSlot(FileStore(tmp_path / "copy"))
    slot.where = "copy key audit/checkpoint.json"  # two stores: tell their messages apart
    return slot


@pytest.fixture
def legacy(tmp_path):
    return tmp_path / "data" / "audit-checkpoint.json"


@pytest.fixture
def places(first, copy, legacy) -> CheckpointPlaces:
    return CheckpointPlaces(shared=(first, copy), legacy_file=legacy)


def write(places: CheckpointPlaces, checkpoint: Checkpoint, key: bytes = KEY) -> bool:
    return places.write(checkpoint.document(key), checkpoint.position)


# --- the document -----------------------------------------------------------------------------------------------
def test_a_document_reads_back_with_its_key():
    assert parse_checkpoint(cp(7).document(KEY), where="x", key=KEY) == cp(7)
    assert json.loads(cp(7).document(KEY))["mac"] == cp(7).mac(KEY)


def test_a_document_made_with_the_policy_key_reads_as_legacy_only_when_that_key_is_given():
    doc = cp(4).document(POLICY_KEY)
    assert parse_checkpoint(doc, where="x", key=KEY, legacy_key=POLICY_KEY).legacy
    with pytest.raises(AuditError, match="in x: MAC does not match the control key"):
        parse_checkpoint(doc, where="x", key=KEY)


@pytest.mark.parametrize(("raw", "problem"), [
    (b"{not json", "in x: unreadable (JSONDecodeError"),
    (b'{"last_id": 1}', "in x: unreadable (KeyError"),
    (b'[1, 2]', "in x: unreadable (TypeError"),
    (json.dumps({"last_id": "9", "last_hash": "h", "count": 1, "at": "t", "mac": "m"}).encode(),
     "in x: a field has the wrong type (edited)"),
])
def test_an_unreadable_document_names_the_place_and_the_fault(raw, problem):
    with pytest.raises(AuditError, match=re.escape(problem)):
        parse_checkpoint(raw, where="x", key=KEY)


def test_the_position_of_a_document_is_its_last_id_or_zero():
    assert document_position(cp(12).document(KEY)) == 12
    assert document_position(cp(None).document(KEY)) == 0
    assert document_position(b"garbage") is None


# --- reading ----------------------------------------------------------------------------------------------------
def test_the_newest_valid_checkpoint_wins_and_says_where_it_was_read(places, first, copy):
    first.put(cp(5).document(KEY), 5)
    copy.put(cp(9).document(KEY), 9)
    found = places.read(key=KEY)
    assert (found.checkpoint, found.where, found.problems, found.warnings) == (cp(9), copy.where, [], [])


def test_on_a_tie_the_first_place_is_named(places):
    write(places, cp(3))
    assert places.read(key=KEY).where == f"store key {STORE_KEY}"


def test_a_bad_mac_in_either_place_is_reported_and_the_other_is_used(places, first, copy):
    write(places, cp(6))
    forged = {**json.loads(cp(8).body()), "mac": cp(8).mac(OTHER_KEY)}
    first.store.put_bytes(STORE_KEY, json.dumps(forged).encode())
    found = places.read(key=KEY)
    assert found.checkpoint == cp(6) and found.where == copy.where
    assert found.problems == [f"audit checkpoint in {first.where}: MAC does not match the control key (forged, "
                              "edited or made with another key)"]


def test_a_policy_key_document_in_a_shared_place_is_forged(places, first):
    # The shared places came after the role keys: only the local file of an older release may carry that MAC.
    first.put(cp(2).document(POLICY_KEY), 2)
    found = places.read(key=KEY, legacy_key=POLICY_KEY)
    assert found.checkpoint is None and "MAC does not match the control key" in found.problems[0]


def test_a_place_that_lost_its_copy_is_named_in_a_warning(places, first, copy):
    copy.put(cp(4).document(KEY), 4)  # the first (Redis) restarted without persistence
    found = places.read(key=KEY)
    assert found.checkpoint == cp(4) and found.where == copy.where and not found.problems
    assert found.warnings == [f"no audit checkpoint in {first.where} (Redis restarted without persistence, or a copy "
                              f"failed); read the one in {copy.where}; the next leader pass writes it there again"]


def test_nothing_anywhere_is_a_warning(places, first, copy):
    found = places.read(key=KEY)
    assert found.checkpoint is None and found.where is None and not found.problems
    assert found.warnings == [f"no audit checkpoint in {first.where} and {copy.where}: cannot check for deleted "
                              "tail events"]


def test_the_local_file_of_an_older_release_is_read_only_while_no_shared_one_exists(places, legacy):
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(cp(3).document(POLICY_KEY))
    found = places.read(key=KEY, legacy_key=POLICY_KEY)
    assert found.checkpoint == cp(3) and found.checkpoint.legacy and found.where == f"local file {legacy}"
    assert "the next leader pass of the scheduler, or `studio audit checkpoint`, writes it to" in found.warnings[0]

    write(places, cp(5))
    found = places.read(key=KEY, legacy_key=POLICY_KEY)
    assert found.checkpoint == cp(5) and found.where == f"store key {STORE_KEY}" and not found.warnings


def test_a_bad_shared_checkpoint_is_not_replaced_by_the_local_file(places, first, legacy):
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(cp(3).document(KEY))
    first.store.put_bytes(STORE_KEY, b"{not json")
    found = places.read(key=KEY)
    assert found.checkpoint is None and found.problems[0].startswith(f"audit checkpoint in {first.where}: unreadable")


# --- writing ----------------------------------------------------------------------------------------------------
def test_a_write_reaches_every_place(places, first, copy):
    assert write(places, cp(4))
    assert first.get() == copy.get() == cp(4).document(KEY)


def test_an_older_checkpoint_is_refused_and_nothing_is_written(places, first, copy):
    assert write(places, cp(9))
    assert not write(places, cp(7))
    assert first.get() == copy.get() == cp(9).document(KEY)
    assert write(places, cp(9, count=9))  # the same head again (a later `at`) is no step back


def test_a_copy_never_moves_back_even_when_the_first_place_lost_its_document(places, first, copy):
    write(places, cp(9))
    first.store.delete(STORE_KEY)  # Redis restarted empty; a deposed leader then writes an older head
    assert write(places, cp(7))
    assert copy.get() == cp(9).document(KEY)
    assert places.read(key=KEY).checkpoint == cp(9)  # the newer copy wins


def test_an_unreadable_document_is_kept_as_evidence(places, first):
    first.store.put_bytes(STORE_KEY, b"{not json")
    assert not write(places, cp(3))
    assert first.get() == b"{not json"


class _Overtaken(StoreSlot):
    """The first place, where another leader writes a newer head just after this writer's own write."""

    newer: bytes | None = None

    def put(self, document: bytes, position: int) -> bool:
        written = super().put(document, position)
        if self.newer is not None:
            super().put(self.newer, document_position(self.newer))
            self.newer = None
        return written


def test_the_copies_follow_the_first_place_when_another_writer_overtakes(tmp_path, copy):
    first = _Overtaken(FileStore(tmp_path / "first"))
    places = CheckpointPlaces(shared=(first, copy))
    first.newer = cp(12).document(KEY)
    assert write(places, cp(10))
    assert first.get() == copy.get() == cp(12).document(KEY)


def test_places_need_a_shared_place():
    with pytest.raises(ValueError, match="at least one shared place"):
        CheckpointPlaces(shared=())
