"""Voices: what each avatar sounds like, and when a recorded voice-over may air (POLICY C7).

One voice per avatar (`Avatar.voice`):
- `tts`: the configured speech backend and voice (config `tts`);
- `espeak:VOICE`: an espeak-ng voice of its own (e.g. `espeak:en-gb+f3`);
- `recorded`: the scripts' recorded voice-overs. A script without a usable voice-over does not air with such an
  avatar: mixing a person's voice with a synthetic one on one face would mislead as much as it grates.

A voice-over is the creator's own voice (speaker `creator`) or a voice actor's (speaker `actor`). The creator's
own voice airs only under a consent whose voice box was ticked explicitly in the grant (consents granted before
voice-overs existed never were), only with that creator's avatar, and only once the creator approved that
recording (uploading it themself approves it). A voice actor's recording needs no creator approval; it airs with
any avatar whose voice is `recorded`. An edited script drops its voice-over; one that says an earlier text is never
used whatever happens to the row.

Pure rules over rows: no media, no services.
"""

from __future__ import annotations

import re

from sqlmodel import Session, select

from studio.models import Avatar, Consent, Script, Voiceover
from studio.usage import text_sha256

SPEAKERS = ("creator", "actor")


def whose(vo: Voiceover) -> str:
    return f"voice actor {vo.actor_name!r}" if vo.speaker == "actor" else f"creator {vo.creator_id}'s own voice"


def creator_may_replace(vo: Voiceover, creator_id: str) -> bool:
    """A creator replaces only a recording of their own voice: another creator's voice is theirs alone, and a voice
    actor's recording is the agency's to replace."""
    return vo.speaker == "creator" and vo.creator_id == creator_id


def not_theirs(s: Session, script_id: str, creator_id: str) -> Voiceover | None:
    """The script's recording when it is there and not `creator_id`'s to replace, else None."""
    vo = s.exec(select(Voiceover).where(Voiceover.script_id == script_id)).first()
    return vo if vo is not None and not creator_may_replace(vo, creator_id) else None


def creator_may_hear(vo: Voiceover, creator_id: str) -> bool:
    """A creator hears their own voice and a voice actor's recording (it may air with their clone), never another
    creator's own voice (a voice is as personal as a face)."""
    return vo.speaker == "actor" or vo.creator_id == creator_id


_ESPEAK_VOICE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{1,8})*(\+[a-z0-9]{1,16})?", re.IGNORECASE)


class VoiceError(ValueError):
    """An avatar voice that cannot be used; the message names the value and the accepted forms."""


def parse_voice(value: str) -> tuple[str, str | None]:
    """("tts", None) | ("espeak", voice) | ("recorded", None) for an avatar's voice setting."""
    v = (value or "").strip()
    if v in ("tts", "recorded"):
        return v, None
    if v.startswith("espeak:") and _ESPEAK_VOICE.fullmatch(v[7:]):
        return "espeak", v[7:]
    raise VoiceError(f"voice {value[:80]!r} is not one of: tts (the configured speech), espeak:VOICE (an "
                     "espeak-ng voice such as espeak:en-gb+f3), recorded (the scripts' recorded voice-overs)")


def voiceover_of(s: Session, script: Script) -> Voiceover | None:
    """The script's voice-over, when it says the script's current text (an edited script's old recording is
    never used, even if its row was not dropped yet)."""
    row = s.exec(select(Voiceover).where(Voiceover.script_id == script.id)).first()
    if row is None or row.text_sha256 != text_sha256(script.text):
        return None
    return row


def recording_problem(vo: Voiceover | None, *, script: Script, consent: Consent) -> str | None:
    """Why this voice-over may not air under `consent` (C7), or None."""
    if vo is None:
        return f"script {script.id} has no recorded voice-over of its current text"
    if vo.speaker == "actor":
        return None
    if vo.creator_id != consent.creator_id:
        return (f"the voice-over of script {script.id} is another creator's own voice, not that of the creator "
                f"of consent {consent.id}")
    if not (consent.voice and consent.voice_explicit):
        return (f"consent {consent.id} does not grant the creator's voice explicitly: the creator's own recorded "
                "voice airs only under a consent granted with voice ticked (POLICY C7)")
    if vo.approved_at is None:
        return f"the creator has not approved the voice-over of script {script.id} (their own voice)"
    return None


def voice_problem(s: Session, consent: Consent, script: Script) -> str | None:
    """Why `script` cannot air in the voice of the consent's avatar, or None: an avatar that speaks with recorded
    voice-overs needs a usable one; other voices speak any script."""
    avatar = s.get(Avatar, consent.avatar_id) if consent.avatar_id else None
    if avatar is None or parse_voice(avatar.voice)[0] != "recorded":
        return None
    problem = recording_problem(voiceover_of(s, script), script=script, consent=consent)
    return f"avatar {avatar.id} speaks with recorded voice-overs, and {problem}" if problem else None


def recorded_parts(s: Session, script: Script) -> list[tuple[str, int]] | None:
    """(text, milliseconds) of each part of the script's voice-over, cut at its word boundaries, or None when it
    has none: the planners use these instead of splitting the text, so a segment says exactly one part of the
    recording, and a synthetic voice reading the same script says the same parts."""
    vo = voiceover_of(s, script)
    if vo is None or not vo.parts:
        return None
    return [(str(text), max(1, round((end - start) * 1000))) for start, end, text in vo.parts]


def part_of(vo: Voiceover, text: str) -> tuple[float, float]:
    """(start, end) seconds of the voice-over part that says `text` (a planned segment's text)."""
    for start, end, said in vo.parts:
        if said == text:
            return float(start), float(end)
    raise LookupError(f"the voice-over of script {vo.script_id} has no part saying {text[:60]!r}: it was "
                      "replaced after the segment was planned")
