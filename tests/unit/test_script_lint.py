"""Script lint (POLICY S1-S4): each rule fires and stays quiet, on exact words, in English and Chinese."""

import copy
from pathlib import Path

import pytest
import yaml

from studio.config import ConfigError
from studio.models import ConsentScope, Product
from studio.policy_profiles import available_profiles
from studio.script_lint import (
    RULES_PATH,
    Finding,
    ProductInfo,
    ScriptRules,
    lint_script,
    load_script_rules,
    parse_attestations,
    refused,
)

SERUM = ProductInfo(id="p1", name="Glow Serum", brand="Glow", category="beauty")
JACKET = ProductInfo(id="p2", name="Rain jacket", brand="TrailLite", category="outdoor")
SCOPE = ConsentScope(brands=["Glow", "TrailLite"], categories=["beauty", "outdoor"],
                     excluded_categories=["alcohol", "gambling", "medicine", "politics"], platforms=["youtube"],
                     territories=["US"], languages=["en", "zh"], max_hours_per_day=8).model_dump()
CLEAN = "Paid partnership with Glow: this serum has vitamin C and a light texture. Tap the cart to get yours."
CLEAN_ZH = "广告：本场为Glow合作推广。这款精华含有维生素C，质地清爽，点击购物车下单。"


def lint(text: str, *, product: ProductInfo = SERUM, language: str = "en", scope: dict | None = SCOPE,
         attested: set[str] = frozenset(), profiles=("default",)) -> list[Finding]:
    return lint_script(text, language=language, product=product, consent_scope=scope, attested_claims=attested,
                       profiles=profiles)


def rules_of(findings: list[Finding]) -> list[str]:
    return [f.rule for f in findings]


def words_of(findings: list[Finding], prefix: str) -> list[str]:
    return [f.words for f in findings if f.rule.startswith(prefix)]


# --- clean scripts ------------------------------------------------------------------------------
@pytest.mark.parametrize("profiles", [("default",), ("cn",), ("eu",), ("us",), ("cn", "eu", "us")])
def test_a_clean_script_passes_under_every_profile(profiles):
    assert lint(CLEAN, profiles=profiles) == []


def test_a_clean_chinese_script_passes():
    assert lint(CLEAN_ZH, language="zh", profiles=["cn"]) == []


def test_every_finding_names_rule_words_message_and_fix():
    findings = lint("I use this and it is the best, guaranteed results.", profiles=["cn"],
                    scope={**SCOPE, "brands": ["Other"]})
    assert {f.policy for f in findings} == {"S1", "S2", "S3", "S4"}
    for f in findings:
        assert f.rule.count(".") >= 1 and f.message and f.fix
    assert refused(findings)


# --- S1 disclosure ------------------------------------------------------------------------------
def test_missing_disclosure_is_an_error_with_a_suggested_opening():
    """POLICY S1: a script with no paid-partnership disclosure is refused, with a disclosing opening suggested."""
    findings = lint("This serum has vitamin C. Tap the cart.")
    assert rules_of(findings) == ["S1.disclosure"]
    (f,) = findings
    assert f.severity == "error" and f.words == "" and f.start is None
    assert "Paid partnership with Glow:" in f.fix


@pytest.mark.parametrize("opening", ["Sponsored by Glow.", "#ad This serum", "Ad: this serum", "AD: this serum",
                                     "This is an advertisement for Glow.", "PAID PARTNERSHIP with Glow."])
def test_any_disclosure_phrase_in_the_first_sentence_passes(opening):
    assert lint(f"{opening} It has vitamin C.") == []


def test_disclosure_after_the_first_sentence_is_only_a_warning():
    findings = lint("This serum has vitamin C. Tap the cart. #ad")
    assert rules_of(findings) == ["S1.placement"]
    assert findings[0].severity == "warning" and findings[0].words == "#ad"
    assert not refused(findings)


@pytest.mark.parametrize("text", ["This is a bad: idea. It has vitamin C.", "Try #adorable shades.",
                                  "Our sponsoredness is low."])
def test_disclosure_words_inside_other_words_do_not_count(text):
    assert "S1.disclosure" in rules_of(lint(text))


def test_disclosure_must_be_in_the_script_language():
    assert "S1.disclosure" in rules_of(lint("Paid partnership: 这款精华含有维生素C。", language="zh"))
    assert rules_of(lint("这款精华含有维生素C。广告", language="zh")) == ["S1.placement"]


