"""Admission: what is wrong with a script, a show or a planned airing, said once for every caller.

The API and the CLI (through api.service) ask before they save, the scheduler asks again at every planning pass
and the streamer at every segment it airs: rules, scopes, consents and approvals change while a show runs. Each
function here answers with reasons a person can act on, or nothing; none of them writes.

- `script_problems`: the script rules (POLICY S1-S3) and, against a consent, its scope and the creator's
  attestations (S2, S4) and the channel's policy profiles.
- `show_problems`: a new show's presenters (C1, C3, C4), its scripts against each consent, the channel's
  destinations (D1) and a dry run of its schedule.
- `airing_problems`: whether a consent lets a script (or the show as a whole) air on a channel now (C1-C7), and
  the script rules again; `segment_problem` is the same question for one planned segment at stamp time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, select

from studio.consent import approval_problem, consent_problem
from studio.destinations import check_show
from studio.errors import Refused
from studio.masking import mask_destination
from studio.models import Avatar, Channel, Consent, Destination, Product, Script, Segment
from studio.script_lint import ProductInfo, lint_script
from studio.usage import approved_scripts, attested_claims, text_sha256, usage_problem

__all__ = ["Airing", "ShowAdmission", "airing_problems", "lint_problems", "schedule_problems", "script_problems",
           "segment_problem", "show_problems"]


def lint_problems(findings: Iterable) -> list[dict]:
    """The errors among lint findings, as the API and the CLI show them: rule, words, message, fix."""
    return [{"rule": f.rule, "words": f.words, "message": f.message, "fix": f.fix} for f in findings
            if f.severity == "error"]


def script_problems(s: Session, text: str, *, language: str, product: Product, consent: Consent | None = None,
                    channel: Channel | None = None) -> list[dict]:
    """The script rules a text breaks (POLICY S1-S3), each a dict (rule, words, message, fix); none: it may be said.

    Without a consent (a script saved or edited, before any show uses it) a first-person claim passes if some
    creator attested it for the product; with one, the claim must be its creator's and the text must fit its scope
    (S4) and the channel's policy profiles."""
    return lint_problems(lint_script(
        text, language=language, product=ProductInfo.of(product),
        consent_scope=consent.scope if consent is not None else None,
        attested_claims=attested_claims(s, consent.creator_id if consent is not None else None, product.id),
        **({"profiles": list(channel.policy_profiles or []), "consent_id": consent.id}
           if consent is not None and channel is not None else {})))


@dataclass(frozen=True)
class Airing:
    """Why a consent does not let a script air: `usage`, the first consent rule it breaks (C1-C7), or `lint`, the
    script rules it breaks ('RULE 'words': message' each). False when it may air."""

    usage: str | None = None
    lint: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.usage is not None or bool(self.lint)

    def __str__(self) -> str:
        return self.usage if self.usage is not None else "; ".join(self.lint)


def airing_problems(s: Session, consent: Consent | None, *, channel: Channel, script: Script | None, at: datetime,
                    daily_cap: bool = True) -> Airing:
    """Whether `consent` lets `script` air on `channel` at `at` (POLICY C1-C7: term, platforms, territories, scope,
    approval, voice, and the daily cap unless `daily_cap` is False), then the script rules against the consent
    (S1-S4). With `script` None: the show as a whole (term, platforms, territories, cap)."""
    if problem := usage_problem(s, consent, channel=channel, script=script, at=at, daily_cap=daily_cap):
        return Airing(usage=problem)
    if script is None:
        return Airing()
    product = s.get(Product, script.product_id)
    errors = script_problems(s, script.text, language=script.language, product=product, consent=consent,
                             channel=channel)
    return Airing(lint=tuple(f"{e['rule']} {e['words']!r}: {e['message']}" for e in errors))


def segment_problem(s: Session, seg: Segment, *, at: datetime, airing: bool = False) -> str | None:
    """The consent rules (usage_problem) for one planned segment, at claim, before stamping and as it airs;
    `airing` adds its duration to the daily cap check. The script rules were checked when it was planned."""
    channel = s.get(Channel, seg.channel_id)
    if channel is None:
        return f"channel {seg.channel_id} is gone"
    script = s.get(Script, seg.script_id)
    if script is None:
        return f"script {seg.script_id} of segment {seg.id} is gone"
    return usage_problem(s, s.get(Consent, seg.consent_id), channel=channel, script=script,
                         at=at, next_seconds=(seg.duration_s or 0.0) if airing else 0.0)


