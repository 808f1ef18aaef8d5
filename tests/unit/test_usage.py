"""studio.usage on a real SQLite database built by the migrations: is this use of a clone within its consent
(POLICY C3, C4, S2, S4)? Each refusal must say why."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from studio.admission import segment_problem
from studio.models import (
    Attestation,
    Avatar,
    Channel,
    Consent,
    Creator,
    Destination,
    Product,
    Script,
    ScriptApproval,
    Segment,
    Show,
    utcnow,
)
from studio.usage import aired_seconds, attested_claims, text_sha256, usage_problem
from tests.conftest import FULL_SCOPE

NOW = utcnow()
TEXT = "Paid partnership with Lumen Labs. Meet the Glow Serum."


@pytest.fixture
def s(fresh_db):
    with Session(fresh_db, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def w(s):
    """One creator, avatar, consent (full scope, 1 h a day), product, script, channel (US) and show."""
    creator, other = Creator(name="Ava"), Creator(name="Ben")
    s.add_all([creator, other])
    s.flush()
    avatar = Avatar(creator_id=creator.id, name="Ava", bundle_path="-", footage_sha256="-", width=360, height=640,
                    fps=25, duration_s=30)
    product = Product(name="Glow Serum", brand="Lumen", category="beauty")
    channel = Channel(name="main", territories=["US"])
    s.add_all([avatar, product, channel])
    s.flush()
    consent = _consent(s, creator.id, avatar.id)
    script = Script(product_id=product.id, text=TEXT)
    s.add(script)
    s.flush()
    show = Show(channel_id=channel.id, avatar_id=avatar.id, consent_id=consent.id, name="s", script_ids=[script.id])
    s.add(show)
    s.commit()
    return {"creator": creator, "other": other, "avatar": avatar, "product": product, "channel": channel,
            "consent": consent, "script": script, "show": show}


def _consent(s, creator_id, avatar_id, **overrides) -> Consent:
    args = {"creator_id": creator_id, "avatar_id": avatar_id, "signed_name": "Ava", "statement": "x" * 30,
            "statement_sha256": "-", "starts_at": NOW - timedelta(days=2), "ends_at": NOW + timedelta(days=30),
            "scope": {**FULL_SCOPE, "max_hours_per_day": 1}}
    consent = Consent(**{**args, **overrides})
    s.add(consent)
    s.flush()
    return consent


def _segment(s, w, *, state="aired", duration=10.0, aired_ago=timedelta(hours=1), consent=None, channel=None):
    last = s.exec(select(func.max(Segment.seq))).one()
    seg = Segment(channel_id=(channel or w["channel"]).id, show_id=w["show"].id, avatar_id=w["avatar"].id,
                  consent_id=(consent or w["consent"]).id, script_id=w["script"].id, text=TEXT,
                  seq=0 if last is None else last + 1,
                  state=state, duration_s=duration, aired_at=NOW - aired_ago if state == "aired" else None)
    s.add(seg)
    s.commit()
    return seg


def problem(s, w, *, consent=None, channel=None, script=None, next_seconds=0.0, at=NOW):
    return usage_problem(s, consent or w["consent"], channel=channel or w["channel"],
                         script=script or w["script"], at=at, next_seconds=next_seconds)


# --- usage_problem: the consent itself ----------------------------------------------------------
def test_a_use_within_the_consent_has_no_problem(s, w):
    assert problem(s, w) is None


def test_no_consent_is_refused(s, w):
    assert usage_problem(s, None, channel=w["channel"], script=w["script"], at=NOW) == "no consent on record"


def test_a_revoked_consent_is_refused(s, w):
    w["consent"].status = "revoked"
    s.commit()
    assert problem(s, w) == f"consent {w['consent'].id} is revoked"


def test_a_use_after_the_term_is_refused(s, w):
    """POLICY C4: a use after the consent's term ended is refused."""
    found = problem(s, w, at=w["consent"].ends_at)
    assert found is not None and "ended at" in found and w["consent"].id in found


# --- usage_problem: where the channel airs --------------------------------------------------------
def test_an_enabled_destination_outside_the_platforms_is_refused(s, w):
    s.add_all([Destination(channel_id=w["channel"].id, platform="youtube", url="rtmp://a/live/k"),
               Destination(channel_id=w["channel"].id, platform="douyin", url="rtmp://b/live/k")])
    s.commit()
    found = problem(s, w)
    assert found is not None
    assert "platform douyin is not among the consented platforms ['custom', 'youtube']" in found