def test_language_subtag_falls_back_and_unknown_language_cannot_pass():
    assert lint(CLEAN, language="en-US", scope={**SCOPE, "languages": ["en-US"]}) == []
    findings = lint("Partenariat rémunéré avec Glow.", language="fr", scope={**SCOPE, "languages": ["fr"]})
    assert rules_of(findings) == ["S1.language", "S2.language"]
    assert refused(findings) and "en, zh" in findings[0].message


# --- S2 first-person claims ---------------------------------------------------------------------
@pytest.mark.parametrize("claim, kind", [
    ("I use it every morning", "use"), ("I've been using it for a month", "use"),
    ("I have been using it", "use"), ("I love using it", "use"), ("I swear by it", "use"),
    ("It is my favourite serum", "opinion"), ("It's my favorite", "opinion"), ("I highly recommend it", "opinion"),
    ("I'd recommend it", "opinion"), ("It changed my skin", "results"), ("It works for me", "results"),
    ("I tried it last week", "use"), ("I\u2019ve been using it", "use"),
])
def test_first_person_claims_are_refused_without_attestation(claim, kind):
    """POLICY S2: a first-person claim of use, opinion or results is refused unless attested."""
    findings = lint(f"{CLEAN} {claim}.")
    assert rules_of(findings) == ["S2.first_person"]
    assert findings[0].words.lower() in claim.lower()
    assert f"'p1:{kind}'" in findings[0].fix


def test_the_finding_quotes_the_words_as_written():
    text = f"{CLEAN} Honestly I\u2019VE BEEN USING it."
    (f,) = lint(text)
    assert f.words == "I\u2019VE BEEN USING" and text[f.start:f.start + len(f.words)] == f.words


def test_an_attested_kind_for_this_product_passes():
    text = f"{CLEAN} I use it every morning and it changed my skin."
    assert words_of(lint(text, attested={"p1:use"}), "S2") == ["changed my skin"]
    assert lint(text, attested={"p1:use", "p1:results"}) == []
    assert lint(text, attested={"p1:*"}) == []


def test_an_attestation_for_another_product_does_not_count():
    """POLICY S2: an attestation counts only for the product it was made for."""
    assert rules_of(lint(f"{CLEAN} I use it.", attested={"p2:*"})) == ["S2.first_person"]


def test_a_claim_of_two_kinds_needs_both():
    text = f"{CLEAN} I love this."
    assert rules_of(lint(text, attested={"p1:use"})) == ["S2.first_person"]
    assert lint(text, attested={"p1:opinion"}) == []


@pytest.mark.parametrize("bad", ["p1", "p1:use it", ":use", "p1:testimony"])
def test_malformed_attestations_are_refused_with_the_format(bad):
    with pytest.raises(ValueError, match="PRODUCT_ID:KIND"):
        parse_attestations({bad})


def test_attestations_are_normalised():
    assert parse_attestations({" p1:USE ", "p2:*"}) == {("p1", "use"), ("p2", "use"), ("p2", "opinion"),
                                                         ("p2", "results")}


@pytest.mark.parametrize("text", ["Users say it feels light.", "We use vitamin C.", "You will love this texture.",
                                  "I love you all, thanks for joining!", "Museum-grade packaging."])
def test_third_person_and_greetings_are_not_first_person_claims(text):
    assert lint(f"{CLEAN} {text}") == []


@pytest.mark.parametrize("claim, words", [("我一直在用这款精华", "我一直在用"), ("亲测有效", "亲测"),
                                          ("我的皮肤变好了", "我的皮肤"), ("我强烈推荐", "我强烈推荐")])
def test_chinese_first_person_claims(claim, words):
    findings = lint(f"{CLEAN_ZH}{claim}。", language="zh")
    assert words_of(findings, "S2") == [words]
    assert lint(f"{CLEAN_ZH}{claim}。", language="zh", attested={"p1:*"}) == []


# --- S3 banned claims ---------------------------------------------------------------------------
@pytest.mark.parametrize("product, claim, rule", [
    (SERUM, "cures acne", "S3.category.beauty"),
    (SERUM, "Anti-aging guaranteed", "S3.category.beauty"),
    (SERUM, "clinically proven", "S3.category.beauty"),
    (ProductInfo("p3", "Vita", "Glow", "Supplements"), "prevents cancer", "S3.category.health"),
    (ProductInfo("p3", "Vita", "Glow", "supplements"), "miracle", "S3.category.health"),
    (ProductInfo("p4", "Fund", "Glow", "finance"), "guaranteed returns", "S3.category.finance"),
    (ProductInfo("p4", "Fund", "Glow", "finance"), "risk free", "S3.category.finance"),
    (JACKET, "100% guaranteed", "S3.profile.default"),
    (JACKET, "no side effects", "S3.profile.default"),
])
def test_banned_claims_fire_with_the_exact_words(product, claim, rule):
    """POLICY S3: banned claims of the product's category and of the profile are refused, quoting the exact words."""
    scope = {**SCOPE, "categories": [], "brands": []}
    findings = lint(f"{CLEAN} Wow, {claim}!", product=product, scope=scope)
    assert rules_of(findings) == [rule]
    assert findings[0].words == claim and findings[0].severity == "error"


