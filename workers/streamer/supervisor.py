"""The streamer supervisor: one feeder thread per channel with a live show, restarted with a pause (Supervised,
workers.supervise).

The feeder publishes to the local nginx-rtmp ingest only; each enabled destination gets a relay of its own
(workers.streamer.relay) that copies the channel from the ingest and reconnects on its own, so one failing
destination never touches the feeder or the other destinations. Destinations added or removed while a show
airs start or stop their relay without interrupting the stream.

Run by `studio up`; on its own: `python -m workers.streamer.supervisor`. Each channel's state, with every
destination's (URL masked), is written to data/run/channel-ID.json every second for the API and ops.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from sqlmodel import select

from studio import audit, leases
from studio.config import StreamerConfig
from studio.db import session_scope
from studio.keys import load_stream_key
from studio.lease_store import lease_store
from studio.masking import shown_url
from studio.models import Avatar, Channel, Destination, Show, new_produce_id, utcnow
from studio.policy import PolicyStamp, aigc_metadata, check_stamp
from studio.runtime import Runtime
from studio.secrets import is_sealed, open_url
from studio.storage import sha256_file, write_json_atomic
from workers.consent.cache_purge import CachePurger, has_cache
from workers.logs import set_context
from workers.media import allocator
from workers.media.ffmpeg_args import video_args
from workers.media.preview import hls_dir
from workers.render.segment import channel_policy, render_slate
from workers.renderers.base import BundleError
from workers.runtime import runtime
from workers.streamer import status as channel_status
from workers.streamer.air import ChannelAir
from workers.streamer.consent_watch import ConsentWatch
from workers.streamer.feeder import ChannelFeeder, LeaseLost
from workers.streamer.leasing import LeaseKeeper
from workers.streamer.preview_share import PreviewShare
from workers.streamer.publish_auth import PublishAuthServer, PublishTokens, publish_auth_socket, with_token
from workers.streamer.relay import RelayGroup, RelayTarget
from workers.supervise import Exit, Pacer, RestartPolicy, Supervised, ThreadChild

log = logging.getLogger("studio.streamer")
SLATE_META = ".stamp.json"  # beside a slate in the store: its policy stamp, the avatar it shows, its video options


def local_ingest_url(rt: Runtime, channel_id: str) -> str:
    return f"{rt.settings.ingest_url}/{channel_id}"


def feeder_policy(cfg: StreamerConfig) -> RestartPolicy:
    """A feeder restarts after `restart_pause_seconds` up to `max_restarts_per_minute` crashes in a minute, then
    after a pause doubling with each crash beyond, at most `max_restart_pause_seconds`. A channel never gives up:
    its ingest may come back."""
    return RestartPolicy(pause=cfg.restart_pause_seconds, steady=cfg.max_restarts_per_minute,
                         cap=cfg.max_restart_pause_seconds, window=60.0)


class ChannelRunner:
    """Runs one channel's feeder until stopped, restarting it after a pause that grows in a crash loop.

    The feeder publishes to `publish_urls` (the local ingest); `targets` are the channel's destinations, each
    relayed from the first of those URLs by its own `DestinationRelay` once `start()` is called."""

    def __init__(self, rt: Runtime, channel: Channel, publish_urls: list[str], show: Show, archive=None,
                 targets: list[RelayTarget] = (), tokens: PublishTokens | None = None, lease=None,
                 token: int | None = None, consents: ConsentWatch | None = None):
        self.rt, self.channel, self.show = rt, channel, show
        # In a fleet: this streamer's LeaseKeeper and the channel lease's fencing token. The feeder asks the
        # lease before every packet, the air check before every segment, the relays before every connection.
        self.lease, self.token = lease, token
        self.handing_over = False
        self.retired = False
        self.lease_losses = 0  # times this streamer lost the channel's lease while airing it (Streamer counts)
        # Set when the runner may air. A runner made while a hand-over is pending prepares its slates, then
        # waits here until the lease is claimed (`go`), so the channel's gap is not the slates' making.
        self.ready = threading.Event()
        if token is not None or lease is None:
            self.ready.set()
        self.on_done = None  # called from the feeder thread when it ends (the supervisor wakes for it)
        self.publish_urls = publish_urls
        self.tokens = tokens
        self.targets = list(targets)
        self.relays = RelayGroup(source=publish_urls[0], open_url=self._open_destination,
                                 allow_private=rt.settings.streamer.allow_private_destinations)
        self.stop = threading.Event()
        self.state = "starting"
        self.last_error: str | None = None
        self.consents = consents
        self.air = ChannelAir(rt, channel.id, on_aired_segment=archive, lease=lease, token=token, consents=consents,
                              consent_id=show.consent_id)
        self.feeder: ChannelFeeder | None = None
        self.feeding: Supervised | None = None  # the feeder's runs, once the runner may air
        self.thread = threading.Thread(target=self._run, name=f"feeder-{channel.id}", daemon=True)
        self.started_at: float | None = None

    def go(self, token: int) -> None:
        """Air under `token` (a claimed lease), after the last segment that aired under the previous owner."""
        self.token = self.air.token = token
        self.air.next_seq = self.air._first_seq()
        self.ready.set()

    def start(self) -> None:
        if self.consents is not None:
            self.consents.watch(self.show.consent_id)
        self.thread.start()
        # Relays start now, also while prepared: each waits on this host's ingest, where nothing is published
        # until the feeder publishes under the lease (the ingest refuses any other), so the destination sees
        # nothing from a runner that never got the lease; with `go` the stream reaches it at once.
        self.relays.sync(self.targets)  # a relay up before the feeder publishes waits for it, then follows

    def set_targets(self, targets: list[RelayTarget]) -> None:
        self.targets = list(targets)
        self.relays.sync(self.targets)

    def fenced(self) -> bool:
        """True while this streamer may air the channel (always, outside a fleet)."""
        return self.lease is None or self.lease.valid(self.channel.id, self.token)

    def hand_over(self) -> None:
        """Stop at the end of the piece on air now (a segment boundary); the supervisor then releases the lease."""
        self.handing_over = True
        if self.feeder is not None:
            self.feeder.boundary.set()

    def _open_destination(self, target: RelayTarget) -> str:
        """The plain URL, for the relay child's stdin only; the key is read only when the row is sealed. Asked
        before every connection: a streamer that lost the channel's lease opens no destination."""
        if self.ready.is_set() and not self.fenced():
            raise LeaseLost(f"channel {self.channel.id}: lease lost; not publishing to {target.shown}")
        key = load_stream_key(self.rt.settings) if is_sealed(target.stored) else None
        return open_url(key, target.stored, channel_id=self.channel.id)

    def _slates(self) -> tuple[Path, Path]:
        """The avatar's labelled idle loop, and a plain labelled card for when the avatar may not be shown. Taken
        from the media store when another streamer made them for this channel, avatar and policy (the stamp is
        checked, as at air), so a channel taken over after a crash goes back on air without rendering them."""
        folder = self.rt.data.segments / self.channel.id
        idle, card = folder / "slate.mp4", folder / "slate-card.mp4"
        with session_scope(self.rt.engine) as s:
            avatar = s.get(Avatar, self.show.avatar_id)
            bundle_key = avatar.bundle_path if avatar is not None and avatar.status == "ready" else None
        bundle = self.rt.local_dir(bundle_key) if bundle_key else None
        policy = channel_policy(self.rt, self.channel).digest()
        # Slates air under the same rule as any segment: stamped, for this channel, unmodified.
        if not self._reused(card, avatar_id=None, policy=policy):
            self._publish_slate(card, render_slate(self.rt, channel=self.channel, out=card), None)
        try:
            if bundle is None or not self.air.consent_holds(self.show.consent_id):
                raise BundleError("the avatar is deleted or its consent no longer holds")
            if not self._reused(idle, avatar_id=self.show.avatar_id, policy=policy):
                stamp = render_slate(self.rt, channel=self.channel, out=idle, bundle=bundle,
                                     avatar_id=self.show.avatar_id)
                check_stamp(self.rt.key, stamp, channel_id=self.channel.id, sha256=sha256_file(idle))
                self._publish_slate(idle, stamp, self.show.avatar_id)
        except BundleError as exc:  # an unusable bundle must not leave the channel without a slate
            log.warning("channel %s: idle loop unavailable (%s); airing a card slate", self.channel.id, exc)
            idle = card
        return idle, card

    def _reused(self, path: Path, *, avatar_id: str | None, policy: str) -> bool:
        """Fetch a slate made by another streamer from the store, when its stamp holds for these bytes, this
        channel and the policy in force, it shows `avatar_id` (None: the card), and it was encoded with this
        profile's video options (another media.video_encoder, CRF or GOP gives SPS/PPS that the segments rendered
        now would not join)."""
        if self.rt.store_is_data_dir and not path.exists():
            return False
        try:
            meta = json.loads(self.rt.store.read(self.rt.key_of(path) + SLATE_META))
            if meta.get("avatar_id") != avatar_id or meta.get("video") != video_args(self.rt.settings.media):
                return False
            stamp = PolicyStamp.from_dict(meta["stamp"])
            if stamp.policy != policy:
                return False
            local = self.rt.local(self.rt.key_of(path))
            check_stamp(self.rt.key, stamp, channel_id=self.channel.id, sha256=sha256_file(local))
        except Exception:  # noqa: BLE001 - none, stale, or not genuine: this streamer makes its own
            return False
        if local != path:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, path)
        log.info("channel %s: %s taken from the media store (stamp checked)", self.channel.id, path.name)
        return True

    def _publish_slate(self, path: Path, stamp: PolicyStamp, avatar_id: str | None) -> None:
        """The slate into the store too, with its stamp beside it (this host keeps airing its own copy): a
        revocation run on any host finds and deletes it, and a streamer that takes the channel over reuses it. A
        store outage does not keep the channel from airing."""
        try:
            self.rt.publish(path, keep_local=True)
            self.rt.store.put_bytes(self.rt.key_of(path) + SLATE_META,
                                      json.dumps({"stamp": stamp.to_dict(), "avatar_id": avatar_id,
                                                  "video": video_args(self.rt.settings.media)}).encode())
        except Exception as exc:  # noqa: BLE001
            log.warning("channel %s: slate %s not copied to the media store: %s", self.channel.id, path.name, exc)

    def _slate_now(self) -> Path:
        """The idle loop while the show's consent holds; the card the moment it does not (revocation)."""
        if self._idle != self._card and not self.air.consent_holds(self.show.consent_id):
            self._idle = self._card
        return self._idle

    def _slate_aired(self, path: Path, air_start: float, seconds: float) -> None:
        """After a piece of the clone's idle loop: once its consent no longer holds, the card airs from now on and
        the end of the clone's last frame on air is recorded (a revocation's certificate reads it, as it reads a
        segment cut on air). Recorded once; the card shows no one."""
        if path == self._card or seconds <= 0:
            return
        if self._idle != self._card and self.air.consent_holds(self.show.consent_id):
            return
        self._idle = self._card
        self.air.on_idle_off_air(self.show, air_start, seconds)

    def _run(self) -> None:
        try:
            self._air()
        finally:
            if self.on_done is not None:
                self.on_done()

    def _air(self) -> None:
        """Air the show until stopped; the FLV stream carries its own signed AIGC mark in onMetaData (POLICY M1)."""
        set_context(channel=self.channel.id, show=self.show.id)  # on every line this feeder thread logs
        cfg = self.rt.settings.streamer
        try:
            self._idle, self._card = self._slates()
        except Exception as exc:
            self.state, self.last_error = "failed", f"slate could not be made: {exc}"
            log.error("channel %s: %s", self.channel.id, self.last_error)
            return
        if not self.ready.is_set():
            self.state = "prepared"
            while not self.ready.wait(0.2):
                if self.stop.is_set():
                    self.state = "stopped"
                    return
        # The stream's own AIGC mark in the FLV onMetaData (M1); each segment inside carries its own marks.
        produce_id = new_produce_id()
        refs = json.dumps({"stream": produce_id, "channel": self.channel.id, "show": self.show.id,
                           "avatar": self.show.avatar_id, "consent": self.show.consent_id},
                          separators=(",", ":"), sort_keys=True)
        with session_scope(self.rt.engine) as s:  # so `studio verify` can name a recording of this stream
            audit.record(s, kind="stream.started", subject_id=self.channel.id,
                         data={"produce_id": produce_id, "show_id": self.show.id})
        meta = {"AIGC": aigc_metadata(self.rt.key, producer=self.rt.settings.producer, produce_id=produce_id,
                                      propagator=self.channel.name, propagate_id=self.show.id, reserved2=refs),
                "title": f"{self.channel.name} (AI avatar)"}
        pacer = Pacer(feeder_policy(cfg))

        def pace(exit: Exit) -> float | None:
            self.state = "restarting"
            return pacer(exit)

        # Checked every 50 ms: a feeder that ended at a hand-over's boundary lets the lease go at once.
        self.feeding = Supervised(f"channel {self.channel.id} feeder", lambda: self._feed(meta, cfg), pace=pace,
                                  final=(LeaseLost,), stop=self.stop, every=0.05)
        exit = self.feeding.run()
        if exit is not None and isinstance(exit.exception, LeaseLost):
            self.state, self.last_error = "lease lost", exit.error
            log.warning("channel %s: %s", self.channel.id, exit.error)
        else:
            self.state = "handed over" if self.handing_over else "stopped"
        log.info("channel %s: feeder ended (%s)", self.channel.id, self.state)

    def _feed(self, meta: dict, cfg: StreamerConfig) -> ThreadChild:
        """One run of the feeder, in a thread of its own; it ends at a hand-over or when asked to."""
        # A fresh one-time publish token for each start: the ingest accepts this feeder and nobody else.
        urls = [with_token(u, self.tokens.issue(self.channel.id, self.token)) for u in self.publish_urls] \
            if self.tokens is not None else self.publish_urls
        self.feeder = feeder = ChannelFeeder(
            destinations=urls, next_segment=self.air.next_segment, slate=self._slate_now, verify=self.air.verify,
            on_aired=self.air.on_aired, on_refused=self.air.on_refused, metadata=meta, lead_seconds=cfg.lead_seconds,
            still_allowed=self.air.still_allowed, fence=None if self.lease is None else self.fenced,
            on_slate_aired=self._slate_aired)

        def air(cancel: threading.Event) -> None:
            if self.handing_over:  # asked while this feeder was being made: its boundary was never set
                return
            self.state, self.started_at = "airing", self.started_at or time.time()
            feeder.run(cancel)

        return ThreadChild(air, name=f"feeder-{self.channel.id}-run")

    def status(self) -> dict:
        f = self.feeder
        return {"channel_id": self.channel.id, "show_id": self.show.id, "state": self.state,
                "host": self.lease.host if self.lease is not None else None, "lease_token": self.token,
                "airing": self.state == "airing", "airing_since": self.started_at,
                "aired_seconds": f.aired_seconds if f else 0.0, "segments_aired": f.segments_aired if f else 0,
                "slates_aired": f.slates_aired if f else 0, "refused": f.refused if f else 0,
                "breaks_aired": self.air.breaks_aired, "restarts": self.feeding.restarts if self.feeding else 0,
                "underruns": f.underruns if f else 0,
                "next_seq": self.air.next_seq,
                "last_error": self.last_error or (self.feeding.last_error if self.feeding else None),
                "destinations": self.relays.status(), "updated": time.time(),
                **self._lease_health()}

    def _lease_health(self) -> dict:
        """How this streamer's leases fare: the slowest renewal of the last minute against their length, and how
        often the streamer lost this channel's lease while airing it (the supervisor counts; a new runner starts
        after each loss, so the count outlives runners)."""
        if self.lease is None:
            return {"lease_losses": self.lease_losses}
        return {"lease_losses": self.lease_losses, "lease_seconds": self.lease.ttl,
                "lease_renewal_seconds": round(self.lease.slowest_renewal(), 3)}


