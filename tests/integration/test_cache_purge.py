"""A revoked clone leaves the cache of every host, not only the revoking host's (POLICY C5): two hosts' cache
directories hold the avatar's bundle and segments; a revocation run on a third host announces it on a real Redis,
and both caches are purged within 2 s, other avatars' files untouched, each purge audited by its host's role. A
host that was down during the revocation purges on start, and the periodic reconcile catches a lost push."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from studio import audit_keys
from studio.config import Settings
from studio.db import make_engine
from studio.keys import init_all_keys, load_key
from studio.models import AuditEvent, Consent, Segment
from studio.runtime import Runtime
from studio.storage import DataDir, temp_beside
from studio.tls import RedisEndpoint
from tests.conftest import bind_audit_keys, db_show
from tests.integration.test_metrics_redis import redis_server  # noqa: F401  (fixture)
from workers.consent.cache_purge import CachePurger
from workers.consent.revocation import revoke_consent_direct

pytestmark = pytest.mark.serial  # wall-clock bounds: run alone (see the Makefile's test)


def _segment(engine, ids: dict, seq: int) -> str:
    """A rendered segment of the show's clone in the database; returns its file name in a cache."""
    with Session(engine) as s:
        seg = Segment(channel_id=ids["channel"], show_id=ids["show"], avatar_id=ids["avatar"],
                      consent_id=ids["consent"], text="x", seq=seq, state="ready")
        s.add(seg)
        s.commit()
        return f"{seq:08d}-{seg.produce_id}-a1"


def _fill(cache: Path, ids: dict, stems: list[str]) -> list[str]:
    """What a render worker's or streamer's cache holds of one clone (its bundle, segments, captions, slate);
    returns the keys."""
    keys = [f"bundles/{ids['avatar']}/manifest.json", f"bundles/{ids['avatar']}/mouth/units.npz",
            f"segments/{ids['channel']}/slate.mp4"]
    keys += [f"segments/{ids['channel']}/{stem}{ext}" for stem in stems for ext in (".mp4", ".vtt")]
    for key in keys:
        (cache / key).parent.mkdir(parents=True, exist_ok=True)
        (cache / key).write_bytes(b"media of " + key.encode())
    return keys


def _cached(cache: Path) -> set[str]:
    """The files in a cache now; read again when the purge removes a folder while it is walked."""
    while True:
        try:
            return {p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file() and p.name != ".lock"}
        except FileNotFoundError:
            continue


def _host_engine(db_url: str, role: str):
    """A host's own engine, signing audit events with its role's key only (as its role command binds it)."""
    engine = make_engine(db_url)
    bind_audit_keys(engine, (role,))
    return engine


def _control_runtime(tmp_path: Path, engine, redis_url: str) -> Runtime:
    settings = Settings(data_dir=str(tmp_path / "control"), services={"redis_url": redis_url})
    init_all_keys(settings)
    return Runtime(settings=settings, engine=engine, data=DataDir(settings.data_path).ensure(),
                   key=load_key(settings), audit_keys=audit_keys.bound(engine))


def test_a_revocation_on_one_host_purges_the_caches_of_two_others(redis_server, db_url, fresh_db,  # noqa: F811
                                                                   tmp_path):
    _, url = redis_server
    victim, other = db_show(fresh_db), db_show(fresh_db)
    victim_stems = [_segment(fresh_db, victim, seq) for seq in (1, 2)]
    other_stems = [_segment(fresh_db, other, 1)]
    hosts = {"render-a": ("render", tmp_path / "render-a" / "cache"), "stream-b": ("stream", tmp_path / "stream-b")}
    purgers, kept = [], {}
    for host, (role, cache) in hosts.items():
        cache.mkdir(parents=True)
        _fill(cache, victim, victim_stems)
        kept[host] = set(_fill(cache, other, other_stems))
        purgers.append(CachePurger(_host_engine(db_url, role), [cache], broker=RedisEndpoint(url), every=60.0,
                                   host=host).start())
    try:
        for p in purgers:
            assert p.listening.wait(5), "subscribed to the consent push"
        assert all(p.purged == 0 for p in purgers), "nothing revoked yet: the start-up reconcile purged nothing"

        control = _control_runtime(tmp_path, fresh_db, url)
        started = time.monotonic()
        revoking = threading.Thread(target=revoke_consent_direct, args=(control, victim["consent"]))
        revoking.start()
        purged_after = None
        while time.monotonic() - started < 5:
            if all(_cached(cache) == kept[host] for host, (_, cache) in hosts.items()):
                purged_after = time.monotonic() - started
                break
            time.sleep(0.02)
        revoking.join(timeout=30)
        print(f"\ncaches of two hosts purged {purged_after} s after the revocation on a third")
        assert purged_after is not None and purged_after <= 2.0, {h: _cached(c) for h, (_, c) in hosts.items()}
    finally:
        for p in purgers:
            p.stop()
    for host, (_, cache) in hosts.items():
        assert _cached(cache) == kept[host], f"{host}: another avatar's files were touched"

    with Session(fresh_db) as s:
        events = s.exec(select(AuditEvent).where(AuditEvent.kind == "cache.purged")).all()
    by_host = {ev.data["host"]: ev for ev in events}
    assert set(by_host) == set(hosts)
    assert by_host["render-a"].mac_role == "render" and by_host["stream-b"].mac_role == "stream"
    assert all(ev.subject_id == victim["consent"] and ev.data["files"] == 7 for ev in events)


