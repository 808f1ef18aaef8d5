"""Configuration: YAML validated by Pydantic models that reject unknown keys.

Every field carries a description; `studio config check FILE` reports errors with their key path.
Settings are layered the twelve-factor way (pydantic-settings' usual order, highest first):

1. the process environment: nested keys `STUDIO_<SECTION>__<KEY>` for every field
   (`STUDIO_SERVICES__RENDER_CONCURRENCY=2`, `STUDIO_MEDIA__WIDTH=480`), top-level ones as `STUDIO_<KEY>`,
   and the older names in `ENV_OVERRIDES` (`STUDIO_API_PORT`, `STUDIO_REDIS_URL`, ...); a nested key wins
   over an older name for the same field;
2. a `.env` file (`STUDIO_ENV_FILE`, else `.env` in the working directory), same names;
3. a secrets directory (`STUDIO_SECRETS_DIR`, `/run/secrets` style): one file per secret, named as in
   `SECRET_FILES`;
4. the YAML file (`--config`, `STUDIO_CONFIG`, else configs/default.yaml);
5. the defaults below.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import EnvSettingsSource

from studio.binds import LOOPBACK, connect_host, host_port, host_problem
from studio.resources import DEFAULT_CONFIG, POLICY_DIR
from studio.tls import (
    PostgresTLS,
    RedisEndpoint,
    RedisTLS,
    check_pem_file,
    postgres_url,
    redis_ssl_options,
    s3_verify,
)

EMBEDDED_REDIS_PASSWORD = "redis.password"  # in data/keys, made by the embedded stack's first start
# Values that look like a secret but were never changed from an example.
RENDERERS_CONTEXT = "renderers"  # validation context: the renderer backend names `renderer.type` may take
PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "changethis", "secret", "please-change", "xxx"}


# The H.264 encoders a channel may be encoded with (workers/media/ffmpeg_args.py builds the arguments of each).
VideoEncoder = Literal["libx264", "h264_nvenc", "h264_qsv", "h264_vaapi"]
VIDEO_ENCODERS: tuple[str, ...] = get_args(VideoEncoder)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MediaProfile(Strict):
    width: int = Field(720, ge=64, le=4096, description="Frame width in pixels (vertical 9:16 by default).")
    height: int = Field(1280, ge=64, le=4096, description="Frame height in pixels.")
    fps: int = Field(25, ge=10, le=60, description="Frames per second; segments hold whole frames only.")
    gop_seconds: float = Field(1.0, gt=0, le=4, description="Closed GOP length; every segment starts on an IDR.")
    video_encoder: VideoEncoder = Field(
        "libx264", description="ffmpeg H.264 encoder of every segment and slate: `libx264` (the host's CPU cores), "
        "`h264_nvenc` (an NVIDIA GPU with NVENC; the data-centre H100 and H200 have none), `h264_qsv` (Intel Quick "
        "Sync), `h264_vaapi` (VA-API, see vaapi_device). Each gives the same stream (High profile, 4:2:0, closed "
        "GOPs without B-frames, SPS/PPS on every IDR); `studio config check` and a render worker's or streamer's "
        "start refuse one this host's ffmpeg cannot open. Change it with the channels off air: the streamer joins "
        "only segments encoded alike.")
    video_crf: int = Field(23, ge=0, le=51, description="Constant quality, x264 CRF scale: libx264's -crf, "
                           "h264_nvenc's -cq, h264_qsv's and h264_vaapi's QVBR quality.")
    video_maxrate_kbps: int = Field(3500, ge=200, description="VBV max rate so the stream fits an RTMP uplink.")
    x264_preset: str = Field("veryfast", description="x264 preset (libx264 only); all segments of a channel must "
                             "share it.")
    vaapi_device: str = Field("/dev/dri/renderD128", description="DRM render node that h264_vaapi encodes on "
                              "(media.video_encoder: h264_vaapi only).")
    audio_rate: int = Field(48000, description="AAC sample rate in Hz.")
    audio_channels: int = Field(2, ge=1, le=2, description="AAC channel count.")
    audio_kbps: int = Field(128, ge=32, le=512, description="AAC bit rate.")
    min_segment_seconds: float = Field(2.0, gt=0, description="Shortest segment the renderer may emit.")
    max_segment_seconds: float = Field(10.0, gt=0, description="Longest segment; longer scripts are split.")

    @field_validator("video_encoder", mode="before")
    @classmethod
    def _known_encoder(cls, v: object) -> object:
        if v not in VIDEO_ENCODERS:
            raise ValueError(f"unknown video encoder {v!r}; choose one of {', '.join(VIDEO_ENCODERS)}")
        return v

    @field_validator("width", "height")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"must be even for yuv420p, got {v}")
        return v

    @property
    def gop_frames(self) -> int:
        return max(1, round(self.fps * self.gop_seconds))

    @property
    def samples_per_frame(self) -> float:
        return self.audio_rate / self.fps


# Disclosure rules (text, size, corner, banner, captions, spoken disclosure) live in policy profiles
# (configs/policies/*.yaml, studio/policy_profiles.py), where a channel names the ones that apply to it.
_MOVED_TO_PROFILES = {"text", "height_fraction", "corner", "margin_fraction", "banner_seconds", "banner_template",
                      "captions"}


class LabelStyle(Strict):
    font_path: str = Field(
        "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
        description="TrueType font for Latin labels and captions; its serifed capital I keeps \"AI\" from reading "
        "as \"Al\".",
    )
    cjk_font_path: str = Field(
        "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
        description="Font for label lines in Chinese, Japanese or Korean (profile `cn` adds \"AI生成\").",
    )

    @model_validator(mode="before")
    @classmethod
    def _rules_live_in_profiles(cls, data):
        if isinstance(data, dict):
            moved = sorted(_MOVED_TO_PROFILES & set(data))
            if moved:
                raise ValueError(f"label.{', label.'.join(moved)}: disclosure rules are set by policy profiles "
                                 f"(configs/policies/*.yaml) that a channel names, not here; no setting can "
                                 f"weaken or remove the label")
        return data


class IngestLimits(Strict):
    min_seconds: float = Field(30.0, gt=0, description="Shortest reference footage accepted.")
    max_seconds: float = Field(300.0, gt=0, description="Longest reference footage accepted.")
    min_fps: float = Field(20.0, gt=0, description="Lowest frame rate accepted.")
    min_face_share: float = Field(0.9, gt=0, le=1, description="Share of sampled frames that must show the face.")
    min_face_height: float = Field(0.15, gt=0, le=1, description="Face height as a share of the frame height.")
    min_speech_share: float = Field(0.5, ge=0, le=1, description="Share of the footage that must be speech.")
    sample_every: int = Field(5, ge=1, description="Analyse one frame in this many when validating faces.")
    max_upload_mb: int = Field(500, ge=1, description="Largest upload the API accepts, in MB.")
    base_loop_seconds: float = Field(6.0, ge=1, description="Length of the idle base loop, before ping-pong.")
    mouth_units: int = Field(32, ge=4, le=256, description="Mouth crops kept in the bundle, spanning openness.")


class TTSConfig(Strict):
    type: Literal["espeak", "piper"] = Field("espeak", description="Speech backend: `espeak` (espeak-ng, no "
                                             "model) or `piper` (a local Piper voice, tts.voice_path).")
    voice: str = Field("en-us", description="espeak-ng voice name; with `piper`, the language its voice speaks "
                       "(the spoken disclosure's language), e.g. en-us.")
    words_per_minute: int = Field(165, ge=80, le=400, description="Speaking rate (espeak).")
    voice_path: str | None = Field(None, description="`piper`: the voice's .onnx, its .onnx.json beside it; read "
                                   "from this local path, never downloaded.")
    speaker: int | None = Field(None, ge=0, description="`piper`: the speaker of a multi-speaker voice.")
    length_scale: float | None = Field(None, gt=0.3, lt=3.0, description="`piper`: slower above 1, faster below "
                                       "(default: the voice's own).")


class RendererConfig(Strict):
    type: str = Field("footage", description="Renderer backend new avatars are built for: one of the backends under "
                      "workers/renderers (each registers its name); `footage` (CPU) needs no weights.")
    weights_path: str | None = Field(None, description="Local weights for backends that need them; never fetched. "
                                     "`musetalk`: the `models` directory of MuseTalk 1.5's release (musetalkV15/, "
                                     "sd-vae/, whisper/ as its download_weights.sh lays them out).")
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="Where a neural backend runs: `auto` takes "
                                                   "the GPU when torch sees one (fp16), else the CPU (fp32).")
    batch_frames: int = Field(32, ge=1, le=512, description="Most frames in one forward pass of a neural backend; "
                              "frames of every segment a worker renders at once share the passes.")
    gpu_memory_mb: int | None = Field(None, ge=256, description="Most GPU memory a render worker process may hold "
                                      "(torch's per-process limit); unset: the whole device.")
    unload_after_seconds: float = Field(300.0, gt=0, description="A neural backend's models are let go, and their "
                                        "GPU memory returned, after this long without a frame to render.")
    gpu_renders: int = Field(4, ge=1, le=64, description="Renders a GPU worker runs at once (threads sharing one "
                             "GPU and its batches); several channels per GPU.")

    @field_validator("type")
    @classmethod
    def _known_backend(cls, value: str, info: ValidationInfo) -> str:
        """Checked against the registered backends that the loader was given (load_settings `renderers`): the
        domain does not import the backends, the edges that load settings pass their names."""
        known = (info.context or {}).get(RENDERERS_CONTEXT)
        if known is not None and value not in known:
            raise ValueError(f"unknown renderer backend {value!r}; known backends: {', '.join(sorted(known))}")
        return value


_BINDS = ("api_host", "redis_host", "rtmp_host", "http_host")


class ServiceConfig(Strict):
    host: str = Field(LOOPBACK, description="Default bind address of the API and the embedded services; each of "
                      "api_host, redis_host, rtmp_host and http_host that is not set takes this one.")
    api_host: str = Field(LOOPBACK, description="Address the API (uvicorn) binds to. Default: services.host.")
    redis_host: str = Field(LOOPBACK, description="Address the embedded redis-server binds to and its clients "
                            "connect to (a wildcard: loopback). Default: services.host.")
    rtmp_host: str = Field(LOOPBACK, description="Address the embedded nginx-rtmp ingest listens on; the feeders "
                           "publish and the relays read there. Default: services.host.")
    http_host: str = Field(LOOPBACK, description="Address nginx serves the HLS previews on. Default: services.host.")
    public_url: str | None = Field(None, description="Base URL users reach the API and pages at (behind a proxy: "
                                   "https://studio.example.com); links printed by the API and the demo use it. "
                                   "Default: http://api_host:api_port.")
    public_hls_url: str | None = Field(None, description="Base URL of the HLS previews as users reach them "
                                       "(a CDN or proxy). Default: http://http_host:http_port/hls.")
    api_port: int = Field(8700, ge=1, le=65535, description="FastAPI port.")
    redis_port: int = Field(6390, ge=1, le=65535, description="Embedded redis-server port.")
    rtmp_port: int = Field(1936, ge=1, le=65535, description="Embedded nginx-rtmp ingest port.")
    http_port: int = Field(8780, ge=1, le=65535, description="nginx HTTP port serving HLS previews.")
    redis_url: str | None = Field(None, description="Use this Redis instead of spawning one (scale-out).")
    redis_password: str | None = Field(None, repr=False, description="Password for Redis when `redis_url` carries "
                                       "none; the embedded redis-server makes its own (data/keys/redis.password).")
    redis_tls: RedisTLS = Field(default_factory=RedisTLS, description="CA and client certificate for a rediss:// "
                                "redis_url (the certificate is always verified); see studio.tls.")
    render_concurrency: int = Field(1, ge=1, le=64, description="Render worker processes in `studio up`.")
    max_json_kb: int = Field(64, ge=1, le=65536, description="Largest JSON request body the API reads, in KB; a "
                             "larger one is refused with 413 before it is read (uploads: ingest.max_upload_mb).")

    @model_validator(mode="before")
    @classmethod
    def _binds_default_to_host(cls, data):
        # Before validation, so each bind reads as a plain address everywhere; unset or null takes `host`.
        if isinstance(data, dict):
            data, host = {**data}, data.get("host")
            fallback = host if host is not None and host_problem(host) is None else LOOPBACK  # a bad host: one error
            for name in _BINDS:
                if data.get(name) is None:
                    data[name] = fallback
        return data

    @field_validator("host", *_BINDS)
    @classmethod
    def _address(cls, v: str, info) -> str:
        if (problem := host_problem(v)) is not None:
            raise ValueError(f"services.{info.field_name} {problem}, got {v!r}")
        return v


class StreamerConfig(Strict):
    allow_private_destinations: bool = Field(False, description="Allow destinations on this host or a private, "
                                             "link-local or multicast network (the embedded demo's local nginx); "
                                             "off, so an agency cannot reach internal addresses through a relay.")
    lead_seconds: float = Field(1.0, gt=0, le=10, description="How far ahead of wall clock packets are written.")
    slate_seconds: float = Field(1.0, gt=0, le=10, description="Length of one slate segment.")
    buffer_target_seconds: float = Field(120.0, gt=0, description="Rendered or queued audio/video kept ahead of air "
                                         "per channel, and no more (backpressure on the render queue).")
    restart_pause_seconds: float = Field(2.0, ge=0, description="Pause before restarting a crashed feeder.")
    max_restarts_per_minute: int = Field(5, ge=1, description="Crashes in a minute beyond which the pause doubles "
                                         "with each crash, up to max_restart_pause_seconds; the feeder never gives up.")
    max_restart_pause_seconds: float = Field(60.0, ge=0, description="Longest pause between feeder restarts.")
    early_tolerance_seconds: float = Field(20.0, ge=0, description="A scheduled segment airs at most this long before "
                                           "its planned time; earlier, the idle loop airs until then.")
    capacity: int = Field(50, ge=1, le=10000, description="Most channels this streamer airs at once; channels are "
                          "spread over live streamers in proportion to capacity.")
    lease_seconds: float = Field(5.0, ge=2, le=60, description="A channel lease lasts this long unless renewed (every "
                                 "second); a dead streamer's channels are taken over after it.")
    preview_seconds: float = Field(5.0, ge=1, le=60, description="How often the streamer decodes the newest still of "
                                   "each channel it airs and shares it in Redis for the API on every host (it "
                                   "expires after three periods).")
    preview_max_kb: int = Field(256, ge=16, le=4096, description="Largest preview still shared or served (KiB); a "
                                "bigger one is not shared.")
    lease_backend: Literal["database", "redis"] = Field("database", description="Where channel leases live: "
                                                        "database (the channellease table, by the database's "
                                                        "clock) or redis (services.redis_url, Lua scripts by the "
                                                        "Redis server's clock; give it persistence, the fencing "
                                                        "tokens live there). Every streamer and API of a fleet "
                                                        "must name the same one.")


class SchedulerConfig(Strict):
    horizon_seconds: float = Field(1800.0, ge=60, le=86400, description="How far ahead scheduled shows are planned "
                                   "(segments materialised); the plan is extended on every pass.")
    margin_seconds: float = Field(30.0, ge=0, le=600, description="A segment's render deadline is its air time minus "
                                  "this margin.")
    start_lead_seconds: float = Field(40.0, ge=0, le=3600, description="A scheduled show whose start has passed "
                                      "when it is first planned starts this long after now, so its first renders can "
                                      "make it.")
    late_tolerance_seconds: float = Field(10.0, ge=0, description="When a channel runs later than its plan by more "
                                          "than this, the rest of the plan (air times, deadlines) moves with it.")
    retry_seconds: float = Field(60.0, gt=0, description="When every avatar of a show is refused, the plan waits this "
                                 "long before asking again.")
    lease_seconds: float = Field(5.0, ge=2, le=60, description="How long the leading scheduler's lease lasts "
                                 "without renewal (renewed every second, by the database's clock); a standby takes "
                                 "over within this plus one second of the leader's death.")
    render_lost_seconds: float = Field(30.0, ge=6, le=3600, description="A render whose attempt has not beaten "
                                       "(every 2 s) for this long is lost with its host (dead, frozen, cut off): the "
                                       "leading scheduler queues the segment again, for another worker. Keep it well "
                                       "above the hosts' clock skew.")


class ConsentConfig(Strict):
    review: Literal["required", "auto"] = Field("required", description="required: a consent whose video passed the "
                                                "automated check waits (pending_review, airing nothing) until an "
                                                "admin or reviewer approves it (POLICY C2); auto: it is granted at "
                                                "once (the demo and the tests).")
    max_open_phrases: int = Field(3, ge=1, le=50, description="Code phrases a creator may hold issued, unused and "
                                  "unexpired at once; one more is refused with 429 until one is used or expires.")


class StoreConfig(Strict):
    url: str | None = Field(None, description="Media store: file:///abs/dir (a shared mount) or s3://bucket/prefix "
                            "for an S3-compatible store; default file:// of data_dir.")
    endpoint_url: str | None = Field(None, description="S3 endpoint (MinIO, Ceph RGW, R2); default AWS.")
    ca_file: str | None = Field(None, description="PEM CA bundle that the https:// endpoint's certificate is "
                                "verified against (a private CA); default: the system's. Verification cannot be "
                                "turned off.")
    region: str = Field("us-east-1", description="S3 region.")
    path_style: bool = Field(False, description="Path-style S3 addressing (http://host/bucket/key), as MinIO wants.")
    access_key_id: str | None = Field(None, description="S3 access key id; prefer STUDIO_STORE__ACCESS_KEY_ID.")
    secret_access_key: str | None = Field(None, description="S3 secret key; prefer STUDIO_STORE__SECRET_ACCESS_KEY.",
                                          repr=False)
    cache_dir: str | None = Field(None, description="Local cache of store objects on this host; default "
                                  "data_dir/cache.")
    cache_max_mb: int = Field(2048, ge=1, description="Size bound of the local cache; least recently used out.")
    cache_reconcile_seconds: float = Field(60.0, ge=5, le=3600, description="How often a process with a local cache "
                                           "checks the database for revoked avatars still cached (a revocation "
                                           "pushed on Redis purges at once; this is the fallback).")

    @field_validator("ca_file")
    @classmethod
    def _readable(cls, v: str | None) -> str | None:
        return check_pem_file(v)


class WorkerPoolConfig(Strict):
    """Bounds on a Celery pool process (prefork pools: ingest, render.cpu, publish): a net under the memory fixes,
    not the fix. Past either bound the process is replaced once its task is done (the task is acknowledged late,
    so none is lost). And how long a render may make no progress before it gives its segment up (every pool)."""

    max_tasks_per_child: int | None = Field(500, ge=1, description="Tasks a pool process runs before it is "
                                            "replaced; null: never for this reason.")
    max_memory_per_child_mb: int | None = Field(1024, ge=64, description="Resident memory (MiB) above which a pool "
                                                "process is replaced after its task; null: no ceiling. Checked "
                                                "after each task against the process's peak so far (Celery reads "
                                                "getrusage's maxrss on Linux), so one render that peaked above it "
                                                "is enough.")
    render_stall_seconds: float = Field(120.0, ge=1, le=3600, description="A render attempt that makes no progress "
                                        "(no frame, no finished step: speech, model, encode) for this long stops "
                                        "beating, so the leading scheduler queues its segment again for another "
                                        "worker after scheduler.render_lost_seconds (it beats again if it moves on "
                                        "before that). A GPU worker's threads pool has no time limit of its own, and "
                                        "a thread stuck in a call that never returns cannot be stopped. Keep it "
                                        "above the slowest step: a model's first load, the encode's self-check.")


class Settings(Strict):
    data_dir: str = Field("./data", description="Where the database, segments, bundles, logs and keys live.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default is SQLite in data_dir.")
    database_tls: PostgresTLS = Field(default_factory=PostgresTLS, description="sslmode, CA and client certificate "
                                      "for a PostgreSQL database_url; see studio.tls.")
    producer: str = Field("Ethical Clone Studio", description="ContentProducer written in AIGC metadata.")
    media: MediaProfile = Field(default_factory=MediaProfile, description="Default media profile of a channel.")
    label: LabelStyle = Field(default_factory=LabelStyle, description="Fonts of the visible disclosure.")
    policy_dir: str | None = Field(None, description="Directory of policy profiles; default configs/policies.")
    ingest: IngestLimits = Field(default_factory=IngestLimits, description="Footage acceptance rules.")
    tts: TTSConfig = Field(default_factory=TTSConfig, description="Speech synthesis.")
    renderer: RendererConfig = Field(default_factory=RendererConfig, description="Talking-head renderer.")
    services: ServiceConfig = Field(default_factory=ServiceConfig, description="Binds and ports of the services.")
    streamer: StreamerConfig = Field(default_factory=StreamerConfig, description="Channel feeders.")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig, description="Planning of scheduled shows.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="Where media files are kept.")
    consent: ConsentConfig = Field(default_factory=ConsentConfig, description="Consent review and code phrases.")
    worker: WorkerPoolConfig = Field(default_factory=WorkerPoolConfig, description="Bounds on Celery pool "
                                     "processes (replaced after N tasks or past a memory ceiling).")
    secrets_dir: str | None = Field(None, description="Directory of secret files (/run/secrets style), see "
                                    "SECRET_FILES; also holds the C2PA key files when a fleet shares them.")
    database_password: str | None = Field(None, repr=False, description="Password for `database_url` when the URL "
                                          "carries none (from the secrets directory in a fleet).")
    stream_key: str | None = Field(None, repr=False, description="64 hex digits sealing destination URLs at rest; "
                                   "default: the key file made by `studio keys init`.")
    policy_key: str | None = Field(
        None, repr=False, description="Secret for policy stamps and metadata signatures; prefer STUDIO_POLICY_KEY, "
        "the secrets directory or the key file made by `studio keys init`."
    )

    metrics_token: str | None = Field(
        None, description="Bearer token that GET /metrics asks for; prefer STUDIO_METRICS_TOKEN or the file "
        "data/keys/metrics.token that `studio up` makes (infra/prometheus.yml reads it with credentials_file)."
    )

    @field_validator("policy_key", "metrics_token")
    @classmethod
    def _real_secret(cls, v: str | None, info) -> str | None:
        # A field validator, so the error carries the key path; the value is never echoed.
        if v is not None and v.strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError(f"{info.field_name} is a placeholder; set a real secret")
        if v is not None and len(v) < 16:
            raise ValueError(f"{info.field_name} must be at least 16 characters")
        return v

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.media.min_segment_seconds > self.media.max_segment_seconds:
            raise ValueError("media.min_segment_seconds is larger than media.max_segment_seconds")
        self._check_tls()
        return self

    def _check_tls(self) -> None:
        """TLS settings that contradict the URLs they go with (each helper raises, naming both settings)."""
        if self.services.redis_url or self.services.redis_tls.is_set:
            redis_ssl_options(self.services.redis_url or "redis://", self.services.redis_tls)
        if self.database_url or self.database_tls.is_set or self.database_tls.sslmode:
            postgres_url(self.database_url or "sqlite://", self.database_tls)
        if self.store.ca_file and not self.store_url.startswith("s3://"):
            raise ValueError("store.ca_file is set, but store.url is not an s3:// store")
        s3_verify(self.store.endpoint_url, self.store.ca_file)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def policy_path(self) -> Path:
        return Path(self.policy_dir).expanduser().resolve() if self.policy_dir else POLICY_DIR

    @property
    def store_url(self) -> str:
        return self.store.url or f"file://{self.data_path}"

    @property
    def cache_path(self) -> Path:
        return Path(self.store.cache_dir).expanduser().resolve() if self.store.cache_dir else self.data_path / "cache"

    @property
    def db_url(self) -> str:
        if not self.database_url:
            return f"sqlite:///{self.data_path / 'studio.db'}"
        # TLS parameters in the URL itself, so the engine, Alembic and every process handed this URL use them.
        return postgres_url(_with_password(self.database_url, self.database_password), self.database_tls)

    @property
    def broker_url(self) -> str:
        """The Redis URL every client uses (Celery broker and backend, API, streamer, metrics)."""
        svc = self.services
        if svc.redis_url:
            return _with_password(svc.redis_url, svc.redis_password)
        # The embedded redis-server: its password is the file `studio up` keeps in data/keys, which every
        # command on this host reads.
        password = svc.redis_password
        if password is None and (self.data_path / "keys" / EMBEDDED_REDIS_PASSWORD).is_file():
            password = (self.data_path / "keys" / EMBEDDED_REDIS_PASSWORD).read_text().strip()
        return _with_password(f"redis://{host_port(connect_host(svc.redis_host), svc.redis_port)}/0", password)

    @property
    def redis(self) -> RedisEndpoint:
        """The shared Redis with its clients' TLS options: every redis-py client and the Celery app come from it."""
        return RedisEndpoint(self.broker_url, redis_ssl_options(self.broker_url, self.services.redis_tls))

    @property
    def s3_verify(self) -> str | bool:
        """boto3's `verify=` for the store's client: store.ca_file, else the system's CAs."""
        return s3_verify(self.store.endpoint_url, self.store.ca_file)

    @property
    def public_url(self) -> str:
        """Base of the links shown to users, without a trailing slash; the bind address is not it in a fleet."""
        svc = self.services
        return (svc.public_url or f"http://{host_port(connect_host(svc.api_host), svc.api_port)}").rstrip("/")

    @property
    def hls_base_url(self) -> str:
        """Base of the HLS preview URLs shown to users, without a trailing slash."""
        svc = self.services
        return (svc.public_hls_url or f"http://{host_port(connect_host(svc.http_host), svc.http_port)}/hls").rstrip("/")

    def hls_url(self, channel_id: str) -> str:
        return f"{self.hls_base_url}/{channel_id}.m3u8"

    @property
    def ingest_url(self) -> str:
        """The embedded RTMP ingest's application URL on this host (feeders publish and relays read under it)."""
        svc = self.services
        return f"rtmp://{host_port(connect_host(svc.rtmp_host), svc.rtmp_port)}/live"


