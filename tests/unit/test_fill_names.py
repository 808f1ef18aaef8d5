"""Names of cache fills in flight read back to the file they were writing (studio.storage.filled_name), so a
revoked clone's half-written copies are found by name (POLICY C5)."""

from __future__ import annotations

import pytest

from studio.storage import atomic_path, filled_name, temp_beside


@pytest.mark.parametrize("final", ["00000012-ecs-1f2e3d4c5b6a7988-a2.mp4", "00000012-ecs-1f2e3d4c5b6a7988-a1.vtt",
                                   "slate.mp4", "slate.mp4.stamp.json", "manifest"])
def test_a_fill_temp_file_names_the_file_it_writes(tmp_path, final):
    temp = temp_beside(tmp_path / final)
    assert temp.name.startswith(".") and temp.name != final
    assert filled_name(temp.name) == final
    assert filled_name(temp.name + ".3fA09bC1") == final  # boto3's download file beside it


def test_atomic_path_writes_through_such_a_name(tmp_path):
    with atomic_path(tmp_path / "00000001-ecs-ab-a1.mp4") as tmp:
        assert filled_name(tmp.name) == "00000001-ecs-ab-a1.mp4"
        tmp.write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["00000001-ecs-ab-a1.mp4"]


@pytest.mark.parametrize("name", ["00000012-ecs-ab-a1.mp4", ".lock", ".x.part", "slate.mp4.part",
                                  ".00000012-ecs-ab-a1.short.mp4.part", ".a.abcdefgh.mp4.part.notahex!"])
def test_other_names_are_no_fills(name):
    assert filled_name(name) is None
