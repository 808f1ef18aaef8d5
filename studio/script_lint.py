"""Script lint (POLICY S1-S4): what a promotion script must and must not say, checked before it is planned.

Pure: a script's text, its product and the creator's consent and attestations in, findings out. The words
to look for are data in configs/script_rules.yaml (see the comments there for how phrases match).

- S1 `S1.disclosure` (error): no paid-partnership disclosure in the script's language anywhere in it.
  `S1.placement` (warning): there is one, but not in the first sentence, where a viewer who joins a show
  on this segment hears it first (FTC: disclosures must be hard to miss).
- S2 `S2.first_person` (error): a first-person claim the creator has not attested for this product.
- S3 `S3.category.NAME` / `S3.profile.NAME` (error): a banned claim of the product's category or of one of
  the channel's policy profiles (`default` always applies, first, as in studio/policy_profiles.py).
- S4 `S4.category` / `S4.brand` / `S4.language` (error): outside the consent scope, by the very rules of
  `studio.consent.scope_problem`. `S4.unchecked` (warning): no scope given, e.g. an agency linting a script
  before a creator is chosen; planning must pass the scope of the consent the show airs under.
- `S1.language` / `S2.language` (error): no rules for the script's language, so S1 and S2 cannot be checked.

Only errors refuse a script (`refused`); warnings are shown to the script's author.

Attestations (S2). A first-person claim is of one kind (`CLAIM_KINDS`): `use` ("I use", "I've been
using", "I swear by"), `opinion` ("my favourite", "I recommend") or `results` ("changed my skin", "works
for me"). The creator attests facts about one product, not wordings: `attested_claims` holds
"PRODUCT_ID:KIND" (e.g. "p1:use") or "PRODUCT_ID:*" for every kind. Kinds rather than phrases, because the
same fact is worded many ways and in several languages, and a phrase list would refuse a paraphrase of an
attested fact while letting a different fact through in words that happen to match. Not the bare product
id, because having used a product does not make "it cleared my acne" true: results need their own
attestation. A claim whose words match several kinds ("I love using") needs all of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

from pydantic import Field, field_validator, model_validator

from studio.config import ConfigError, Strict, parse_yaml_model
from studio.consent import scope_problem
from studio.resources import SCRIPT_RULES

RULES_PATH = SCRIPT_RULES
NAME_PATTERN = re.compile(r"^[a-z0-9_]+$")
LANGUAGE_PATTERN = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")

ClaimKind = Literal["use", "opinion", "results"]
CLAIM_KINDS: dict[str, str] = {
    "use": "having used the product",
    "opinion": "a personal opinion of the product",
    "results": "personal results from the product",
}
Severity = Literal["error", "warning"]

# Characters a script may carry in place of ones the rules are written with; one for one, so a match's span
# in the normalised text is its span in the original and the finding quotes the author's own characters.
_NORMALISE = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'", "\u00a0": " ",
                            "\u2010": "-", "\u2011": "-", "\u2013": "-", "\u2014": "-", "\uff1a": ":"})
# Letters and digits of Latin scripts: a phrase that starts or ends with one must not continue a word there.
# CJK characters are not in it, since Chinese writes no spaces between words.
_LATIN = "0-9A-Za-z\u00c0-\u024f"
_LATIN_CHAR = re.compile(f"[{_LATIN}]")
_SEPARATORS = re.compile(r"[\s\-]+")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|[。！？\n]")


# --- findings and inputs --------------------------------------------------------------------------
@dataclass(frozen=True)
class ProductInfo:
    """What the lint needs to know of a product, so that it needs no database."""

    id: str
    name: str
    brand: str
    category: str

    @classmethod
    def of(cls, product) -> ProductInfo:
        """From a `studio.models.Product` (or anything with the same four attributes)."""
        return cls(id=product.id, name=product.name, brand=product.brand, category=product.category)


@dataclass(frozen=True)
class Finding:
    rule: str                  # "S1.disclosure", "S3.profile.cn", ...: the POLICY rule, a dot, what was found
    words: str                 # the offending words as written in the script; "" for something missing
    message: str               # what is wrong
    fix: str                   # how to fix it
    severity: Severity = "error"
    start: int | None = None   # offset of `words` in the script, for highlighting; None when missing

    @property
    def policy(self) -> str:
        return self.rule.split(".", 1)[0]


def refused(findings: Iterable[Finding]) -> bool:
    """Whether any finding is an error, i.e. the script may not be planned."""
    return any(f.severity == "error" for f in findings)


# --- rules ----------------------------------------------------------------------------------------
def _check_regexes(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
    return patterns


def _check_phrases(phrases: list[str]) -> list[str]:
    blank = [p for p in phrases if not p.strip()]
    if blank:
        raise ValueError(f"phrases must not be blank, got {blank!r}")
    return phrases


class LanguageRules(Strict):
    disclosures: list[str] = Field(
        ..., min_length=1, description="Paid-partnership disclosure phrases (S1); any one anywhere satisfies S1, "
        "the first sentence is best. Only the script's own language counts: a viewer must understand it.")
    opening: str = Field(
        ..., description="A first sentence that discloses, with {brand}; suggested in the S1 fix.")
    first_person: dict[ClaimKind, list[str]] = Field(
        ..., description="Regular expressions (case-insensitive) of first-person claims of each kind (S2).")

    @field_validator("disclosures")
    @classmethod
    def _disclosure_phrases(cls, v: list[str]) -> list[str]:
        return _check_phrases(v)

    @field_validator("first_person")
    @classmethod
    def _patterns(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for patterns in v.values():
            _check_regexes(patterns)
        return v

    @model_validator(mode="after")
    def _opening_discloses(self) -> LanguageRules:
        try:
            text = self.opening.format(brand="Brand")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"opening {self.opening!r} may use only the {{brand}} placeholder: {exc}") from None
        if not any(_phrase_regex(p).search(_normalised(text)) for p in self.disclosures):
            raise ValueError(f"opening {self.opening!r} contains none of the disclosures {self.disclosures}")
        return self


class BannedClaim(Strict):
    phrases: list[str] = Field(
        default_factory=list, description="Literal phrases, case-insensitive, on Latin word boundaries; a space "
        "or hyphen matches any run of spaces and hyphens.")
    patterns: list[str] = Field(
        default_factory=list, description="Regular expressions (case-insensitive) for what a phrase cannot say, "
        "e.g. 第一 but not 第一次.")
    reason: str = Field(..., min_length=1, description="Why it is banned, naming the source; quoted in the finding.")
    fix: str = Field(..., min_length=1, description="How to rewrite it; quoted in the finding.")

    @field_validator("phrases")
    @classmethod
    def _phrase_list(cls, v: list[str]) -> list[str]:
        return _check_phrases(v)

    @field_validator("patterns")
    @classmethod
    def _pattern_list(cls, v: list[str]) -> list[str]:
        return _check_regexes(v)

    @model_validator(mode="after")
    def _something_to_match(self) -> BannedClaim:
        if not self.phrases and not self.patterns:
            raise ValueError("give phrases or patterns to match")
        return self

    def regexes(self) -> list[re.Pattern]:
        return [_phrase_regex(p) for p in self.phrases] + [_regex(p) for p in self.patterns]


class CategoryRules(Strict):
    applies_to: list[str] = Field(
        ..., min_length=1, description="Product categories (case-insensitive) these claims are banned for.")
    claims: list[BannedClaim] = Field(..., min_length=1, description="Banned claims of these categories (S3).")


class ScriptRules(Strict):
    """The whole of configs/script_rules.yaml."""

    languages: dict[str, LanguageRules] = Field(
        ..., min_length=1, description="S1 disclosures and S2 first-person claims per language (BCP 47, lower case).")
    categories: dict[str, CategoryRules] = Field(
        default_factory=dict, description="S3 banned claims per product category group.")
    profiles: dict[str, list[BannedClaim]] = Field(
        ..., description="S3 banned claims per policy profile; `default` applies to every script and must be "
        "present, and every profile a channel can name needs an entry (it may be empty).")

    @field_validator("languages")
    @classmethod
    def _language_names(cls, v: dict) -> dict:
        bad = [lang for lang in v if not LANGUAGE_PATTERN.fullmatch(lang)]
        if bad:
            raise ValueError(f"language keys {bad} are not lower-case language tags like 'en' or 'zh-hans'")
        return v

    @field_validator("categories", "profiles")
    @classmethod
    def _names(cls, v: dict) -> dict:
        bad = [name for name in v if not NAME_PATTERN.fullmatch(name)]
        if bad:
            raise ValueError(f"names {bad} must match {NAME_PATTERN.pattern}")
        return v

    @field_validator("profiles")
    @classmethod
    def _has_default(cls, v: dict) -> dict:
        if "default" not in v:
            raise ValueError("needs a `default` entry: its claims apply to every script")
        return v

    def for_language(self, language: str) -> LanguageRules | None:
        """The rules of `language` ("en-US" falls back to "en"), or None."""
        tag = language.strip().lower()
        return self.languages.get(tag) or self.languages.get(tag.split("-")[0])




@lru_cache(maxsize=16)
def _parse(source: str, text: str) -> ScriptRules:
    # Keyed by the file's text, so a file that changed is parsed again.
    return parse_yaml_model(source, text, ScriptRules, unknown_key="unknown key; remove it or correct its spelling "
                            "(studio/script_lint.py describes the fields)")


def load_script_rules(path: str | Path = RULES_PATH) -> ScriptRules:
    """Load and validate the rules file; ConfigError names the file and each bad key path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [("(file)", "does not exist")]) from None
    return _parse(str(path), text)