def test_a_disabled_destination_does_not_count(s, w):
    s.add(Destination(channel_id=w["channel"].id, platform="douyin", url="rtmp://b/live/k", enabled=False))
    s.commit()
    assert problem(s, w) is None


def test_a_territory_outside_the_scope_is_refused(s, w):
    """POLICY C3: a channel airing to a territory outside the scope is refused."""
    w["channel"].territories = ["US", "DE"]
    s.commit()
    found = problem(s, w)
    assert found is not None and "territory DE is not among the consented territories ['US']" in found


def test_a_channel_naming_no_territories_is_refused(s, w):
    w["channel"].territories = []
    s.commit()
    found = problem(s, w)
    assert found is not None and "names no territories" in found


# --- usage_problem: the script ----------------------------------------------------------------------
def test_a_script_whose_product_is_gone_is_refused(s, w):
    script = Script(id="sc-orphan", product_id="p-gone", text=TEXT)  # never saved: the product row is gone
    assert problem(s, w, script=script) == "script sc-orphan names product p-gone, which does not exist"


def test_an_excluded_category_is_refused(s, w):
    gin = Product(name="Gin", brand="Lumen", category="alcohol")
    s.add(gin)
    s.flush()
    script = Script(product_id=gin.id, text=TEXT)
    s.add(script)
    s.commit()
    found = problem(s, w, script=script)
    assert found is not None and "category 'alcohol' is excluded" in found


def test_a_language_outside_the_scope_is_refused(s, w):
    """POLICY S4: a script in a language outside the consent scope is refused."""
    script = Script(product_id=w["product"].id, text=TEXT, language="de")
    s.add(script)
    s.commit()
    found = problem(s, w, script=script)
    assert found is not None and "language 'de' is not among the consented languages ['en']" in found


def test_without_a_script_only_the_consent_and_channel_are_checked(s, w):
    # What the scheduler asks once per show, before it looks at each script.
    consent = _consent(s, w["creator"].id, w["avatar"].id, require_script_approval=True)
    s.commit()
    assert usage_problem(s, consent, channel=w["channel"], script=None, at=NOW) is None
    assert problem(s, w, consent=consent) is not None


# --- usage_problem: the creator's approval of each script --------------------------------------------
@pytest.fixture
def needs_approval(s, w):
    consent = _consent(s, w["creator"].id, w["avatar"].id, require_script_approval=True)
    s.commit()
    return consent


def _approve(s, consent, script, text=None):
    s.add(ScriptApproval(consent_id=consent.id, script_id=script.id, text_sha256=text_sha256(text or script.text),
                         signed_name="Ava"))
    s.commit()


def test_a_script_without_approval_is_refused(s, w, needs_approval):
    found = problem(s, w, consent=needs_approval)
    assert found is not None
    assert f"script {w['script'].id} awaits the creator's approval" in found and needs_approval.id in found


def test_an_approved_script_may_air(s, w, needs_approval):
    _approve(s, needs_approval, w["script"])
    assert problem(s, w, consent=needs_approval) is None


def test_an_approval_under_another_consent_does_not_count(s, w, needs_approval):
    _approve(s, w["consent"], w["script"])
    assert "awaits the creator's approval" in problem(s, w, consent=needs_approval)


def test_approval_is_of_the_exact_text(s, w, needs_approval):
    _approve(s, needs_approval, w["script"])
    w["script"].text = TEXT + " Now 20% off."
    s.commit()
    found = problem(s, w, consent=needs_approval)
    assert found is not None and f"script {w['script'].id} changed since the creator approved it" in found
    _approve(s, needs_approval, w["script"])  # the creator approves the new text
    assert problem(s, w, consent=needs_approval) is None


def test_an_approval_of_other_text_does_not_count(s, w, needs_approval):
    _approve(s, needs_approval, w["script"], text=TEXT.lower())
    assert "changed since the creator approved it" in problem(s, w, consent=needs_approval)


# --- aired_seconds and the daily cap -----------------------------------------------------------------
def test_aired_seconds_counts_the_last_24_hours_of_this_consent_only(s, w):
    other_channel = Channel(name="second", territories=["US"])
    s.add(other_channel)
    s.commit()
    _segment(s, w, duration=10.0, aired_ago=timedelta(hours=1))
    _segment(s, w, duration=5.0, aired_ago=timedelta(hours=23, minutes=59), channel=other_channel)
    _segment(s, w, duration=100.0, aired_ago=timedelta(hours=24, minutes=1))  # outside the window
    _segment(s, w, duration=40.0, state="ready")
    _segment(s, w, duration=50.0, state="refused")
    other = _consent(s, w["creator"].id, w["avatar"].id)
    _segment(s, w, duration=70.0, consent=other)
    assert aired_seconds(s, w["consent"].id, at=NOW) == pytest.approx(15.0)
    assert aired_seconds(s, other.id, at=NOW) == pytest.approx(70.0)
    # An hour later the airing from 23 h 59 min ago has left the window.
    assert aired_seconds(s, w["consent"].id, at=NOW + timedelta(hours=1)) == pytest.approx(10.0)


