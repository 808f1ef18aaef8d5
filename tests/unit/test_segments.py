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


# --- move: the one way a row changes state ----------------------------------------------------------------
def _row_world(fresh_db):
    from datetime import timedelta

    from sqlmodel import Session

    from studio.models import Avatar, Channel, Consent, Creator, Segment, Show, utcnow
    from tests.conftest import FULL_SCOPE

    s = Session(fresh_db, expire_on_commit=False)
    creator = Creator(name="Ava")
    s.add(creator)
    s.flush()
    avatar = Avatar(creator_id=creator.id, name="Ava", bundle_path="-", footage_sha256="-", width=360, height=640,
                    fps=25, duration_s=30)
    channel = Channel(name="c", territories=["US"])
    s.add_all([avatar, channel])
    s.flush()
    consent = Consent(creator_id=creator.id, avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                      statement_sha256="-", starts_at=utcnow() - timedelta(days=1),
                      ends_at=utcnow() + timedelta(days=1), scope=FULL_SCOPE)
    s.add(consent)
    s.flush()
    show = Show(channel_id=channel.id, avatar_id=avatar.id, consent_id=consent.id, name="s", script_ids=[])
    s.add(show)
    s.flush()
    seg = Segment(channel_id=channel.id, show_id=show.id, avatar_id=avatar.id, consent_id=consent.id, text="hi", seq=0)
    s.add(seg)
    s.commit()
    return s, seg


def _events(s, seg_id):
    from sqlmodel import select

    from studio.models import AuditEvent

    return [(e.kind, e.data) for e in s.exec(select(AuditEvent).where(AuditEvent.subject_id == seg_id)
                                               .order_by(AuditEvent.id))]


def test_move_sets_state_error_time_and_records_its_event(fresh_db):
    from datetime import datetime

    from studio.segments import move

    s, seg = _row_world(fresh_db)
    at = datetime(2026, 1, 2, 3, 4, 5)
    assert move(s, seg, SegmentState.SKIPPED, error="late", at=at, data={"reason": "late"}) is SegmentState.SKIPPED
    s.commit()
    assert (seg.state, seg.error, seg.updated_at) == ("skipped", "late", at)
    assert _events(s, seg.id) == [("segment.skipped", {"reason": "late"})]


def test_move_with_no_event_or_error_leaves_them_and_an_illegal_move_changes_nothing(fresh_db):
    from studio.segments import move

    s, seg = _row_world(fresh_db)
    seg.error, before = "kept", seg.updated_at
    move(s, seg, SegmentState.RENDERING, event=None)
    assert (seg.state, seg.error, seg.updated_at) == ("rendering", "kept", before)
    move(s, seg, SegmentState.READY, error=None, event="segment.rendered", data={"frames": 3})
    s.commit()
    assert seg.error is None and _events(s, seg.id) == [("segment.rendered", {"frames": 3})]
    with pytest.raises(IllegalTransition, match="from ready to planned"):
        move(s, seg, SegmentState.PLANNED, error="x")
    assert (seg.state, seg.error) == ("ready", None) and len(_events(s, seg.id)) == 1