# --- matching -------------------------------------------------------------------------------------
def _normalised(text: str) -> str:
    return text.translate(_NORMALISE)


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE)


@lru_cache(maxsize=4096)
def _phrase_regex(phrase: str) -> re.Pattern:
    phrase = _normalised(phrase).strip()
    body = r"[\s\-]+".join(re.escape(part) for part in _SEPARATORS.split(phrase) if part)
    before = f"(?<![{_LATIN}])" if _LATIN_CHAR.match(phrase[0]) else ""
    after = f"(?![{_LATIN}])" if _LATIN_CHAR.match(phrase[-1]) else ""
    return re.compile(before + body + after, re.IGNORECASE)


@dataclass
class _Match:
    start: int
    end: int
    tags: list  # what matched here: claim kinds (S2) or (rule, BannedClaim) pairs (S3)


def _outermost(hits: list[tuple[int, int, object]]) -> list[_Match]:
    """Merge hits so that one inside another is reported with it, not again; first tag of a span first."""
    merged: list[_Match] = []
    for start, end, tag in sorted(hits, key=lambda h: (h[0], -h[1])):
        if merged and start >= merged[-1].start and end <= merged[-1].end:
            if tag not in merged[-1].tags:
                merged[-1].tags.append(tag)
            continue
        merged.append(_Match(start, end, [tag]))
    return merged


