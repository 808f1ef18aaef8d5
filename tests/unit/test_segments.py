"""Segment state machine: the legal moves, and every other move refused with both states named."""

import itertools

import pytest

from studio.segments import TERMINAL, IllegalTransition, SegmentState, transition

# The lifecycle written out independently of studio.segments.TRANSITIONS, from DESIGN/POLICY:
# a render may be retried (failed -> planned, or a lost worker: rendering -> planned), anything not yet
# aired can be skipped by the slate or cancelled by a revocation, and only a ready segment may air or
# be refused at air time. Aired, refused, skipped and cancelled are final.
LEGAL = {
    ("planned", "rendering"), ("planned", "skipped"), ("planned", "cancelled"),
    ("rendering", "ready"), ("rendering", "failed"), ("rendering", "planned"),
    ("rendering", "skipped"), ("rendering", "cancelled"),
    ("ready", "aired"), ("ready", "refused"), ("ready", "skipped"), ("ready", "cancelled"),
    ("failed", "planned"), ("failed", "skipped"), ("failed", "cancelled"),
}
FINAL = {"aired", "refused", "skipped", "cancelled"}
STATES = [s.value for s in SegmentState]
ALL_PAIRS = list(itertools.product(STATES, STATES))


def test_the_states_are_the_ones_the_lifecycle_names():
    assert set(STATES) == {"planned", "rendering", "ready", "failed"} | FINAL


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_legal_transition_returns_the_new_state(current, target):
    result = transition(current, target)
    assert result == target
    assert isinstance(result, SegmentState)


@pytest.mark.parametrize(("current", "target"), sorted(p for p in ALL_PAIRS if p not in LEGAL))
def test_illegal_transition_raises_naming_both_states(current, target):
    with pytest.raises(IllegalTransition) as exc:
        transition(current, target)
    message = str(exc.value)
    assert f"from {current} to {target}" in message


@pytest.mark.parametrize("state", sorted(FINAL))
def test_final_states_have_no_exit(state):
    assert SegmentState(state) in TERMINAL
    for target in STATES:
        with pytest.raises(IllegalTransition, match="terminal"):
            transition(state, target)


def test_only_the_final_states_are_terminal():
    assert {s.value for s in TERMINAL} == FINAL


def test_aired_segment_can_never_go_back_to_ready_or_air_again():
    for target in ("ready", "planned", "rendering", "aired"):
        with pytest.raises(IllegalTransition):
            transition("aired", target)


def test_nothing_airs_without_being_ready():
    for state in STATES:
        if state != "ready":
            with pytest.raises(IllegalTransition):
                transition(state, "aired")


def test_refusal_message_lists_the_allowed_moves():
    with pytest.raises(IllegalTransition) as exc:
        transition("planned", "aired")
    allowed = {t for c, t in LEGAL if c == "planned"}
    assert all(t in str(exc.value) for t in allowed)


def test_accepts_enum_members_as_well_as_strings():
    assert transition(SegmentState.READY, SegmentState.AIRED) is SegmentState.AIRED


@pytest.mark.parametrize(("current", "target"), [("planned", "queued"), ("done", "aired"), ("READY", "aired"),
                                                 ("", "planned")])
def test_unknown_state_names_raise(current, target):
    with pytest.raises(IllegalTransition, match="unknown segment state"):
        transition(current, target)
