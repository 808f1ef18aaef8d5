"""Consent rules (POLICY C3, C4, S4) and the consent schemas that feed them."""

from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from studio.consent import (
    approval_problem,
    consent_problem,
    daily_cap_problem,
    destination_problem,
    review_problem,
    scope_problem,
    status_after_check,
)
from studio.models import Consent, ConsentCreate, ConsentScope, Product

START = datetime(2026, 3, 1, 9, 0)
END = datetime(2026, 9, 1, 9, 0)


def consent(**overrides) -> Consent:
    args = {"id": "con-1", "creator_id": "cr-1", "signed_name": "Mia Chen",
            "statement": "I consent to a clone of my face and voice for the brands listed.",
            "statement_sha256": "0" * 64, "starts_at": START, "ends_at": END,
            "scope": ConsentScope(brands=["TrailLite", "Glow"], categories=["Outdoor", "beauty"],
                                  excluded_categories=["alcohol", "gambling", "medicine", "politics"],
                                  platforms=["youtube"], territories=["us"], languages=["en", "ZH"],
                                  max_hours_per_day=8).model_dump()}
    return Consent(**{**args, **overrides})


def product(brand: str = "TrailLite", category: str = "outdoor") -> Product:
    return Product(name="Rain jacket", brand=brand, category=category)


# --- review (POLICY C2) -----------------------------------------------------------------------
def test_a_checked_consent_waits_for_review_unless_review_is_auto():
    assert status_after_check("required") == "pending_review"
    assert status_after_check("auto") == "granted"
    with pytest.raises(ValueError, match="required or auto"):
        status_after_check("off")  # type: ignore[arg-type]


def test_pending_and_rejected_consents_allow_nothing():
    at = START + timedelta(days=1)
    assert "pending_review" in consent_problem(consent(status="pending_review"), at=at)
    rejected = consent_problem(consent(status="rejected", review_reason="another face"), at=at)
    assert "rejected" in rejected and "another face" in rejected


def test_only_a_pending_consent_is_reviewed():
    at = START + timedelta(days=1)
    assert review_problem(consent(status="pending_review"), approve=True, reason=None, at=at) is None
    assert review_problem(consent(status="pending_review"), approve=False, reason="not the same person", at=at) is None
    for status in ("granted", "rejected", "revoked", "expired"):
        assert "not pending review" in review_problem(consent(status=status), approve=True, reason=None, at=at)


def test_a_rejection_needs_a_reason_and_an_ended_term_cannot_be_approved():
    pending = consent(status="pending_review")
    assert "a rejection needs a reason" in review_problem(pending, approve=False, reason="  no ", at=START)
    assert "reject it instead" in review_problem(pending, approve=True, reason=None, at=END)


# --- consent_problem ----------------------------------------------------------------------------
def test_no_consent_is_a_problem():
    assert consent_problem(None, at=START) == "no consent on record"


@pytest.mark.parametrize("status", ["revoked", "expired"])
def test_consent_not_granted_is_a_problem(status):
    problem = consent_problem(consent(status=status), at=START + timedelta(days=1))
    assert problem is not None
    assert "con-1" in problem and status in problem


def test_consent_before_its_start_is_a_problem():
    """POLICY C4: nothing is allowed before the consent's term starts."""
    problem = consent_problem(consent(), at=START - timedelta(seconds=1))
    assert problem is not None
    assert "not yet in force" in problem and START.isoformat() in problem


@pytest.mark.parametrize("at", [END, END + timedelta(days=30)])
def test_consent_at_or_after_its_end_is_a_problem(at):
    """POLICY C4: nothing is allowed at or after the end of the consent's term."""
    problem = consent_problem(consent(), at=at)
    assert problem is not None
    assert "ended" in problem and END.isoformat() in problem


@pytest.mark.parametrize("at", [START, START + timedelta(days=90), END - timedelta(microseconds=1)])
def test_consent_within_its_term_allows_airing(at):
    assert consent_problem(consent(), at=at) is None


# --- scope_problem ------------------------------------------------------------------------------
def test_product_in_scope_is_allowed():
    assert scope_problem(consent(), product(), language="en") is None


def test_scope_comparisons_ignore_case():
    assert scope_problem(consent(), product(brand="GLOW", category="Beauty"), language="zh") is None


@pytest.mark.parametrize("category", ["alcohol", "Alcohol", "GAMBLING", "Medicine", "politics"])
def test_excluded_category_is_refused_whatever_its_case(category):
    """POLICY C3: a product of an excluded category is outside the scope, whatever its case."""
    problem = scope_problem(consent(), product(category=category), language="en")
    assert problem is not None
    assert "excluded" in problem and repr(category) in problem


def test_excluded_category_wins_over_an_allowed_one():
    scope = {"categories": ["alcohol"], "excluded_categories": ["ALCOHOL"]}
    problem = scope_problem(consent(scope=scope), product(category="alcohol"), language="en")
    assert problem is not None and "excluded" in problem


def test_category_not_allowed_is_refused():
    problem = scope_problem(consent(), product(category="kitchen"), language="en")
    assert problem is not None
    assert "'kitchen'" in problem and "not among the consented categories" in problem


