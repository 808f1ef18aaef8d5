"""Every host's cache purged of a revoked clone (POLICY C5), not only the revoking host's.

A revocation deletes the clone's media from the store and from the revoking host's cache, and announces the
consent on Redis (`consent_watch.CHANNEL`). Each process that owns a local cache of the store (render, ingest and
publish workers, streamers) runs a `CachePurger`: on the push it removes its cached copies of the clone's media at
once (keys by `studio.clone_media`); on start, and every `store.cache_reconcile_seconds` after, it asks the
database which consents behind what it caches are revoked or expired (one query) and purges those, so a lost
push, a host that was down during the revocation or a copy re-filled meanwhile is caught. Each purge that
removed files is audited as `cache.purged`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

from celery.signals import worker_ready
from sqlalchemy.engine import Engine

from studio import audit
from studio.clone_media import SEGMENT_FILE, CloneMedia, clone_media, ended_consents_among
from studio.config import Settings
from studio.db import session_scope
from studio.storage import filled_name
from studio.store import purge_cached
from studio.tls import RedisEndpoint
from workers.streamer.consent_watch import CHANNEL

log = logging.getLogger("studio.cache")


def has_cache(settings: Settings) -> bool:
    """The processes of this host read the store through a local cache (studio.stores.store_for): a shared
    mount or S3 store is configured (`store.url`); the data directory as the store needs none."""
    return bool(settings.store.url)


def cached_ids(root: Path) -> tuple[set[str], set[str], set[str]]:
    """(avatar ids, consent ids, segment produce ids) of what the cache directory `root` holds, fills left in
    flight included."""
    avatars = {p.name for p in (root / "bundles").glob("*") if p.is_dir()}
    consents = {p.name for p in (root / "consents").glob("*") if p.is_dir()}
    produce_ids = {m["produce_id"] for p in (root / "segments").glob("*/*")
                   if (m := SEGMENT_FILE.fullmatch(filled_name(p.name) or p.name)) is not None}
    return avatars, consents, produce_ids


def purge_media(media: CloneMedia, cache_dirs: list[Path]) -> list[str]:
    """Remove the clone's files from each cache directory; returns the keys removed."""
    removed = []
    for root in cache_dirs:
        if not root.is_dir():
            continue
        keys = list(media.keys)
        for channel in media.channels:
            folder = root / "segments" / channel
            if folder.is_dir():
                keys += media.segment_keys(channel, (p.name for p in folder.iterdir() if p.is_file()))
        removed += purge_cached(keys, [root])
    return removed


