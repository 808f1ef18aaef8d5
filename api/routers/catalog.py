"""Creators, products, scripts, channels (with destinations) and shows."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlmodel import select

from api.auth import (
    PrincipalDep,
    channel_for,
    creator_for,
    hidden,
    need_role,
    owner_agency,
    product_for,
    script_for,
)
from api.deps import RuntimeDep, SessionDep, get_or_404
from api.masking import mask_destination, mask_url
from api.pagination import PageDep
from studio import audit
from studio.accounts import Role
from studio.models import (
    ApiModel,
    Avatar,
    Channel,
    ChannelCreate,
    ChannelPublic,
    Consent,
    Creator,
    CreatorCreate,
    CreatorPublic,
    Destination,
    Product,
    ProductCreate,
    ProductPublic,
    Script,
    ScriptCreate,
    ScriptPublic,
    Show,
    utcnow,
)
from studio.schedule import ShowSchedule

router = APIRouter()


@router.post("/creators", response_model=CreatorPublic, status_code=201, tags=["creators"])
def create_creator(body: CreatorCreate, session: SessionDep, who: PrincipalDep):
    """An admin adds a creator (creators may also sign themselves up: POST /api/auth/signup)."""
    need_role(who)
    row = Creator.model_validate(body)
    session.add(row)
    session.commit()
    return row


@router.get("/creators/{creator_id}", response_model=CreatorPublic, tags=["creators"])
def read_creator(creator_id: str, session: SessionDep, who: PrincipalDep):
    creator_for(session, who, creator_id)
    return get_or_404(session, Creator, creator_id, "creator")


@router.post("/products", response_model=ProductPublic, status_code=201, tags=["products"])
def create_product(body: ProductCreate, session: SessionDep, who: PrincipalDep):
    need_role(who, Role.agency)
    row = Product.model_validate(body.model_copy(update={"agency_id": owner_agency(session, who, body.agency_id)}))
    session.add(row)
    session.commit()
    return row


def _lint_problems(findings) -> list[dict]:
    return [{"rule": f.rule, "words": f.words, "message": f.message, "fix": f.fix} for f in findings
            if f.severity == "error"]


@router.post("/scripts", response_model=ScriptPublic, status_code=201, tags=["scripts"])
def create_script(body: ScriptCreate, session: SessionDep, who: PrincipalDep):
    """Save a promotion script; it is linted first (POLICY S1-S3) and refused with every finding that is an
    error: the rule, the words, and how to fix it. The consent scope (S4) is checked when a show uses it."""
    from studio.script_lint import ProductInfo, lint_script
    from studio.usage import attested_claims

    need_role(who, Role.agency)
    product = product_for(session, who, body.product_id)
    # No creator is known yet: a first-person claim passes if some creator attested it for this product, and is
    # checked against the show's own creator when a show uses the script (S2).
    errors = _lint_problems(lint_script(body.text, language=body.language, product=ProductInfo.of(product),
                                        consent_scope=None, attested_claims=attested_claims(session, None, product.id)))
    if errors:
        raise HTTPException(422, {"message": "the script breaks the script rules", "findings": errors})
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


@router.post("/channels", response_model=ChannelOut, status_code=201, tags=["channels"])
def create_channel(body: ChannelIn, session: SessionDep, rt: RuntimeDep, who: PrincipalDep):
    from studio.config import ConfigError
    from studio.policy_profiles import effective_policy
    from workers.tts import voice_language

    need_role(who, Role.agency)
    agency_id = owner_agency(session, who, body.agency_id)
    # The profiles must exist and agree (on a corner, say), and a required spoken disclosure must be in a
    # language the speech voice speaks, before a channel may name them.
    try:
        policy = effective_policy(list(body.policy_profiles), directory=rt.settings.policy_path)
        policy.spoken_text("-", voice_language(rt.settings.tts.voice))
    except ConfigError as exc:
        raise HTTPException(422, f"policy_profiles {body.policy_profiles}: "
                                 + "; ".join(f"{path}: {msg}" for path, msg in exc.problems)) from None
    except ValueError as exc:
        raise HTTPException(422, f"policy_profiles {body.policy_profiles}: {exc}") from None
    from studio.destinations import destination_url_problem, load_destination

    for i, d in enumerate(body.destinations):
        try:
            load_destination(d.platform)
        except ConfigError as exc:
            raise HTTPException(422, f"destination platform {d.platform!r}: "
                                     + "; ".join(msg for _, msg in exc.problems)) from None
        allow = rt.settings.streamer.allow_private_destinations
        if (problem := destination_url_problem(d.url, allow_private=allow)) is not None:
            raise HTTPException(422, f"destinations.{i}.url: {problem}")
    ch = Channel(name=body.name, policy_profiles=body.policy_profiles, territories=body.territories,
                 agency_id=agency_id)
    session.add(ch)
    if body.destinations:
        from studio.keys import load_stream_key
        from studio.secrets import seal_url

        key = load_stream_key(rt.settings)  # made by `studio keys init`, never here
        for d in body.destinations:  # the stream key is sealed at rest; only its masked form is ever shown
            session.add(Destination(channel_id=ch.id, url=seal_url(key, d.url, channel_id=ch.id),
                                    url_masked=mask_url(d.url), platform=d.platform))
    session.commit()
    return _channel_out(session, ch)


@router.get("/channels", response_model=list[ChannelOut], tags=["channels"])
def list_channels(session: SessionDep, who: PrincipalDep, page: PageDep):
    """An agency's own channels; ops and admins see all (stream keys masked, as everywhere)."""
    need_role(who, Role.agency, Role.ops)
    q = select(Channel).order_by(Channel.created_at, Channel.id)
    if who.role is Role.agency:
        q = q.where(Channel.agency_id == who.agency_id)
    return [_channel_out(session, ch) for ch in page.rows(session, q)]


