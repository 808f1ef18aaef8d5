"""/metrics against a real migrated SQLite database with rows of our own, status files written the way the streamer
writes them, and a broker that answers (a stand-in), is away, or hangs: the values exported, a valid exposition,
no stream key in any label, and the Grafana dashboard and alert rules naming only metrics that are exported."""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from api.metrics import BROKER_TIMEOUT_S, collect, metric_families, priority_list, safe_url, snapshot
from api.ops_view import overview
from studio import audit
from studio.config import Settings
from studio.db import session_scope
from studio.models import AuditEvent, Channel, Segment, Show, utcnow
from studio.planner import estimate_seconds
from tests.conftest import ROOT, db_show
from tests.media_helpers import free_port
from workers.queue_policy import PRIORITY_STEPS
from workers.streamer.relay import DestinationRelay, RelayTarget
from workers.worker_report import CPU, Device, record_render, record_stall, record_start

pytestmark = pytest.mark.serial  # wall-clock bounds: run alone (see the Makefile's test)

WPM = Settings().tts.words_per_minute
KEY = "sk_live_9f8e7d6c5b4a"  # a stream key that must never reach /metrics


def parse(body: bytes) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of an exposition; parsing fails on an invalid one."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(samples: dict, metric: str, /, **labels) -> float:
    return samples[(metric, frozenset(labels.items()))]


def names_of(samples: dict, name: str) -> list[dict]:
    return [dict(labels) for (n, labels) in samples if n == name]


@pytest.fixture
def world(fresh_db, tmp_path):
    ids = db_show(fresh_db)
    run = tmp_path / "run"
    run.mkdir()
    rt = SimpleNamespace(engine=fresh_db, settings=Settings(), data=SimpleNamespace(run=run))
    return rt, ids


def scrape(rt, client=None, now=None) -> dict:
    with session_scope(rt.engine) as s:
        return parse(collect(s, rt, client, now=now))


def add_rows(rt, ids, rows: list[dict]) -> None:
    with session_scope(rt.engine) as s:
        show = s.get(Show, ids["show"])
        for seq, fields in enumerate(rows):
            s.add(Segment(channel_id=show.channel_id, show_id=show.id, avatar_id=show.avatar_id,
                          consent_id=show.consent_id, script_id=ids["script"], seq=seq, **fields))


class FakeRedis:
    """Answers LLEN and HLEN from a dict, through a pipeline, like redis.Redis."""

    def __init__(self, sizes: dict[str, int]):
        self.sizes, self.asked = sizes, []

    def pipeline(self, transaction: bool = True):
        return _FakePipe(self)

    def scan_iter(self, match=None, count=None):
        return iter(())  # no streamer shares a channel status on this broker


class _FakePipe:
    def __init__(self, r: FakeRedis):
        self.r, self.keys = r, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def llen(self, key):
        self.keys.append(key)
        return self

    hlen = llen

    def execute(self):
        self.r.asked += self.keys
        return [self.r.sizes.get(k, 0) for k in self.keys]