def _with_password(url: str, password: str | None) -> str:
    """`url` with `password` put in, unless it carries one (redis://:pw@host, postgresql+psycopg://user:pw@host)."""
    parts = urlsplit(url)
    if not password or parts.password is not None or not parts.hostname:
        return url
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


# Environment variable -> dotted key path.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "STUDIO_DATA_DIR": ("data_dir",),
    "STUDIO_DATABASE_URL": ("database_url",),
    "STUDIO_POLICY_KEY": ("policy_key",),
    "STUDIO_METRICS_TOKEN": ("metrics_token",),
    "STUDIO_API_PORT": ("services", "api_port"),
    "STUDIO_REDIS_PORT": ("services", "redis_port"),
    "STUDIO_REDIS_URL": ("services", "redis_url"),
    "STUDIO_RTMP_PORT": ("services", "rtmp_port"),
    "STUDIO_HTTP_PORT": ("services", "http_port"),
    "STUDIO_PUBLIC_URL": ("services", "public_url"),
    "STUDIO_PUBLIC_HLS_URL": ("services", "public_hls_url"),
    "STUDIO_REDIS_PASSWORD": ("services", "redis_password"),
    "STUDIO_ALLOW_PRIVATE_DESTINATIONS": ("streamer", "allow_private_destinations"),
    "STUDIO_REDIS_CA_FILE": ("services", "redis_tls", "ca_file"),
    "STUDIO_REDIS_CERT_FILE": ("services", "redis_tls", "cert_file"),
    "STUDIO_REDIS_KEY_FILE": ("services", "redis_tls", "key_file"),
    "STUDIO_DATABASE_SSLMODE": ("database_tls", "sslmode"),
    "STUDIO_DATABASE_CA_FILE": ("database_tls", "ca_file"),
    "STUDIO_DATABASE_CERT_FILE": ("database_tls", "cert_file"),
    "STUDIO_DATABASE_KEY_FILE": ("database_tls", "key_file"),
    "STUDIO_STORE_CA_FILE": ("store", "ca_file"),
}