@router.get("/channels/{channel_id}", response_model=ChannelOut, tags=["channels"])
def read_channel(channel_id: str, session: SessionDep, who: PrincipalDep):
    return _channel_out(session, channel_for(session, who, channel_id))


@router.get("/products", response_model=list[ProductPublic], tags=["products"])
def list_products(session: SessionDep, who: PrincipalDep, page: PageDep):
    need_role(who, Role.agency)
    q = select(Product).order_by(Product.created_at, Product.id)
    if who.role is Role.agency:
        q = q.where(Product.agency_id == who.agency_id)
    return page.rows(session, q)


@router.get("/scripts", response_model=list[ScriptPublic], tags=["scripts"])
def list_scripts(session: SessionDep, who: PrincipalDep, page: PageDep, product_id: str | None = None):
    need_role(who, Role.agency)
    q = select(Script).join(Product, Product.id == Script.product_id).order_by(Script.created_at, Script.id)
    if who.role is Role.agency:
        q = q.where(Product.agency_id == who.agency_id)
    if product_id is not None:
        q = q.where(Script.product_id == product_id)
    return page.rows(session, q)


@router.get("/scripts/{script_id}", response_model=ScriptPublic, tags=["scripts"])
def read_script(script_id: str, session: SessionDep, who: PrincipalDep):
    return script_for(session, who, script_id)


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


def _schedule_problems(session, schedule: ShowSchedule, *, at: datetime, words_per_minute: int) -> list[dict]:
    """A schedule that cannot be planned (a script longer than every window, say) is refused now, not at 3 am: a
    dry run of its first week, without the policy (checked above, and again at every pass)."""
    from studio.schedule import PlanRequest, PlanState, ScheduleError, plan

    scripts = {e.script_id: session.get(Script, e.script_id).text for e in schedule.rotation}
    try:
        result = plan(PlanRequest(schedule=schedule, scripts=scripts, state=PlanState.initial(at), now=at,
                                  horizon_s=7 * 86400), words_per_minute=words_per_minute)
    except ScheduleError as exc:
        return [{"rule": "schedule", "message": str(exc)}]
    if not any(i.kind == "segment" for i in result.items):
        return [{"rule": "schedule", "message": "the schedule airs nothing in its first week: no window is long "
                                                "enough for a script, or the windows never open"}]
    return []


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


