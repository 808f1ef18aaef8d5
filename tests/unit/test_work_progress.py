"""api.work_progress without services: the reports a check's progress makes, whose they are, and what is kept."""

from __future__ import annotations

import socket

import pytest
import redis

from api import work_progress
from api.work_progress import VOICEOVER_STAGES, ProgressBoard, valid_id


def test_a_voiceovers_stages_make_one_fraction_that_never_goes_back():
    board = ProgressBoard()
    report = board.reporter("acc", "script-1", "abcdefgh", VOICEOVER_STAGES)
    seen = []
    for stage, done, total in [("decode", 0, 1), ("decode", 1, 1), ("align", 0, 30), ("align", 10, 30),
                               ("align", 5, 30), ("align", 30, 30), ("store", 0, 1)]:
        work_progress.time.sleep(work_progress.MIN_INTERVAL_S)
        report(stage, done, total)
        seen.append(board.read("acc", "script-1", "abcdefgh"))
    assert [s["fraction"] for s in seen] == [0.0, 0.05, 0.05, 0.35, 0.35, 0.95, 0.95]
    assert seen[3] == {"stage": "align", "done": 10.0, "total": 30.0, "fraction": 0.35, "state": "running"}
    report.end("done")
    assert board.read("acc", "script-1", "abcdefgh") | {} == {**seen[-1], "fraction": 1.0, "state": "done"}


def test_reports_closer_than_the_interval_are_dropped_but_never_a_stages_first_or_last(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(work_progress.time, "monotonic", lambda: clock[0])
    board = ProgressBoard()
    report = board.reporter("acc", "s", "abcdefgh", VOICEOVER_STAGES)
    report("align", 0, 10)  # a new stage: written
    report("align", 3, 10)  # 0 s later: dropped
    assert board.read("acc", "s", "abcdefgh")["done"] == 0
    report("align", 10, 10)  # the stage's last: written
    assert board.read("acc", "s", "abcdefgh")["done"] == 10
    report("store", 0, 1)
    clock[0] += 2 * work_progress.MIN_INTERVAL_S
    report("store", 0.5, 1)
    assert board.read("acc", "s", "abcdefgh")["done"] == 0.5


def test_a_report_is_only_for_its_account_and_subject_and_refused_ends_short_of_done():
    board = ProgressBoard()
    report = board.reporter("acc", "script-1", "abcdefgh", VOICEOVER_STAGES)
    report("align", 15, 30)
    report.end("refused")
    assert board.read("acc", "script-1", "abcdefgh")["state"] == "refused"
    assert board.read("acc", "script-1", "abcdefgh")["fraction"] == 0.5
    assert board.read("other", "script-1", "abcdefgh") is None
    assert board.read("acc", "script-2", "abcdefgh") is None
    assert board.read("acc", "script-1", "../../x") is None  # never looked up
    with pytest.raises(ValueError, match="'running'"):
        report.end("running")


def test_without_a_progress_id_nothing_is_written():
    board = ProgressBoard()
    report = board.reporter("acc", "s", None, VOICEOVER_STAGES)
    report("align", 1, 2)
    report.end("done")
    assert board._call.memory._rows == {}


@pytest.mark.parametrize(("value", "ok"), [("abcdefgh", True), ("A1_-" * 16, True), ("abcdefg", False),
                                           ("a" * 65, False), ("abc/defgh", False), ("abcdefgh\n", False),
                                           ("", False)])
def test_progress_ids(value, ok):
    assert valid_id(value) is ok


def test_the_table_of_this_process_is_bounded_and_forgets_after_its_time(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(work_progress.time, "monotonic", lambda: clock[0])
    table = work_progress._Memory(max_keys=3)
    for i in range(5):
        table.set(f"k{i}", str(i), 10)
    assert [table.get(f"k{i}") for i in range(5)] == [None, None, "2", "3", "4"]
    clock[0] = 10.0
    assert table.get("k4") is None


def test_a_redis_that_does_not_answer_leaves_the_reports_in_this_process():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    board = ProgressBoard(redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1))
    report = board.reporter("acc", "s", "abcdefgh", VOICEOVER_STAGES)
    report("align", 3, 30)
    assert board.read("acc", "s", "abcdefgh")["done"] == 3