# File name in the secrets directory -> dotted key path. The C2PA files (c2pa-signer.pem, c2pa-signer.key,
# c2pa-root.pem) are read from the same directory by studio.keys when present there.
SECRET_FILES: dict[str, tuple[str, ...]] = {
    "policy_key": ("policy_key",),
    "stream_key": ("stream_key",),
    "redis_password": ("services", "redis_password"),
    "database_password": ("database_password",),
}
ENV_PREFIX = "STUDIO_"


class ConfigError(ValueError):
    """A config file that cannot be used; `problems` holds (key path, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {path}: {msg}" for path, msg in problems)
        super().__init__(f"invalid config {source}:\n{lines}")


def validation_problem(err: dict, *, unknown_key: str) -> tuple[str, str]:
    """(key path, message) for one Pydantic error; `unknown_key` is what to say about a key not in the schema."""
    path = ".".join(str(p) for p in err["loc"]) or "(root)"
    if err["type"] == "extra_forbidden":
        return path, unknown_key.format(value=err.get("input"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] != "value_error" and "input" in err and not isinstance(err["input"], dict | list):
        msg = f"{msg}, got {err['input']!r}"
    return path, msg


def parse_yaml_model(source: str, text: str, model: type[BaseModel], *, unknown_key: str):
    """Validate YAML `text` (from `source`) against `model`; ConfigError names the file and each key path."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [("(file)", f"not valid YAML: {exc}")]) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, [("(file)", f"top level must be a mapping, got {type(raw).__name__}")])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, [validation_problem(err, unknown_key=unknown_key) for err in exc.errors()]) from None


