"""`studio creator|agency|product|script|channel|show` and `studio consent phrase|grant|approve|review`: the whole
grant -> schedule -> air -> revoke cycle from the command line.

Each command calls the same service function as the API (api.service) in-process with a database session, so
the CLI and the API refuse exactly the same things with the same words; a refusal exits 2 and lists every reason.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from sqlmodel import Session

from api.cli_base import ConfigOpt, _runtime, app, avatar_app, consent_app, console, err
from studio.accounts import OPERATOR
from studio.errors import Refused

creator_app = typer.Typer(no_args_is_help=True, help="Creators and their claim attestations.")
agency_app = typer.Typer(no_args_is_help=True, help="Agencies a consent may grant.")
product_app = typer.Typer(no_args_is_help=True, help="Products.")
script_app = typer.Typer(no_args_is_help=True, help="Promotion scripts (linted on save).")
channel_app = typer.Typer(no_args_is_help=True, help="Channels and their RTMP destinations.")
show_app = typer.Typer(no_args_is_help=True, help="Shows: an avatar, a consent and scripts on a channel.")
account_app = typer.Typer(no_args_is_help=True, help="Accounts that sign in to the API and the pages.")
synth_app = typer.Typer(no_args_is_help=True, help="Synthetic media of a creator who is no real person, for "
                        "trying the platform out (footage, consent video).")
for sub, name in ((creator_app, "creator"), (agency_app, "agency"), (product_app, "product"),
                  (script_app, "script"), (channel_app, "channel"), (show_app, "show"), (synth_app, "synth"),
                  (account_app, "account")):
    app.add_typer(sub, name=name)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
Csv = Annotated[str, typer.Option(help="Comma-separated.")]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _call(config: Path | None, service: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one service function (api.service) as the machine's operator (studio.accounts.OPERATOR), with a session
    and, when it takes one, the runtime; a refusal exits 2 with its reasons, as the API answers them."""
    rt = _runtime(config)
    with Session(rt.engine, expire_on_commit=False) as session:
        if "rt" in inspect.signature(service).parameters:
            kwargs["rt"] = rt
        try:
            return service(session, OPERATOR, *args, **kwargs)
        except Refused as exc:
            lines = exc.lines()
            err.print(f"[red]refused ({exc.status_code}):[/] {escape(lines[0])}", soft_wrap=True)
            for line in lines[1:]:
                err.print(line, soft_wrap=True, markup=False)
            raise typer.Exit(2) from None


def _model(cls, **fields: Any):
    try:
        return cls.model_validate(fields)
    except ValidationError as exc:
        err.print(f"[red]refused:[/] {len(exc.errors())} problem(s)")
        for e in exc.errors():
            err.print(f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}", markup=False)
        raise typer.Exit(2) from None


def _out(row: Any, as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(row.model_dump(mode="json") if hasattr(row, "model_dump") else row))
    else:
        console.print(text, soft_wrap=True)


# --- creators, attestations, agencies, products, scripts ------------------------------------------------------
@creator_app.command("add")
def creator_add(name: str, email: Annotated[str | None, typer.Option()] = None, as_json: JsonOpt = False,
                config: ConfigOpt = None) -> None:
    """Add a creator (the real person a clone is of)."""
    from api.service.catalog import create_creator
    from studio.models import CreatorCreate

    row = _call(config, create_creator, _model(CreatorCreate, name=name, email=email))
    _out(row, as_json, f"creator {escape(row.id)}: {escape(row.name)}")


