"""studio.admission on a real SQLite database built by the migrations: one answer to "what is wrong with this
script, show or airing", whoever asks (the API and the CLI through api.service, the scheduler, the streamer)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session

from studio.admission import Airing, airing_problems, script_problems, show_problems
from studio.errors import Refused
from studio.models import Attestation, Avatar, Channel, Consent, Creator, Destination, Product, Script, utcnow
from tests.conftest import db_show

NOW = utcnow()
CLEAN = "Paid partnership with Lumen Labs. Meet the Glow Serum."
CLAIM = "Paid partnership with Lumen Labs. I use the Glow Serum every morning."


@pytest.fixture
def s(fresh_db):
    with Session(fresh_db, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def w(s, fresh_db):
    """The rows of tests.conftest.db_show (a creator with an avatar and a consent in term, full scope, a product, a
    US channel), and a second creator."""
    ids = db_show(fresh_db)
    ben = Creator(name="Ben")
    s.add(ben)
    s.commit()
    consent = s.get(Consent, ids["consent"])
    return {"ben": ben, "avatar": s.get(Avatar, ids["avatar"]), "consent": consent,
            "product": s.get(Product, s.get(Script, ids["script"]).product_id),
            "channel": s.get(Channel, ids["channel"])}


def _script(s, w, text: str) -> Script:
    script = Script(product_id=w["product"].id, text=text)
    s.add(script)
    s.commit()
    return script


def test_a_clean_script_has_no_problems_with_or_without_a_consent(s, w):
    assert script_problems(s, CLEAN, language="en", product=w["product"]) == []
    assert script_problems(s, CLEAN, language="en", product=w["product"], consent=w["consent"],
                           channel=w["channel"]) == []


def test_a_first_person_claim_is_judged_against_the_consents_own_creator(s, w):
    """Saved, the claim passes when some creator attested it; against a consent, only that creator's counts (S2)."""
    found = script_problems(s, CLAIM, language="en", product=w["product"])
    assert [f["rule"] for f in found] == ["S2.first_person"] and found[0]["words"] and found[0]["fix"]
    s.add(Attestation(creator_id=w["ben"].id, product_id=w["product"].id, kind="use",
                      statement="I use it every morning.", signed_name="Ben"))
    s.commit()
    assert script_problems(s, CLAIM, language="en", product=w["product"]) == []
    against = script_problems(s, CLAIM, language="en", product=w["product"], consent=w["consent"],
                              channel=w["channel"])
    assert [f["rule"] for f in against] == ["S2.first_person"]


def test_airing_says_the_consent_rule_first_then_the_script_rules(s, w):
    script = _script(s, w, CLAIM)
    verdict = airing_problems(s, w["consent"], channel=w["channel"], script=script, at=NOW)
    assert verdict and verdict.usage is None
    assert len(verdict.lint) == 1 and verdict.lint[0].startswith("S2.first_person ")
    assert str(verdict) == verdict.lint[0]
    w["consent"].status = "revoked"
    s.commit()
    verdict = airing_problems(s, w["consent"], channel=w["channel"], script=script, at=NOW)
    assert verdict.usage == f"consent {w['consent'].id} is revoked" and verdict.lint == ()
    assert str(verdict) == verdict.usage


def test_a_clean_airing_is_false_and_the_show_as_a_whole_skips_the_script_rules(s, w):
    script = _script(s, w, CLEAN)
    assert not airing_problems(s, w["consent"], channel=w["channel"], script=script, at=NOW)
    assert airing_problems(s, w["consent"], channel=w["channel"], script=None, at=NOW) == Airing()


def test_a_show_collects_findings_and_refuses_a_presenter_at_once(s, w):
    script = _script(s, w, CLAIM)
    s.add(Destination(channel_id=w["channel"].id, url="-", url_masked="rtmp://live.example/app/****",
                      platform="douyin"))
    s.commit()
    out = show_problems(s, channel=w["channel"], presenters=[(w["avatar"], w["consent"])], scripts=[script],
                        agency_id=None, at=NOW, ends_at=None)
    rules = [f["rule"] for f in out.findings]
    assert "C3" in rules and "S2.first_person" in rules  # douyin is not among the consented platforms
    per_consent = [f for f in out.findings if f["rule"] == "C3" or "script_id" in f]
    assert per_consent and all(f["consent_id"] == w["consent"].id for f in per_consent)
    assert out.awaiting == []  # the consent does not require the creator's approval
    with pytest.raises(Refused) as late:
        show_problems(s, channel=w["channel"], presenters=[(w["avatar"], w["consent"])], scripts=[script],
                      agency_id=None, at=NOW, ends_at=w["consent"].ends_at + timedelta(days=1))
    assert late.value.status_code == 422 and "(POLICY C4)" in str(late.value)
    with pytest.raises(Refused) as agency:
        show_problems(s, channel=w["channel"], presenters=[(w["avatar"], w["consent"])], scripts=[script],
                      agency_id="someone", at=NOW, ends_at=None)
    assert agency.value.status_code == 403 and "grants no agency" in str(agency.value)


def test_a_refusal_reads_as_lines_for_the_command_line():
    refused = Refused(422, {"message": "the script breaks the script rules", "findings": [
        {"rule": "S1.disclosure", "words": "", "message": "no disclosure", "fix": "say it", "script_id": "s1"}]})
    assert refused.lines() == ["the script breaks the script rules",
                               "  S1.disclosure in script s1: no disclosure Fix: say it"]
    assert Refused(404, "script 'x' does not exist").lines() == ["script 'x' does not exist"]