# --- the plan: buffer, ahead, air lag, queued renders -------------------------------------------------------------
def test_buffer_ahead_and_air_lag_per_channel(world):
    rt, ids = world
    now = utcnow()
    words = "Tap the cart below to see the Glow Serum bundle today."
    add_rows(rt, ids, [
        dict(text="aired", state="aired", duration_s=5.0, air_at=now - timedelta(seconds=200)),
        dict(text="on air", state="ready", duration_s=4.0, air_at=now - timedelta(seconds=90)),
        dict(text="next", state="ready", duration_s=6.5, air_at=now - timedelta(seconds=80)),
        dict(text=words, state="rendering", air_at=now - timedelta(seconds=70)),
        dict(text=words, state="planned", task_id="render-a", air_at=now - timedelta(seconds=60),
             planned_at=now - timedelta(seconds=45), updated_at=now - timedelta(seconds=45)),
        dict(text=words, state="planned", air_at=now),  # not queued: not ahead
        dict(text="", kind="break", state="ready", duration_s=20.0, air_at=now + timedelta(seconds=10)),
        dict(text=words, state="failed", attempts=1, air_at=now + timedelta(seconds=30)),  # a retry will come
        dict(text=words, state="failed", attempts=4, air_at=now + timedelta(seconds=40)),  # given up
        dict(text="refused", state="refused", duration_s=3.0, air_at=now + timedelta(seconds=50)),
    ])
    with session_scope(rt.engine) as s:
        idle = Channel(name="idle", territories=["US"])
        s.add(idle)
        s.flush()
        idle_id = idle.id
    m = scrape(rt, now=now)
    cid, est = ids["channel"], estimate_seconds(words, WPM)
    assert value(m, "studio_channel_buffer_seconds", channel=cid) == pytest.approx(10.5)  # 4.0 + 6.5, no break
    assert value(m, "studio_channel_ahead_seconds", channel=cid) == pytest.approx(10.5 + 3 * est)
    assert value(m, "studio_channel_planned_seconds", channel=cid) == pytest.approx(10.5 + 5 * est)
    assert value(m, "studio_channel_air_lag_seconds", channel=cid) == pytest.approx(90.0)
    assert value(m, "studio_channel_next_air_seconds", channel=cid) == 0
    assert value(m, "studio_render_oldest_queued_seconds", queue="render.cpu") == pytest.approx(45.0)
    assert value(m, "studio_render_oldest_queued_seconds", queue="render.gpu") == 0
    # Queued: the PLANNED one with a task id and the FAILED one awaiting its retry.
    assert value(m, "studio_render_queued_segments", channel=cid, queue="render.cpu") == 2
    assert value(m, "studio_channel_buffer_target_seconds") == rt.settings.streamer.buffer_target_seconds
    assert value(m, "studio_channel_info", channel=cid, name="main") == 1
    # A channel with nothing planned: an empty buffer, and no air-lag sample rather than a made-up 0.
    assert value(m, "studio_channel_buffer_seconds", channel=idle_id) == 0
    assert {"channel": idle_id} not in names_of(m, "studio_channel_air_lag_seconds")
    assert value(m, "studio_segments", state="refused") == 1
    assert value(m, "studio_segments", state="ready") == 3 and value(m, "studio_segments", state="skipped") == 0


def test_a_channel_ahead_of_its_plan_has_no_lag_and_unscheduled_rows_no_sample(world):
    rt, ids = world
    now = utcnow()
    add_rows(rt, ids, [dict(text="soon", state="ready", duration_s=4.0, air_at=now + timedelta(seconds=300))])
    m = scrape(rt, now=now)
    assert value(m, "studio_channel_air_lag_seconds", channel=ids["channel"]) == 0
    assert value(m, "studio_channel_next_air_seconds", channel=ids["channel"]) == pytest.approx(300.0)
    with session_scope(rt.engine) as s:
        s.exec(select(Segment)).one().air_at = None
    m = scrape(rt, now=now)
    assert names_of(m, "studio_channel_air_lag_seconds") == [] and names_of(m, "studio_channel_next_air_seconds") == []
    assert value(m, "studio_render_oldest_queued_seconds", queue="render.cpu") == 0  # nothing queued
    assert names_of(m, "studio_render_queued_segments") == []


# --- audit log: consent events and refusals ------------------------------------------------------------------------
def test_consent_events_and_refusals_are_counted_by_kind(world):
    rt, ids = world
    events = (["consent.granted"] * 2 + ["consent.revoked", "consent.expired"]
              + ["segment.refused"] * 3 + ["show.refused", "segment.cancelled", "segment.aired", "show.created"])
    with session_scope(rt.engine) as s:
        for kind in events:
            audit.record(s, kind=kind, subject_id=ids["consent"])
        # A kind record() does not know (today's table refuses it), as an older log may hold: counted all the same.
        s.add(AuditEvent(kind="consent.something_new", subject_id=ids["consent"], prev_hash="-", hash="x" * 64))
    m = scrape(rt)
    assert value(m, "studio_consent_events_total", kind="consent.granted") == 2
    assert value(m, "studio_consent_events_total", kind="consent.revoked") == 1
    assert value(m, "studio_consent_events_total", kind="consent.expired") == 1
    assert value(m, "studio_consent_events_total", kind="consent.something_new") == 1  # any consent.* kind
    assert value(m, "studio_consent_events_total", kind="consent.refused") == 0  # known kinds start at 0
    assert value(m, "studio_refusal_events_total", kind="segment.refused") == 3
    assert value(m, "studio_refusal_events_total", kind="show.refused") == 1
    assert value(m, "studio_refusal_events_total", kind="segment.cancelled") == 1
    assert value(m, "studio_refusal_events_total", kind="segment.skipped") == 0
    assert {d["kind"] for d in names_of(m, "studio_refusal_events_total")} == {
        "segment.refused", "segment.cancelled", "segment.skipped", "show.refused"}