# --- the rules ------------------------------------------------------------------------------------
def parse_attestations(attested_claims: Iterable[str]) -> set[tuple[str, str]]:
    """(product id, kind) pairs from "PRODUCT_ID:KIND" / "PRODUCT_ID:*" strings; ValueError names a bad one."""
    pairs = set()
    for item in attested_claims:
        product_id, sep, kind = str(item).strip().rpartition(":")
        kind = kind.strip().lower()
        if not sep or not product_id.strip() or (kind != "*" and kind not in CLAIM_KINDS):
            raise ValueError(f"attested claim {item!r} is not 'PRODUCT_ID:KIND' with KIND one of "
                             f"{', '.join(CLAIM_KINDS)} or *, e.g. 'p1:use'")
        pairs.update((product_id.strip(), k) for k in (CLAIM_KINDS if kind == "*" else [kind]))
    return pairs


def _disclosure(text: str, norm: str, rules: LanguageRules, product: ProductInfo, language: str) -> list[Finding]:
    hits = sorted((m for p in rules.disclosures for m in [_phrase_regex(p).search(norm)] if m),
                  key=lambda m: m.start())
    opening = rules.opening.format(brand=product.brand)
    if not hits:
        return [Finding("S1.disclosure", "", f"the script has no paid-partnership disclosure in {language!r} "
                        f"(POLICY S1; FTC Endorsement Guides, 16 CFR 255.5)",
                        f"start the script with one, e.g. {opening!r}; any of {rules.disclosures} counts")]
    first = hits[0]
    end = _SENTENCE_END.search(norm)
    if end is not None and first.start() >= end.start():
        return [Finding("S1.placement", text[first.start():first.end()],
                        "the disclosure is not in the first sentence, so a viewer who joins on this segment "
                        "hears the pitch before it (POLICY S1; FTC: disclosures must be hard to miss)",
                        f"move it to the start, e.g. {opening!r}", severity="warning", start=first.start())]
    return []


def _first_person(text: str, norm: str, rules: LanguageRules, product: ProductInfo,
                  attested: set[tuple[str, str]]) -> list[Finding]:
    hits = [(m.start(), m.end(), kind) for kind, patterns in rules.first_person.items()
            for pattern in patterns for m in _regex(pattern).finditer(norm) if m.end() > m.start()]
    findings = []
    for match in _outermost(hits):
        missing = [kind for kind in match.tags if (product.id, kind) not in attested]
        if not missing:
            continue
        words = text[match.start:match.end]
        what = " and ".join(CLAIM_KINDS[k] for k in missing)
        wanted = ", ".join(f"'{product.id}:{k}'" for k in missing)
        findings.append(Finding(
            "S2.first_person", words,
            f"{words!r} claims {what} ({product.name!r}, product {product.id}) in the creator's voice, and the creator "
            f"has not attested that (POLICY S2; FTC: a virtual presenter is an endorser and fake testimonials are "
            f"banned, 16 CFR 255 and 465)",
            f"remove the first-person claim or say it in the third person about the product; if it is true, the "
            f"creator records the attestation {wanted} for this product", start=match.start))
    return findings


