"""SQLModel tables and their API schemas (Base / Create / Public per resource)."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, field_serializer, field_validator, model_validator
from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


def new_id() -> str:
    return uuid.uuid4().hex


def new_produce_id() -> str:
    """AIGC ProduceID of one segment: "ecs-" and 64 random bits, which is exactly what the invisible watermark
    carries, so a clip whose metadata was stripped still names its segment."""
    return f"ecs-{secrets.token_hex(8)}"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _utc_json(self, value, handler):
    """Times are naive UTC in the database; in JSON they say so ("...Z"), or a browser reads them as local time."""
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return handler(value)


class _Schema(SQLModel):
    model_config = ConfigDict(extra="forbid")
    _utc = field_serializer("*", mode="wrap", when_used="json")(_utc_json)


class ApiModel(BaseModel):
    """A response of the API that is no table: its times in JSON are UTC too."""

    _utc = field_serializer("*", mode="wrap", when_used="json")(_utc_json)


# --- creator ---------------------------------------------------------------------------------
class CreatorBase(_Schema):
    name: str = Field(min_length=1, max_length=200, description="The real creator's display name.")
    email: str | None = Field(default=None, max_length=320, description="Where consent notices go.")


class Creator(CreatorBase, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)


class CreatorCreate(CreatorBase):
    pass


class CreatorPublic(CreatorBase):
    id: str
    created_at: datetime


# --- agency --------------------------------------------------------------------------------
class AgencyBase(_Schema):
    name: str = Field(min_length=1, max_length=200, description="The agency that runs shows with the clone.")


class Agency(AgencyBase, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow)


class AgencyCreate(AgencyBase):
    pass


class AgencyPublic(AgencyBase):
    id: str
    created_at: datetime


# --- avatar ----------------------------------------------------------------------------------
class Avatar(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    creator_id: str = Field(foreign_key="creator.id", index=True)
    name: str = Field(max_length=200)
    status: str = Field(default="ready", description="ready | deleted")
    bundle_path: str = Field(description="Directory of the versioned avatar bundle.")
    footage_sha256: str
    width: int
    height: int
    fps: float
    duration_s: float
    renderer: str = Field(default="footage", max_length=40,
                          description="Renderer backend its segments are rendered with, chosen at creation from the "
                          "config's renderer.type; it decides their render queue (render.cpu, render.gpu).")
    voice: str = Field(default="tts", max_length=200,
                       description="What its segments sound like (one voice per avatar): `tts` (the configured "
                       "speech backend and voice), `espeak:VOICE` (an espeak-ng voice), or `recorded` (the "
                       "scripts' recorded voice-overs; a script without one does not air with this avatar).")
    created_at: datetime = Field(default_factory=utcnow)


class AvatarPublic(_Schema):
    id: str
    creator_id: str
    name: str
    status: str
    renderer: str
    voice: str
    footage_sha256: str
    width: int
    height: int
    fps: float
    duration_s: float
    created_at: datetime


def territory_codes(v: list[str]) -> list[str]:
    out = [str(x).strip().upper() for x in v]
    bad = [x for x in out if not re.fullmatch(r"[A-Z]{2}", x)]
    if bad:
        raise ValueError(f"territories must be ISO 3166-1 alpha-2 codes like US or DE, got {bad}")
    return out


# --- consent ---------------------------------------------------------------------------------
class ConsentScope(_Schema):
    """What the clone may be used for (POLICY C3). Every field must be given: a vague scope is unenforceable
    (California AB 2602), so there is no "anything" default. Empty `brands` with named `categories` means any
    brand in those categories; one of the two must name something."""

    brands: list[str] = Field(description="Brands allowed; empty means any brand within the allowed categories.")
    categories: list[str] = Field(description="Product categories allowed; empty means only the listed brands.")
    excluded_categories: list[str] = Field(
        min_length=1, description="Categories never allowed, whatever else the scope says "
        "(e.g. alcohol, gambling, medicine, politics).")
    platforms: list[str] = Field(min_length=1, description="Destination platforms allowed (youtube, twitch, "
                                 "facebook, tiktok_live, tiktok_shop_live, douyin, custom).")
    territories: list[str] = Field(min_length=1, description="ISO 3166-1 alpha-2 territories the shows may target.")
    languages: list[str] = Field(min_length=1, description="Script languages allowed (ISO 639-1).")
    max_hours_per_day: float = Field(gt=0, le=24, description="Air time cap in any 24 hours, across channels.")

    @field_validator("brands")
    @classmethod
    def _brands(cls, v: list[str]) -> list[str]:
        out = [x.strip() for x in v]
        if any(not x for x in out):
            raise ValueError("brand names must not be blank")
        return out

    @field_validator("categories", "excluded_categories", "platforms", "languages")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        out = [x.strip().lower() for x in v]
        if any(not x for x in out):
            raise ValueError("names must not be blank")
        return out

    @field_validator("territories")
    @classmethod
    def _territories(cls, v: list[str]) -> list[str]:
        return territory_codes(v)

    @model_validator(mode="after")
    def _specific(self) -> ConsentScope:
        if not self.brands and not self.categories:
            raise ValueError("scope names neither brands nor categories: name at least one of them (POLICY C3)")
        if overlap := set(self.categories) & set(self.excluded_categories):
            raise ValueError(f"categories {sorted(overlap)} are both allowed and excluded")
        return self


class ConsentBase(_Schema):
    signed_name: str = Field(min_length=1, max_length=200, description="Name as signed on the statement.")
    statement: str = Field(min_length=20, description="The signed consent statement, verbatim.")
    face: bool = Field(default=True, description="Consent to use the face.")
    voice: bool = Field(default=True, description="Consent to use the voice.")
    starts_at: datetime
    ends_at: datetime


class Consent(ConsentBase, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    creator_id: str = Field(foreign_key="creator.id", index=True)
    avatar_id: str | None = Field(default=None, foreign_key="avatar.id", index=True)
    agency_id: str | None = Field(default=None, foreign_key="agency.id", index=True,
                                  description="The one agency this consent grants; None: the platform's own shows.")
    require_script_approval: bool = Field(default=False, description="Each script airs only once the creator "
                                          "approved its exact text.")
    scope: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="granted", description="pending_review | granted | rejected | revoked | expired")
    statement_sha256: str
    phrase_id: str | None = Field(default=None, description="The one-time code phrase read in the consent video.")
    video_sha256: str | None = Field(default=None, description="SHA-256 of the consent video (kept until revoked).")
    video_path: str | None = None
    verification: dict | None = Field(default=None, sa_column=Column(JSON),
                                      description="The consent-video check: phrase score, face distance, liveness.")
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None
    reviewed_by: str | None = Field(default=None, description="The account that approved or rejected it (review).")
    reviewed_at: datetime | None = None
    review_reason: str | None = Field(default=None, description="Why the reviewer rejected it.")
    voice_explicit: bool = Field(default=False, description="The creator ticked voice explicitly in the grant "
                                 "(POLICY C7): only then may recordings of the creator's own voice air under it.")


class ConsentCreate(ConsentBase):
    voice: bool = Field(default=False, description="Consent to use the voice: the creator's own recorded voice "
                        "airs only under a consent that says so explicitly (POLICY C7).")
    avatar_id: str
    scope: ConsentScope
    agency_id: str | None = None
    require_script_approval: bool = False
    phrase_id: str = Field(description="The code phrase issued for this grant (POST /api/avatars/{id}/phrase).")

    @field_validator("ends_at")
    @classmethod
    def _term(cls, v: datetime, info) -> datetime:
        start = info.data.get("starts_at")
        if start is not None and v <= start:
            raise ValueError(f"ends_at {v.isoformat()} is not after starts_at {start.isoformat()}")
        return v


class ConsentPublic(ConsentBase):
    id: str
    creator_id: str
    avatar_id: str | None
    agency_id: str | None
    require_script_approval: bool
    scope: dict
    status: str
    phrase_id: str | None
    video_sha256: str | None
    verification: dict | None
    created_at: datetime
    revoked_at: datetime | None
    reviewed_at: datetime | None = Field(description="When a reviewer approved or rejected it; None: not reviewed "
                                         "(pending, or granted without review).")
    review_reason: str | None = Field(description="The reviewer's reason for a rejection.")
    voice_explicit: bool = Field(default=False, description="Voice was ticked explicitly in the grant (C7).")


class ConsentPhrase(SQLModel, table=True):
    """A one-time code phrase issued for one avatar's consent video (POLICY C2); used once, then spent."""

    id: str = Field(primary_key=True)
    avatar_id: str = Field(foreign_key="avatar.id", index=True)
    text: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