def test_a_host_down_during_the_revocation_purges_on_start_and_by_the_periodic_reconcile(db_url, fresh_db,
                                                                                           tmp_path):
    victim, other, later = db_show(fresh_db), db_show(fresh_db), db_show(fresh_db)
    cache = tmp_path / "cache"
    victim_keys = set(_fill(cache, victim, [_segment(fresh_db, victim, 4)]))
    kept = set(_fill(cache, other, [_segment(fresh_db, other, 4)]))
    with Session(fresh_db) as s:  # revoked while this host was down: no push reached it
        s.get(Consent, victim["consent"]).status = "revoked"
        s.commit()
    assert victim_keys <= _cached(cache)

    purger = CachePurger(_host_engine(db_url, "render"), [cache], broker=None, every=0.3, host="render-b")
    purger.start()
    try:
        assert _cached(cache) == kept, "the start-up reconcile purged the revoked clone, and only it"
        assert purger.reconcile() == [], "nothing left to purge"

        # A copy filled after the purge (or a push lost while Redis was away): the next reconcile takes it.
        later_keys = set(_fill(cache, later, [_segment(fresh_db, later, 4)]))
        with Session(fresh_db) as s:
            s.get(Consent, later["consent"]).status = "expired"
            s.commit()
        deadline = time.monotonic() + 3
        while later_keys & _cached(cache) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _cached(cache) == kept
    finally:
        purger.stop()


def test_a_push_about_a_consent_in_force_purges_nothing(fresh_db, tmp_path):
    ids = db_show(fresh_db)
    cache = tmp_path / "cache"
    keys = set(_fill(cache, ids, [_segment(fresh_db, ids, 1)]))
    purger = CachePurger(fresh_db, [cache], broker=None, every=60.0)
    assert purger.purge_consent(ids["consent"], trigger="push") == []
    assert purger.purge_consent("no-such-consent", trigger="push") == []
    assert _cached(cache) == keys


def test_a_reconcile_period_of_zero_is_refused_naming_the_setting(fresh_db, tmp_path):
    with pytest.raises(ValueError, match="store.cache_reconcile_seconds"):
        CachePurger(fresh_db, [tmp_path], broker=None, every=0)


def _killed_fills(cache: Path, ids: dict, stems: list[str]) -> set[str]:
    """What a process killed while filling leaves of one clone: the temp files of its segment, captions and slate
    fills (named as studio.storage.atomic_path names them, holding part of the media), and the file an S3 download
    was writing beside one. Returns their keys."""
    folder = cache / "segments" / ids["channel"]
    temps = [temp_beside(folder / f"{stem}{ext}") for stem in stems for ext in (".mp4", ".vtt")]
    temps.append(temp_beside(folder / "slate.mp4"))
    temps.append(temps[0].with_name(temps[0].name + ".3fA09bC1"))
    for t in temps:
        t.write_bytes(b"half of a segment of " + ids["avatar"].encode())
    return {t.relative_to(cache).as_posix() for t in temps}


def test_fills_a_killed_process_left_in_flight_are_purged(fresh_db, tmp_path):
    """A streamer SIGKILLed while filling its cache leaves temp files with part of the clone's media in them; the
    revocation's purge removes them too, and so does the start-up reconcile of a host where nothing else of the
    clone is cached. Another clone's fills in flight stay (their writers are still at work)."""
    victim, other = db_show(fresh_db), db_show(fresh_db)
    pushed, restarted = tmp_path / "pushed", tmp_path / "restarted"
    kept = {}
    for cache in (pushed, restarted):
        cache.mkdir()
        victim_stems = [_segment(fresh_db, victim, 3 if cache == pushed else 5)]
        _killed_fills(cache, victim, victim_stems)
        kept[cache] = _killed_fills(cache, other, [_segment(fresh_db, other, 3 if cache == pushed else 5)])
    _fill(pushed, victim, [])  # a whole copy of the bundle and slate beside the fills

    with Session(fresh_db) as s:
        s.get(Consent, victim["consent"]).status = "revoked"
        s.commit()
    removed = CachePurger(fresh_db, [pushed], broker=None, every=60.0).purge_consent(victim["consent"],
                                                                                      trigger="push")
    assert sum(".part" in k for k in removed) == 4, removed
    assert _cached(pushed) == kept[pushed]

    purger = CachePurger(fresh_db, [restarted], broker=None, every=60.0).start()  # only fills of the clone cached
    purger.stop()
    assert purger.purged == 4
    assert _cached(restarted) == kept[restarted]