def test_category_lists_apply_only_to_their_category():
    assert lint(f"{CLEAN} Clinically proven.", product=JACKET) == []
    assert lint(f"{CLEAN} Clinically proven.", product=ProductInfo("p5", "Cream", "Glow", "SkinCare")) != []


def test_matching_ignores_case_and_spacing_but_keeps_word_boundaries():
    assert words_of(lint(f"{CLEAN} CLINICALLY   PROVEN."), "S3") == ["CLINICALLY   PROVEN"]
    assert words_of(lint(f"{CLEAN} Anti aging guaranteed."), "S3") == ["Anti aging guaranteed"]
    assert lint(f"{CLEAN} Preclinically provenance.") == []


@pytest.mark.parametrize("text", ["Our bestseller is back.", "Bestselling serum.", "No. 12 in the range.",
                                  "Number 10 shade.", "A #10 brush.", "Bothe only sells it."])
def test_cn_english_absolutes_respect_word_boundaries(text):
    assert lint(f"{CLEAN} {text}", profiles=["cn"]) == []


@pytest.mark.parametrize("text, words", [("The best serum.", "best"), ("BEST serum.", "BEST"),
                                         ("It is number one.", "number one"), ("A world's first.", "world's first"),
                                         ("The #1 serum.", "#1"),
                                         ("The world\u2019s first serum.", "world\u2019s first")])
def test_cn_bans_english_absolute_terms(text, words):
    findings = lint(f"{CLEAN} {text}", profiles=["cn"])
    assert words_of(findings, "S3.profile.cn") == [words]
    assert "Art. 9" in findings[0].message
    assert lint(f"{CLEAN} {text}") == []  # not banned by default


@pytest.mark.parametrize("claim", ["最佳", "第一", "国家级", "最高级"])
def test_cn_bans_chinese_absolute_terms(claim):
    findings = lint(f"{CLEAN_ZH}这是{claim}精华。", language="zh", profiles=["cn"])
    assert words_of(findings, "S3.profile.cn") == [claim]
    assert "第九条" in findings[0].message


def test_cn_first_does_not_catch_first_time():
    assert lint(f"{CLEAN_ZH}第一次下单有优惠。", language="zh", profiles=["cn"]) == []


def test_chinese_category_claims():
    findings = lint(f"{CLEAN_ZH}这款药妆能消炎。", language="zh")
    assert words_of(findings, "S3.category.beauty") == ["药妆", "消炎"]


def test_eu_and_us_profiles():
    eu = lint(f"{CLEAN} An eco-friendly bottle; lose 5 kg in a week.", product=JACKET, profiles=["eu"])
    assert words_of(eu, "S3.profile.eu") == ["eco-friendly", "lose 5 kg"]
    us = lint(f"{CLEAN} It is FDA approved.", profiles=["us"])
    assert words_of(us, "S3.profile.us") == ["FDA approved"]


def test_a_claim_inside_a_longer_one_is_reported_once():
    findings = lint(f"{CLEAN} The best in the world.", product=JACKET, profiles=["cn"])
    assert [(f.rule, f.words) for f in findings] == [("S3.profile.default", "best in the world")]


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(ConfigError, match="'uk'.*default, cn, eu, us"):
        lint(CLEAN, profiles=["uk"])
    with pytest.raises(TypeError):
        lint(CLEAN, profiles="cn")


def test_every_policy_profile_has_script_rules():
    assert set(available_profiles()) <= set(load_script_rules().profiles)