@dataclass
class ShowAdmission:
    """A new show's findings (rule, message, and script_id / consent_id where they apply) and the scripts that
    wait for the creator's approval (they are planned once approved)."""

    findings: list[dict] = field(default_factory=list)
    awaiting: list[str] = field(default_factory=list)


def show_problems(s: Session, *, channel: Channel, presenters: Sequence[tuple[Avatar, Consent]],
                  scripts: Sequence[Script], agency_id: str | None, at: datetime,
                  ends_at: datetime | None) -> ShowAdmission:
    """What a new show breaks. A presenter whose consent does not cover it, grants another agency, is not in force
    at the start (C1) or ends before the show (C4) is refused at once; the channel's platforms and territories
    against each scope (C3), every script against every consent (S1-S4) and each destination's rules for a fully
    automatic show in a synthetic voice (D1) are collected as findings, so one answer lists them all."""
    out = ShowAdmission()
    for avatar, consent in presenters:
        if consent.avatar_id != avatar.id:
            raise Refused(422, f"consent {consent.id} does not cover avatar {avatar.id}")
        if agency_id != consent.agency_id:
            raise Refused(403, f"consent {consent.id} grants "
                               + (f"agency {consent.agency_id}" if consent.agency_id else "no agency")
                               + (f", not agency {agency_id}" if agency_id else
                                  "; the show must name it as agency_id"))
        if problem := consent_problem(consent, at=at):
            raise Refused(422, problem)
        if ends_at is not None and ends_at > consent.ends_at:
            raise Refused(422, f"the show ends at {ends_at.isoformat()}, after consent {consent.id} ends at "
                               f"{consent.ends_at.isoformat()} (POLICY C4)")
        # Platforms and territories of this channel against the scope (C3); the daily cap is for plan and air time.
        if problem := usage_problem(s, consent, channel=channel, script=None, at=at, daily_cap=False):
            out.findings.append({"rule": "C3", "message": problem, "consent_id": consent.id})
        approved = approved_scripts(s, consent.id)
        for script in scripts:  # linted again against this consent's scope and its creator's attestations
            product = s.get(Product, script.product_id)
            out.findings += [{**p, "script_id": script.id, "consent_id": consent.id} for p in script_problems(
                s, script.text, language=script.language, product=product, consent=consent, channel=channel)]
            if approval_problem(consent, script_id=script.id, text_sha256=text_sha256(script.text),
                                approved=approved):
                out.awaiting.append(script.id)
    for dest in s.exec(select(Destination).where(Destination.channel_id == channel.id)).all():
        # Shows are fully automatic and speak with a synthetic voice: each destination must allow both (D1).
        # The masked URL keeps the scheme and host, all that the rules read; the sealed one stays shut.
        out.findings += [{"rule": f.rule, "message": f.message} for f in check_show(
            platform=dest.platform, url=mask_destination(dest), automated=True, ai_voice=True) if f.severity == "error"]
    out.awaiting = list(dict.fromkeys(out.awaiting))
    return out


def schedule_problems(s: Session, schedule, *, at: datetime, words_per_minute: int) -> list[dict]:
    """A schedule that cannot be planned (a script longer than every window, say) is refused now, not at 3 am: a
    dry run of its first week, without the policy (checked by show_problems, and again at every pass)."""
    from studio.schedule import PlanRequest, PlanState, ScheduleError, plan

    scripts = {e.script_id: s.get(Script, e.script_id).text for e in schedule.rotation}
    try:
        result = plan(PlanRequest(schedule=schedule, scripts=scripts, state=PlanState.initial(at), now=at,
                                  horizon_s=7 * 86400), words_per_minute=words_per_minute)
    except ScheduleError as exc:
        return [{"rule": "schedule", "message": str(exc)}]
    if not any(i.kind == "segment" for i in result.items):
        return [{"rule": "schedule", "message": "the schedule airs nothing in its first week: no window is long "
                                                "enough for a script, or the windows never open"}]
    return []
