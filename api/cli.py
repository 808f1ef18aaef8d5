"""The `studio` command line."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from api.cli_base import (  # noqa: F401  (app and the groups are this module's public face)
    ConfigOpt,
    _runtime,
    _settings,
    app,
    audit_app,
    avatar_app,
    config_app,
    consent_app,
    console,
    db_app,
    err,
    eval_app,
    keys_app,
)
from studio.binds import exposure_warnings, host_port
from studio.config import DEFAULT_CONFIG, ConfigError, load_settings
from workers.renderers import backend_names, config_problems


@config_app.command("check")
def config_check(file: Annotated[Path | None, typer.Argument(help="YAML config; omitted: the packaged defaults "
                                                             "with this environment's settings over them.")] = None
                 ) -> None:
    """Validate a config file (alone), or with no file the packaged defaults and the environment (STUDIO_*, .env,
    secrets dir) as every command would read them; errors are listed with their key path. Then check that this
    host's ffmpeg can encode with media.video_encoder (a one-frame trial encode)."""
    from workers.media.encoder_check import encoder_problems

    try:
        settings = (load_settings(file, env={}, renderers=backend_names()) if file is not None
                    else load_settings(renderers=backend_names()))
    except ConfigError as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(1) from None
    from workers.tts import tts_problems

    problems = [f"renderer {settings.renderer.type}: {p}" for p in config_problems(settings.renderer)]
    problems += [f"tts {settings.tts.type}: {p}" for p in tts_problems(settings.tts)]
    if problems:  # the backends' own checks: weights, voice model, layout, shapes (nothing fails at air time)
        for problem in problems:
            err.print(f"[red]{escape(problem)}[/]", soft_wrap=True)
        raise typer.Exit(1)
    m, svc = settings.media, settings.services
    if problems := encoder_problems(m):
        for problem in problems:
            err.print(f"[red]error:[/] {escape(problem)}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[green]ok[/] {escape(str(file or 'defaults and environment'))}: media "
                  f"{m.width}x{m.height}@{m.fps} ({escape(m.video_encoder)}), "
                  f"renderer {escape(settings.renderer.type)}, tts {escape(settings.tts.type)}", soft_wrap=True)
    redis = "external (services.redis_url)" if svc.redis_url else host_port(svc.redis_host, svc.redis_port)
    console.print(f"binds: api {host_port(svc.api_host, svc.api_port)}, redis {redis}, rtmp "
                  f"{host_port(svc.rtmp_host, svc.rtmp_port)}, http (HLS) {host_port(svc.http_host, svc.http_port)}",
                  soft_wrap=True, markup=False)
    console.print(f"tls: {escape(_tls_summary(settings))}", soft_wrap=True)
    for warning in exposure_warnings(svc):
        err.print(f"[yellow]warning:[/] {escape(str(warning))}", soft_wrap=True)


def _tls_summary(settings) -> str:
    """What each shared service's clients verify its certificate against (files already checked)."""
    from urllib.parse import parse_qsl, urlsplit

    def against(ca: str | None) -> str:
        return f"verified against {ca}" if ca else "verified against the system's CAs"

    redis = against(settings.services.redis_tls.ca_file) if settings.redis.ssl else "off"
    params = dict(parse_qsl(urlsplit(settings.db_url).query))
    database = (f"sslmode={params['sslmode']}" if "sslmode" in params else "libpq's default (prefer)") \
        if settings.db_url.startswith("postgresql") else "n/a (SQLite)"
    if "sslrootcert" in params:
        database += f", CA {params['sslrootcert']}"
    store = "n/a (file store)" if not settings.store_url.startswith("s3://") else "off (http:// endpoint)" \
        if (settings.store.endpoint_url or "https:").startswith("http:") else against(settings.store.ca_file)
    return f"redis {redis}; database {database}; store {store}"