@creator_app.command("attest")
def creator_attest(creator: str, product: Annotated[str, typer.Option(help="Product id.")],
                   kind: Annotated[str, typer.Option(help="use | opinion | results")],
                   statement: Annotated[str, typer.Option(help="The fact in the creator's words.")],
                   signed_name: Annotated[str, typer.Option(help="The creator's name, as signature.")],
                   as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """The creator attests a first-person fact about a product, so scripts may claim it in their voice (S2)."""
    from api.service.consents import AttestationIn, attest

    body = _model(AttestationIn, product_id=product, kind=kind, statement=statement, signed_name=signed_name)
    row = _call(config, attest, creator, body)
    _out(row, as_json, f"attested: creator {escape(creator)} may claim {escape(repr(row.kind))} for product "
                       f"{escape(row.product_id)}")


@account_app.command("add")
def account_add(email: str, role: Annotated[str, typer.Option(help="creator | agency | ops | reviewer | admin")],
                name: Annotated[str | None, typer.Option(help="Display name (default: the email).")] = None,
                agency: Annotated[str | None, typer.Option(help="Agency id (role agency).")] = None,
                creator: Annotated[str | None, typer.Option(help="Creator id (role creator).")] = None,
                password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input "
                                                             "instead of asking for it.")] = False,
                as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Give someone an account with a password, e.g. the first admin who signs in to the pages."""
    import sys

    from api.service.accounts import AccountIn, add_account

    password = sys.stdin.readline().rstrip("\n") if password_stdin else \
        typer.prompt("password", hide_input=True, confirmation_prompt=True)
    body = _model(AccountIn, email=email, name=name or email, role=role, password=password, agency_id=agency,
                  creator_id=creator)
    row = _call(config, add_account, body)
    _out(row, as_json, f"account {escape(row.id)}: {escape(row.email)} ({escape(format(row.role))})")


@agency_app.command("add")
def agency_add(name: str, as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Add an agency; a consent may grant one agency, which then sees that avatar and no other."""
    from api.service.consents import create_agency
    from studio.models import AgencyCreate

    row = _call(config, create_agency, _model(AgencyCreate, name=name))
    _out(row, as_json, f"agency {escape(row.id)}: {escape(row.name)}")