def _set_path(data: dict, path: tuple[str, ...], value: str) -> None:
    node = data
    for key in path[:-1]:
        if node.get(key) is None:  # `services:` with every key commented out loads as None
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            return  # validation reports the section that is not a mapping, with its key path
    node[path[-1]] = value


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' nested-key parsing over a given mapping instead of os.environ."""

    def __init__(self, env: Mapping[str, str]):
        self._given = env
        super().__init__(Settings, case_sensitive=False, env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                         env_ignore_empty=True)

    def _load_env_vars(self):
        return {k.lower(): v for k, v in self._given.items() if v}


def _deep_merge(base: dict, over: dict) -> dict:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _dotenv(env: Mapping[str, str], *, default_file: bool) -> dict[str, str]:
    """Variables of the .env file: STUDIO_ENV_FILE (which must exist), else ./.env when `default_file`."""
    named = env.get("STUDIO_ENV_FILE")
    path = Path(named) if named else Path(".env")
    if named and not path.is_file():
        raise ConfigError(str(path), [("(file)", "STUDIO_ENV_FILE names a file that does not exist")])
    if not (named or default_file) or not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def read_secrets_dir(folder: str) -> dict:
    """Values from the secrets directory as a nested dict; ConfigError names the setting and the file (never
    what it holds) when the directory is missing or a file cannot be read."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(str(root), [("secrets_dir", f"secrets directory {root} does not exist (STUDIO_SECRETS_DIR)")])
    found: dict = {}
    for name, key_path in SECRET_FILES.items():
        path = root / name
        if not path.exists():
            continue
        setting = ".".join(key_path)
        try:
            value = path.read_bytes().decode().strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"cannot be read ({exc.strerror})"
            raise ConfigError(str(path), [(setting, f"secret file {path} {why}")]) from None
        if not value:
            raise ConfigError(str(path), [(setting, f"secret file {path} is empty")])
        _set_path(found, key_path, value)
    return found


def load_settings(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                  renderers: Collection[str] | None = None) -> Settings:
    """Load the YAML (default configs/default.yaml) and lay the secrets directory, the .env file and the
    environment over it (see the module docstring for the order); validate. `env` replaces os.environ, and
    then only a .env file it names with STUDIO_ENV_FILE is read. `renderers`: the registered renderer backends
    (workers.renderers.backend_names()), which `renderer.type` must name; None skips that check."""
    given = env is not None
    env = dict(os.environ if env is None else env)
    source = Path(path) if path else Path(env.get("STUDIO_CONFIG", DEFAULT_CONFIG))
    try:
        raw = yaml.safe_load(source.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(str(source), [("(file)", "does not exist")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(source), [("(file)", f"not valid YAML: {exc}")]) from None
    if not isinstance(raw, dict):
        raise ConfigError(str(source), [("(file)", f"top level must be a mapping, got {type(raw).__name__}")])
    merged = {**_dotenv(env, default_file=not given), **env}  # the environment wins over .env
    if secrets_dir := merged.get("STUDIO_SECRETS_DIR") or raw.get("secrets_dir"):
        for key_path, value in _flatten(read_secrets_dir(secrets_dir)):
            _set_path(raw, key_path, value)
    for var, key_path in ENV_OVERRIDES.items():
        if merged.get(var):
            _set_path(raw, key_path, merged[var])
    try:
        nested = _EnvSource(merged)()
    except Exception as exc:  # pydantic-settings' SettingsError for a section given as malformed JSON
        raise ConfigError(str(source), [("(environment)", str(exc))]) from None
    for key, value in nested.items():
        if isinstance(value, dict) and raw.get(key) is not None and not isinstance(raw[key], dict):
            continue  # validation reports the section that is not a mapping, with its key path
        raw[key] = _deep_merge(raw.get(key) or {}, value) if isinstance(value, dict) else value
    try:
        return Settings.model_validate(raw, context={RENDERERS_CONTEXT: renderers} if renderers is not None else None)
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in err["loc"]) or "(root)", err["msg"].removeprefix("Value error, "))
                    for err in exc.errors()]
        raise ConfigError(str(source), problems) from None


def _flatten(tree: dict, prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), value