# --- S4 consent scope ---------------------------------------------------------------------------
@pytest.mark.parametrize("scope, rule, words", [
    ({**SCOPE, "excluded_categories": ["beauty"]}, "S4.category", "beauty"),
    ({**SCOPE, "categories": ["outdoor"]}, "S4.category", "beauty"),
    ({**SCOPE, "brands": ["TrailLite"]}, "S4.brand", "Glow"),
    ({**SCOPE, "languages": ["zh"]}, "S4.language", "en"),
])
def test_outside_the_consent_scope_is_refused(scope, rule, words):
    """POLICY S4: a script whose category, brand or language lies outside the consent scope is refused."""
    findings = lint_script(CLEAN, language="en", product=SERUM, consent_scope=scope, attested_claims=set(),
                           consent_id="con-1")
    assert [(f.rule, f.words) for f in findings] == [(rule, words)]
    assert "POLICY S4" in findings[0].message and "consent" in findings[0].fix


def test_scope_messages_are_those_of_scope_problem():
    (f,) = lint_script(CLEAN, language="en", product=SERUM, consent_scope={**SCOPE, "excluded_categories": ["beauty"]},
                       attested_claims=set(), consent_id="con-1")
    assert "category 'beauty' is excluded by consent con-1" in f.message


def test_scope_comparisons_ignore_case_like_scope_problem():
    assert lint(CLEAN, scope={"brands": ["GLOW"], "categories": ["Beauty"], "languages": ["EN"]}) == []


def test_no_scope_is_a_warning_not_a_pass_in_silence():
    findings = lint(CLEAN, scope=None)
    assert rules_of(findings) == ["S4.unchecked"] and not refused(findings)


def test_product_info_from_the_table_model():
    product = Product(id="p9", name="Serum", brand="Glow", category="beauty")
    assert ProductInfo.of(product) == ProductInfo("p9", "Serum", "Glow", "beauty")


# --- the rules file -----------------------------------------------------------------------------
def shipped() -> dict:
    return yaml.safe_load(RULES_PATH.read_text(encoding="utf-8"))


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "script_rules.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_the_shipped_rules_load_and_every_claim_names_a_source():
    rules = load_script_rules()
    assert isinstance(rules, ScriptRules) and {"en", "zh"} <= set(rules.languages)
    claims = [c for group in rules.categories.values() for c in group.claims]
    claims += [c for lst in rules.profiles.values() for c in lst]
    for claim in claims:
        assert any(mark in claim.reason for mark in ("(", "（")), f"no source in {claim.reason!r}"


@pytest.mark.parametrize("patch, path", [
    (lambda d: d["profiles"]["cn"][0].update(severity="warning"), "profiles.cn.0.severity"),
    (lambda d: d["categories"]["beauty"].update(enabled=False), "categories.beauty.enabled"),
    (lambda d: d["languages"]["en"].update(negations=["not"]), "languages.en.negations"),
    (lambda d: d.update(general=[]), "general"),
])
def test_unknown_keys_are_rejected_with_file_and_key_path(tmp_path, patch, path):
    data = copy.deepcopy(shipped())
    patch(data)
    source = write(tmp_path, data)
    with pytest.raises(ConfigError) as exc:
        load_script_rules(source)
    assert exc.value.source == str(source)
    assert (path, exc.value.problems[0][1]) in exc.value.problems and "unknown key" in str(exc.value)


@pytest.mark.parametrize("patch, path, text", [
    (lambda d: d["languages"]["en"]["first_person"]["use"].append("I (use"), "languages.en.first_person",
     "not a valid regular expression"),
    (lambda d: d["languages"]["en"]["first_person"].update(hearsay=["x"]), "languages.en.first_person.hearsay.[key]",
     "'use', 'opinion' or 'results'"),
    (lambda d: d["languages"]["en"].update(opening="Hello {brand}"), "languages.en", "none of the disclosures"),
    (lambda d: d["profiles"].pop("default"), "profiles", "default"),
    (lambda d: d["profiles"]["cn"].append({"reason": "r", "fix": "f"}), "profiles.cn.3", "phrases or patterns"),
])
def test_invalid_rules_are_rejected_with_their_key_path(tmp_path, patch, path, text):
    data = copy.deepcopy(shipped())
    patch(data)
    with pytest.raises(ConfigError) as exc:
        load_script_rules(write(tmp_path, data))
    assert any(p == path and text in msg for p, msg in exc.value.problems), exc.value.problems


def test_missing_rules_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_script_rules(tmp_path / "nope.yaml")


def test_rules_can_be_passed_in():
    data = copy.deepcopy(shipped())
    data["profiles"]["default"].append({"phrases": ["vitamin C"], "reason": "test (source)", "fix": "drop it"})
    rules = ScriptRules.model_validate(data)
    findings = lint_script(CLEAN, language="en", product=SERUM, consent_scope=SCOPE, attested_claims=set(),
                           rules=rules)
    assert words_of(findings, "S3") == ["vitamin C"]
