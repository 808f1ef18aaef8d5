"""The fleet roles as commands: `studio api`, `studio worker`, `studio scheduler`, `studio streamer`.

Each starts one role from the same settings on any host, logging JSON lines (workers.logs). Before it starts,
it refuses (exit 2, the fix in the message): a relative data_dir, a missing key (`studio keys init` makes
them), a database behind the newest migration (`studio db upgrade`), and (but for the API, whose /readyz reports
it) a media store it cannot use. `studio up` composes these very
commands on one host (workers.stack.embedded).

Of the audit keys (studio.audit_keys) each loads only its own role's: the API and the scheduler the control key,
the streamer the stream key, a worker those of its queues (render, ingest; publish: archive)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from api.cli_base import ConfigOpt, app
from studio.audit_keys import CONTROL, STREAM, parse_roles
from studio.binds import exposure_warnings
from studio.config import ConfigError, Settings, load_settings
from workers.renderers import backend_names

log = logging.getLogger("studio.role")
QUEUES_HELP = ("Comma-separated Celery queues to consume: ingest, render.cpu, render.gpu (a GPU host's), publish; "
               "render: every render queue this host can serve (render.cpu, and render.gpu where torch sees a GPU).")


def role_settings(config: Path | None, role: str, audit_roles: tuple[str, ...], *, encodes: bool = False) -> Settings:
    """Settings for `role`, after every check a fleet role must pass; exit 2 with the fix otherwise. The role's
    runtime (studio.runtime) then loads the audit keys of `audit_roles` only. `encodes`: the role encodes what goes
    on air (a render worker: segments; a streamer: slates), so this host's ffmpeg must open media.video_encoder."""
    from sqlalchemy.exc import SQLAlchemyError

    from studio.db import SchemaBehind, make_engine, require_current_schema
    from studio.keys import PolicyKeyError, require_keys
    from studio.runtime import AUDIT_ROLES_ENV
    from studio.tls import certificate_problem
    from workers.logs import configure_logging

    configure_logging(role)
    os.environ["STUDIO_ROLE"] = role
    os.environ[AUDIT_ROLES_ENV] = ",".join(audit_roles)
    if config is not None:  # what the role's own modules load (workers.runtime) is this file too
        os.environ["STUDIO_CONFIG"] = str(config.resolve())
    try:
        settings = load_settings(config, renderers=backend_names())
    except ConfigError as exc:
        _refuse(str(exc))
    for warning in exposure_warnings(settings.services):
        log.warning("%s", warning)
    if not Path(settings.data_dir).expanduser().is_absolute():
        _refuse(f"data_dir {settings.data_dir!r} is relative: a {role} resolves it against its working directory and "
                "would start an empty database with new keys; set STUDIO_DATA_DIR to an absolute path "
                "(e.g. STUDIO_DATA_DIR=/var/lib/studio)")
    if encodes:
        from workers.media.encoder_check import encoder_problems

        if problems := encoder_problems(settings.media):
            _refuse(f"{role} cannot start: {'; '.join(problems)}")
    try:
        require_keys(settings, audit_roles=audit_roles)
    except PolicyKeyError as exc:
        _refuse(f"{role} cannot start: {exc}")
    engine = make_engine(settings.db_url)
    try:
        require_current_schema(engine)
    except SchemaBehind as exc:
        _refuse(f"{role} cannot start: {exc}")
    except SQLAlchemyError as exc:
        tls = certificate_problem(exc, section="database_tls", ca_file=settings.database_tls.ca_file)
        _refuse(f"{role} cannot start: the database (setting database_url) cannot be reached: "
                f"{tls or type(exc.orig or exc).__name__}")
    finally:
        engine.dispose()
    if role != "api":  # the API starts and reports the store in /readyz; a worker without it would only fail tasks
        from studio.store import StoreError
        from studio.stores import store_for

        try:
            store_for(settings).check()
        except StoreError as exc:
            _refuse(f"{role} cannot start: the media store is not usable: {exc}")
    log.info("%s starting; data directory %s", role, settings.data_path)
    return settings


def _refuse(message: str):
    log.error(message)
    raise typer.Exit(2)


@app.command("api")
def api_role(config: ConfigOpt = None,
             host: Annotated[str | None, typer.Option(help="Bind address (default services.api_host).")] = None,
             port: Annotated[int | None, typer.Option(help="Port (default services.api_port).")] = None) -> None:
    """Serve the API and pages (uvicorn, access logs on)."""
    import uvicorn

    settings = role_settings(config, "api", (CONTROL,))
    svc = settings.services
    uvicorn.run("api.app:create_app_from_env", factory=True, host=host or svc.api_host, port=port or svc.api_port,
                log_config=None, access_log=True, proxy_headers=True)