def live_channels(rt: Runtime) -> list[tuple[Channel, Show, list[RelayTarget]]]:
    now = utcnow()
    out = []
    with session_scope(rt.engine) as s:
        shows = s.exec(select(Show).where(Show.status == "scheduled", Show.starts_at <= now)
                       .order_by(Show.starts_at.desc())).all()
        for show in shows:
            if show.ends_at is not None and show.ends_at <= now:
                continue
            channel = s.get(Channel, show.channel_id)
            rows = s.exec(select(Destination).where(Destination.channel_id == channel.id, Destination.enabled)
                          .order_by(Destination.id)).all()
            out.append((channel, show, [RelayTarget(id=d.id, stored=d.url, shown=shown_url(d.url, d.url_masked),
                                                    platform=d.platform) for d in rows]))
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s streamer %(levelname)s %(message)s")
    from workers.tasks import archive_segment_task

    rt = runtime()
    stop = threading.Event()

    def archive(segment_id: str) -> None:
        archive_segment_task.apply_async(args=[segment_id], queue="publish")

    cfg = rt.settings.streamer
    keeper = LeaseKeeper(lease_store(rt.settings, rt.engine), capacity=cfg.capacity, ttl=cfg.lease_seconds)
    streamer = Streamer(rt, keeper, archive=archive)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: (stop.set(), streamer.wake.set()))
    allocator.collect_every(stop)  # the feeders' demuxed containers, collected on a timer (workers.media.allocator)
    with PublishAuthServer(publish_auth_socket(rt.data.root), streamer.tokens):
        log.info("streamer supervisor started as %s (capacity %d channels, leases of %.0f s in the %s)",
                 keeper.owner, cfg.capacity, cfg.lease_seconds, cfg.lease_backend)
        streamer.run(stop)