@router.post("/shows", response_model=ShowOut, status_code=201, tags=["shows"])
def create_show(body: ShowIn, session: SessionDep, rt: RuntimeDep, who: PrincipalDep):
    from studio.consent import approval_problem, consent_problem
    from studio.destinations import check_show
    from studio.script_lint import ProductInfo, lint_script
    from studio.usage import approved_scripts, attested_claims, text_sha256, usage_problem

    need_role(who, Role.agency)
    if who.role is Role.agency:
        body = body.model_copy(update={"agency_id": owner_agency(session, who, body.agency_id)})
    channel = channel_for(session, who, body.channel_id, manage=True)
    if channel.agency_id is not None and body.agency_id != channel.agency_id:
        raise HTTPException(403, f"channel {channel.id} belongs to agency {channel.agency_id}; a show on it is that "
                                 "agency's (agency_id)")
    for sid in body.script_ids:
        script_for(session, who, sid)
    at = body.starts_at or utcnow()
    presenters = ([(a.avatar_id, a.consent_id) for a in body.schedule.avatars] if body.schedule is not None
                  else [(body.avatar_id, body.consent_id)])
    problems: list[dict] = []
    awaiting: list[str] = []
    for avatar_id, consent_id in dict.fromkeys(presenters):
        avatar = get_or_404(session, Avatar, avatar_id, "avatar")
        consent = get_or_404(session, Consent, consent_id, "consent")
        if who.role is Role.agency and consent.agency_id != who.agency_id:
            raise hidden("consent", consent.id)  # another agency's consent: as if it did not exist, naming no one
        if consent.avatar_id != avatar.id:
            raise HTTPException(422, f"consent {consent.id} does not cover avatar {avatar.id}")
        if body.agency_id != consent.agency_id:
            raise HTTPException(403, f"consent {consent.id} grants "
                                     + (f"agency {consent.agency_id}" if consent.agency_id else "no agency")
                                     + (f", not agency {body.agency_id}" if body.agency_id else
                                        "; the show must name it as agency_id"))
        if problem := consent_problem(consent, at=at):
            raise HTTPException(422, problem)
        if body.ends_at is not None and body.ends_at > consent.ends_at:
            raise HTTPException(422, f"the show ends at {body.ends_at.isoformat()}, after consent {consent.id} ends "
                                     f"at {consent.ends_at.isoformat()} (POLICY C4)")
        # Platforms and territories of this channel against the scope (C3); the daily cap is for plan and air time.
        if problem := usage_problem(session, consent, channel=channel, script=None, at=at, daily_cap=False):
            problems.append({"rule": "C3", "message": problem, "consent_id": consent.id})
        approved = approved_scripts(session, consent.id)
        for sid in body.script_ids:  # linted again against this consent's scope and its creator's attestations
            script = get_or_404(session, Script, sid, "script")
            product = session.get(Product, script.product_id)
            problems += [{**p, "script_id": sid, "consent_id": consent.id} for p in _lint_problems(lint_script(
                script.text, language=script.language, product=ProductInfo.of(product), consent_scope=consent.scope,
                attested_claims=attested_claims(session, consent.creator_id, product.id),
                profiles=list(channel.policy_profiles or []), consent_id=consent.id))]
            if approval_problem(consent, script_id=sid, text_sha256=text_sha256(script.text), approved=approved):
                awaiting.append(sid)
    for dest in session.exec(select(Destination).where(Destination.channel_id == channel.id)).all():
        # Shows are fully automatic and speak with a synthetic voice: each destination must allow both (D1).
        # The masked URL keeps the scheme and host, all that the rules read; the sealed one stays shut.
        problems += [{"rule": f.rule, "message": f.message} for f in check_show(
            platform=dest.platform, url=mask_destination(dest), automated=True, ai_voice=True)
            if f.severity == "error"]
    if body.schedule is not None:
        problems += _schedule_problems(session, body.schedule, at=at, words_per_minute=rt.settings.tts.words_per_minute)
    if problems:
        raise HTTPException(422, {"message": "the show breaks the consent, script or destination rules",
                                  "findings": problems})
    fields = body.model_dump(exclude_none=True, exclude={"agency_id", "schedule"})
    show = Show(**fields, schedule=body.schedule.model_dump() if body.schedule is not None else None)
    session.add(show)
    audit.record(session, kind="show.created", subject_id=show.id,
                 data={"channel_id": show.channel_id, "consent_id": show.consent_id, "agency_id": body.agency_id,
                       "consents": sorted({c for _, c in presenters}), "scheduled": body.schedule is not None})
    session.commit()
    return ShowOut(**show.model_dump(include=set(ShowOut.model_fields) - {"awaiting_approval"}),
                   awaiting_approval=list(dict.fromkeys(awaiting)))


@router.get("/shows", response_model=list[ShowOut], tags=["shows"])
def list_shows(session: SessionDep, who: PrincipalDep, page: PageDep, channel_id: str | None = None):
    """An agency's shows (those on its channels); ops and admins see all."""
    need_role(who, Role.agency, Role.ops)
    q = select(Show).join(Channel, Channel.id == Show.channel_id).order_by(Show.starts_at, Show.id)
    if who.role is Role.agency:
        q = q.where(Channel.agency_id == who.agency_id)
    if channel_id is not None:
        q = q.where(Show.channel_id == channel_id)
    return [ShowOut(**s.model_dump(include=set(ShowOut.model_fields) - {"awaiting_approval"}))
            for s in page.rows(session, q)]