def test_brand_not_allowed_is_refused():
    problem = scope_problem(consent(), product(brand="Rival"), language="en")
    assert problem is not None
    assert "'Rival'" in problem and "brands" in problem


@pytest.mark.parametrize("language", ["de", "fr", "en-us"])
def test_language_not_allowed_is_refused(language):
    problem = scope_problem(consent(), product(), language=language)
    assert problem is not None
    assert repr(language) in problem and "languages" in problem


def test_empty_brand_list_leaves_brands_open_within_the_categories():
    # How the demo scopes a consent: categories only.
    c = consent(scope={"brands": [], "categories": ["outdoor"]})
    assert scope_problem(c, product(brand="AnyBrand"), language="en") is None
    assert scope_problem(c, product(brand="AnyBrand", category="home"), language="en") is not None


# --- schemas ------------------------------------------------------------------------------------
def consent_create(**overrides) -> ConsentCreate:
    args = {"signed_name": "Mia Chen", "statement": "I consent to a clone of my face and voice.",
            "starts_at": START, "ends_at": END, "avatar_id": "av-1", "phrase_id": "cp-0",
            "scope": {"brands": ["TrailLite"], "categories": [],
                      "excluded_categories": ["alcohol", "gambling", "medicine", "politics"],
                      "platforms": ["youtube"], "territories": ["US"], "languages": ["en"], "max_hours_per_day": 6}}
    return ConsentCreate(**{**args, **overrides})


def test_consent_create_accepts_a_valid_grant():
    c = consent_create()
    assert c.scope.brands == ["TrailLite"]
    assert {"alcohol", "gambling", "medicine", "politics"} <= set(c.scope.excluded_categories)


@pytest.mark.parametrize("ends_at", [START, START - timedelta(days=1)])
def test_consent_create_refuses_a_term_that_ends_before_it_starts(ends_at):
    with pytest.raises(ValidationError) as exc:
        consent_create(ends_at=ends_at)
    assert exc.value.errors()[0]["loc"] == ("ends_at",)


def test_consent_create_refuses_unknown_keys():
    with pytest.raises(ValidationError) as exc:
        consent_create(unlimited=True)
    assert exc.value.errors()[0]["loc"] == ("unlimited",)


SCOPE = {"brands": ["TrailLite"], "categories": ["outdoor"],
         "excluded_categories": ["alcohol", "gambling", "medicine", "politics"],
         "platforms": ["youtube"], "territories": ["US"], "languages": ["en"], "max_hours_per_day": 6}


def scope_errors(**overrides) -> list[dict]:
    with pytest.raises(ValidationError) as exc:
        ConsentScope(**{**SCOPE, **overrides})
    return exc.value.errors()


def test_consent_scope_accepts_a_complete_scope():
    scope = ConsentScope(**SCOPE)
    assert scope.max_hours_per_day == 6 and scope.territories == ["US"]


@pytest.mark.parametrize("overrides, loc", [({"everything": True}, ("everything",)),
                                            ({"max_hours_per_day": 25}, ("max_hours_per_day",)),
                                            ({"max_hours_per_day": 0}, ("max_hours_per_day",))])
def test_consent_scope_refuses_unknown_keys_and_bad_hours(overrides, loc):
    errors = scope_errors(**overrides)
    assert [e["loc"] for e in errors] == [loc]


@pytest.mark.parametrize("field", sorted(SCOPE))
def test_consent_scope_requires_every_field(field):
    """POLICY C3: a scope names every field: brands, categories, exclusions, platforms, territories, languages and daily
    hours."""
    with pytest.raises(ValidationError) as exc:
        ConsentScope(**{k: v for k, v in SCOPE.items() if k != field})
    assert [(e["loc"], e["type"]) for e in exc.value.errors()] == [((field,), "missing")]


@pytest.mark.parametrize("field", ["excluded_categories", "platforms", "territories", "languages"])
def test_consent_scope_refuses_an_empty_list_where_one_is_needed(field):
    assert [e["loc"] for e in scope_errors(**{field: []})] == [(field,)]


def test_consent_scope_naming_neither_brands_nor_categories_is_refused():
    """POLICY C3: a vague scope, naming neither brands nor categories, is refused."""
    errors = scope_errors(brands=[], categories=[])
    assert len(errors) == 1
    assert "neither brands nor categories" in errors[0]["msg"]


@pytest.mark.parametrize("brands, categories", [(["TrailLite"], []), ([], ["outdoor"])])
def test_consent_scope_naming_brands_or_categories_is_enough(brands, categories):
    scope = ConsentScope(**{**SCOPE, "brands": brands, "categories": categories})
    assert (scope.brands, scope.categories) == (brands, categories)


def test_consent_scope_refuses_a_category_both_allowed_and_excluded():
    errors = scope_errors(categories=["outdoor", "Alcohol"])
    assert len(errors) == 1
    assert "both allowed and excluded" in errors[0]["msg"] and "'alcohol'" in errors[0]["msg"]


