"""`studio demo`: the whole product on one machine, with a synthetic creator who is no real person."""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlmodel import select

from studio import audit
from studio.db import session_scope
from studio.keys import load_stream_key
from studio.masking import scrub_url_keys
from studio.models import (
    Avatar,
    Channel,
    Consent,
    Creator,
    Destination,
    Product,
    Script,
    Segment,
    Show,
    utcnow,
)
from studio.runtime import Runtime
from studio.secrets import seal_url
from studio.segments import TERMINAL, SegmentState, move
from studio.storage import sha256_file
from studio.voiceover import recorded_parts
from workers.renderers import bundle_usable
from workers.stack.embedded import Stack, write_operator_key

DEMO_CREATOR = "Ava Demo (synthetic, not a real person)"
DEMO_CHANNEL = "demo"
DEMO_AGENCY = "Demo Agency"


@dataclass(frozen=True)
class CastMember:
    """One synthetic creator of the demo and the channel its show airs on."""

    creator: str
    avatar: str
    seed: int          # synthface seed: the face, hair and voice pitch (make_demo_footage)
    channel: str


def demo_cast(channels: int) -> list[CastMember]:
    """Channel 1 is Ava on "demo" (as with one channel); the others get creators of their own: different faces
    (seeds chosen so that no two share skin, hair and iris), none of them a real person."""
    names = ["Ava", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana"]
    seeds = [7, 11, 26, 9, 14, 21, 30, 33]
    cast = []
    for i in range(channels):
        name = names[i] if i < len(names) else f"Host{i + 1}"
        seed = seeds[i] if i < len(seeds) else 40 + i
        creator = DEMO_CREATOR if i == 0 else f"{name} Demo (synthetic, not a real person)"
        cast.append(CastMember(creator, name, seed, DEMO_CHANNEL if i == 0 else f"{DEMO_CHANNEL}-{i + 1}"))
    return cast
ON_AIR_TIMEOUT = 120  # seconds from creating the show to its first frame on air
PRODUCTS = [
    ("Glow Serum", "Lumen Labs", "beauty",
     "Paid partnership with Lumen Labs. Meet the Glow Serum: a light vitamin C serum for everyday skin care. "
     "It absorbs in seconds and layers well under sunscreen. Tap the cart below to see today's bundle."),
    ("Trail Bottle", "Northpeak", "outdoor",
     "Paid partnership with Northpeak. This is the Trail Bottle: it keeps water cold for a whole day. "
     "The lid seals tight, so it rides safely in any bag. Pick your colour from the link below."),
    ("Desk Lamp Mini", "Brightly", "home",
     "Paid partnership with Brightly. The Desk Lamp Mini folds flat and charges over USB C. "
     "Three warm light levels make late work easier on the eyes. The offer ends at midnight."),
]
DEMO_SCOPE = {"brands": [], "categories": ["beauty", "outdoor", "home"],
              "excluded_categories": ["alcohol", "gambling", "medicine", "politics"], "platforms": ["custom"],
              "territories": ["US"], "languages": ["en"], "max_hours_per_day": 24}
RECORDED_VOICE = "en-gb+f3"  # the demo creator's "own" voice: not the default TTS voice (en-us) the others speak
STATEMENT = ("I, {name}, consent to the creation of a digital clone of my face and voice and to its use in "
             "live-commerce promotions within the scope and term recorded with this statement.")


def _progress(console: Console) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), console=console)


def demo_footage(rt: Runtime, console: Console, member: CastMember | None = None) -> Path:
    """A synthetic creator's reference footage, generated once per data directory (45 s for the first, 32 s,
    just over the ingest minimum, for the others)."""
    from workers.media.synthface import make_demo_footage

    member = member or demo_cast(1)[0]
    first = member.creator == DEMO_CREATOR
    path = rt.data.root / "demo" / ("footage.mp4" if first else f"footage-{member.seed}.mp4")
    seconds = 45.0 if first else 32.0
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with console.status(f"generating {member.avatar}'s footage ({seconds:.0f} s, rendered face + espeak-ng "
                            f"voice)"):
            make_demo_footage(path, seconds=seconds, width=rt.settings.media.width,
                              height=rt.settings.media.height, fps=rt.settings.media.fps, seed=member.seed)
    return path