class ScriptApproval(SQLModel, table=True):
    """The creator approved this exact script text for airing under this consent."""

    __table_args__ = (UniqueConstraint("consent_id", "script_id", "text_sha256"),)
    id: str = Field(default_factory=new_id, primary_key=True)
    consent_id: str = Field(foreign_key="consent.id", index=True)
    script_id: str = Field(foreign_key="script.id", index=True)
    text_sha256: str
    signed_name: str
    approved_at: datetime = Field(default_factory=utcnow)


class Attestation(SQLModel, table=True):
    """The creator states a first-person fact about one product (POLICY S2): kind use | opinion | results."""

    __table_args__ = (UniqueConstraint("creator_id", "product_id", "kind"),)
    id: str = Field(default_factory=new_id, primary_key=True)
    creator_id: str = Field(foreign_key="creator.id", index=True)
    product_id: str = Field(foreign_key="product.id", index=True)
    kind: str
    statement: str
    signed_name: str
    attested_at: datetime = Field(default_factory=utcnow)


# --- product and script ----------------------------------------------------------------------
class ProductBase(_Schema):
    name: str = Field(min_length=1, max_length=200)
    brand: str = Field(min_length=1, max_length=200)
    category: str = Field(min_length=1, max_length=100)


class Product(ProductBase, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    agency_id: str | None = Field(default=None, foreign_key="agency.id", index=True,
                                  description="The agency that owns the product; None: the platform's own.")
    created_at: datetime = Field(default_factory=utcnow)


class ProductCreate(ProductBase):
    agency_id: str | None = Field(default=None, description="Owner; an agency member's own agency when omitted "
                                  "(only an admin may name another or none).")


class ProductPublic(ProductBase):
    id: str
    agency_id: str | None = None


class ScriptBase(_Schema):
    product_id: str
    text: str = Field(min_length=1, max_length=5000, description="What the avatar says.")
    language: str = Field(default="en", min_length=2, max_length=8)


class Script(ScriptBase, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    product_id: str = Field(foreign_key="product.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)


class ScriptCreate(ScriptBase):
    pass


class ScriptPublic(ScriptBase):
    id: str


class Voiceover(SQLModel, table=True):
    """A recording of one script's exact text (POLICY C7), checked to say it and force-aligned: its words,
    phonemes and the parts it is cut into at word boundaries. The audio is a 16 kHz mono WAV in the media store.
    At most one per script; an edited script drops it."""

    id: str = Field(default_factory=new_id, primary_key=True)
    script_id: str = Field(foreign_key="script.id", index=True, unique=True)
    text_sha256: str = Field(description="SHA-256 of the script text the recording says.")
    speaker: str = Field(description="creator (the creator's own voice) | actor (a voice actor)")
    creator_id: str | None = Field(default=None, foreign_key="creator.id", index=True,
                                   description="Whose own voice it is (speaker creator).")
    actor_name: str | None = Field(default=None, max_length=200, description="The voice actor (speaker actor).")
    uploaded_by: str | None = Field(default=None, description="The account that uploaded it.")
    approved_at: datetime | None = Field(default=None, description="The creator approved the recording of their "
                                         "own voice (not needed for a voice actor).")
    approved_name: str | None = None
    audio_path: str = Field(description="Store key of the 16 kHz mono WAV.")
    upload_sha256: str = Field(description="SHA-256 of the file as uploaded.")
    audio_sha256: str = Field(description="SHA-256 of the stored WAV.")
    duration_s: float
    matched: float = Field(description="Share of the script's words heard in the recording.")
    words: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    phonemes: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    parts: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False),
                        description="[start, end, text] per segment, cut at word boundaries (2-10 s).")
    created_at: datetime = Field(default_factory=utcnow)


class VoiceoverPublic(_Schema):
    id: str
    script_id: str
    speaker: str
    creator_id: str | None
    actor_name: str | None
    approved_at: datetime | None
    needs_approval: bool
    duration_s: float
    matched: float
    words: list
    parts: list
    upload_sha256: str
    created_at: datetime


# --- channel, destination, show --------------------------------------------------------------
class ChannelBase(_Schema):
    name: str = Field(min_length=1, max_length=200)
    policy_profiles: list[str] = Field(default_factory=lambda: ["default"], sa_column=Column(JSON))
    territories: list[str] = Field(default_factory=list, sa_column=Column(JSON),
                                   description="ISO 3166-1 alpha-2 markets the channel targets; each must be in "
                                   "the consent scope of every show it airs.")


class Channel(ChannelBase, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    agency_id: str | None = Field(default=None, foreign_key="agency.id", index=True,
                                  description="The agency that owns the channel; None: the platform's own.")
    created_at: datetime = Field(default_factory=utcnow)


class ChannelCreate(ChannelBase):
    territories: list[str] = Field(min_length=1, description="ISO 3166-1 alpha-2 markets the channel targets.")
    agency_id: str | None = Field(default=None, description="Owner; an agency member's own agency when omitted "
                                  "(only an admin may name another or none).")

    @field_validator("territories")
    @classmethod
    def _territories(cls, v: list[str]) -> list[str]:
        return territory_codes(v)


class ChannelPublic(ChannelBase):
    id: str
    agency_id: str | None = None


class Destination(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    channel_id: str = Field(foreign_key="channel.id", index=True)
    platform: str = Field(default="custom")
    url: str = Field(description="RTMP(S) URL including the stream key, sealed at rest (studio.secrets); "
                     "never shown unmasked.")
    url_masked: str | None = Field(default=None, description="The URL with its stream key masked, for display.")
    enabled: bool = True


class Show(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    channel_id: str = Field(foreign_key="channel.id", index=True)
    avatar_id: str = Field(foreign_key="avatar.id", index=True)
    consent_id: str = Field(foreign_key="consent.id", index=True)
    name: str
    script_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    starts_at: datetime = Field(default_factory=utcnow)
    ends_at: datetime | None = Field(default=None, description="None: runs 24/7 until stopped.")
    status: str = Field(default="scheduled", description="scheduled | stopped")
    schedule: dict | None = Field(default=None, sa_column=Column(JSON),
                                  description="Recurring windows, rotation, avatars and breaks (studio.schedule); "
                                  "None: the scripts in turn, 24/7, with the show's own avatar.")
    plan_state: dict | None = Field(default=None, sa_column=Column(JSON),
                                    description="Where the planner of a scheduled show stands "
                                    "(studio.schedule.PlanState).")


# --- segment ---------------------------------------------------------------------------------
class Segment(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("channel_id", "seq"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    produce_id: str = Field(default_factory=new_produce_id, unique=True, description="AIGC ProduceID.")
    channel_id: str = Field(foreign_key="channel.id", index=True)
    show_id: str = Field(foreign_key="show.id", index=True)
    avatar_id: str = Field(foreign_key="avatar.id")
    consent_id: str = Field(foreign_key="consent.id")
    script_id: str | None = Field(default=None, foreign_key="script.id", description="None for a break.")
    text: str = Field(description="The words this segment says: one part of the script.")
    seq: int = Field(description="Position in the channel's plan; the streamer airs in this order.")
    show_start: bool = Field(default=False, description="First segment of a show or after a break: banner.")
    kind: str = Field(default="segment", description="segment | break (the slate airs for duration_s)")
    air_at: datetime | None = Field(default=None, description="Planned air start (naive UTC).")
    deadline: datetime | None = Field(default=None, index=True,
                                      description="Its render must be done by then (air_at minus a margin).")
    state: str = Field(default="planned", index=True)
    attempts: int = 0
    path: str | None = None
    duration_s: float | None = None
    stamp: dict | None = Field(default=None, sa_column=Column(JSON))
    error: str | None = None
    planned_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    aired_at: datetime | None = None
    task_id: str | None = Field(default=None, description="Celery id of the render task, to revoke it.")
    air_token: int | None = Field(default=None, description="The channel lease's fencing token under which the "
                                  "segment began to air: a streamer that takes the channel over after a crash "
                                  "does not air one again that began under another token.")
    archive_path: str | None = Field(default=None, description="Signed archive copy kept for audit.")
    manifest_id: str | None = Field(default=None, description="C2PA manifest of the archive copy; the next "
                                    "archived segment of the show chains to it.")


class Recording(SQLModel, table=True):
    """A show's recording for audit: its aired segments joined, with AIGC metadata and a C2PA manifest."""

    id: str = Field(default_factory=new_id, primary_key=True)
    show_id: str = Field(foreign_key="show.id", index=True)
    channel_id: str = Field(foreign_key="channel.id")
    produce_id: str = Field(default_factory=new_produce_id, unique=True)
    path: str
    manifest_id: str
    segment_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    duration_s: float
    sha256: str
    created_at: datetime = Field(default_factory=utcnow)


class SegmentPublic(_Schema):
    id: str
    produce_id: str
    channel_id: str
    show_id: str
    seq: int
    text: str
    state: str
    attempts: int
    duration_s: float | None
    error: str | None
    aired_at: datetime | None


# --- workers ---------------------------------------------------------------------------------
class WorkerInfo(SQLModel, table=True):
    """The worker registry: what a Celery worker runs on and serves and how fast it renders; refreshed by the
    worker itself (workers.worker_report). A row not refreshed for 2 minutes is a worker that is gone."""

    id: str = Field(primary_key=True, description="Celery node name, e.g. render@host.")
    host: str | None = Field(default=None, description="The machine it runs on.")
    pid: int | None = Field(default=None, description="Its main process on that machine.")
    queues: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    renderers: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False),
                                 description="Renderer backends whose renders it takes (from its render queues).")
    concurrency: int | None = Field(default=None, description="Tasks it runs at once (pool processes).")
    device: str = Field(description="cpu, or the GPU's name")
    device_memory_mb: int | None = None
    device_load_percent: float | None = Field(default=None, description="GPU utilisation at the last heartbeat "
                                              "(nvidia-smi); None on CPU workers.")
    device_memory_used_mb: int | None = Field(default=None, description="GPU memory in use at the last heartbeat.")
    cpu_count: int | None = None
    renders: int = 0
    render_fps: float | None = Field(default=None, description="Frames per second over its recent renders.")
    realtime_factor: float | None = Field(default=None, description="Seconds of video per second of rendering.")
    stalled: list[dict] = Field(default_factory=list, sa_column=Column(JSON, nullable=False),
                                description="Renders it still holds that made no progress for "
                                "worker.render_stall_seconds or ran past the hard time limit, each as {segment, "
                                "attempt, pid, since}: their segments went to other workers, and each still takes "
                                "one of its slots until the stuck call returns, its process dies or the worker "
                                "restarts.")
    started_at: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)


class Leader(SQLModel, table=True):
    """Who leads a role that runs once in a fleet (the scheduler): a lease with a fencing token (studio.leader)."""

    name: str = Field(primary_key=True, description="The role led, e.g. scheduler.")
    owner: str = Field(description="The process holding the lease: host:pid:random, new at every start.")
    host: str = Field(description="The holder's host name.")
    token: int = Field(description="Fencing token: one more at every takeover; a write fenced on an older token "
                       "rolls back.")
    expires_at: datetime = Field(description="End of the lease unless renewed (the database's clock, naive UTC).")
    since: datetime = Field(description="When this owner took the lease (the database's clock, naive UTC).")


# --- audit -----------------------------------------------------------------------------------
class AuditEvent(SQLModel, table=True):
    """Append-only, hash-chained: each row's hash covers its content and the previous hash."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow)
    kind: str = Field(index=True)
    subject_id: str = Field(index=True)
    data: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str
    hash: str = Field(unique=True)
    mac_role: str | None = Field(default=None, max_length=16,
                                 description="The role whose key signed the event (studio.audit_keys); None only "
                                             "on events from before migration 0009.")
    mac: str | None = Field(default=None, max_length=64,
                            description="HMAC-SHA256 of the event's hash with that role's audit key.")


class UnkeyedAuditEvents(SQLModel, table=True):
    """The events recorded before audit events carried MACs: those with id up to `last_id`, as migration 0009
    found the log. One row at most (none when the log was empty then); every later event must carry a MAC."""

    id: int = Field(default=1, primary_key=True)
    last_id: int = Field(description="The last event id at migration time.")
    migrated_at: datetime = Field(default_factory=utcnow)


# --- accounts ----------------------------------------------------------------------------------
class Account(SQLModel, table=True):
    """A person or program that signs in. Role decides what it may do; agency_id / creator_id decide whose
    resources it sees (studio.accounts)."""

    id: str = Field(default_factory=new_id, primary_key=True)
    email: str = Field(max_length=320, unique=True, index=True, description="Login name, stored lower-case.")
    name: str = Field(max_length=200)
    role: str = Field(description="creator | agency | ops | reviewer | admin")
    agency_id: str | None = Field(default=None, foreign_key="agency.id", index=True)
    creator_id: str | None = Field(default=None, foreign_key="creator.id", index=True)
    password_hash: str | None = Field(default=None, description="argon2id; None: API keys only.")
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    """A program's credential. Only the SHA-256 of the key is stored; the key is shown once, when made."""

    id: str = Field(default_factory=new_id, primary_key=True)
    account_id: str = Field(foreign_key="account.id", index=True)
    name: str = Field(max_length=200)
    prefix: str = Field(description="The key's first characters, to tell keys apart in lists.")
    key_hash: str = Field(unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    expires_at: datetime | None = Field(default=None, description="The key stops working then; None: until revoked.")


class LoginSession(SQLModel, table=True):
    """A signed-in browser. The cookie holds the token; only its SHA-256 is stored."""

    id: str = Field(default_factory=new_id, primary_key=True)
    account_id: str = Field(foreign_key="account.id", index=True)
    token_hash: str = Field(unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime


class UploadJob(SQLModel, table=True):
    """Who started an ingest job, so that only they (and admins) can follow it."""

    id: str = Field(primary_key=True, description="The Celery task id.")
    creator_id: str = Field(foreign_key="creator.id", index=True)
    account_id: str | None = Field(default=None, index=True)
    created_at: datetime = Field(default_factory=utcnow)


class ChannelLease(SQLModel, table=True):
    """Which streamer airs a channel (issue 16). A row per channel that was ever leased: `token` (the fencing
    token) grows by one on every claim and is never reused, so a streamer that lost its lease is told apart
    from the new owner by its token alone. `owner` None: released (the row keeps the token counter)."""

    channel_id: str = Field(primary_key=True, foreign_key="channel.id")
    owner: str | None = Field(default=None, index=True, description="The streamer process (host:pid:random).")
    host: str | None = Field(default=None, description="The host name the owner runs on, for status pages.")
    token: int = Field(default=0, description="Fencing token: checked before every segment airs and every publish.")
    expires_at: datetime | None = Field(default=None, description="UTC by the database clock; renewed every second.")
    since: datetime | None = Field(default=None, description="When the current owner claimed it.")
    handover_to: str | None = Field(default=None, description="A streamer that asked for the channel (balance): "
                                    "the owner stops at the next segment boundary and releases it.")


class StreamerHost(SQLModel, table=True):
    """A live `studio streamer`: its capacity and last heartbeat, for spreading channels by capacity."""

    owner: str = Field(primary_key=True)
    host: str
    capacity: int
    started_at: datetime
    seen_at: datetime = Field(index=True)
