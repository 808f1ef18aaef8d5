"""One-time code phrases (POLICY C2): the word list, issuing, expiry, and how a reading is scored."""

from __future__ import annotations

import itertools
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from studio.consent_phrase import WORDS, CodePhrase, issue_phrase, open_phrases_problem, phrase_problem
from workers.consent.video import phrase_score, speech_level_dbfs

NOW = datetime(2026, 5, 1, 12, 0)


# --- the word list ----------------------------------------------------------------------------------------
def _dictionary() -> dict[str, list[tuple[str, ...]]]:
    import pocketsphinx

    prons: dict[str, list[tuple[str, ...]]] = {}
    path = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
    for line in path.read_text().splitlines():
        word, *phones = line.split()
        prons.setdefault(re.sub(r"\(\d+\)$", "", word), []).append(tuple(phones))
    return prons


def _edit_distance(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def test_word_list_is_256_distinct_lowercase_words():
    assert len(WORDS) == 256
    assert len(set(WORDS)) == len(WORDS)
    assert all(re.fullmatch(r"[a-z]{3,8}", w) for w in WORDS)
    assert list(WORDS) == sorted(WORDS)


def test_every_word_is_in_the_recogniser_dictionary_and_three_phonemes_from_any_other():
    prons = _dictionary()
    missing = [w for w in WORDS if w not in prons]
    assert not missing
    close = [(a, b) for a, b in itertools.combinations(WORDS, 2)
             if min(_edit_distance(p, q) for p in prons[a] for q in prons[b]) < 3]
    assert not close


# --- issuing ------------------------------------------------------------------------------------------------
def test_issue_phrase_gives_distinct_words_valid_ten_minutes():
    phrase = issue_phrase(now=NOW, rng=random.Random(1))
    assert isinstance(phrase, CodePhrase)
    assert len(phrase.words) == 4 and len(set(phrase.words)) == 4
    assert set(phrase.words) <= set(WORDS)
    assert phrase.text == " ".join(phrase.words)
    assert phrase.issued_at == NOW and phrase.expires_at == NOW + timedelta(minutes=10)
    assert re.fullmatch(r"cp-[0-9a-f]{16}", phrase.id)


def test_issue_phrase_is_repeatable_with_a_seeded_rng_and_random_without():
    assert issue_phrase(now=NOW, rng=random.Random(5)) == issue_phrase(now=NOW, rng=random.Random(5))
    drawn = {issue_phrase(now=NOW).text for _ in range(20)}
    assert len(drawn) == 20  # secrets: 256*255*254*253 phrases, no repeats in practice
    ids = {issue_phrase(now=NOW).id for _ in range(20)}
    assert len(ids) == 20


def test_issue_phrase_options():
    phrase = issue_phrase(now=NOW, rng=random.Random(2), words=6, valid_seconds=90)
    assert len(phrase.words) == 6
    assert phrase.expires_at - phrase.issued_at == timedelta(seconds=90)


def test_phrase_is_frozen():
    phrase = issue_phrase(now=NOW, rng=random.Random(3))
    with pytest.raises(AttributeError):
        phrase.text = "something else"


@pytest.mark.parametrize("kwargs,message", [
    ({"words": 2}, "words must be between 3 and 12, got 2"),
    ({"words": 13}, "words must be between 3 and 12, got 13"),
    ({"valid_seconds": 0}, "valid_seconds must be > 0, got 0"),
])
def test_issue_phrase_refuses_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        issue_phrase(now=NOW, **kwargs)


def test_issue_phrase_refuses_a_non_datetime():
    with pytest.raises(TypeError, match="now must be a datetime, got str '2026-05-01'"):
        issue_phrase(now="2026-05-01")


def test_aware_times_are_stored_as_naive_utc():
    phrase = issue_phrase(now=datetime(2026, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))), rng=random.Random(4))
    assert phrase.issued_at == NOW and phrase.issued_at.tzinfo is None


# --- expiry -------------------------------------------------------------------------------------------------
def test_phrase_is_valid_until_it_expires():
    phrase = issue_phrase(now=NOW, rng=random.Random(1))
    assert phrase_problem(phrase, now=NOW) is None
    assert phrase_problem(phrase, now=NOW + timedelta(seconds=599)) is None
    assert phrase_problem(phrase, now=datetime(2026, 5, 1, 12, 5, tzinfo=UTC)) is None


def test_expired_phrase_is_a_problem_naming_the_expiry():
    """POLICY C2: a code phrase is valid for a limited time; past its expiry it is refused, naming when it expired."""
    phrase = issue_phrase(now=NOW, rng=random.Random(1))
    problem = phrase_problem(phrase, now=NOW + timedelta(minutes=12))
    assert problem == (f"code phrase {phrase.id} expired at 2026-05-01T12:10:00 UTC (120 s ago); "
                       "ask for a new phrase")
    assert phrase_problem(phrase, now=phrase.expires_at) is not None


def test_phrase_used_before_it_was_issued_is_a_problem():
    phrase = issue_phrase(now=NOW, rng=random.Random(1))
    problem = phrase_problem(phrase, now=NOW - timedelta(minutes=1))
    assert problem is not None and "2026-05-01T12:00:00" in problem and "clock" in problem


# --- scoring what was heard ---------------------------------------------------------------------------------
PHRASE = ("river", "candle", "orbit", "maple")


@pytest.mark.parametrize("heard,score", [
    ("river candle orbit maple", 1.0),
    ("my code is river candle orbit maple thank you", 1.0),  # words around the phrase do not count against it
    ("river canoe orbit maple", 0.75),                       # one word misheard
    ("river candle canoe canoe orbit maple", 1.0),           # a word heard as two
    ("maple orbit candle river", 0.25),                      # wrong order
    ("blue apple", 0.0),
    ("", 0.0),
])
def test_phrase_score_counts_phrase_words_heard_in_order(heard, score):
    assert phrase_score(heard.split(), PHRASE) == score


def test_phrase_words_scattered_through_a_long_speech_do_not_add_up():
    heard = "river a b c d e f candle g h i j k orbit l m n o p maple".split()
    assert phrase_score(heard, PHRASE) == 0.25


def test_speech_level():
    t = np.arange(16000) / 16000
    assert speech_level_dbfs(np.zeros(16000, np.float32)) < -100
    assert speech_level_dbfs((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)) == pytest.approx(-9.03, abs=0.2)
    assert speech_level_dbfs(np.zeros(10, np.float32)) == -np.inf


def test_open_phrases_are_limited_and_the_wait_is_until_the_first_expires():
    now = datetime(2026, 5, 1, 12, 0)
    open_ = [now + timedelta(minutes=m) for m in (9, 3, 6)]
    assert open_phrases_problem(open_[:2], limit=3, now=now) is None
    message, wait = open_phrases_problem(open_, limit=3, now=now)
    assert wait == 180 and "the limit is 3" in message and "consent.max_open_phrases" in message
    assert "12:03:00" in message
    expired = [now - timedelta(seconds=1), *open_[:2]]  # an expired phrase is not open
    assert open_phrases_problem(expired, limit=3, now=now) is None