def test_aired_seconds_is_zero_without_airings(s, w):
    assert aired_seconds(s, w["consent"].id, at=NOW) == 0.0


def test_the_daily_cap_counts_the_next_segment(s, w):
    _segment(s, w, duration=3590.0)  # the cap is 1 h
    assert problem(s, w, next_seconds=10.0) is None
    found = problem(s, w, next_seconds=11.0)
    assert found is not None
    assert f"consent {w['consent'].id} allows 1 h on air in 24 h" in found and "next segment is 11.0 s" in found


def test_the_daily_cap_forgets_airings_older_than_24_hours(s, w):
    _segment(s, w, duration=3600.0, aired_ago=timedelta(hours=25))
    assert problem(s, w, next_seconds=3600.0) is None
    _segment(s, w, duration=1.0, aired_ago=timedelta(hours=2))
    assert "allows 1 h on air" in problem(s, w, next_seconds=3600.0)


def test_a_cap_passed_already_refuses_even_without_a_next_segment(s, w):
    _segment(s, w, duration=3601.0)
    found = usage_problem(s, w["consent"], channel=w["channel"], script=None, at=NOW)
    assert found is not None and "allows 1 h on air in 24 h; 1.00 h aired" in found


# --- segment_problem ------------------------------------------------------------------------------------
def test_segment_problem_adds_the_duration_only_when_airing(s, w):
    _segment(s, w, duration=3595.0)
    seg = _segment(s, w, state="ready", duration=6.0)
    assert segment_problem(s, seg, at=NOW) is None
    found = segment_problem(s, seg, at=NOW, airing=True)
    assert found is not None and "next segment is 6.0 s" in found


def test_segment_problem_checks_the_segments_own_consent_and_script(s, w, needs_approval):
    seg = _segment(s, w, state="ready", consent=needs_approval)
    assert "awaits the creator's approval" in segment_problem(s, seg, at=NOW, airing=True)
    _approve(s, needs_approval, w["script"])
    assert segment_problem(s, seg, at=NOW, airing=True) is None


def test_segment_problem_sees_the_channels_destinations_as_they_are_now(s, w):
    seg = _segment(s, w, state="ready")
    assert segment_problem(s, seg, at=NOW, airing=True) is None
    s.add(Destination(channel_id=w["channel"].id, platform="tiktok_shop_live", url="rtmp://t/live/k"))
    s.commit()
    assert "platform tiktok_shop_live" in segment_problem(s, seg, at=NOW, airing=True)


def test_segment_problem_of_a_revoked_consent(s, w):
    seg = _segment(s, w, state="ready")
    w["consent"].status = "revoked"
    s.commit()
    assert segment_problem(s, seg, at=NOW) == f"consent {w['consent'].id} is revoked"


# --- attested_claims --------------------------------------------------------------------------------------
def test_attested_claims_are_the_creators_own_for_this_product(s, w):
    other_product = Product(name="Toner", brand="Lumen", category="beauty")
    s.add(other_product)
    s.flush()
    p = w["product"].id
    s.add_all([Attestation(creator_id=w["creator"].id, product_id=p, kind="use", statement="I use it daily.",
                           signed_name="Ava"),
               Attestation(creator_id=w["other"].id, product_id=p, kind="results", statement="It cleared my skin.",
                           signed_name="Ben"),
               Attestation(creator_id=w["creator"].id, product_id=other_product.id, kind="opinion",
                           statement="My favourite toner.", signed_name="Ava")])
    s.commit()
    assert attested_claims(s, w["creator"].id, p) == {f"{p}:use"}
    assert attested_claims(s, w["other"].id, p) == {f"{p}:results"}
    assert attested_claims(s, None, p) == {f"{p}:use", f"{p}:results"}  # no creator known yet: any creator's
    assert attested_claims(s, w["creator"].id, other_product.id) == {f"{other_product.id}:opinion"}


def test_no_attestation_means_no_claims(s, w):
    assert attested_claims(s, w["creator"].id, w["product"].id) == set()
