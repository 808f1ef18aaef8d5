"""Consent rules checked at plan, render and air time (POLICY C2-C4), and the review step. Pure functions."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from studio.models import Consent, Product

PENDING_REVIEW, GRANTED, REJECTED = "pending_review", "granted", "rejected"
CHECKED = "checked"  # the video passed the check on an ingest worker; the control side grants it (or holds it)
MIN_REJECT_REASON = 5  # characters: the creator reads it, so "no" is not a reason


def status_after_check(review: Literal["required", "auto"]) -> str:
    """The status of a consent whose video passed the automated check (setting `consent.review`): granted at once
    (`auto`), or waiting for an admin's or reviewer's approval (`required`); a pending consent airs nothing."""
    if review not in ("required", "auto"):
        raise ValueError(f"consent.review must be required or auto, got {review!r}")
    return GRANTED if review == "auto" else PENDING_REVIEW


def review_problem(consent: Consent, *, approve: bool, reason: str | None, at: datetime) -> str | None:
    """Why a reviewer may not approve (or reject, with `reason`) this consent at `at`, or None when they may."""
    if consent.status != PENDING_REVIEW:
        return (f"consent {consent.id} is {consent.status}, not pending review: only a consent waiting for review "
                f"is approved or rejected")
    if approve and at >= consent.ends_at:
        return f"consent {consent.id} ended at {consent.ends_at.isoformat()} UTC before its review; reject it instead"
    if not approve and len((reason or "").strip()) < MIN_REJECT_REASON:
        return (f"a rejection needs a reason of at least {MIN_REJECT_REASON} characters, which the creator reads "
                f"(got {(reason or '').strip()!r})")
    return None


def consent_problem(consent: Consent | None, *, at: datetime) -> str | None:
    """Why this consent does not allow airing at `at`, or None when it does."""
    if consent is None:
        return "no consent on record"
    if consent.status == PENDING_REVIEW:
        return f"consent {consent.id} is pending_review: it airs nothing until an admin or reviewer approves it"
    if consent.status == REJECTED:
        return f"consent {consent.id} is rejected by review: {consent.review_reason}"
    if consent.status != GRANTED:
        return f"consent {consent.id} is {consent.status}"
    if at < consent.starts_at:
        return f"consent {consent.id} starts at {consent.starts_at.isoformat()}, not yet in force"
    if at >= consent.ends_at:
        return f"consent {consent.id} ended at {consent.ends_at.isoformat()}"
    return None


def reaches_product(consent: Consent, product: Product) -> bool:
    """Whether `product` is one that `consent` can concern: it belongs to the agency the consent grants (for a
    consent that grants no agency, the platform's own products). A creator approves scripts and attests claims
    only for such products; anything else answers as if it did not exist."""
    return product.agency_id == consent.agency_id


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


def destination_problem(consent: Consent, *, platforms: list[str], territories: list[str]) -> str | None:
    """Why airing to these destination `platforms` in these `territories` lies outside the consent scope (C3).

    A scope without the key allows nothing: every consent granted through the API or CLI names both."""
    scope = consent.scope or {}
    allowed = {p.lower() for p in scope.get("platforms", [])}
    if outside := sorted({p.lower() for p in platforms} - allowed):
        return (f"platform {', '.join(outside)} is not among the consented platforms {sorted(allowed)} "
                f"of consent {consent.id}")
    if not territories:
        return "the channel names no territories, so the consent's territories cannot be checked"
    allowed = {t.upper() for t in scope.get("territories", [])}
    if outside := sorted({t.upper() for t in territories} - allowed):
        return (f"territory {', '.join(outside)} is not among the consented territories {sorted(allowed)} "
                f"of consent {consent.id}")
    return None


def approval_problem(consent: Consent, *, script_id: str, text_sha256: str,
                     approved: set[tuple[str, str]]) -> str | None:
    """Why a script may not air under a consent that requires the creator's approval of each script, or None.
    `approved` holds (script_id, text_sha256) pairs the creator approved under this consent."""
    if not consent.require_script_approval or (script_id, text_sha256) in approved:
        return None
    if any(sid == script_id for sid, _ in approved):
        return f"script {script_id} changed since the creator approved it; consent {consent.id} needs a new approval"
    return f"script {script_id} awaits the creator's approval (consent {consent.id} requires approval of each script)"


def daily_cap_problem(consent: Consent, *, aired_seconds: float, next_seconds: float = 0.0) -> str | None:
    """Why `next_seconds` more air time would exceed the consent's cap, given `aired_seconds` in the last 24 h."""
    cap_hours = float((consent.scope or {}).get("max_hours_per_day", 0.0))
    cap = cap_hours * 3600.0
    full = aired_seconds + next_seconds > cap + 1e-6 or (next_seconds <= 0 and aired_seconds >= cap - 1e-6)
    if full:
        return (f"consent {consent.id} allows {cap_hours:g} h on air in 24 h; {aired_seconds / 3600:.2f} h aired "
                f"in the last 24 h" + (f" and the next segment is {next_seconds:.1f} s" if next_seconds else ""))
    return None
