"""Consent rules checked at plan, render and air time (POLICY C3, C4). Pure functions."""

from __future__ import annotations

from datetime import datetime

from studio.models import Consent, Product


def consent_problem(consent: Consent | None, *, at: datetime) -> str | None:
    """Why this consent does not allow airing at `at`, or None when it does."""
    if consent is None:
        return "no consent on record"
    if consent.status != "granted":
        return f"consent {consent.id} is {consent.status}"
    if at < consent.starts_at:
        return f"consent {consent.id} starts at {consent.starts_at.isoformat()}, not yet in force"
    if at >= consent.ends_at:
        return f"consent {consent.id} ended at {consent.ends_at.isoformat()}"
    return None


def scope_problem(consent: Consent, product: Product, *, language: str) -> str | None:
    """Why a script for `product` in `language` lies outside the consent scope, or None."""
    scope = consent.scope or {}
    category = product.category.lower()
    if category in {c.lower() for c in scope.get("excluded_categories", [])}:
        return f"category {product.category!r} is excluded by consent {consent.id}"
    allowed = {c.lower() for c in scope.get("categories", [])}
    if allowed and category not in allowed:
        return f"category {product.category!r} is not among the consented categories {sorted(allowed)}"
    brands = {b.lower() for b in scope.get("brands", [])}
    if brands and product.brand.lower() not in brands:
        return f"brand {product.brand!r} is not among the consented brands {sorted(brands)}"
    languages = {lang.lower() for lang in scope.get("languages", [])}
    if languages and language.lower() not in languages:
        return f"language {language!r} is not among the consented languages {sorted(languages)}"
    return None