# --- workers --------------------------------------------------------------------------------------------------------
def test_worker_fps_realtime_factor_and_up(world):
    rt, _ = world
    now = utcnow()
    record_start(rt.engine, name="render@gpu1", queues=["render"], device=Device("NVIDIA H100", 81559), cpu_count=16,
                 now=now - timedelta(seconds=30))
    record_render(rt.engine, name="render@gpu1", frames=250, seconds=2.0, fps=25, now=now - timedelta(seconds=10))
    record_start(rt.engine, name="render@old", queues=["render"], device=CPU, cpu_count=2,
                 now=now - timedelta(minutes=5))
    record_start(rt.engine, name="render@gone", queues=["render"], device=CPU, cpu_count=2,
                 now=now - timedelta(days=2))
    m = scrape(rt, now=now)
    gpu = {"worker": "render@gpu1", "device": "NVIDIA H100", "queues": "render"}
    assert value(m, "studio_worker_render_fps", **gpu) == pytest.approx(125.0)
    assert value(m, "studio_worker_realtime_factor", **gpu) == pytest.approx(5.0)
    assert value(m, "studio_worker_renders_total", **gpu) == 1
    assert value(m, "studio_worker_up", **gpu) == 1
    assert value(m, "studio_worker_last_seen_seconds", **gpu) == pytest.approx(10.0)
    assert value(m, "studio_worker_stalled_renders", **gpu) == 0
    old = {"worker": "render@old", "device": "cpu", "queues": "render"}
    assert value(m, "studio_worker_up", **old) == 0  # quiet for 5 minutes: lost
    assert old not in names_of(m, "studio_worker_render_fps")  # never rendered: no fps sample
    assert [d["worker"] for d in names_of(m, "studio_worker_up")] == ["render@gpu1", "render@old"]  # a day: dropped

    # A render stuck in the GPU holds a slot of the worker after its segment went elsewhere: ops see it, on /metrics
    # and on the ops page, with an alert that says what to do.
    record_stall(rt.engine, name="render@gpu1", segment_id="seg-1", attempt=2, stalled=True, pid=1, now=now)
    assert value(scrape(rt, now=now), "studio_worker_stalled_renders", **gpu) == 1
    with session_scope(rt.engine) as s:
        view = overview(snapshot(metric_families(s, rt, now=now)))
    assert view["workers"]["render@gpu1"]["stalled_renders"] == 1
    [alert] = [a for a in view["alerts"] if a["alert"] == "StudioRenderStalled"]
    assert alert["worker"] == "render@gpu1" and "1 render(s) stuck" in alert["message"]
    assert "restart the worker" in alert["message"]
    record_stall(rt.engine, name="render@gpu1", segment_id="seg-1", attempt=2, stalled=False, pid=1, now=now)
    with session_scope(rt.engine) as s:
        view = overview(snapshot(metric_families(s, rt, now=now)))
    assert view["workers"]["render@gpu1"]["stalled_renders"] == 0
    assert not [a for a in view["alerts"] if a["alert"] == "StudioRenderStalled"]


# --- stream health from the streamer's status files ---------------------------------------------------------------
def relay(dest_id: str, shown: str, reports: list[dict]) -> dict:
    """The status the streamer writes for one destination, from a real DestinationRelay fed the child's reports."""
    r = DestinationRelay(RelayTarget(id=dest_id, stored="sealed:x", shown=shown, platform="youtube"),
                         source="rtmp://127.0.0.1:1/live/c", open_url=lambda: "rtmp://unused/app/k")
    for msg in reports:
        r._apply(msg)
    return r.status()