@pytest.mark.parametrize("territory", ["USA", "U", "1A", "", "United States"])
def test_consent_scope_refuses_territories_that_are_not_iso_alpha2(territory):
    errors = scope_errors(territories=["US", territory])
    assert [e["loc"] for e in errors] == [("territories",)]
    assert repr(territory.strip().upper()) in errors[0]["msg"]


def test_consent_scope_normalises_territories_to_upper_case():
    assert ConsentScope(**{**SCOPE, "territories": ["us", " de "]}).territories == ["US", "DE"]


@pytest.mark.parametrize("hours", [0.001, 24])
def test_consent_scope_accepts_hours_within_a_day(hours):
    assert ConsentScope(**{**SCOPE, "max_hours_per_day": hours}).max_hours_per_day == hours


def test_consent_create_refuses_a_short_statement():
    with pytest.raises(ValidationError) as exc:
        consent_create(statement="yes")
    assert exc.value.errors()[0]["loc"] == ("statement",)


# --- destination_problem ------------------------------------------------------------------------
def test_destinations_within_scope_are_allowed():
    assert destination_problem(consent(), platforms=["YouTube"], territories=["us"]) is None


def test_a_channel_without_destinations_is_only_checked_for_territories():
    # The local preview server is not a destination; its territories still must be consented.
    assert destination_problem(consent(), platforms=[], territories=["US"]) is None
    assert destination_problem(consent(), platforms=[], territories=["DE"]) is not None


def test_platform_outside_scope_is_refused():
    problem = destination_problem(consent(), platforms=["youtube", "douyin"], territories=["US"])
    assert problem is not None
    assert "platform douyin" in problem and "['youtube']" in problem and "con-1" in problem


def test_territory_outside_scope_is_refused():
    problem = destination_problem(consent(), platforms=["youtube"], territories=["US", "cn"])
    assert problem is not None
    assert "territory CN" in problem and "['US']" in problem and "con-1" in problem


def test_a_channel_without_territories_is_refused():
    problem = destination_problem(consent(), platforms=["youtube"], territories=[])
    assert problem is not None and "names no territories" in problem


def test_a_scope_without_platforms_or_territories_allows_none():
    c = consent(scope={"brands": ["TrailLite"]})
    assert "platform youtube" in destination_problem(c, platforms=["youtube"], territories=["US"])
    assert "territory US" in destination_problem(c, platforms=[], territories=["US"])


# --- approval_problem ---------------------------------------------------------------------------
APPROVED = {("sc-1", "a" * 64)}


def test_approval_is_not_needed_unless_the_consent_requires_it():
    assert approval_problem(consent(), script_id="sc-2", text_sha256="b" * 64, approved=set()) is None


def test_approved_text_may_air():
    c = consent(require_script_approval=True)
    assert approval_problem(c, script_id="sc-1", text_sha256="a" * 64, approved=APPROVED) is None


def test_script_never_approved_is_refused():
    c = consent(require_script_approval=True)
    problem = approval_problem(c, script_id="sc-2", text_sha256="a" * 64, approved=APPROVED)
    assert problem is not None
    assert "sc-2 awaits the creator's approval" in problem and "con-1" in problem


def test_script_changed_since_approval_is_refused():
    c = consent(require_script_approval=True)
    problem = approval_problem(c, script_id="sc-1", text_sha256="b" * 64, approved=APPROVED)
    assert problem is not None
    assert "sc-1 changed since the creator approved it" in problem and "con-1" in problem


# --- daily_cap_problem --------------------------------------------------------------------------
def test_air_time_under_the_cap_is_allowed():
    assert daily_cap_problem(consent(), aired_seconds=7 * 3600, next_seconds=3599) is None


def test_filling_the_cap_exactly_is_allowed():
    assert daily_cap_problem(consent(), aired_seconds=8 * 3600 - 10, next_seconds=10) is None


def test_next_segment_over_the_cap_is_refused():
    problem = daily_cap_problem(consent(), aired_seconds=8 * 3600 - 5, next_seconds=6)
    assert problem is not None
    assert "allows 8 h on air in 24 h" in problem and "8.00 h aired" in problem
    assert "next segment is 6.0 s" in problem and "con-1" in problem


def test_air_time_already_over_the_cap_is_refused_without_a_next_segment():
    problem = daily_cap_problem(consent(), aired_seconds=8 * 3600 + 1)
    assert problem is not None
    assert "allows 8 h" in problem and "next segment" not in problem


def test_a_scope_without_a_cap_allows_no_air_time():
    c = consent(scope={"brands": ["TrailLite"]})
    assert daily_cap_problem(c, aired_seconds=0, next_seconds=0) is not None  # not even planning
    assert daily_cap_problem(c, aired_seconds=0, next_seconds=1) is not None


def test_a_cap_filled_exactly_stops_planning_and_the_idle_loop():
    assert daily_cap_problem(consent(), aired_seconds=8 * 3600, next_seconds=0) is not None
    assert daily_cap_problem(consent(), aired_seconds=8 * 3600 - 1, next_seconds=0) is None