def demo_avatar(rt: Runtime, console: Console, footage: Path, member: CastMember | None = None) -> Avatar:
    """Reuse the avatar built from this footage, or send the footage through the real ingest queue."""
    from workers.queue_policy import ingest_queue
    from workers.tasks import ingest_task

    member = member or demo_cast(1)[0]
    digest = sha256_file(footage)
    with session_scope(rt.engine) as s:
        creator = s.exec(select(Creator).where(Creator.name == member.creator)).first()
        if creator is None:
            creator = Creator(name=member.creator, email="demo@example.invalid")
            s.add(creator)
        avatar = s.exec(select(Avatar).where(Avatar.creator_id == creator.id, Avatar.footage_sha256 == digest,
                                             Avatar.status == "ready")).first()
        # An earlier demo's avatar is reused while it is made for the configured renderer and that renderer reads
        # its bundle, else rebuilt.
        if (avatar is not None and avatar.renderer == rt.settings.renderer.type
                and bundle_usable(avatar.renderer, rt.local_dir(avatar.bundle_path), rt.settings.media,
                                  rt.settings.renderer)):
            return avatar
        creator_id = creator.id
    upload = rt.data.uploads / f"demo-{member.seed}-{int(time.time())}.mp4"
    upload.write_bytes(footage.read_bytes())
    result = ingest_task.apply_async(kwargs={"creator_id": creator_id, "name": member.avatar,
                                             "footage": rt.publish(upload)},
                                     queue=ingest_queue(rt.settings.renderer.type))
    with _progress(console) as bar:
        task = bar.add_task(f"ingest {escape(member.avatar)}: face mesh, mouth units, idle loop", total=None)
        while not result.ready():
            # One read of the task's meta: between a read of its state and one of its info the task may finish,
            # and its info is then the ingest's result (no stage): that ended a three-channel demo once in CI.
            info = result.info
            if isinstance(info, dict) and {"stage", "done", "total"} <= info.keys():
                bar.update(task, description=f"ingest {escape(member.avatar)}: {escape(str(info['stage']))}",
                           completed=info["done"],
                           total=max(info["total"], info["done"]))
            time.sleep(0.5)
    avatar_id = result.get(timeout=5)["avatar_id"]
    with session_scope(rt.engine) as s:
        return s.get(Avatar, avatar_id)


def _stop_shows(s, channel_id: str) -> None:
    for old in s.exec(select(Show).where(Show.channel_id == channel_id, Show.status == "scheduled")).all():
        old.status = "stopped"
        for seg in s.exec(select(Segment).where(Segment.show_id == old.id)).all():
            if seg.state not in TERMINAL:
                move(s, seg, SegmentState.CANCELLED, error="show stopped", event=None)  # one show.stopped for all
        audit.record(s, kind="show.stopped", subject_id=old.id, data={"reason": "a new demo run"})


def stop_demo_shows(rt: Runtime) -> None:
    """Stop what earlier demo runs left on the demo channels: one show per channel per run."""
    with session_scope(rt.engine) as s:
        for channel in s.exec(select(Channel)).all():
            if channel.name == DEMO_CHANNEL or channel.name.startswith(f"{DEMO_CHANNEL}-"):
                _stop_shows(s, channel.id)


def demo_agency(rt: Runtime) -> str:
    """The demo's agency: it owns the demo channels and products, and each demo consent grants it."""
    from studio.models import Agency

    with session_scope(rt.engine) as s:
        agency = s.exec(select(Agency).where(Agency.name == DEMO_AGENCY)).first()
        if agency is None:
            agency = Agency(name=DEMO_AGENCY)
            s.add(agency)
        return agency.id