def channel_status(rt, ids, destinations: list[dict], **counters) -> dict:
    """A channel's status as ChannelRunner.status() writes it (its real keys), with the counters given."""
    from studio.lease_store import DatabaseLeases
    from workers.streamer.leasing import LeaseKeeper
    from workers.streamer.supervisor import ChannelRunner

    with session_scope(rt.engine) as s:
        channel, show = s.get(Channel, ids["channel"]), s.get(Show, ids["show"])
        s.expunge_all()
    keeper = LeaseKeeper(DatabaseLeases(rt.engine), owner="stream-a:1:x", host="stream-a", ttl=5.0)
    status = ChannelRunner(rt, channel, ["rtmp://127.0.0.1:1/live/c"], show, archive=lambda _: None, lease=keeper,
                           token=1).status()
    assert set(counters) <= set(status), set(counters) - set(status)
    return {**status, **counters, "destinations": destinations}


def test_stream_health_per_channel_and_destination(world):
    rt, ids = world
    live = relay("d-live", "rtmp://a.rtmp.youtube.com/live2/****", [
        {"event": "attempt"}, {"event": "live"}, {"event": "failed", "error": "reset", "failures": 1},
        {"event": "attempt"}, {"event": "live"}, {"event": "healthy"}, {"event": "failed", "error": "x"},
        {"event": "attempt"}, {"event": "live", "bytes": 1_500_000, "seconds": 12.0}])
    down = relay("d-down", "rtmps://live.example.com:443/app/****", [
        {"event": "attempt"}, {"event": "failed", "error": "refused"}, {"event": "attempt"}, {"event": "attempt"}])
    status = channel_status(rt, ids, [live, down], airing=True, state="airing", aired_seconds=321.5, segments_aired=40,
                            slates_aired=7, breaks_aired=2, refused=1, underruns=3, restarts=1, lease_losses=2,
                            lease_renewal_seconds=3.1, lease_seconds=5.0, updated=time.time() - 4)
    (rt.data.run / f"channel-{ids['channel']}.json").write_text(json.dumps(status))
    (rt.data.run / "channel-broken.json").write_text("{not json")  # skipped, not a 500
    m = scrape(rt)
    cid = ids["channel"]
    assert value(m, "studio_channel_airing", channel=cid) == 1
    assert value(m, "studio_channel_aired_seconds_total", channel=cid) == 321.5
    assert value(m, "studio_channel_segments_aired_total", channel=cid) == 40
    assert value(m, "studio_channel_slates_aired_total", channel=cid) == 7
    assert value(m, "studio_channel_breaks_aired_total", channel=cid) == 2
    assert value(m, "studio_channel_refused_total", channel=cid) == 1
    assert value(m, "studio_channel_underruns_total", channel=cid) == 3
    assert value(m, "studio_channel_restarts_total", channel=cid) == 1
    assert value(m, "studio_channel_lease_losses_total", channel=cid) == 2
    assert value(m, "studio_channel_lease_renewal_seconds", channel=cid) == 3.1
    assert value(m, "studio_channel_lease_seconds", channel=cid) == 5.0
    assert 4 <= value(m, "studio_channel_status_age_seconds", channel=cid) < 10
    up = {"channel": cid, "destination": "d-live", "platform": "youtube", "url": "rtmp://a.rtmp.youtube.com/live2/****"}
    assert value(m, "studio_destination_up", **up) == 1
    assert value(m, "studio_destination_reconnects_total", **up) == 2  # live three times: two reconnects
    assert value(m, "studio_destination_connect_attempts", **up) == 1  # attempts since the last healthy run
    assert value(m, "studio_destination_relayed_bytes_total", **up) == 1_500_000
    assert value(m, "studio_destination_relayed_seconds_total", **up) == 12.0
    dn = {"channel": cid, "destination": "d-down", "platform": "youtube", "url": "rtmps://live.example.com:443/app/****"}
    assert value(m, "studio_destination_up", **dn) == 0
    assert value(m, "studio_destination_reconnects_total", **dn) == 0
    assert value(m, "studio_destination_connect_attempts", **dn) == 3


@pytest.mark.parametrize(("renewal", "airing", "alerted"), [(3.1, True, True), (2.5, True, True), (2.4, True, False),
                                                      (3.1, False, False)])
