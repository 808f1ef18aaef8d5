"""Creators, products, scripts, channels (with destinations) and shows: create, with every rule checked first."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlmodel import Session, select

from studio import audit
from studio.access import channel_for, get_or_404, hidden, need_role, owner_agency, product_for, script_for
from studio.accounts import Principal, Role
from studio.admission import schedule_problems, script_problems, show_problems
from studio.errors import Refused
from studio.masking import mask_destination
from studio.models import (
    ApiModel,
    Avatar,
    Channel,
    ChannelCreate,
    ChannelPublic,
    Consent,
    Creator,
    CreatorCreate,
    Destination,
    Product,
    ProductCreate,
    Script,
    ScriptCreate,
    Show,
    utcnow,
)
from studio.runtime import Runtime
from studio.schedule import ShowSchedule

SCRIPT_REFUSED = "the script breaks the script rules"


def create_creator(session: Session, who: Principal, body: CreatorCreate) -> Creator:
    """An admin adds a creator (creators may also sign themselves up: POST /api/auth/signup)."""
    need_role(who)
    row = Creator.model_validate(body)
    session.add(row)
    session.commit()
    return row


def create_product(session: Session, who: Principal, body: ProductCreate) -> Product:
    need_role(who, Role.agency)
    row = Product.model_validate(body.model_copy(update={"agency_id": owner_agency(session, who, body.agency_id)}))
    session.add(row)
    session.commit()
    return row


def create_script(session: Session, who: Principal, body: ScriptCreate) -> Script:
    """Save a promotion script; it is linted first (POLICY S1-S3) and refused with every finding that is an
    error: the rule, the words, and how to fix it. The consent scope (S4) is checked when a show uses it."""
    need_role(who, Role.agency)
    product = product_for(session, who, body.product_id)
    if errors := script_problems(session, body.text, language=body.language, product=product):
        raise Refused(422, {"message": SCRIPT_REFUSED, "findings": errors})
    row = Script.model_validate(body)
    session.add(row)
    session.commit()
    return row


class DestinationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="rtmp:// or rtmps:// URL including the stream key.")
    platform: str = Field(default="custom", max_length=40)

    @field_validator("url")
    @classmethod
    def _rtmp(cls, v: str) -> str:
        from studio.destinations import destination_url_problem

        # The shape only (the whole URL: a trailing newline does not pass); the host is judged in create_channel,
        # which knows the setting. The value itself is never echoed: it may hold a stream key.
        if (problem := destination_url_problem(v, allow_private=True)) is not None:
            raise ValueError(problem)
        return v


class ChannelIn(ChannelCreate):
    destinations: list[DestinationIn] = Field(default_factory=list)


class ChannelOut(ChannelPublic):
    territories: list[str]
    destinations: list[str]


def _channel_out(session, ch: Channel) -> ChannelOut:
    dests = session.exec(select(Destination).where(Destination.channel_id == ch.id)).all()
    return ChannelOut(id=ch.id, name=ch.name, policy_profiles=ch.policy_profiles, agency_id=ch.agency_id,
                      territories=list(ch.territories or []), destinations=[mask_destination(d) for d in dests])


def create_channel(session: Session, who: Principal, body: ChannelIn, *, rt: Runtime) -> ChannelOut:
    """A channel with its policy profiles (which must exist and agree, and whose spoken disclosure the speech
    voice must be able to say) and its destinations (a known platform, an address the deployment allows); the
    stream keys are sealed at rest."""
    from studio.config import ConfigError
    from studio.destinations import destination_url_problem, load_destination
    from studio.policy_profiles import effective_policy
    from workers.tts import voice_language

    need_role(who, Role.agency)
    agency_id = owner_agency(session, who, body.agency_id)
    try:
        policy = effective_policy(list(body.policy_profiles), directory=rt.settings.policy_path)
        policy.spoken_text("-", voice_language(rt.settings.tts.voice))
    except ConfigError as exc:
        raise Refused(422, f"policy_profiles {body.policy_profiles}: "
                           + "; ".join(f"{path}: {msg}" for path, msg in exc.problems)) from None
    except ValueError as exc:
        raise Refused(422, f"policy_profiles {body.policy_profiles}: {exc}") from None
    for i, d in enumerate(body.destinations):
        try:
            load_destination(d.platform)
        except ConfigError as exc:
            raise Refused(422, f"destination platform {d.platform!r}: "
                               + "; ".join(msg for _, msg in exc.problems)) from None
        allow = rt.settings.streamer.allow_private_destinations
        if (problem := destination_url_problem(d.url, allow_private=allow)) is not None:
            raise Refused(422, f"destinations.{i}.url: {problem}")
    ch = Channel(name=body.name, policy_profiles=body.policy_profiles, territories=body.territories,
                 agency_id=agency_id)
    session.add(ch)
    if body.destinations:
        from studio.keys import load_stream_key
        from studio.masking import mask_url
        from studio.secrets import seal_url

        key = load_stream_key(rt.settings)  # made by `studio keys init`, never here
        for d in body.destinations:  # the stream key is sealed at rest; only its masked form is ever shown
            session.add(Destination(channel_id=ch.id, url=seal_url(key, d.url, channel_id=ch.id),
                                    url_masked=mask_url(d.url), platform=d.platform))
    session.commit()
    return _channel_out(session, ch)


class ShowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel_id: str
    avatar_id: str | None = Field(default=None, description="The presenter; with a schedule, its first avatar.")
    consent_id: str | None = Field(default=None, description="The consent it presents under; with a schedule, "
                                   "the first avatar's.")
    name: str = Field(min_length=1, max_length=200)
    script_ids: list[str] | None = Field(default=None, description="Scripts aired in turn; with a schedule, its "
                                         "rotation's.")
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    agency_id: str | None = Field(default=None, description="The agency creating the show; it must be the one "
                                  "every consent of the show grants (none for the platform's own shows).")
    schedule: ShowSchedule | None = Field(default=None, description="24/7 recurring windows, weighted rotation "
                                          "with quotas and cooldowns, avatars with hand-over, and breaks.")

    @model_validator(mode="after")
    def _presenter(self) -> ShowIn:
        if self.schedule is not None:
            first = self.schedule.avatars[0]
            rotation = [e.script_id for e in self.schedule.rotation]
            for name, given, want in (("avatar_id", self.avatar_id, first.avatar_id),
                                      ("consent_id", self.consent_id, first.consent_id)):
                if given is not None and given != want:
                    raise ValueError(f"{name} {given!r} is not the schedule's first avatar's ({want!r}); leave "
                                     f"{name} out with a schedule")
            if self.script_ids is not None and sorted(self.script_ids) != sorted(rotation):
                raise ValueError(f"script_ids {self.script_ids} differ from the schedule's rotation {rotation}; "
                                 "leave script_ids out with a schedule")
            self.avatar_id, self.consent_id, self.script_ids = first.avatar_id, first.consent_id, rotation
        else:
            missing = [n for n in ("avatar_id", "consent_id", "script_ids") if not getattr(self, n)]
            if missing:
                raise ValueError(f"{', '.join(missing)} required (or give a schedule)")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError(f"ends_at {self.ends_at.isoformat()} is not after starts_at {self.starts_at.isoformat()}")
        return self


class ShowOut(ApiModel):
    id: str
    channel_id: str
    avatar_id: str
    consent_id: str
    name: str
    script_ids: list[str]
    status: str
    starts_at: datetime
    ends_at: datetime | None = None
    schedule: dict | None = Field(default=None, description="The show's schedule, as given (normalised).")
    awaiting_approval: list[str] = Field(default_factory=list, description="Scripts that will not air until the "
                                         "creator approves them (consents that require approval).")


def create_show(session: Session, who: Principal, body: ShowIn, *, rt: Runtime) -> ShowOut:
    """A show, once every presenter's consent, every script and every destination passes (studio.admission);
    `awaiting_approval` names the scripts that wait for the creator's approval."""
    need_role(who, Role.agency)
    if who.role is Role.agency:
        body = body.model_copy(update={"agency_id": owner_agency(session, who, body.agency_id)})
    channel = channel_for(session, who, body.channel_id, manage=True)
    if channel.agency_id is not None and body.agency_id != channel.agency_id:
        raise Refused(403, f"channel {channel.id} belongs to agency {channel.agency_id}; a show on it is that "
                           "agency's (agency_id)")
    for sid in body.script_ids:
        script_for(session, who, sid)
    at = body.starts_at or utcnow()
    pairs = ([(a.avatar_id, a.consent_id) for a in body.schedule.avatars] if body.schedule is not None
             else [(body.avatar_id, body.consent_id)])
    presenters = []
    for avatar_id, consent_id in dict.fromkeys(pairs):
        avatar = get_or_404(session, Avatar, avatar_id, "avatar")
        consent = get_or_404(session, Consent, consent_id, "consent")
        if who.role is Role.agency and consent.agency_id != who.agency_id:
            raise hidden("consent", consent.id)  # another agency's consent: as if it did not exist, naming no one
        presenters.append((avatar, consent))
    scripts = [get_or_404(session, Script, sid, "script") for sid in body.script_ids]
    admission = show_problems(session, channel=channel, presenters=presenters, scripts=scripts,
                              agency_id=body.agency_id, at=at, ends_at=body.ends_at)
    problems = admission.findings
    if body.schedule is not None:
        problems += schedule_problems(session, body.schedule, at=at,
                                      words_per_minute=rt.settings.tts.words_per_minute)
    if problems:
        raise Refused(422, {"message": "the show breaks the consent, script or destination rules",
                            "findings": problems})
    fields = body.model_dump(exclude_none=True, exclude={"agency_id", "schedule"})
    show = Show(**fields, schedule=body.schedule.model_dump() if body.schedule is not None else None)
    session.add(show)
    audit.record(session, kind="show.created", subject_id=show.id,
                 data={"channel_id": show.channel_id, "consent_id": show.consent_id, "agency_id": body.agency_id,
                       "consents": sorted({c for _, c in pairs}), "scheduled": body.schedule is not None})
    session.commit()
    return ShowOut(**show.model_dump(include=set(ShowOut.model_fields) - {"awaiting_approval"}),
                   awaiting_approval=admission.awaiting)
