"""Is this use of a clone within its consent? The database side of studio.consent (POLICY C3, C4, S2, S4).

The same question is asked when a show is created, when a segment is planned, when it is rendered and when it
airs: `usage_problem` answers it once for all four, from the rows as they are at that moment.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, select

from studio.consent import approval_problem, consent_problem, daily_cap_problem, destination_problem, scope_problem
from studio.models import (
    Attestation,
    Channel,
    Consent,
    Destination,
    Product,
    Script,
    ScriptApproval,
    Segment,
)

DAY = timedelta(hours=24)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def channel_platforms(s: Session, channel_id: str) -> list[str]:
    """Platforms of the channel's enabled destinations (the local preview server is not a destination)."""
    rows = s.exec(select(Destination).where(Destination.channel_id == channel_id, Destination.enabled)).all()
    return sorted({d.platform for d in rows})


def aired_seconds(s: Session, consent_id: str, *, at: datetime) -> float:
    """Seconds aired under this consent in the 24 h before `at`, on every channel (a rolling day: a cap cannot
    be doubled around midnight)."""
    total = s.exec(select(func.sum(Segment.duration_s)).where(
        Segment.consent_id == consent_id, Segment.kind == "segment", Segment.state == "aired",
        Segment.aired_at >= at - DAY)).one()
    return float(total or 0.0)


def approved_scripts(s: Session, consent_id: str) -> set[tuple[str, str]]:
    rows = s.exec(select(ScriptApproval).where(ScriptApproval.consent_id == consent_id)).all()
    return {(r.script_id, r.text_sha256) for r in rows}


def attested_claims(s: Session, creator_id: str | None, product_id: str) -> set[str]:
    """"PRODUCT_ID:KIND" strings for studio.script_lint: what the creator attested about this product. With no
    creator known yet (a script saved before a show names one), any creator's attestation counts; the show's
    creator's own are checked when the show is created and every time it is planned."""
    q = select(Attestation).where(Attestation.product_id == product_id)
    if creator_id is not None:
        q = q.where(Attestation.creator_id == creator_id)
    return {f"{a.product_id}:{a.kind}" for a in s.exec(q).all()}


def usage_problem(s: Session, consent: Consent | None, *, channel: Channel, script: Script | None,
                  at: datetime, next_seconds: float = 0.0, daily_cap: bool = True) -> str | None:
    """Why this consent does not allow airing `script` on `channel` at `at`, or None. `next_seconds` is the air
    time about to be used (a segment's duration at air time), checked against the daily cap unless
    `daily_cap` is False (a show created for later is not refused for today's air time)."""
    if problem := consent_problem(consent, at=at):
        return problem
    if problem := destination_problem(consent, platforms=channel_platforms(s, channel.id),
                                      territories=list(channel.territories or [])):
        return problem
    if script is not None:
        product = s.get(Product, script.product_id)
        if product is None:
            return f"script {script.id} names product {script.product_id}, which does not exist"
        if problem := scope_problem(consent, product, language=script.language):
            return problem
        if problem := approval_problem(consent, script_id=script.id, text_sha256=text_sha256(script.text),
                                       approved=approved_scripts(s, consent.id)):
            return problem
        from studio.voiceover import voice_problem

        if problem := voice_problem(s, consent, script):  # the avatar's voice: a recorded one needs C7
            return problem
    if not daily_cap:
        return None
    return daily_cap_problem(consent, aired_seconds=aired_seconds(s, consent.id, at=at), next_seconds=next_seconds)