def test_a_slow_lease_renewal_raises_an_alert_on_an_airing_channel(world, renewal, airing, alerted):
    """Half the lease or more, on a channel on air: StudioLeaseRenewalSlow, with how long it took, of how long the
    lease lasts, and how often the channel was lost so far (test_failures makes one on the real stack)."""
    rt, ids = world
    status = channel_status(rt, ids, [], airing=airing, state="airing" if airing else "stopped", lease_losses=1,
                            lease_renewal_seconds=renewal, lease_seconds=5.0, updated=time.time())
    (rt.data.run / f"channel-{ids['channel']}.json").write_text(json.dumps(status))
    with session_scope(rt.engine) as s:
        view = overview(snapshot(metric_families(s, rt)))
    slow = [a for a in view["alerts"] if a["alert"] == "StudioLeaseRenewalSlow"]
    assert bool(slow) == alerted, view["alerts"]
    if alerted:
        assert slow[0]["channel"] == ids["channel"] and slow[0]["severity"] == "warning"
        assert f"took {renewal:.1f} s of the 5 s they last" in slow[0]["message"]
        assert "lost 1 time(s)" in slow[0]["message"] and "streamer.lease_seconds" in slow[0]["message"]
    [channel] = [c for c in view["channels"] if c["id"] == ids["channel"]]
    assert (channel["lease_renewal_seconds"], channel["lease_seconds"], channel["lease_losses"]) == (renewal, 5.0, 1)


def test_no_stream_key_reaches_metrics_even_from_an_unmasked_status_file(world):
    rt, ids = world
    urls = [f"rtmp://a.rtmp.youtube.com/live2/{KEY}", f"rtmps://bob:{KEY}@live.example.com:443/app/{KEY}?auth={KEY}",
            f"srt://ingest.example.com:9000?streamid={KEY}", f"rtmp://ingest.example.com/{KEY}",
            f"https://ingest.example.com/whip/{KEY}#{KEY}", f"not a url {KEY}", "(sealed destination)"]
    dests = [relay(f"d{i}", url, []) for i, url in enumerate(urls)]
    status = channel_status(rt, ids, dests, airing=True)
    (rt.data.run / f"channel-{ids['channel']}.json").write_text(json.dumps(status))
    with session_scope(rt.engine) as s:
        body = collect(s, rt)
    assert KEY not in body.decode()
    shown = [d["url"] for d in sorted(names_of(parse(body), "studio_destination_up"), key=lambda d: d["destination"])]
    assert shown == ["rtmp://a.rtmp.youtube.com/live2/****", "rtmps://live.example.com:443/app/****",
                     "srt://ingest.example.com:9000", "rtmp://ingest.example.com/****",
                     "https://ingest.example.com/whip/****", "(hidden)", "(sealed destination)"]
    assert safe_url("rtmp://[::1]:1935/app/key") == "rtmp://[::1]:1935/app/****"


# --- the broker -----------------------------------------------------------------------------------------------------
def test_priority_lists_are_kombus_own_names():
    from kombu.transport.redis import Channel as RedisChannel

    kombu = SimpleNamespace(sep=RedisChannel.sep, priority=lambda n: RedisChannel.priority(
        SimpleNamespace(priority_steps=list(PRIORITY_STEPS)), n))
    for level in PRIORITY_STEPS:
        assert priority_list("render", level) == RedisChannel._q_for_pri(kombu, "render", level)
    assert priority_list("render", 0) == "render" and priority_list("render", 7) == "render\x06\x167"


def test_queue_depth_sums_the_priority_lists_of_each_queue(world):
    rt, _ = world
    fake = FakeRedis({"render.cpu": 2, priority_list("render.cpu", 3): 1, priority_list("render.cpu", 9): 4,
                      priority_list("render.gpu", 1): 3, "ingest": 1, "unacked": 2, "publishx": 5})
    m = scrape(rt, fake)
    assert value(m, "studio_broker_up") == 1
    assert {q: value(m, "studio_queue_depth", queue=q) for q in ("ingest", "render.cpu", "render.gpu", "publish")} \
        == {"ingest": 1, "render.cpu": 7, "render.gpu": 3, "publish": 0}
    assert value(m, "studio_queue_depth_by_priority", queue="render.cpu", priority="3") == 1
    assert value(m, "studio_queue_depth_by_priority", queue="render.cpu", priority="0") == 2
    assert value(m, "studio_broker_unacked_messages") == 2
    assert len(fake.asked) == 4 * len(PRIORITY_STEPS) + 1  # one pipeline