@app.command("worker")
def worker_role(queues: Annotated[str, typer.Option(help=QUEUES_HELP)] = "ingest,render,publish",
                concurrency: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
                name: Annotated[str | None, typer.Option(help="Worker name (default QUEUE@host).")] = None,
                config: ConfigOpt = None) -> None:
    """Consume Celery queues (ingest, render.cpu, render.gpu, publish; render: those of them this host serves).
    Refuses render.gpu on a host without a GPU."""
    from workers.app import QUEUE_AUDIT_ROLES
    from workers.logs import configure_logging
    from workers.queue_policy import RENDER_QUEUES, CannotServe, QueueError, expand_queues
    from workers.worker_report import probe_device

    asked = [q.strip() for q in queues.split(",") if q.strip()]
    gpu = probe_device() if any(q.startswith("render") for q in asked) else None
    try:
        wanted = expand_queues(asked, gpu=gpu.name if gpu is not None and gpu.is_gpu else None)
    except CannotServe as exc:
        configure_logging("worker")
        _refuse(f"worker cannot start: {exc}")
    except QueueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--queues") from None
    settings = role_settings(config, "worker", parse_roles(",".join(QUEUE_AUDIT_ROLES[q] for q in wanted)),
                             encodes=any(q in RENDER_QUEUES for q in wanted))
    from workers.renderers import backend, config_problems

    if "ingest" in wanted or backend(settings.renderer.type).queue in wanted:
        # The configured backend builds this host's avatars or renders from its queue: its weights are checked
        # now, so a missing path or a wrong layout refuses the start rather than failing a render on air.
        problems = config_problems(settings.renderer)
        if problems:
            configure_logging("worker")
            _refuse("worker cannot start: renderer " + settings.renderer.type + ": " + "; ".join(problems))
    if any(q.startswith("render.") for q in wanted):
        from workers.tts import tts_problems

        problems = tts_problems(settings.tts)  # every render speaks its script with the configured voice
        if problems:
            configure_logging("worker")
            _refuse("worker cannot start: tts " + settings.tts.type + ": " + "; ".join(problems))
    pool: list[str] = []
    if "render.gpu" in wanted:
        # Renders share the GPU as threads of one process: their frames go through one batching GPU thread
        # (workers/renderers/musetalk/batcher.py), so one GPU serves renderer.gpu_renders channels at once.
        pool = ["--pool", "threads"]
        concurrency = max(concurrency, settings.renderer.gpu_renders)
    import celery.apps.worker

    from workers.app import app as celery_app

    # Celery prints its shutdown notices ("worker: Warm shutdown") straight to stdout; as log lines they stay JSON.
    celery.apps.worker.safe_say = lambda msg, f=None: logging.getLogger("celery.apps.worker").warning(msg.strip())

    celery_app.start(argv=["--quiet", "worker", "-Q", ",".join(wanted), "-c", str(concurrency), *pool,
                           "-n", name or f"{'+'.join(asked)}@%h", "--loglevel", "INFO",
                           "--without-gossip", "--without-mingle"])


@app.command("scheduler")
def scheduler_role(config: ConfigOpt = None) -> None:
    """Plan scheduled shows and queue their renders."""
    role_settings(config, "scheduler", (CONTROL,))
    from workers.plan.scheduler import main

    main()


@app.command("streamer")
def streamer_role(config: ConfigOpt = None,
                  ingest: Annotated[bool, typer.Option(
                      help="Start this host's nginx-rtmp ingest (publish only with a channel's lease token) and "
                           "stop it on exit; --no-ingest where one runs already (studio up).")] = True) -> None:
    """Air live channels by lease, up to streamer.capacity (feeders, relays, archive)."""
    settings = role_settings(config, "streamer", (STREAM,), encodes=True)  # it renders the channels' slates
    from workers.streamer.publish_auth import PublishAuthError, private_dir, publish_auth_socket
    from workers.streamer.supervisor import main

    try:  # where nginx asks whether a publish may go ahead: a folder only this user can write, or no start
        private_dir(publish_auth_socket(settings.data_path).parent)
    except PublishAuthError as exc:
        _refuse(f"streamer cannot start its publish check: {exc}")

    if not ingest:
        main()
        return
    from workers.streamer.nginx import NginxError, NginxRtmp, stop_stale

    svc, workdir = settings.services, settings.data_path / "nginx"
    stop_stale(workdir)  # an ingest left running by a streamer that was killed
    try:
        nginx = NginxRtmp(workdir, host=svc.rtmp_host, rtmp_port=svc.rtmp_port, http_host=svc.http_host,
                          http_port=svc.http_port, publish_auth=publish_auth_socket(settings.data_path)).start()
    except NginxError as exc:
        _refuse(f"streamer cannot start its ingest: {exc}")
    log.info("ingest nginx-rtmp on %s:%d", svc.rtmp_host, svc.rtmp_port)
    try:
        main()
    finally:
        nginx.stop()