@keys_app.command("init")
def keys_init(config: ConfigOpt = None, force: bool = typer.Option(False, help="Replace existing keys.")) -> None:
    """Create the policy key (stamps, metadata signatures, watermark), the C2PA root and signing certificates,
    the key that seals stream keys at rest, and one audit key per role; existing keys are kept unless --force
    (the stream key and the audit keys are never replaced: sealed destinations would become unreadable, and
    signed audit events would read as forged)."""
    from studio.audit_keys import ROLE_HOSTS, ROLES
    from studio.keys import audit_key_file, init_all_keys, metrics_token_file

    settings = _settings(config)
    path, prov, stream = init_all_keys(settings, force=force)
    console.print(f"policy key: {escape(str(path))}")
    console.print(f"stream key (seals destination URLs at rest): {escape(str(stream))}")
    console.print(f"metrics token (Prometheus sends it to /metrics): {escape(str(metrics_token_file(settings)))}")
    console.print(f"C2PA root certificate: {escape(str(prov.root_cert_path))}")
    console.print(f"C2PA signing certificate: {escape(str(prov.chain_path))}")
    for role in ROLES:  # each goes only to its role's hosts; the control host keeps them all (audit verify)
        console.print(f"{role} audit key, for {ROLE_HOSTS[role]}: {escape(str(audit_key_file(settings, role)))}")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply migrations up to the newest schema."""
    from studio.db import upgrade
    from studio.db_copy import masked

    settings = _settings(config)
    upgrade(settings.db_url, data_dir=settings.data_path)
    console.print(f"database at newest schema: {escape(masked(settings.db_url))}")


@db_app.command("copy")
def db_copy(
    to: Annotated[str, typer.Option("--to", help="Empty PostgreSQL: postgresql+psycopg://user:password@host:port/db.")],
    config: ConfigOpt = None,
) -> None:
    """Copy the configured (SQLite) database into an empty PostgreSQL, migrated to the newest schema first;
    ids and the audit chain are kept, and every table is checked row for row (count and content hash)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from studio.db_copy import CopyError, copy_database, masked

    settings = _settings(config)
    with Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
        tasks: dict[str, int] = {}

        def progress(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(escape(table), total=total)
            bar.update(tasks[table], completed=done, total=total)

        try:
            copied = copy_database(settings.db_url, to, progress=progress)
        except CopyError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(1) from None
    summary = Table("table", "rows", "sha256", title=f"copied to {escape(masked(to))} and verified")
    for t in copied:
        summary.add_row(escape(t.table), str(t.rows), t.sha256[:16])
    console.print(summary)
    console.print(f"[green]ok[/] {sum(t.rows for t in copied)} rows in {len(copied)} tables match the source")


@avatar_app.command("create")
def avatar_create(
    name: Annotated[str, typer.Option(help="Avatar name.")],
    footage: Annotated[Path, typer.Option(help="Reference footage: 30 s to 5 min of the creator speaking.")],
    creator: Annotated[str, typer.Option(help="Creator's name (created if new).")] = "",
    renderer: Annotated[str | None, typer.Option(help="Renderer backend the avatar is built for and rendered with "
                                                      "(footage, musetalk, ...); default: the config's renderer.type."
                                                 )] = None,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    config: ConfigOpt = None,
) -> None:
    """Build an avatar from reference footage, with a progress bar; bad footage is refused with the reason."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from sqlmodel import select

    from studio.db import session_scope
    from studio.models import Creator
    from workers.ingest.footage import ingest_direct
    from workers.media.probe import FootageError
    from workers.renderers import BundleError, chosen_renderer

    rt = _runtime(config)
    try:
        building = chosen_renderer(rt.settings.renderer, renderer)
    except (BundleError, ValueError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    with session_scope(rt.engine) as s:
        row = s.exec(select(Creator).where(Creator.name == (creator or name))).first()
        new_creator = row is None
        if new_creator:
            row = Creator(name=creator or name)
            s.add(row)
        creator_id = row.id
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} frames"),
                  TimeElapsedColumn(), console=err if as_json else console) as bar:
        task = bar.add_task("analysing", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=escape(stage), completed=done, total=total or None)

        try:
            avatar = ingest_direct(engine=rt.engine, data=rt.data, profile=rt.settings.media,
                                   limits=rt.settings.ingest, creator_id=creator_id, name=name, footage=footage,
                                   renderer=building, progress=progress, publish_dir=rt.publish_dir)
        except FootageError as exc:
            bar.stop()
            if new_creator:  # refused footage leaves nothing behind, not even the creator it made
                with session_scope(rt.engine) as s:
                    s.delete(s.get(Creator, creator_id))
            err.print(f"[red]refused:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
    if as_json:
        print(json.dumps({"avatar_id": avatar.id, "creator_id": creator_id, "bundle": avatar.bundle_path}))
        return
    console.print(f"[green]avatar {escape(avatar.id)}[/] built from {escape(footage.name)}: bundle "
                  f"{escape(str(avatar.bundle_path))}")


@app.command()
def up(config: ConfigOpt = None) -> None:
    """Start the embedded stack (on loopback unless services.*_host say otherwise) and supervise it until Ctrl-C."""
    import signal
    import threading

    from workers.stack.embedded import Stack, StackError, write_operator_key

    rt = _runtime(config, embedded=True)
    key_file = write_operator_key(rt)
    stack = Stack(rt.settings, config_path=config or DEFAULT_CONFIG, log_dir=rt.data.logs)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stack.start()
    except StackError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    url = rt.settings.public_url
    console.print(f"stack up: API {url}/docs, RTMP {rt.settings.ingest_url}, HLS {rt.settings.hls_base_url}/ — logs "
                  f"in {rt.data.logs}; the operator's API key is in {key_file}; pages: {url}/login", markup=False)
    try:
        stop.wait()
    finally:
        stack.stop()


@app.command()
def demo(
    duration: Annotated[float | None, typer.Option(help="Seconds on air, then stop (default: until Ctrl-C).")] = None,
    rtmp: Annotated[list[str] | None, typer.Option(help="Also push to this RTMP(S) URL (repeatable); with "
                                                        "several channels, channel N pushes to URL-N.")] = None,
    channels: Annotated[int, typer.Option(min=1, max=16, help="Channels, each with its own synthetic creator.")] = 1,
    config: ConfigOpt = None,
) -> None:
    """Bring up the stack, build synthetic creators, and air labelled 24/7 shows."""
    from urllib.parse import urlsplit

    from studio.destinations import internal_address_problem
    from workers.stack.demo import run_demo
    from workers.stack.embedded import StackError

    if any(internal_address_problem(urlsplit(url).hostname or "") for url in rtmp or []):
        # The operator named a local receiver on the command line: the demo's relays may reach it.
        os.environ["STUDIO_ALLOW_PRIVATE_DESTINATIONS"] = "true"
    # The demo's creators are synthetic and its consents are made by the demo itself: no one to review them, so
    # they are granted once the check passes (every role the stack spawns inherits this), unless the environment
    # asks for review.
    os.environ.setdefault("STUDIO_CONSENT__REVIEW", "auto")
    rt = _runtime(config, embedded=True)
    try:
        code = run_demo(rt, config_path=config or DEFAULT_CONFIG, duration=duration, rtmp_urls=list(rtmp or []),
                        console=console, channels=channels)
    except StackError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    raise typer.Exit(code)


@app.command()
def verify(file: Path, as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
           ocr: bool = typer.Option(True, help="Also read the visible badge with tesseract."),
           config: ConfigOpt = None) -> None:
    """Read every mark a clip carries (AIGC metadata and signature, watermark, C2PA, visible badge) and say
    which segment, avatar, show and consent it came from. Exit 0 when genuine, 1 when marks are missing or
    forged, 2 when the file cannot be read."""
    from studio.keys import PolicyKeyError, load_key, load_provenance_keys
    from workers.provenance.verify import VerifyError, verify_file

    settings = _settings(config)
    try:
        key = load_key(settings)
    except PolicyKeyError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}; verify needs the platform's key to read its marks")
        raise typer.Exit(2) from None
    try:
        trust = load_provenance_keys(settings).root_pem
    except PolicyKeyError:
        trust = None
    try:
        report = verify_file(file, key=key, engine=_reachable_db(settings), trust_anchors_pem=trust, ocr=ocr)
    except VerifyError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(report))
    else:
        _print_verify(report)
    raise typer.Exit(0 if report["verdict"] == "genuine" else 1)


def _reachable_db(settings):
    """The database engine when it exists and answers, else None (verify then reads the clip alone)."""
    from sqlalchemy import text

    from studio.db import make_engine

    url = settings.db_url
    if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).exists():
        return None
    try:
        engine = make_engine(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1 FROM segment LIMIT 1"))
        return engine
    except Exception:  # any failure to reach it means: report from the clip alone
        return None


def _print_verify(r: dict) -> None:
    """The report for people. Everything in it that came from the clip (its name, a forged metadata field quoted in
    an error, C2PA's explanations) is untrusted: escaped, so it is shown as it is and never read as rich markup (a
    '[/]' in a forged AIGC Label crashed the verifier, a '[green]' styled its own text), and never wrapped, so the
    file's name stays whole on its line."""
    def line(text: str, *parts: object) -> None:
        console.print(text.format(*(escape(str(p)) for p in parts)), soft_wrap=True, highlight=False)

    colour = {"genuine": "green", "tampered": "red", "unmarked": "yellow"}[r["verdict"]]
    line(f"[bold {colour}]{{}}[/]  {{}}", r["verdict"], r["file"])
    line("  origin ({}): {} {}", r["source"] or "unknown", r["kind"] or "-", r["produce_id"] or "-")
    for k in ("segment_id", "avatar_id", "avatar_ref", "show_id", "consent_id", "channel_id"):
        if r.get(k):
            line("    {}: {}", k, r[k])
    wm, md, cp, lb = r["watermark"], r["aigc_metadata"], r["c2pa"], r["visible_label"]
    line("  watermark: {} ({}/{} bit errors over {} frames, {} run(s))", r["marks"]["watermark"], wm["bit_errors"],
         wm["coded_bits"], wm["frames"], len(wm["marks"]))
    line("  AIGC metadata: {}{}", r["marks"]["aigc_metadata"], f" - {md['error']}" if md["error"] else "")
    line("  C2PA: {}{}", r["marks"]["c2pa"], f" - {', '.join(cp.get('errors') or [])}" if cp.get("errors") else "")
    if lb["checked"]:
        line("  visible badge: {}/{} sampled frames read 'AI avatar'", lb["frames_with_badge"], lb["frames"])


@consent_app.command("revoke")
def consent_revoke(consent: str, as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
                   config: ConfigOpt = None) -> None:
    """Revoke a consent: the clone goes off air within 2 s, queued work is cancelled, its footage, bundle and
    derived files are deleted, and a signed deletion certificate is written. Prints the time to off-air."""
    from workers.consent.revocation import RevocationError, revoke_consent_direct

    rt = _runtime(config)
    try:
        rev = revoke_consent_direct(rt, consent)
    except RevocationError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    cert = rev.certificate["certificate"]
    off = cert.get("off_air_seconds")
    summary = {"consent_id": consent, "off_air_seconds": off, "was_live": rev.was_live,
               "cancelled_segments": rev.cancelled, "stopped_renders": rev.stopped_renders,
               "deleted_files": len(cert["deleted"]),
               "deleted_bytes": sum(f["size"] or 0 for f in cert["deleted"]), "retained": len(cert["retained"]),
               "certificate": str(rev.certificate_path)}
    if as_json:
        print(json.dumps(summary))
        return
    if off is not None:
        console.print(f"[green]off air[/] {off:.2f} s after the revocation")
    else:
        console.print("the clone was not on air" if not rev.was_live else
                      "[yellow]no stream reported the cut within 3 s[/] (is the streamer running?)")
    console.print(f"cancelled {rev.cancelled} segments ({rev.stopped_renders} mid-render); "
                  f"deleted {summary['deleted_files']} files "
                  f"({summary['deleted_bytes'] / 1e6:.1f} MB); retained {summary['retained']} items for audit")
    console.print(f"deletion certificate: {escape(str(rev.certificate_path))}", soft_wrap=True)


@audit_app.command("verify")
def audit_verify(as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
                 config: ConfigOpt = None) -> None:
    """Check the audit log: every event's hash, the chain between them, each event's MAC with the key of the role
    that writes its kind, and the signed checkpoint of its head, so an edit, a deletion (tail included), a
    reordering or an event forged by a host without that role's key is found. Exit 0 intact, 1 problems found."""
    from studio import audit
    from studio.db import session_scope

    rt = _runtime(config)
    with _checkpoint_places(rt) as places, session_scope(rt.engine) as s:
        report = audit.verify_log(s, keyring=rt.audit_keys, places=places, legacy_key=rt.key)
    if as_json:
        print(json.dumps({"ok": report.ok, "events": report.events, "problems": report.problems,
                          "warnings": report.warnings, "head_hash": report.head_hash,
                          "checkpoint_from": report.checkpoint_from}))
    else:
        # The problems quote what the edited rows hold (a forged kind, a timestamp, data): shown as they are, never
        # read as rich markup, so an edit cannot hide itself or crash the check that finds it.
        console.print(f"{'[green]intact[/]' if report.ok else '[red]tampered[/]'}: {report.events} events")
        console.print(f"  checkpoint read from {escape(report.checkpoint_from or 'nowhere')}", soft_wrap=True)
        for p in report.problems:
            console.print(f"  [red]{escape(p)}[/]", soft_wrap=True)
        for w in report.warnings:
            console.print(f"  [yellow]{escape(w)}[/]", soft_wrap=True)
    raise typer.Exit(0 if report.ok else 1)


@audit_app.command("checkpoint")
def audit_checkpoint(config: ConfigOpt = None) -> None:
    """Record the audit log's head in Redis and the media store (the leading scheduler does this every pass).
    Exit 1 when the log does not verify (the old checkpoint is kept), 2 when Redis or the store cannot be reached."""
    from studio import audit
    from studio.db import session_scope

    rt = _runtime(config)
    with _checkpoint_places(rt) as places, session_scope(rt.engine) as s:
        try:
            cp = audit.checkpoint(s, rt.audit_keys, places, legacy_key=rt.key)
        except audit.AuditError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(1) from None
        except audit.CheckpointRefused as exc:
            console.print(f"[yellow]{escape(str(exc))}[/]", soft_wrap=True)
            return
    console.print(f"checkpoint: event {cp.last_id}, {cp.count} events, head {cp.last_hash[:16]}… "
                  f"in {places.names()}", markup=False)


@contextmanager
def _checkpoint_places(rt) -> Iterator:
    """The audit checkpoint's places (Redis, the store); exit 2 naming the setting when one cannot be reached."""
    from studio.audit_checkpoint import CheckpointUnavailable
    from studio.store import StoreError
    from workers.provenance.audit_checkpoint import checkpoint_places, redis_client

    client = redis_client(rt.settings)
    try:
        yield checkpoint_places(rt, client)
    except (CheckpointUnavailable, StoreError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        client.close()


@app.command("record")
def record(show: str, config: ConfigOpt = None) -> None:
    """Make the signed recording of a show from its archived segments (AIGC metadata + C2PA manifest)."""
    from workers.provenance.archive import record_show_direct

    rt = _runtime(config)
    try:
        rec = record_show_direct(rt, show)
    except LookupError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if rec is None:
        err.print(f"[yellow]show {escape(show)} has no aired segments yet[/]")
        raise typer.Exit(1)
    console.print(f"recording {rt.local(rec.path)}: {len(rec.segment_ids)} segments, {rec.duration_s:.1f} s, "
                  f"ProduceID {rec.produce_id}, C2PA {rec.manifest_id}", markup=False)


@eval_app.command("lipsync")
def eval_lipsync_cmd(
    footage: Annotated[Path, typer.Option(help="Footage of one person speaking, at least 5 s (70% builds the "
                                                "avatar, the last 30% is held out).")],
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    out: Annotated[Path | None, typer.Option(
        help="Write rendered.mp4, recognition.mp4 and reference.mp4 here.")] = None,
    phonemes: Annotated[Path | None, typer.Option(
        help="The footage's own phonemes with their times (JSON, as `studio synth footage --phonemes-out` writes): "
             "adds lips from them, as our TTS drives them and the most recognition could give.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Measure the lip-sync renderer against held-out real frames, with a loudness-only and a no-lip-sync
    baseline, and beside it lips from phonemes recognised in the audio (and from the footage's own phonemes, when
    given). Exit 0 when the renderer beats both baselines on mouth correlation and landmark distance, else 1."""
    import tempfile

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from workers.eval.lipsync import eval_lipsync, read_phonemes
    from workers.media.probe import FootageError
    from workers.media.proc import MediaError
    from workers.speech.recognize import RecognitionError

    settings = _settings(config)
    with tempfile.TemporaryDirectory(prefix="studio-eval-") as tmp, \
            Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                     TimeElapsedColumn(), console=err, transient=as_json) as bar:
        task = bar.add_task("split", total=None)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=escape(stage), completed=done, total=total or None)

        try:
            known = read_phonemes(phonemes) if phonemes is not None else None
            result = eval_lipsync(footage, settings=settings, workdir=Path(tmp), out_dir=out, progress=progress,
                                  phonemes=known)
        except (FootageError, MediaError, RecognitionError) as exc:
            bar.stop()
            err.print(f"[red]refused:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(result))
    else:
        _print_eval(result)
    beats = result["beats_baselines"]
    raise typer.Exit(0 if beats["correlation"] and beats["lmd"] else 1)


def _print_eval(result: dict) -> None:
    from rich.table import Table

    def fmt(v, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    table = Table(title=f"lip-sync on {result['frames']} held-out frames ({result['heldout_seconds']:.1f} s) "
                        f"of {escape(Path(result['footage']).name)}")
    for col in ("", "corr ↑", "LMD % ↓", "shut in silence ↑", "lag", "seam", "PSNR out dB", "no mesh"):
        table.add_column(col, justify="right" if col else "left")
    drives = result.get("drives", {})
    for name, m in result["candidates"].items():
        label = f"{name} ({drives[name]})" if name in drives else name
        table.add_row(escape(label), fmt(m["correlation"], ".3f"), fmt(m["lmd_pct"], ".1f"),
                      fmt(m["silent_closed"], ".0%"), fmt(m.get("best_lag_frames"), "+d"), fmt(m["seam"], ".2f"),
                      fmt(m["psnr_outside_db"], ".1f"), str(m["mesh_dropped"]))
    ref = result["reference"]
    table.add_row("real", "", "", fmt(ref["silent_closed"], ".0%"), "", "1.00", "", str(ref["mesh_missing"]))
    console.print(table)
    console.print("corr: mouth opening vs the real frames; LMD: lip landmark distance, % of mouth width; "
                  "lag: shift in frames that fits the real mouth best (+ = the candidate is late); "
                  "seam: gradient across the blend rim / the same in the real frames (1 = as smooth as real); "
                  "PSNR out: outside the mouth blend")
    for base, m in result["margins"].items():
        console.print(f"vs {escape(base)}: correlation {fmt(m['correlation'], '+.3f')}, "
                      f"LMD {fmt(m['lmd_pct'], '+.1f')} points (positive = renderer better)")
    beats = result["beats_baselines"]
    verdict = "[green]beats both baselines[/]" if beats["correlation"] and beats["lmd"] else \
        f"[red]does not beat both baselines[/] (correlation {beats['correlation']}, LMD {beats['lmd']})"
    console.print(f"renderer {verdict}")
    rec = result.get("recognition")
    if rec:
        m, run = rec["vs_audio_map"], result["recognition_run"]
        console.print(f"recognition vs renderer: correlation {fmt(m['correlation'], '+.3f')}, LMD "
                      f"{fmt(m['lmd_pct'], '+.1f')} points (positive = recognition better); "
                      f"{run['phonemes']} phonemes recognised in {run['seconds']:.2f} s")
    own = result.get("phonemes")
    if own:
        m = own["vs_audio_map"]
        console.print(f"the footage's own phonemes vs renderer: correlation {fmt(m['correlation'], '+.3f')}, LMD "
                      f"{fmt(m['lmd_pct'], '+.1f')} points (positive = the phoneme path better)")
    for name, path in result["outputs"].items():
        console.print(f"{escape(name)}: {escape(str(path))}")


# Registered after this module's own commands, so `studio --help` lists up, demo, verify first. Neither imports
# this module (they share api.cli_base), so there is no import circle.
import api.cli_catalog  # noqa: E402,F401  (creator, agency, product, script, channel, show, account, consent)
import api.cli_roles  # noqa: E402,F401  (api, worker, scheduler, streamer)


def main() -> None:
    # Nothing the stack writes is for other local users (database, consent videos, footage, keys): files 0600,
    # folders 0700. Every role the stack spawns inherits the mask (workers.stack.embedded sets it again).
    os.umask(0o077)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    from sqlalchemy.exc import InterfaceError, OperationalError

    try:
        app(prog_name="studio")
    except (OperationalError, InterfaceError) as exc:
        # A fleet's database is a server that can be down or refuse the password: say which setting, never the
        # URL (it may carry the password), instead of a traceback.
        err.print(f"[red]error:[/] the database (setting database_url) cannot be reached or refused the "
                  f"connection ({type(exc.orig or exc).__name__}); check that it runs and that the URL and "
                  "database_password are right")
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.exit(main())
