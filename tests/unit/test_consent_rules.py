"""Consent rules (POLICY C3, C4) and the consent schemas that feed them."""

from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from studio.consent import consent_problem, scope_problem
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


# --- consent_problem ----------------------------------------------------------------------------
def test_no_consent_is_a_problem():
    assert consent_problem(None, at=START) == "no consent on record"


@pytest.mark.parametrize("status", ["revoked", "expired"])
def test_consent_not_granted_is_a_problem(status):
    problem = consent_problem(consent(status=status), at=START + timedelta(days=1))
    assert problem is not None
    assert "con-1" in problem and status in problem


def test_consent_before_its_start_is_a_problem():
    problem = consent_problem(consent(), at=START - timedelta(seconds=1))
    assert problem is not None
    assert "not yet in force" in problem and START.isoformat() in problem


@pytest.mark.parametrize("at", [END, END + timedelta(days=30)])
def test_consent_at_or_after_its_end_is_a_problem(at):
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


def test_consent_scope_refuses_unknown_keys_and_bad_hours():
    with pytest.raises(ValidationError):
        ConsentScope(everything=True)
    with pytest.raises(ValidationError):
        ConsentScope(max_hours_per_day=25)
    with pytest.raises(ValidationError):
        ConsentScope(max_hours_per_day=0)


def test_consent_create_refuses_a_short_statement():
    with pytest.raises(ValidationError) as exc:
        consent_create(statement="yes")
    assert exc.value.errors()[0]["loc"] == ("statement",)