class CachePurger:
    """Purges this process's cache directories of revoked clones: on the Redis push, on start, and every `every`
    seconds by the database."""

    def __init__(self, engine: Engine, cache_dirs: list[Path], *, broker: RedisEndpoint | None, every: float,
                 host: str | None = None):
        if every <= 0:
            raise ValueError(f"store.cache_reconcile_seconds must be above 0, got {every}")
        self.engine, self.cache_dirs, self.broker, self.every = engine, [Path(d) for d in cache_dirs], \
            broker, every
        self.host = host or socket.gethostname()
        self.listening = threading.Event()  # subscribed to the push channel (for the tests)
        self.purged = 0  # files removed, for the tests
        self._stop = threading.Event()
        self._lock = threading.Lock()  # a push and a reconcile never purge at once

    @classmethod
    def for_settings(cls, engine: Engine, settings: Settings) -> CachePurger:
        return cls(engine, [settings.cache_path], broker=settings.redis,
                   every=settings.store.cache_reconcile_seconds)

    def purge_consent(self, consent_id: str, *, trigger: str) -> list[str]:
        """Remove the cached media of `consent_id`'s clone when the consent is revoked or expired."""
        with self._lock, session_scope(self.engine) as s:
            media = clone_media(s, consent_id)
            if media is None:
                return []
            removed = purge_media(media, self.cache_dirs)
            if removed:
                self.purged += len(removed)
                log.info("consent %s %s: %d cached file(s) purged from %s", consent_id, trigger, len(removed),
                         ", ".join(map(str, self.cache_dirs)))
                audit.record(s, kind="cache.purged", subject_id=consent_id,
                             data={"host": self.host, "trigger": trigger, "files": len(removed),
                                   "avatar_ids": list(media.avatar_ids)})
            return removed

    def reconcile(self, *, trigger: str = "reconcile") -> list[str]:
        """Purge every revoked or expired consent's clone that a cache directory still holds; one query when
        none does."""
        avatars, consents, produce_ids = set(), set(), set()
        for root in self.cache_dirs:
            a, c, p = cached_ids(root)
            avatars, consents, produce_ids = avatars | a, consents | c, produce_ids | p
        with session_scope(self.engine) as s:
            ended = ended_consents_among(s, avatar_ids=avatars, consent_ids=consents, produce_ids=produce_ids)
        removed = []
        for consent_id in ended:
            removed += self.purge_consent(consent_id, trigger=trigger)
        return removed

    def start(self) -> CachePurger:
        """Reconcile now, then keep purging on pushes and by the database until `stop`."""
        self._reconcile_logged("start")
        threading.Thread(target=self._poll, name="cache-reconcile", daemon=True).start()
        if self.broker is not None:
            threading.Thread(target=self._listen, name="cache-purge-push", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _reconcile_logged(self, trigger: str) -> None:
        try:
            self.reconcile(trigger=trigger)
        except Exception as exc:  # noqa: BLE001 - the database is away: the next period tries again
            log.warning("cache reconcile failed (%s); retrying in %.0f s", type(exc).__name__, self.every)

    def _poll(self) -> None:
        while not self._stop.wait(self.every):
            self._reconcile_logged("reconcile")

    def _listen(self) -> None:

        while not self._stop.is_set():
            try:
                client = self.broker.client(timeout=None, connect_timeout=5)
                sub = client.pubsub(ignore_subscribe_messages=True)
                sub.subscribe(CHANNEL)
                self.listening.set()
                for msg in sub.listen():
                    if self._stop.is_set():
                        break
                    if msg.get("type") == "message":
                        data = msg.get("data")
                        self._on_push(data.decode() if isinstance(data, bytes) else str(data))
            except Exception as exc:  # noqa: BLE001 - Redis away: the periodic reconcile covers; listen again
                self.listening.clear()
                log.warning("consent push channel lost (%s); caches are reconciled every %.0f s",
                            type(exc).__name__, self.every)
                self._stop.wait(2.0)

    def _on_push(self, consent_id: str) -> None:
        try:
            self.purge_consent(consent_id, trigger="push")
        except Exception as exc:  # noqa: BLE001 - a bad id or the database away: the reconcile catches it
            log.warning("purging the cache for consent %r failed (%s); the reconcile retries",
                        consent_id[:64], type(exc).__name__)


def start_for_celery_worker(settings: Settings) -> CachePurger | None:
    """In a Celery worker's main process: a purger on an engine of its own (disposed in forked pool processes,
    which build their own runtime), signing with this process's audit roles; None without a local cache."""
    if not has_cache(settings):
        return None
    from studio import audit_keys
    from studio.db import make_engine
    from studio.keys import load_audit_keyring
    from studio.runtime import process_audit_roles

    engine = make_engine(settings.db_url)
    audit_keys.bind(engine, load_audit_keyring(settings, process_audit_roles()))
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    return CachePurger.for_settings(engine, settings).start()


@worker_ready.connect
def _on_worker_ready(sender, **_) -> None:
    """Beside the worker (the first reconcile walks the cache), never holding up its first task."""
    from studio.config import load_settings

    def start() -> None:
        try:
            start_for_celery_worker(load_settings())
        except Exception:
            log.exception("the cache purger of worker %s did not start; revoked clones stay in this host's cache "
                          "until evicted", getattr(sender, "hostname", "?"))

    threading.Thread(target=start, name="cache-purger-start", daemon=True).start()