class Streamer:
    """One `studio streamer`: claims channels by lease up to its capacity and its share, airs them, hands them
    over at a segment boundary when a streamer below its share asks, and lets go of any it lost at once.

    One pass a second (five while a hand-over it asked for is pending): heartbeat and renew every lease in one
    statement (one script on Redis: `streamer.lease_backend`); stop at once the channels whose lease is gone;
    start a hand-over where asked; release what ended; then claim free channels, or ask for one, by
    `studio.leases.plan`."""

    def __init__(self, rt: Runtime, keeper: LeaseKeeper, *, archive=None):
        self.rt, self.keeper, self.archive = rt, keeper, archive
        self.runners: dict[str, ChannelRunner] = {}
        self.tokens = PublishTokens(lease_valid=keeper.valid)
        self.consents = ConsentWatch(rt.engine, broker=rt.settings.redis).start()
        # A revoked clone's copies leave this host's cache too, not only the revoking host's.
        self.cache_purger = CachePurger.for_settings(rt.engine, rt.settings).start() \
            if has_cache(rt.settings) else None
        self.redis = rt.settings.redis.client(timeout=2, connect_timeout=2)
        cfg = rt.settings.streamer
        self.previews = PreviewShare(self.redis, hls_dir(rt.data.root), every=cfg.preview_seconds,
                                     max_bytes=cfg.preview_max_kb << 10)
        self.airing: tuple[str, ...] = ()  # channels on air after the last pass, for the preview thread
        self.asked: dict[str, float] = {}  # channels asked for -> when
        self.prepared: dict[str, ChannelRunner] = {}  # runners of asked channels, slates made, waiting for `go`
        self.wake = threading.Event()  # a feeder ended, or a signal: the next pass now
        self.lease_losses: Counter[str] = Counter()  # channel -> leases lost while airing it, since this started

    def run(self, stop: threading.Event) -> None:
        renewing = threading.Event()
        self.keeper.renew()
        self.keeper.renew_every(1.0, renewing, on_change=self.wake.set)
        self.previews.run_every(lambda: list(self.airing), renewing)  # decodes off this thread, at its own period
        try:
            while not stop.is_set():
                try:
                    self.step()
                except Exception:
                    log.exception("supervisor pass failed; retrying")
                self.wake.wait(0.2 if self.asked else 1.0)
                self.wake.clear()
        finally:
            for runner in [*self.runners.values(), *self.prepared.values()]:
                runner.stop.set()
            renewing.set()
            self.consents.stop()
            if self.cache_purger is not None:
                self.cache_purger.stop()
            for runner in [*self.runners.values(), *self.prepared.values()]:
                _retire(self.rt, runner)
            try:
                self.keeper.stop()  # a clean stop: the others take the channels at once, not after expiry
            except Exception:
                log.exception("releasing leases at stop failed; they expire in %.0f s", self.keeper.ttl)

    def step(self) -> None:
        held = self.keeper.held()  # renewed every second on its own thread (LeaseKeeper.renew_every)
        for cid, runner in list(self.runners.items()):
            lease = held.get(cid)
            if lease is None or lease.token != runner.token:
                log.warning("channel %s: lease lost (token %s); stopped", cid, runner.token)
                self._lost(runner)
                _retire(self.rt, self.runners.pop(cid))
            elif lease.handover_to and not runner.handing_over:
                log.info("channel %s: handing over to %s at the next segment boundary", cid, lease.handover_to)
                runner.hand_over()
        for cid, runner in list(self.runners.items()):
            if not runner.thread.is_alive():  # handed over, or the feeder gave up: let the channel go
                began = time.monotonic()
                if runner.state == "lease lost":  # the feeder's fence closed first (the local deadline passed)
                    self._lost(runner)
                _retire(self.rt, self.runners.pop(cid))
                self.keeper.release(cid, runner.token)
                log.info("channel %s %s: relays stopped and lease %d released in %.2f s", cid, runner.state,
                         runner.token, time.monotonic() - began)
        live: dict[str, tuple] = {}
        for channel, show, dests in live_channels(self.rt):  # newest show first: it wins its channel
            live.setdefault(channel.id, (channel, show, dests))
        for cid, runner in list(self.runners.items()):
            want = live.get(cid)
            if want is None or want[1].id != runner.show.id:  # the show ended or another took the channel
                final = _retire(self.rt, self.runners.pop(cid))
                if want is None:  # off air everywhere: say so (a channel that moved is the new owner's to report)
                    channel_status.publish(self.redis, {cid: final})
                    self.previews.forget(cid)
                    self.keeper.release(cid, runner.token)
                    held.pop(cid, None)
            else:
                runner.set_targets(want[2])  # destinations added, removed or changed: their relays only
        store = self.keeper.store
        holders = store.live_holders()
        caps = store.live_streamers(ttl=self.keeper.ttl)
        pending = store.handovers(live)
        todo = leases.plan(self.keeper.owner, live=sorted(live), holders=holders, capacities=caps, pending=pending)
        for cid in todo.drop:
            if cid in held:
                self.keeper.release(cid, held.pop(cid).token)
        for cid in todo.claim + [c for c in self.asked if c in live and c not in holders]:
            if cid not in self.runners and (token := self.keeper.claim(cid)) is not None:
                held[cid] = leases.Held(token)
                self.asked.pop(cid, None)
                ready = self.prepared.pop(cid, None)
                if ready is not None and ready.show.id == live[cid][1].id and ready.thread.is_alive():
                    self.runners[cid] = ready
                    ready.go(token)
                    log.info("channel %s airing show %s under lease token %d (handed over; prepared)", cid,
                             ready.show.id, token)
                elif ready is not None:
                    _retire(self.rt, ready)
        now = time.monotonic()
        for cid, owner in todo.ask:
            if store.ask_handover(channel_id=cid, owner=owner, to=self.keeper.owner):
                self.asked[cid] = now
                log.info("channel %s: asked %s to hand it over", cid, owner)
                if cid not in self.prepared:  # slates made while the owner finishes its segment
                    self.prepared[cid] = self._runner(live[cid], token=None)
        for cid in [c for c, t in self.asked.items() if now - t > 60 or c not in live]:
            self.asked.pop(cid)  # the owner never let go (or the show ended): plan afresh
        for cid in [c for c in self.prepared if c not in self.asked]:
            _retire(self.rt, self.prepared.pop(cid))
        for cid, lease in held.items():
            if cid in live and cid not in self.runners and self.keeper.valid(cid, lease.token):
                channel, show, targets = live[cid]
                self.runners[cid] = self._runner(live[cid], token=lease.token)
                log.info("channel %s airing show %s under lease token %d, relayed to %d destination(s)", cid,
                         show.id, lease.token, len(targets))
        statuses = {cid: runner.status() for cid, runner in self.runners.items()}
        for cid, status in statuses.items():
            write_json_atomic(self.rt.data.run / f"channel-{cid}.json", status)
        channel_status.publish(self.redis, statuses)  # what the API on any host shows
        self.airing = tuple(cid for cid, status in statuses.items() if status["airing"])

    def _lost(self, runner: ChannelRunner) -> None:
        self.lease_losses[runner.channel.id] += 1
        runner.lease_losses = self.lease_losses[runner.channel.id]

    def _runner(self, live: tuple, *, token: int | None) -> ChannelRunner:
        """A started runner for `live` = (channel, show, targets); token None: prepare only, air on `go`."""
        channel, show, targets = live
        runner = ChannelRunner(self.rt, channel, [local_ingest_url(self.rt, channel.id)], show, archive=self.archive,
                               targets=targets, tokens=self.tokens, lease=self.keeper, token=token,
                               consents=self.consents)
        runner.on_done = self.wake.set
        runner.lease_losses = self.lease_losses[channel.id]
        runner.start()
        return runner


def _retire(rt: Runtime, runner: ChannelRunner) -> dict:
    """Stop the runner and its relays; returns (and writes to data/run) its last status."""
    runner.stop.set()
    if runner.consents is not None and not runner.retired:
        runner.consents.unwatch(runner.show.consent_id)
    runner.retired = True
    relays = runner.relays.stop()
    runner.thread.join(timeout=10)
    final = {**runner.status(), "airing": False, "state": "stopped", "destinations": relays}
    write_json_atomic(rt.data.run / f"channel-{runner.channel.id}.json", final)
    return final


if __name__ == "__main__":
    main()