@product_app.command("add")
def product_add(name: str, brand: Annotated[str, typer.Option()], category: Annotated[str, typer.Option()],
                as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Add a product."""
    from api.service.catalog import create_product
    from studio.models import ProductCreate

    row = _call(config, create_product, _model(ProductCreate, name=name, brand=brand, category=category))
    _out(row, as_json, f"product {escape(row.id)}: {escape(row.name)} ({escape(row.brand)}, {escape(row.category)})")


@script_app.command("add")
def script_add(product: Annotated[str, typer.Option(help="Product id.")],
               text: Annotated[str, typer.Option(help="What the avatar says.")],
               language: Annotated[str, typer.Option()] = "en", as_json: JsonOpt = False,
               config: ConfigOpt = None) -> None:
    """Save a promotion script; it is linted (S1-S3) and refused with each finding's rule, words and fix."""
    from api.service.catalog import create_script
    from studio.models import ScriptCreate

    row = _call(config, create_script, _model(ScriptCreate, product_id=product, text=text, language=language))
    _out(row, as_json, f"script {escape(row.id)} saved for product {escape(row.product_id)}")


@script_app.command("edit")
def script_edit(script: str, text: Annotated[str, typer.Option(help="The new text.")], as_json: JsonOpt = False,
                config: ConfigOpt = None) -> None:
    """Change a script's text (linted again); its recorded voice-over, which says the old text, is dropped."""
    from api.service.voiceovers import ScriptEdit, edit_script

    row = _call(config, edit_script, script, _model(ScriptEdit, text=text))
    _out(row, as_json, f"script {escape(row.id)} edited; a recorded voice-over of the old text was dropped")


@script_app.command("voiceover")
def script_voiceover(
    script: str,
    file: Annotated[Path, typer.Argument(help="The recording: WAV, MP3, M4A, Ogg/WebM Opus; 1-120 s.")],
    actor: Annotated[str | None, typer.Option(help="A voice actor's recording: the actor's name.")] = None,
    creator: Annotated[str | None, typer.Option(help="The creator's own voice: the creator's id (it airs once "
                                                     "the creator approves it).")] = None,
    as_json: JsonOpt = False, config: ConfigOpt = None,
) -> None:
    """Give a script a recorded voice-over. It is checked to say the script (forced alignment; the words that did
    not match are named), cut at word boundaries into 2-10 s segments, and replaces the script's earlier one."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from studio.db import session_scope
    from studio.models import Creator, Script
    from workers.ingest.voiceover import VoiceoverRefused, take_voiceover

    if (actor is None) == (creator is None):
        err.print("[red]refused:[/] name the speaker: --actor NAME (a voice actor) or --creator ID (the creator's "
                  "own voice)")
        raise typer.Exit(2)
    if not file.is_file():
        err.print(f"[red]refused:[/] recording {escape(str(file))} does not exist", soft_wrap=True)
        raise typer.Exit(2)
    rt = _runtime(config)
    with session_scope(rt.engine) as s:
        row = s.get(Script, script)
        if row is None:
            err.print(f"[red]refused (404):[/] script {escape(repr(script))} does not exist")
            raise typer.Exit(2)
        if creator is not None and s.get(Creator, creator) is None:
            err.print(f"[red]refused (404):[/] creator {escape(repr(creator))} does not exist")
            raise typer.Exit(2)
        stages = {"decode": "decoding and checking the recording", "align": "aligning the script to the "
                  "recording (pocketsphinx)", "store": "storing the recording"}
        with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                      console=err if as_json else console, transient=True) as bar:
            task = bar.add_task(stages["decode"], total=None)

            def progress(stage: str, done: float, total: float) -> None:  # align: seconds of audio decoded
                bar.update(task, description=escape(stages.get(stage, stage)), completed=done, total=total or None)

            try:
                vo = take_voiceover(rt, s, row, file, speaker="actor" if actor else "creator", creator_id=creator,
                                    actor_name=actor, uploaded_by="operator", progress=progress)
            except VoiceoverRefused as exc:
                bar.stop()
                err.print(f"[red]refused (422):[/] {escape(str(exc))}", soft_wrap=True)
                if exc.missing:
                    err.print(f"  not heard: {' '.join(exc.missing)}", soft_wrap=True, markup=False)
                if exc.extra:
                    err.print(f"  heard instead: {' '.join(exc.extra)}", soft_wrap=True, markup=False)
                raise typer.Exit(2) from None
        out = {"id": vo.id, "script_id": vo.script_id, "speaker": vo.speaker, "creator_id": vo.creator_id,
               "actor_name": vo.actor_name, "seconds": vo.duration_s, "matched": vo.matched,
               "needs_approval": vo.speaker == "creator" and vo.approved_at is None,
               "parts": vo.parts}
    if as_json:
        print(json.dumps(out))
        return
    console.print(f"voice-over {escape(out['id'])} of script {escape(script)}: {out['seconds']:.1f} s, "
                  f"{out['matched']:.0%} of the words heard, {len(out['parts'])} segment(s)"
                  + (" - airs once the creator approves it" if out["needs_approval"] else ""), soft_wrap=True)
    for start, end, text in out["parts"]:
        console.print(f"  {start:6.2f}-{end:6.2f} s  {text}", soft_wrap=True, markup=False)


@script_app.command("voiceover-approve")
def script_voiceover_approve(script: str, signed_name: Annotated[str, typer.Option(help="The creator's name.")],
                             as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """The creator approves a recording of their own voice for airing."""
    from api.service.voiceovers import VoiceoverApprovalIn, approve_voiceover

    row = _call(config, approve_voiceover, script_id=script,
                body=_model(VoiceoverApprovalIn, signed_name=signed_name))
    _out(row, as_json, f"voice-over {escape(row.id)} of script {escape(script)} approved by {escape(signed_name)}")


# --- channels and shows ---------------------------------------------------------------------------------
@channel_app.command("add")
def channel_add(name: str,
                territories: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2 markets, comma-separated.")],
                profiles: Annotated[str, typer.Option(help="Policy profiles (configs/policies).")] = "default",
                rtmp: Annotated[list[str] | None, typer.Option(help="Destination rtmp[s]://host/app/KEY; repeat "
                                                                    "for more.")] = None,
                platform: Annotated[str, typer.Option(help="Platform of the --rtmp destinations.")] = "custom",
                as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Add a channel with its destinations (stream keys are masked in every output)."""
    from api.service.catalog import ChannelIn, create_channel

    body = _model(ChannelIn, name=name, territories=_csv(territories), policy_profiles=_csv(profiles),
                  destinations=[{"url": u, "platform": platform} for u in rtmp or []])
    row = _call(config, create_channel, body)
    _out(row, as_json, escape(f"channel {row.id}: {row.name}, territories {', '.join(row.territories)}, "
                              f"profiles {', '.join(row.policy_profiles)}, "
                              f"destinations {', '.join(row.destinations) or '-'}"))


@show_app.command("create")
def show_create(channel: Annotated[str, typer.Option()],
                avatar: Annotated[str | None, typer.Option(help="The presenter (with --schedule: from the file).")]
                = None,
                consent: Annotated[str | None, typer.Option(help="Its consent (with --schedule: from the file).")]
                = None,
                script: Annotated[list[str] | None, typer.Option(help="Script id; repeat for a rotation (with "
                                                                      "--schedule: the file's rotation).")] = None,
                schedule: Annotated[Path | None, typer.Option(help="JSON or YAML schedule: timezone, windows, "
                                                                   "rotation, avatars, breaks (studio.schedule).",
                                                              exists=True, dir_okay=False)] = None,
                name: Annotated[str, typer.Option()] = "24/7 show",
                agency: Annotated[str | None, typer.Option(help="The agency the consent grants.")] = None,
                as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Schedule a show: 24/7 with the scripts in turn, or from a --schedule file (windows, weighted rotation with
    quotas and cooldowns, avatars handing over, breaks). Checked against every consent (term, scope, platforms,
    territories), the script rules and each destination's rules; the scheduler of `studio up` then plans, renders
    and airs it."""
    from api.service.catalog import ShowIn, create_show

    plan = None
    if schedule is not None:
        import yaml

        try:
            plan = yaml.safe_load(schedule.read_text())
        except yaml.YAMLError as exc:
            err.print(f"[red]error:[/] {escape(str(schedule))} is not JSON or YAML: {escape(str(exc))}")
            raise typer.Exit(2) from None
    body = _model(ShowIn, channel_id=channel, avatar_id=avatar, consent_id=consent, name=name, script_ids=script,
                  agency_id=agency, schedule=plan)
    row = _call(config, create_show, body=body)
    waiting = f"; awaiting the creator's approval: {', '.join(row.awaiting_approval)}" if row.awaiting_approval else ""
    _out(row, as_json, escape(f"show {row.id} scheduled on channel {row.channel_id}{waiting}"))


@show_app.command("stop")
def show_stop(show: str, config: ConfigOpt = None) -> None:
    """Stop a show: its unaired segments are cancelled and the channel airs the slate."""
    from sqlmodel import select

    from studio import audit
    from studio.db import session_scope
    from studio.models import Segment, Show
    from studio.segments import TERMINAL, SegmentState, move

    rt = _runtime(config)
    with session_scope(rt.engine) as s:
        row = s.get(Show, show)
        if row is None:
            err.print(f"[red]error:[/] show {escape(repr(show))} does not exist")
            raise typer.Exit(2)
        row.status = "stopped"
        for seg in s.exec(select(Segment).where(Segment.show_id == show)).all():
            if seg.state not in TERMINAL:
                move(s, seg, SegmentState.CANCELLED, error="show stopped", event=None)  # one show.stopped for all
        audit.record(s, kind="show.stopped", subject_id=show, data={"reason": "studio show stop"})
    console.print(f"show {escape(show)} stopped")


# --- consent: phrase, grant, approve ----------------------------------------------------------------------------
@consent_app.command("phrase")
def consent_phrase(avatar: str, as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Issue a one-time code phrase for the creator to read aloud in the consent video (valid 10 minutes)."""
    from api.service.consents import issue_phrase

    row = _call(config, issue_phrase, avatar)
    _out(row, as_json, f"code phrase {escape(row.id)}: [bold]{escape(row.text)}[/]\nread it aloud in the consent "
                       f"video before {row.expires_at.isoformat(timespec='seconds')} UTC")


@consent_app.command("grant")
def consent_grant(
    avatar: Annotated[str, typer.Option()],
    phrase: Annotated[str, typer.Option(help="Code phrase id from `studio consent phrase`.")],
    video: Annotated[Path, typer.Option(help="The consent video: the creator reading the phrase aloud.")],
    signed_name: Annotated[str, typer.Option(help="The creator's name as signed.")],
    statement: Annotated[str, typer.Option(help="The signed statement, verbatim (or @FILE).")],
    categories: Csv = "", brands: Csv = "",
    exclude: Csv = "alcohol,gambling,medicine,politics",
    platforms: Annotated[str, typer.Option(help="Destination platforms allowed, comma-separated.")] = "",
    territories: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2 codes, comma-separated.")] = "",
    languages: Csv = "en",
    max_hours: Annotated[float, typer.Option(help="Air time cap in any 24 h.")] = 0.0,
    days: Annotated[int, typer.Option(help="Term: from now for this many days.")] = 30,
    agency: Annotated[str | None, typer.Option(help="The one agency this consent grants.")] = None,
    require_approval: Annotated[bool, typer.Option(help="Each script needs the creator's approval.")] = False,
    voice: Annotated[bool, typer.Option("--voice/--no-voice", help="The creator ticked voice: their own recorded "
                                        "voice-overs may air under it (POLICY C7). Face only without it.")] = False,
    as_json: JsonOpt = False, config: ConfigOpt = None,
) -> None:
    """Grant consent: the consent video is checked (the phrase is heard, the face is the footage's, it is a live
    recording) and the statement's scope and term are recorded. A refusal lists every reason and records
    nothing but the attempt in the audit log."""
    from studio.models import ConsentCreate, utcnow
    from workers.consent.grant import ConsentRefused, grant_consent_direct

    text = Path(statement[1:]).read_text() if statement.startswith("@") else statement
    now = utcnow()
    body = _model(ConsentCreate, avatar_id=avatar, phrase_id=phrase, signed_name=signed_name, statement=text,
                  face=True, voice=voice, starts_at=now, ends_at=now + timedelta(days=days),
                  agency_id=agency, require_script_approval=require_approval,
                  scope={"brands": _csv(brands), "categories": _csv(categories), "excluded_categories": _csv(exclude),
                         "platforms": _csv(platforms), "territories": _csv(territories),
                         "languages": _csv(languages), "max_hours_per_day": max_hours})
    if not video.is_file():
        err.print(f"[red]refused:[/] consent video {escape(str(video))} does not exist")
        raise typer.Exit(2)
    rt = _runtime(config)
    try:
        with console.status("checking the consent video: phrase (pocketsphinx), face, liveness"):
            consent = grant_consent_direct(rt, body, video)
    except ConsentRefused as exc:
        err.print(f"[red]consent refused:[/] {len(exc.problems)} problem(s)")
        for p in exc.problems:
            err.print(f"  {p}", soft_wrap=True, markup=False)
        raise typer.Exit(2) from None
    v = consent.verification or {}
    if as_json:
        print(json.dumps({"consent_id": consent.id, "status": consent.status, "verification": v}))
        return
    state = ("[green]granted[/]" if consent.status == "granted" else
             "[yellow]waits for review[/] (`studio consent review approve`; nothing airs until then)")
    console.print(f"consent {escape(consent.id)} {state}, until {consent.ends_at.isoformat(timespec='seconds')} "
                  f"UTC: phrase heard (score {v.get('phrase_score')}), face distance {v.get('face_distance')}, "
                  f"live (replay share {v.get('liveness', {}).get('replay_frame_share')})", soft_wrap=True)


review_app = typer.Typer(no_args_is_help=True, help="Consent review: consents that passed the automated check wait "
                         "for approval (setting consent.review: required).")
consent_app.add_typer(review_app, name="review")


@review_app.command("list")
def review_list(as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Consents waiting for review, oldest first, with the check's figures."""
    from workers.consent.review import pending_consents

    rows = pending_consents(_runtime(config))
    if as_json:
        print(json.dumps([{"consent_id": c.id, "creator_id": c.creator_id, "avatar_id": c.avatar_id,
                           "signed_name": c.signed_name, "created_at": c.created_at.isoformat(),
                           "verification": c.verification} for c in rows]))
        return
    for c in rows:
        v = c.verification or {}
        since = c.created_at.isoformat(timespec="seconds")
        console.print(f"{c.id}  {c.signed_name}  avatar {c.avatar_id}  since {since} UTC: phrase "
                      f"{v.get('phrase_score')}, face distance {v.get('face_distance')}, lip-sync "
                      f"{(v.get('liveness') or {}).get('lip_sync')}", soft_wrap=True, markup=False)
    if not rows:
        console.print("no consent waits for review")


def _review(config: Path | None, consent: str, *, approve: bool, reason: str | None, as_json: bool) -> None:
    from workers.consent.review import ReviewRefused, review_consent_direct

    try:  # the command line acts as the machine's operator, an admin (studio.accounts.OPERATOR)
        row = review_consent_direct(_runtime(config), consent, reviewer=OPERATOR, approve=approve, reason=reason)
    except (LookupError, ReviewRefused) as exc:
        err.print(f"[red]refused:[/] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    _out({"consent_id": row.id, "status": row.status, "review_reason": row.review_reason}, as_json,
         escape(f"consent {row.id} {row.status}" + (f": {row.review_reason}" if row.review_reason else "")))


@review_app.command("approve")
def review_approve(consent: str, as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Approve a consent waiting for review: it is granted and may air from now on (audited as consent.approved)."""
    _review(config, consent, approve=True, reason=None, as_json=as_json)


@review_app.command("reject")
def review_reject(consent: str, reason: Annotated[str, typer.Option(help="Why, in words the creator reads.")],
                  as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """Reject a consent waiting for review: it never airs and its consent video is deleted (consent.rejected)."""
    _review(config, consent, approve=False, reason=reason, as_json=as_json)


@consent_app.command("approve")
def consent_approve(consent: str, script: str,
                    signed_name: Annotated[str, typer.Option(help="The creator's name, as on the consent.")],
                    as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """The creator approves one script's exact text to air under this consent."""
    from api.service.consents import ApprovalIn, approve_script

    row = _call(config, approve_script, consent_id=consent,
                body=_model(ApprovalIn, script_id=script, signed_name=signed_name))
    _out(row, as_json, f"script {escape(row.script_id)} approved for consent {escape(row.consent_id)}")


# --- synthetic media -------------------------------------------------------------------------------------------
@synth_app.command("footage")
def synth_footage(out: Path, seconds: Annotated[float, typer.Option()] = 45.0,
                  width: Annotated[int, typer.Option()] = 720, height: Annotated[int, typer.Option()] = 1280,
                  seed: Annotated[int, typer.Option(help="Which synthetic face.")] = 7,
                  mouth: Annotated[str, typer.Option(help="loudness: the mouth opens with the voice's level; "
                                                          "articulation: it is shaped by the phonemes said.")
                                   ] = "loudness",
                  voice: Annotated[str, typer.Option(help="The espeak-ng voice that speaks.")] = "en-us",
                  phonemes_out: Annotated[Path | None, typer.Option(
                      help="Write the phonemes said, with their times, here (JSON, for `studio eval lipsync "
                           "--phonemes`); --mouth articulation only.")] = None,
                  config: ConfigOpt = None) -> None:
    """Reference footage of a synthetic creator (rendered face, espeak-ng voice), for `studio avatar create`.
    (`--config` is accepted and unused, so scripts can pass it to every command.)"""
    from workers.media.synthface import make_demo_footage
    from workers.tts.base import SpeechError

    with console.status(f"rendering {seconds:.0f} s of synthetic footage"):
        try:
            make_demo_footage(out, seconds=seconds, width=width, height=height, seed=seed, mouth=mouth, voice=voice,
                              phonemes_out=phonemes_out)
        except (ValueError, SpeechError) as exc:
            err.print(f"[red]refused:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None
    console.print(f"footage: {out}" + (f", phonemes: {phonemes_out}" if phonemes_out else ""), soft_wrap=True,
                  markup=False)


@synth_app.command("consent-video")
def synth_consent_video(out: Path, text: Annotated[str, typer.Option(help="What the creator reads: the code "
                                                                            "phrase.")],
                        seed: Annotated[int, typer.Option(help="Which synthetic face (the footage's is 7).")] = 7,
                        config: ConfigOpt = None) -> None:
    """A consent video of the synthetic creator reading `text`, for `studio consent grant`."""
    from workers.media.consent_clip import make_consent_video

    with console.status("rendering the consent video"):
        make_consent_video(out, text=text, seed=seed, t0=1000.0)
    console.print(f"consent video: {escape(str(out))}")


@avatar_app.command("voice")
def avatar_voice(avatar: str, voice: Annotated[str, typer.Argument(help="tts (the configured speech), espeak:VOICE "
                                                                        "(e.g. espeak:en-gb+f3) or recorded (the "
                                                                        "scripts' recorded voice-overs).")],
                 as_json: JsonOpt = False, config: ConfigOpt = None) -> None:
    """One voice per avatar: what every script sounds like in its shows."""
    from api.service.voiceovers import VoiceIn, set_avatar_voice

    row = _call(config, set_avatar_voice, avatar, _model(VoiceIn, voice=voice))
    _out(row, as_json, f"avatar {escape(row.id)} speaks with voice {escape(row.voice)}")