def demo_logins(rt: Runtime, *, agency_id: str, creator_id: str) -> dict[str, str]:
    """Sign-ins for the pages, one per role, with fresh random passwords each run (written to
    data/keys/demo-logins.json, mode 0600): {email: password}."""
    import secrets

    from studio.accounts import create_account, hash_password
    from studio.models import Account
    from studio.storage import write_json_atomic

    logins = {}
    with session_scope(rt.engine) as s:
        for email, role, ids in (("ops@demo.local", "ops", {}),
                                 ("agency@demo.local", "agency", {"agency_id": agency_id}),
                                 ("creator@demo.local", "creator", {"creator_id": creator_id})):
            password = secrets.token_urlsafe(9)
            account = s.exec(select(Account).where(Account.email == email)).first()
            if account is None:
                create_account(s, email=email, name=f"Demo {role}", role=role, password=password, **ids)
            else:
                account.password_hash = hash_password(password)
                account.agency_id, account.creator_id = ids.get("agency_id"), ids.get("creator_id")
            logins[email] = password
    path = rt.data.keys / "demo-logins.json"
    write_json_atomic(path, logins)
    path.chmod(0o600)
    return logins


def demo_consent(rt: Runtime, avatar: Avatar, console: Console, seed: int = 7, agency_id: str | None = None) -> str:
    """The synthetic creator's consent, granted the real way (POLICY C1-C4): a code phrase is issued, a consent
    video of the creator reading it is recorded (here: rendered), and the video is checked before the consent
    is recorded with its scope and term. `studio demo` runs with `consent.review: auto` (api.cli.demo): a
    synthetic creator has no one to review."""
    from studio.models import ConsentCreate
    from workers.consent.grant import grant_consent_direct, issue_phrase_direct
    from workers.media.consent_clip import make_consent_video

    with session_scope(rt.engine) as s:
        creator = s.get(Creator, avatar.creator_id)
        name = creator.name
    phrase = issue_phrase_direct(rt, avatar.id)
    video = rt.data.uploads / f"consent-{phrase.id}.mp4"
    now = utcnow()
    body = ConsentCreate(avatar_id=avatar.id, phrase_id=phrase.id, signed_name=name,
                         statement=STATEMENT.format(name=name), starts_at=now - timedelta(minutes=1),
                         ends_at=now + timedelta(days=365), scope=DEMO_SCOPE, agency_id=agency_id, voice=True)
    try:
        with console.status(f"consent: the creator reads the code phrase {phrase.text!r}; checking the video"):
            make_consent_video(video, text=phrase.text, t0=1000.0, seed=seed, width=rt.settings.media.width,
                               height=rt.settings.media.height)
            consent = grant_consent_direct(rt, body, video)
    finally:
        video.unlink(missing_ok=True)
    v = consent.verification or {}
    state = "granted" if consent.status == "granted" else \
        f"{consent.status} (nothing airs until it is approved at {rt.settings.public_url}/review)"
    console.print(f"[green]consent {consent.id}[/] {escape(state)}: phrase heard (score {v.get('phrase_score')}), "
                  f"face distance {v.get('face_distance')}, live recording", soft_wrap=True)
    return consent.id


def demo_voiceovers(rt: Runtime, avatar: Avatar, script_ids: list[str], console: Console,
                    voice: str = RECORDED_VOICE) -> None:
    """The creator records every demo script in their own voice (here: a second espeak-ng voice stands in for
    them), each recording is checked and aligned like any upload (workers.ingest.voiceover), and the avatar's voice
    becomes `recorded`: the show airs the recordings, lips and captions from the alignment. A script recorded
    by an earlier run is not recorded again."""
    import tempfile

    from workers.ingest.voiceover import take_voiceover
    from workers.tts.espeak import EspeakTTS
    from workers.tts.wav import speech_to_wav

    tts = EspeakTTS(voice=voice, words_per_minute=150)
    # One transaction per recording: SQLite holds its write lock from a transaction's first write to its commit,
    # and a transaction over all the scripts held it through the next script's synthesis and alignment (seconds),
    # while the streamer's lease renewal waited behind it (6.3 s of a 5 s lease, seen beside a disk-busy writer).
    for i, script_id in enumerate(script_ids):
        with session_scope(rt.engine) as s:
            creator, script = s.get(Creator, avatar.creator_id), s.get(Script, script_id)
            if recorded_parts(s, script):
                continue
            with console.status(f"voice-over {i + 1}/{len(script_ids)}: the creator records the script; "
                                "checking and aligning it"), tempfile.TemporaryDirectory() as td:
                wav = Path(td) / "recording.wav"
                speech_to_wav(tts.synthesize(script.text), wav)
                take_voiceover(rt, s, script, wav, speaker="creator", creator_id=creator.id, actor_name=None,
                               uploaded_by="demo", approved_name=creator.name)
    with session_scope(rt.engine) as s:
        s.get(Avatar, avatar.id).voice = "recorded"


