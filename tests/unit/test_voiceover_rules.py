"""studio.voiceover on a real SQLite database built by the migrations: one voice per avatar, and when a recorded
voice-over may air (POLICY C7). Each refusal must say why; the planners take a recording's own cut."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from studio.models import Avatar, Channel, Consent, Creator, Product, Script, Show, Voiceover, utcnow
from studio.usage import text_sha256, usage_problem
from studio.voiceover import VoiceError, parse_voice, part_of, recorded_parts, voice_problem, voiceover_of
from tests.conftest import FULL_SCOPE

NOW = utcnow()
TEXT = "Paid partnership with Lumen Labs. Meet the Glow Serum."


@pytest.fixture
def s(fresh_db):
    with Session(fresh_db, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def w(s):
    creator, other = Creator(name="Ava"), Creator(name="Ben")
    s.add_all([creator, other])
    s.flush()
    avatar = Avatar(creator_id=creator.id, name="Ava", bundle_path="-", footage_sha256="-", width=360, height=640,
                    fps=25, duration_s=30, voice="recorded")
    product = Product(name="Glow Serum", brand="Lumen", category="beauty")
    channel = Channel(name="main", territories=["US"])
    s.add_all([avatar, product, channel])
    s.flush()
    consent = Consent(creator_id=creator.id, avatar_id=avatar.id, signed_name="Ava", statement="x" * 30,
                      statement_sha256="-", starts_at=NOW - timedelta(days=2), ends_at=NOW + timedelta(days=30),
                      scope=FULL_SCOPE, voice=True, voice_explicit=True)
    script = Script(product_id=product.id, text=TEXT)
    s.add_all([consent, script])
    s.flush()
    s.add(Show(channel_id=channel.id, avatar_id=avatar.id, consent_id=consent.id, name="s", script_ids=[script.id]))
    s.commit()
    return {"creator": creator, "other": other, "avatar": avatar, "consent": consent, "script": script,
            "channel": channel}


def _voiceover(s, w, **kw) -> Voiceover:
    args = {"script_id": w["script"].id, "text_sha256": text_sha256(w["script"].text), "speaker": "creator",
            "creator_id": w["creator"].id, "approved_at": NOW, "audio_path": "voiceovers/x/y.wav",
            "upload_sha256": "-", "audio_sha256": "-", "duration_s": 4.0, "matched": 1.0,
            "parts": [[0.0, 2.4, "Paid partnership with Lumen Labs."], [2.4, 4.0, "Meet the Glow Serum."]]}
    vo = Voiceover(**{**args, **kw})
    s.add(vo)
    s.commit()
    return vo


@pytest.mark.parametrize("value, parsed", [("tts", ("tts", None)), ("recorded", ("recorded", None)),
                                           ("espeak:en-gb+f3", ("espeak", "en-gb+f3")),
                                           ("espeak:de", ("espeak", "de"))])
def test_parse_voice_accepts_the_three_forms(value, parsed):
    assert parse_voice(value) == parsed


@pytest.mark.parametrize("value", ["", "piper", "espeak:", "espeak:../../etc/passwd", "espeak:en us", "Recorded"])
def test_parse_voice_refuses_anything_else_naming_the_value(value):
    with pytest.raises(VoiceError, match="is not one of"):
        parse_voice(value)


def test_a_recorded_voice_avatar_needs_a_voiceover_of_the_script(s, w):
    problem = voice_problem(s, w["consent"], w["script"])
    assert "speaks with recorded voice-overs" in problem and "has no recorded voice-over" in problem
    # and the same refusal reaches the planners and the claim through usage_problem
    assert "has no recorded voice-over" in usage_problem(s, w["consent"], channel=w["channel"], script=w["script"],
                                                         at=NOW)
    _voiceover(s, w)
    assert voice_problem(s, w["consent"], w["script"]) is None


def test_a_tts_avatar_speaks_any_script(s, w):
    w["avatar"].voice = "tts"
    s.commit()
    assert voice_problem(s, w["consent"], w["script"]) is None


def test_own_voice_needs_the_creators_approval(s, w):
    _voiceover(s, w, approved_at=None)
    assert "has not approved the voice-over" in voice_problem(s, w["consent"], w["script"])


def test_own_voice_needs_voice_ticked_explicitly_in_the_grant(s, w):
    """POLICY C7: the creator's own recorded voice airs only under a consent whose grant ticked voice explicitly."""
    _voiceover(s, w)
    w["consent"].voice_explicit = False  # a consent granted before voice-overs: `voice` defaulted to true
    s.commit()
    assert "POLICY C7" in voice_problem(s, w["consent"], w["script"])
    w["consent"].voice_explicit, w["consent"].voice = True, False
    s.commit()
    assert "POLICY C7" in voice_problem(s, w["consent"], w["script"])


def test_another_creators_voice_never_airs_on_this_avatar(s, w):
    _voiceover(s, w, creator_id=w["other"].id)
    assert "another creator's own voice" in voice_problem(s, w["consent"], w["script"])


def test_a_voice_actor_needs_no_creator_approval_or_voice_consent(s, w):
    _voiceover(s, w, speaker="actor", creator_id=None, actor_name="Sam Reed", approved_at=None)
    w["consent"].voice = w["consent"].voice_explicit = False
    s.commit()
    assert voice_problem(s, w["consent"], w["script"]) is None


def test_an_edited_script_never_uses_the_old_recording(s, w):
    _voiceover(s, w)
    w["script"].text = TEXT + " Tap the cart below."
    s.commit()
    assert voiceover_of(s, w["script"]) is None
    assert recorded_parts(s, w["script"]) is None
    assert "has no recorded voice-over of its current text" in voice_problem(s, w["consent"], w["script"])


def test_planners_take_the_recordings_own_cut(s, w):
    vo = _voiceover(s, w)
    assert recorded_parts(s, w["script"]) == [("Paid partnership with Lumen Labs.", 2400),
                                              ("Meet the Glow Serum.", 1600)]
    assert part_of(vo, "Meet the Glow Serum.") == (2.4, 4.0)
    with pytest.raises(LookupError, match="has no part saying"):
        part_of(vo, "Something else.")


def test_the_scheduler_plans_a_recorded_script_as_its_recordings_parts(s, w):
    from workers.plan.scheduler import show_parts

    show = s.exec(select(Show)).first()
    # no recording yet: a recorded-voice avatar plans nothing of the script, and says why in the log
    assert show_parts(s, show, w["consent"], w["channel"], at=NOW) == []
    _voiceover(s, w)
    assert show_parts(s, show, w["consent"], w["channel"], at=NOW) == [
        (w["script"].id, "Paid partnership with Lumen Labs."), (w["script"].id, "Meet the Glow Serum.")]
    # a synthetic voice says the same parts of a recorded script
    w["avatar"].voice = "espeak:en-gb"
    s.commit()
    assert [t for _, t in show_parts(s, show, w["consent"], w["channel"], at=NOW)] == [
        "Paid partnership with Lumen Labs.", "Meet the Glow Serum."]
