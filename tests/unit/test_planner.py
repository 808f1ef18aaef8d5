"""Rolling-horizon planning: script parts and the segments added to keep the buffer full."""

import re

import pytest

from studio.planner import estimate_seconds, plan_horizon, script_parts

SCRIPT = (
    "Meet the TrailLite rain jacket. It weighs just two hundred grams and packs into its own pocket. "
    "The seams are taped so the rain stays outside where it belongs! "
    "Would you wear it on a mountain or on your morning commute? "
    "This is a paid partnership with TrailLite. "
    "Order in the next hour and shipping is free."
)
WPM = 165


def words(text: str) -> list[str]:
    return text.split()


def sentences(text: str) -> list[str]:
    return re.findall(r"[^.!?]+[.!?]", text)


# --- script_parts -------------------------------------------------------------------------------
@pytest.mark.parametrize("max_words", [5, 8, 12, 22, 200])
def test_parts_keep_every_word_in_order(max_words):
    parts = script_parts(SCRIPT, max_words=max_words)
    assert [w for p in parts for w in p.split()] == words(SCRIPT)


@pytest.mark.parametrize("max_words", [3, 5, 8, 12, 22])
def test_no_part_is_over_max_words(max_words):
    parts = script_parts(SCRIPT, max_words=max_words)
    assert all(1 <= len(p.split()) <= max_words for p in parts)


def test_parts_end_at_sentence_ends_when_sentences_fit():
    # Every sentence of SCRIPT is at most 12 words, so with room for 22 no part ends mid-sentence,
    # and sentences are joined while they fit.
    assert max(len(s.split()) for s in sentences(SCRIPT)) <= 12
    parts = script_parts(SCRIPT, max_words=22)
    assert len(parts) > 1
    assert all(p.endswith((".", "!", "?")) for p in parts)
    for a, b in zip(parts, parts[1:], strict=False):
        # b's first sentence did not fit into a, or it would have been joined
        assert len(a.split()) + len(sentences(b)[0].split()) > 22


def test_over_long_sentence_is_cut_at_the_word_limit():
    sentence = " ".join(f"w{i}" for i in range(25)) + "."
    parts = script_parts("Short intro. " + sentence, max_words=10)
    assert parts[0] == "Short intro."
    assert [len(p.split()) for p in parts[1:]] == [10, 10, 5]


def test_short_script_is_one_part():
    assert script_parts("  Buy one, get one free.  ") == ["Buy one, get one free."]


def test_empty_script_has_no_parts():
    assert script_parts("") == []
    assert script_parts("   \n ") == []


# --- plan_horizon -------------------------------------------------------------------------------
PARTS = [("s1", "one two three four five six seven eight"),
         ("s2", "nine ten eleven twelve"),
         ("s3", "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty twenty-one twenty-two")]


def plan(**overrides):
    args = {"parts": PARTS, "planned_count": 0, "pending_seconds": 0.0, "target_seconds": 30.0,
            "words_per_minute": WPM}
    return plan_horizon(**{**args, **overrides})


def covered(out, pending: float = 0.0) -> list[float]:
    """Running total of planned seconds after each added part."""
    totals, t = [], pending
    for p in out:
        t += estimate_seconds(p.text, WPM)
        totals.append(t)
    return totals


@pytest.mark.parametrize("pending, target", [(0.0, 30.0), (12.5, 30.0), (0.0, 3.0), (29.9, 30.0)])
def test_plan_reaches_the_target_and_stops(pending, target):
    out = plan(pending_seconds=pending, target_seconds=target)
    totals = covered(out, pending)
    assert totals[-1] >= target
    assert all(t < target for t in totals[:-1])  # one part fewer would not have been enough


def test_plan_is_deterministic():
    assert plan(planned_count=7, pending_seconds=4.0) == plan(planned_count=7, pending_seconds=4.0)


@pytest.mark.parametrize("planned_count", [0, 1, 2, 3, 5, 100])
def test_plan_continues_the_rotation(planned_count):
    out = plan(planned_count=planned_count, target_seconds=60.0)
    assert [p.index for p in out] == list(range(planned_count, planned_count + len(out)))
    for p in out:
        script_id, text = PARTS[p.index % len(PARTS)]
        assert (p.script_id, p.text) == (script_id, text)


def test_replanning_after_some_were_planned_gives_the_same_continuation():
    whole = plan(target_seconds=60.0)
    first = whole[:4]
    rest = plan(planned_count=4, pending_seconds=sum(estimate_seconds(p.text, WPM) for p in first),
                target_seconds=60.0)
    assert first + rest == whole


def test_only_the_first_segment_of_the_show_is_a_show_start():
    out = plan(target_seconds=60.0)
    assert [p.show_start for p in out] == [True] + [False] * (len(out) - 1)
    assert not any(p.show_start for p in plan(planned_count=3, target_seconds=60.0))


@pytest.mark.parametrize("pending", [30.0, 31.0, 1e6])
def test_nothing_is_added_when_the_buffer_is_full(pending):
    assert plan(pending_seconds=pending, target_seconds=30.0) == []


def test_nothing_is_added_without_parts():
    assert plan(parts=[]) == []


@pytest.mark.parametrize("max_new", [0, 1, 3])
def test_max_new_caps_the_additions(max_new):
    out = plan(target_seconds=3600.0, max_new=max_new)
    assert len(out) == max_new


def test_faster_speech_needs_more_parts():
    slow = plan_horizon(parts=PARTS, planned_count=0, pending_seconds=0.0, target_seconds=60.0,
                        words_per_minute=100)
    fast = plan_horizon(parts=PARTS, planned_count=0, pending_seconds=0.0, target_seconds=60.0,
                        words_per_minute=300)
    assert len(fast) > len(slow)