def _banned_lists(rules: ScriptRules, product: ProductInfo, profiles: Sequence[str]):
    category = product.category.strip().lower()
    for name, group in rules.categories.items():
        if category in {c.strip().lower() for c in group.applies_to}:
            for claim in group.claims:
                yield f"S3.category.{name}", f"category {name}", claim
    for name in dict.fromkeys(["default", *profiles]):
        if name not in rules.profiles:
            raise ConfigError("script rules", [("profiles", f"no script rules for policy profile {name!r}; known: "
                                                f"{', '.join(rules.profiles)}; add a `{name}:` list (it may be empty) "
                                                f"under profiles in {RULES_PATH.name}")])
        for claim in rules.profiles[name]:
            yield f"S3.profile.{name}", f"profile {name}", claim


def _banned(text: str, norm: str, rules: ScriptRules, product: ProductInfo, profiles: Sequence[str]) -> list[Finding]:
    hits = [(m.start(), m.end(), (rule, label, claim)) for rule, label, claim in _banned_lists(rules, product, profiles)
            for regex in claim.regexes() for m in regex.finditer(norm) if m.end() > m.start()]
    findings = []
    for match in _outermost(hits):
        rule, label, claim = match.tags[0]
        words = text[match.start:match.end]
        findings.append(Finding(rule, words, f"{words!r} is a banned claim ({label}): {claim.reason}", claim.fix,
                                start=match.start))
    return findings


def _scope(product: ProductInfo, language: str, consent_scope: Mapping | None, consent_id: str | None) -> list[Finding]:
    if consent_scope is None:
        return [Finding("S4.unchecked", "", "no consent scope was given, so brand, category and language were not "
                        "checked against the creator's consent (POLICY S4)",
                        "lint again with the scope of the consent the show will air under; planning does",
                        severity="warning")]
    consent = SimpleNamespace(id=consent_id or "scope", scope=dict(consent_scope))
    problem = scope_problem(consent, product, language=language)  # duck-typed: it reads only these attributes
    if problem is None:
        return []
    what = problem.split(" ", 1)[0]
    words = {"category": product.category, "brand": product.brand, "language": language}.get(what, "")
    return [Finding(f"S4.{what if words else 'scope'}", words, f"outside the consent scope: {problem} (POLICY S4)",
                    "choose a product and language the creator consented to, or ask the creator for a consent "
                    "whose scope covers it (POLICY C3)")]


def lint_script(text: str, *, language: str, product: ProductInfo, consent_scope: Mapping | None,
                attested_claims: Iterable[str], profiles: Sequence[str] = ("default",),
                rules: ScriptRules | None = None, consent_id: str | None = None) -> list[Finding]:
    """Every S1-S4 finding of a script, in rule order and then in text order; `refused` says if any refuses it.

    `consent_scope` is a consent's `scope` dict (studio.models.ConsentScope dumped), None when no consent is
    known yet; `consent_id` only names it in messages. `attested_claims`: see the module docstring.
    `profiles`: the channel's policy profiles; `default` always applies. `rules`: default the shipped file."""
    if isinstance(profiles, str):  # a bare "cn" would otherwise be read as the names "c" and "n"
        raise TypeError(f"profiles must be a list of profile names, got {profiles!r}")
    rules = rules or load_script_rules()
    attested = parse_attestations(attested_claims)
    norm = _normalised(text)
    findings: list[Finding] = []
    language_rules = rules.for_language(language)
    if language_rules is None:
        known = ", ".join(rules.languages)
        for rule, what in (("S1.language", "paid-partnership disclosures"), ("S2.language", "first-person claims")):
            findings.append(Finding(rule, language, f"no script rules for language {language!r} (rules exist for "
                                    f"{known}), so {what} cannot be checked", f"write the script in one of {known}, "
                                    f"or add a `{language.lower()}:` entry under languages in {RULES_PATH.name}"))
    else:
        findings += _disclosure(text, norm, language_rules, product, language)
        findings += _first_person(text, norm, language_rules, product, attested)
    findings += _banned(text, norm, rules, product, profiles)
    findings += _scope(product, language, consent_scope, consent_id)
    return findings