def _demo_scripts(s, agency_id: str | None) -> list[str]:
    """The demo's products (owned by its agency) and their scripts, made once and found again on later runs."""
    script_ids = []
    for name, brand, category, text in PRODUCTS:
        product = s.exec(select(Product).where(Product.name == name)).first()
        if product is None:
            product = Product(name=name, brand=brand, category=category)
            s.add(product)
        product.agency_id = agency_id
        script = s.exec(select(Script).where(Script.product_id == product.id, Script.text == text)).first()
        if script is None:
            script = Script(product_id=product.id, text=text)
            s.add(script)
        script_ids.append(script.id)
    return script_ids


def demo_show(rt: Runtime, avatar: Avatar, rtmp_urls: list[str], consent_id: str,
              channel_name: str = DEMO_CHANNEL, agency_id: str | None = None,
              recorded: Console | None = None) -> tuple[Channel, Show]:
    """Products, scripts, the channel and a 24/7 show under `consent_id`; earlier demo shows are stopped.
    `recorded`: the creator records the scripts first (demo_voiceovers) and the show airs the recordings."""
    now = utcnow()
    with session_scope(rt.engine) as s:
        script_ids = _demo_scripts(s, agency_id)
    if recorded is not None:
        demo_voiceovers(rt, avatar, script_ids, recorded)
    with session_scope(rt.engine) as s:
        consent = s.get(Consent, consent_id)
        channel = s.exec(select(Channel).where(Channel.name == channel_name)).first()
        if channel is None:
            channel = Channel(name=channel_name, territories=["US"])
            s.add(channel)
        channel.territories = channel.territories or ["US"]
        channel.agency_id = agency_id
        for d in s.exec(select(Destination).where(Destination.channel_id == channel.id)).all():
            s.delete(d)
        key = load_stream_key(rt.settings, create=True) if rtmp_urls else None
        for url in rtmp_urls:  # sealed at rest, shown masked (studio.secrets)
            s.add(Destination(channel_id=channel.id, url=seal_url(key, url, channel_id=channel.id),
                              url_masked=scrub_url_keys(url)))
        _stop_shows(s, channel.id)
        show = Show(channel_id=channel.id, avatar_id=avatar.id, consent_id=consent.id, name="Demo 24/7 show",
                    script_ids=script_ids, starts_at=now - timedelta(seconds=1))
        s.add(show)
        audit.record(s, kind="show.created", subject_id=show.id, data={"channel_id": channel.id})
    return channel, show


def channel_urls(rtmp_urls: list[str], index: int, channels: int) -> list[str]:
    """Where channel `index` (0-based) pushes: each --rtmp URL as given with one channel; with several,
    channel N pushes to URL-N (rtmp://host/live/show -> rtmp://host/live/show-2 for the second)."""
    return list(rtmp_urls) if channels == 1 else [f"{url}-{index + 1}" for url in rtmp_urls]