def test_a_broker_that_is_down_or_hangs_gives_broker_up_0_quickly(world):
    rt, _ = world
    refused = redis.Redis(host="127.0.0.1", port=free_port(), socket_timeout=BROKER_TIMEOUT_S,
                          socket_connect_timeout=BROKER_TIMEOUT_S)
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hangs = redis.Redis(host="127.0.0.1", port=silent.getsockname()[1], socket_timeout=BROKER_TIMEOUT_S,
                            socket_connect_timeout=BROKER_TIMEOUT_S)
        for client in (refused, hangs):
            started = time.monotonic()
            m = scrape(rt, client)
            assert time.monotonic() - started < 3 * BROKER_TIMEOUT_S
            assert value(m, "studio_broker_up") == 0
            assert names_of(m, "studio_queue_depth") == [] and names_of(m, "studio_broker_unacked_messages") == []
            assert value(m, "studio_segments", state="planned") == 0  # the rest is still there


TOKEN = "metrics-token-for-tests-0123456789"


def test_the_route_answers_200_in_the_prometheus_format_with_redis_away(world):
    from api.app import create_app

    rt, _ = world
    rt.settings = Settings(services={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}, metrics_token=TOKEN)
    with TestClient(create_app(rt)) as client:
        started = time.monotonic()
        r = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        elapsed = time.monotonic() - started
    assert r.status_code == 200 and elapsed < 3
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = parse(r.content)
    assert value(m, "studio_broker_up") == 0 and value(m, "studio_channel_buffer_target_seconds") == 120


# --- the dashboard and the alert rules name only what is exported -------------------------------------------------
INFRA = ROOT / "infra"
METRIC = re.compile(r"\bstudio_[a-z0-9_]+")


def exported_names(rt) -> set[str]:
    """Every sample name /metrics can export: families with no sample here count too (HELP/TYPE lines)."""
    fake = FakeRedis({})
    with session_scope(rt.engine) as s:
        body = collect(s, rt, fake).decode()
    names = set()
    for family in text_string_to_metric_families(body):
        names |= {family.name + ("_total" if family.type == "counter" else "")} | {s.name for s in family.samples}
    return names


def exprs_in(node) -> list[str]:
    """Every PromQL string in a dashboard (panel targets, variable queries) or a rule file."""
    if isinstance(node, dict):
        out = [v for k, v in node.items() if k in ("expr", "definition") and isinstance(v, str)]
        if isinstance(node.get("query"), str):
            out.append(node["query"])
        return out + [e for v in node.values() for e in exprs_in(v)]
    if isinstance(node, list):
        return [e for v in node for e in exprs_in(v)]
    return []


@pytest.mark.parametrize("path", ["grafana/dashboard.json", "prometheus/alerts.yml"])
def test_dashboard_and_alerts_use_only_exported_metrics(world, path):
    rt, _ = world
    text = (INFRA / path).read_text()
    doc = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    exprs = exprs_in(doc)
    used = {name for e in exprs for name in METRIC.findall(e)}
    assert len(exprs) >= 7 and len(used) >= 5, exprs
    assert used <= exported_names(rt), used - exported_names(rt)


def test_dashboard_and_prometheus_config_are_wired():
    dash = json.loads((INFRA / "grafana/dashboard.json").read_text())
    assert dash["schemaVersion"] >= 39
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dash["templating"]["list"])
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    assert all(p["datasource"]["uid"] == "${datasource}" and p["targets"] for p in panels)
    used = {name for e in exprs_in(dash) for name in METRIC.findall(e)}
    for wanted in ("studio_queue_depth", "studio_worker_render_fps", "studio_channel_buffer_seconds",
                   "studio_channel_air_lag_seconds", "studio_destination_up", "studio_destination_reconnects_total",
                   "studio_consent_events_total", "studio_refusal_events_total"):
        assert wanted in used, wanted
    prom = yaml.safe_load((INFRA / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:8700"]
    assert all((INFRA / Path(f)).exists() for f in prom["rule_files"])
    rules = yaml.safe_load((INFRA / "prometheus/alerts.yml").read_text())["groups"][0]["rules"]
    alerts = {r["alert"]: r["expr"] for r in rules}
    assert {"StudioBufferLow", "StudioDestinationDown", "StudioWorkerLost", "StudioAirLag"} <= set(alerts)
    assert "studio_worker_up == 0" in alerts["StudioWorkerLost"] and "> 60" in alerts["StudioAirLag"]