def run_demo(rt: Runtime, *, config_path: Path, duration: float | None, rtmp_urls: list[str],
             console: Console, channels: int = 1) -> int:
    if not 1 <= channels <= 16:
        raise ValueError(f"channels must be 1 to 16, got {channels}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop_demo_shows(rt)  # before the streamer starts, so it never airs an earlier run's show
    recorded: list[str] = []
    write_operator_key(rt)
    stack = Stack(rt.settings, config_path=config_path, log_dir=rt.data.logs)
    with console.status("starting redis-server, nginx-rtmp, celery workers, API, scheduler, streamer"):
        stack.start()
    try:
        console.print("[green]stack up:[/] " + escape(", ".join(f"{k} {v}" for k, v in stack.status().items())))
        live: list[tuple[Channel, Show]] = []
        base = rt.settings.public_url
        agency_id = demo_agency(rt)
        first_creator = None
        for i, member in enumerate(demo_cast(channels)):
            footage = demo_footage(rt, console, member)
            avatar = demo_avatar(rt, console, footage, member)
            first_creator = first_creator or avatar.creator_id
            consent_id = demo_consent(rt, avatar, console, seed=member.seed, agency_id=agency_id)
            urls = channel_urls(rtmp_urls, i, channels)
            # The first creator records the scripts in their own voice; the others' avatars speak with the TTS.
            channel, show = demo_show(rt, avatar, urls, consent_id, channel_name=member.channel, agency_id=agency_id,
                                      recorded=console if i == 0 else None)
            live.append((channel, show))
            console.print(f"\n[bold]Watch {escape(member.channel)}[/] " + escape(
                f"({member.avatar})  HLS: {rt.settings.hls_url(channel.id)}\n"
                f"       ffplay {rt.settings.ingest_url}/{channel.id}\n"
                f"       status: {base}/api/channels/{channel.id}/status"))
            for url in urls:
                console.print(f"       also pushing to {scrub_url_keys(url)}", markup=False)
        logins = demo_logins(rt, agency_id=agency_id, creator_id=first_creator)
        console.print(f"       API: {base}/docs\n", markup=False)
        console.print("[bold]Dashboard[/] " + escape(
            f"{base}/ops  (live preview, queues, workers, alerts)\n  sign in as "
            + "; ".join(f"{e} / {p}" for e, p in logins.items())
            + f"\n  (also in {rt.data.keys / 'demo-logins.json'}; pages /creator and /agency for the other roles)\n"),
            soft_wrap=True)
        return _air(rt, stack, live, duration, stop, console, recorded)
    finally:
        with console.status("stopping"):
            stack.stop()
        for show_id in recorded:
            _record(rt, show_id, console)


def _air(rt: Runtime, stack: Stack, live: list[tuple[Channel, Show]], duration: float | None,
         stop: threading.Event, console: Console, recorded: list[str]) -> int:
    """Wait until every channel is on air, then for `duration` (or Ctrl-C); print what each aired."""
    def status(channel: Channel) -> dict:
        path = rt.data.run / f"channel-{channel.id}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    started, created = None, time.monotonic()
    while not stop.is_set():
        states = [status(ch) for ch, _ in live]
        on_air = [st.get("airing") and st.get("show_id") == show.id for st, (_, show) in zip(states, live, strict=True)]
        if started is None and all(on_air):
            started = time.monotonic()
            console.print("[green]on air[/]" + (f" on {len(live)} channels" if len(live) > 1 else "")
                          + " (Ctrl-C to stop)")
        if started is None and time.monotonic() - created > ON_AIR_TIMEOUT * len(live):
            late = [ch.name for (ch, _), ok in zip(live, on_air, strict=True) if not ok]
            console.print(f"[red]not on air within {ON_AIR_TIMEOUT * len(live)} s:[/] " + escape(
                f"{', '.join(late)}; see {rt.data.logs / 'streamer.log'}:\n{stack.log_tail('streamer')}"))
            return 1
        if started is not None and duration is not None and time.monotonic() - started >= duration:
            break
        failed = [(ch.name, st.get("last_error")) for (ch, _), st in zip(live, states, strict=True)
                  if st.get("state") == "failed"]
        if failed:
            console.print("[red]channel failed:[/] " + escape("; ".join(f"{n}: {e}" for n, e in failed)))
            return 1
        stop.wait(1.0)
    for channel, show in live:
        st = status(channel)
        console.print(f"{channel.name}: aired {st.get('aired_seconds', 0):.0f} s: {st.get('segments_aired', 0)} "
                      f"segments, {st.get('slates_aired', 0)} slates, {st.get('refused', 0)} refused", markup=False)
        recorded.append(show.id)
    return 0


def _record(rt: Runtime, show_id: str, console: Console) -> None:
    """The show's signed recording for audit, from its archived segments (AIGC metadata + C2PA, M1/M4)."""
    from workers.provenance.archive import record_show_direct

    with console.status("signing the show's recording"):
        rec = record_show_direct(rt, show_id)
    if rec is not None:
        local = rt.local(rec.path)
        console.print(f"recording for audit: {local} ({len(rec.segment_ids)} segments, {rec.duration_s:.0f} s, "
                      f"C2PA {rec.manifest_id}); check it with `studio verify {local}`", soft_wrap=True, markup=False)
