"""Prometheus metrics, read from state at each scrape: the database (segments, workers, audit log), the status files
the streamer writes every second (`data/run/channel-<id>.json`) and the Redis broker (queue depths).

`collect(session, rt, redis_client)` returns the exposition; `GET /metrics` (api.routers.ops) serves it. The broker
is asked with a short timeout: when Redis does not answer, /metrics still answers at once with `studio_broker_up 0`
and no queue metrics. Destinations are labelled with their id and their URL reduced to scheme, host, port and path
with the last path part (the stream key) masked: never a key, whatever a status file holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import redis
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func
from sqlmodel import Session, select

from studio.models import AuditEvent, Avatar, Channel, Segment, WorkerInfo, utcnow
from studio.segments import TERMINAL, SegmentState
from workers.plan.scheduled import row_seconds
from workers.queue_policy import (
    MAX_RENDER_ATTEMPTS,
    PRIORITY_STEPS,
    QUEUES,
    RENDER_QUEUES,
    QueueError,
    queue_for_renderer,
)
from workers.streamer import status as channel_status
from workers.worker_report import is_stale

log = logging.getLogger("studio.metrics")
S = SegmentState

BROKER_TIMEOUT_S = 0.5  # connect and read: a scrape must not hang on a broker that is away
WORKER_FORGET_AFTER = timedelta(days=1)  # a worker row not refreshed for this long is dropped (drained, not lost)
CONSENT_KINDS = ("consent.phrase_issued", "consent.granted", "consent.refused", "consent.pending_review",
                 "consent.approved", "consent.rejected", "consent.script_approved", "consent.revoked",
                 "consent.expired", "consent.renders_stopped", "consent.deletion_certificate")
REFUSAL_KINDS = ("segment.refused", "segment.cancelled", "segment.skipped", "show.refused")
URL_PLACEHOLDERS = frozenset({"", "(sealed destination)"})  # kept as they are: relay.shown_url's stand-in, or none
OPEN_STATES = [str(s) for s in SegmentState if s not in TERMINAL]  # not yet aired, refused, skipped or cancelled


def collect(session: Session, rt, redis_client: redis.Redis | None = None, *, now: datetime | None = None) -> bytes:
    """The Prometheus text exposition of everything below. `rt` needs `settings` and `data.run`; `now` is naive
    UTC like the database. Without `redis_client` the broker is not asked (no broker metrics at all)."""
    return generate_latest(_Families(metric_families(session, rt, redis_client, now=now)))


def metric_families(session: Session, rt, redis_client: redis.Redis | None = None, *,
                    now: datetime | None = None) -> list[Metric]:
    now = now or utcnow()
    families = [*_segment_metrics(session, now), *_channel_plan_metrics(session, rt, now),
                *_worker_metrics(session, now), *_audit_metrics(session),
                *_stream_metrics(channel_status.read_all(redis_client, rt.data.run), time.time())]
    if redis_client is not None:
        families += _broker_metrics(redis_client)
    return families


def snapshot(families: list[Metric]) -> dict[str, list[dict]]:
    """The same figures as JSON for the ops page: {metric name: [{"labels": {...}, "value": v}, ...]}."""
    out: dict[str, list[dict]] = {}
    for fam in families:
        for sample in fam.samples:
            name = sample.name.removesuffix("_total") if fam.type == "counter" else sample.name
            if sample.name.endswith("_created"):
                continue
            out.setdefault(name, []).append({"labels": dict(sample.labels), "value": sample.value})
    return out


def broker_client(rt) -> redis.Redis:
    """A client for the Celery broker that gives up after BROKER_TIMEOUT_S: the URL the workers use (settings
    `services.redis_url`, which STUDIO_REDIS_URL sets, else the embedded redis-server's)."""
    return rt.settings.redis.client(timeout=BROKER_TIMEOUT_S, connect_timeout=BROKER_TIMEOUT_S)


class _Families:
    """What `generate_latest` reads: a fixed list of metric families, built for one scrape."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


# --- the broker --------------------------------------------------------------------------------------------------
def priority_list(queue: str, level: int) -> str:
    """The Redis list kombu keeps for `queue` at priority `level` (kombu.transport.redis Channel._q_for_pri, with
    the project's priority steps 0-9, so every level is a step): `queue` for 0, `queue` + sep + level above."""
    from kombu.transport.redis import Channel as RedisChannel

    return f"{queue}{RedisChannel.sep}{level}" if level else queue


def _broker_metrics(client: redis.Redis) -> list[Metric]:
    from kombu.transport.redis import Channel as RedisChannel

    up = _gauge("studio_broker_up", "1 when the Redis broker answered this scrape; 0 when it did not (then no "
                "queue metrics are exported)")
    keys = [(queue, level) for queue in QUEUES for level in PRIORITY_STEPS]
    try:
        with client.pipeline(transaction=False) as pipe:
            for queue, level in keys:
                pipe.llen(priority_list(queue, level))
            pipe.hlen(RedisChannel.unacked_key)
            *sizes, unacked = pipe.execute()
    except (redis.RedisError, OSError) as exc:
        log.warning("metrics: the broker did not answer: %s", exc)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    depth = _gauge("studio_queue_depth", "Tasks waiting in a Celery queue (all its priority lists), not yet taken "
                   "by a worker", ["queue"])
    by_level = _gauge("studio_queue_depth_by_priority", "Tasks waiting in a Celery queue at one priority level "
                      "(0 is served first; renders get 0 when their deadline is under 15 s away)",
                      ["queue", "priority"])
    totals = dict.fromkeys(QUEUES, 0)
    for (queue, level), size in zip(keys, sizes, strict=True):
        totals[queue] += int(size)
        by_level.add_metric([queue, str(level)], int(size))
    for queue, total in totals.items():
        depth.add_metric([queue], total)
    taken = _gauge("studio_broker_unacked_messages", "Messages taken by workers and not yet acknowledged, all "
                   "queues (tasks acknowledge when done: running tasks and those prefetched)")
    taken.add_metric([], int(unacked))
    return [up, depth, by_level, taken]


# --- segments and the plan (database) ------------------------------------------------------------------------------
def _segment_metrics(session: Session, now: datetime) -> list[Metric]:
    states = dict.fromkeys((str(s) for s in SegmentState), 0)
    for state, count in session.exec(select(Segment.state, func.count()).group_by(Segment.state)).all():
        states[state] = count
    segments = _gauge("studio_segments", "Segments by state (refused: refused by the streamer's policy check at air "
                      "time)", ["state"])
    for state, count in states.items():
        segments.add_metric([state], count)
    queued = session.exec(select(Segment.channel_id, Segment.state, Segment.planned_at, Segment.updated_at,
                                 Avatar.renderer).join(Avatar, Avatar.id == Segment.avatar_id, isouter=True)
                          .where(((Segment.state == S.PLANNED) & Segment.task_id.is_not(None))
                                 | ((Segment.state == S.FAILED) & (Segment.attempts < MAX_RENDER_ATTEMPTS)))).all()
    oldest = dict.fromkeys(RENDER_QUEUES, 0.0)
    waiting: dict[tuple[str, str], int] = {}
    for channel_id, state, planned, updated, renderer in queued:
        queue = render_queue_label(renderer)
        waiting[channel_id, queue] = waiting.get((channel_id, queue), 0) + 1
        if state == S.PLANNED:
            oldest[queue] = max(oldest.get(queue, 0.0), (now - max(planned, updated)).total_seconds())
    age = _gauge("studio_render_oldest_queued_seconds", "Age of the oldest render queued and not started, by render "
                 "queue: now minus the later of planned_at and updated_at of PLANNED segments that have a Celery task "
                 "id (the dispatch time itself is not recorded, so this is an upper bound); 0 when none is queued",
                 ["queue"])
    for queue, seconds in oldest.items():
        age.add_metric([queue], max(0.0, seconds))
    renders = _gauge("studio_render_queued_segments", "Renders queued and not started (PLANNED with a task id, "
                     "FAILED awaiting a retry), by channel and the render queue of their avatar's backend; with "
                     "studio_queue_workers 0 for that queue they wait for a worker that is not there",
                     ["channel", "queue"])
    for (channel_id, queue), count in sorted(waiting.items()):
        renders.add_metric([channel_id, queue], count)
    return [segments, age, renders]


def render_queue_label(renderer: str | None) -> str:
    """The render queue of a backend, for a label; a backend this version does not know (an avatar made by a newer
    release, or whose row is gone) is named rather than failing the scrape."""
    try:
        return queue_for_renderer(renderer or "")
    except QueueError:
        return f"(no queue for backend {renderer!r})"


def _channel_plan_metrics(session: Session, rt, now: datetime) -> list[Metric]:
    wpm = rt.settings.tts.words_per_minute
    channels = session.exec(select(Channel.id, Channel.name).order_by(Channel.id)).all()
    rows = session.exec(select(Segment).where(Segment.state.in_(OPEN_STATES))  # the state index, not a scan
                        .order_by(Segment.channel_id, Segment.seq)).all()
    pending: dict[str, list[Segment]] = {cid: [] for cid, _ in channels}
    for row in rows:
        pending.setdefault(row.channel_id, []).append(row)
    info = _gauge("studio_channel_info", "A channel and its name (always 1)", ["channel", "name"])
    buffer = _gauge("studio_channel_buffer_seconds", "Seconds of rendered segments (READY, kind segment) not yet "
                    "aired on the channel, by their rendered duration", ["channel"])
    ahead = _gauge("studio_channel_ahead_seconds", "Seconds rendered or queued ahead of air: READY, RENDERING, PLANNED "
                   "with a render task, and FAILED awaiting a retry (estimates for the unrendered)", ["channel"])
    planned = _gauge("studio_channel_planned_seconds", "Seconds of segments not yet aired in the channel's plan, "
                     "whatever their state (estimates for the unrendered)", ["channel"])
    lag = _gauge("studio_channel_air_lag_seconds", "How late the channel runs against its plan: now minus the planned "
                 "air time of its first not-yet-aired row that has one, at least 0 (a segment stays unaired until it "
                 "ends, so up to one segment's length while it is on air); no sample when no row has an air time",
                 ["channel"])
    next_air = _gauge("studio_channel_next_air_seconds", "Seconds until the planned air time of the channel's first "
                      "not-yet-aired row that has one, at least 0; no sample when no row has an air time", ["channel"])
    target = _gauge("studio_channel_buffer_target_seconds", "The scheduler's target for seconds rendered or queued "
                    "ahead of air per channel (streamer.buffer_target_seconds)")
    target.add_metric([], rt.settings.streamer.buffer_target_seconds)
    for cid, name in channels:
        info.add_metric([cid, name], 1)
    for cid, chan_rows in pending.items():
        segs = [r for r in chan_rows if r.kind == "segment"]
        buffer.add_metric([cid], sum(row_seconds(r, wpm) for r in segs if r.state == S.READY))
        ahead.add_metric([cid], sum(row_seconds(r, wpm) for r in segs if _ahead(r)))
        planned.add_metric([cid], sum(row_seconds(r, wpm) for r in segs))
        first = next((r for r in chan_rows if r.air_at is not None), None)
        if first is not None:
            late = (now - first.air_at).total_seconds()
            lag.add_metric([cid], max(0.0, late))
            next_air.add_metric([cid], max(0.0, -late))
    return [info, buffer, ahead, planned, lag, next_air, target]


def _ahead(row: Segment) -> bool:
    """Rendered, rendering, queued, or failed with a retry to come (the render task retries it)."""
    return (row.state in (S.READY, S.RENDERING) or (row.state == S.PLANNED and row.task_id is not None)
            or (row.state == S.FAILED and row.attempts < MAX_RENDER_ATTEMPTS))


# --- workers (database) ----------------------------------------------------------------------------------------------
def _worker_metrics(session: Session, now: datetime) -> list[Metric]:
    labels = ["worker", "device", "queues"]
    up = _gauge("studio_worker_up", "1 when the worker reported within the last 2 minutes, 0 when it went quiet "
                "(lost); workers quiet for a day are no longer listed", labels)
    seen = _gauge("studio_worker_last_seen_seconds", "Seconds since the worker last reported", labels)
    fps = _gauge("studio_worker_render_fps", "Frames rendered per second of wall time (moving average over its "
                 "recent renders)", labels)
    rtf = _gauge("studio_worker_realtime_factor", "Seconds of video rendered per second of wall time (moving "
                 "average; below 1 the worker renders slower than real time)", labels)
    renders = _counter("studio_worker_renders_total", "Renders done since the worker started", labels)
    load = _gauge("studio_worker_device_load_percent", "GPU utilisation at the worker's last heartbeat (GPU workers "
                  "only)", labels)
    memory = _gauge("studio_worker_device_memory_used_bytes", "GPU memory in use at the worker's last heartbeat "
                    "(GPU workers only)", labels)
    total = _gauge("studio_worker_device_memory_bytes", "The GPU's memory (GPU workers only)", labels)
    stalled = _gauge("studio_worker_stalled_renders", "Renders the worker still holds that made no progress for "
                     "worker.render_stall_seconds or ran past the hard time limit: their segments went to other "
                     "workers, but each takes one of the worker's slots until it returns (a thread stuck in the GPU "
                     "or a native call: restart the worker)", labels)
    info = _gauge("studio_worker_info", "What a worker serves, from the worker registry (always 1): its host, the "
                  "renderer backends its render queues carry, and its concurrency", [*labels, "host", "renderers",
                                                                                      "concurrency"])
    serving = dict.fromkeys(QUEUES, 0)
    for row in session.exec(select(WorkerInfo).order_by(WorkerInfo.id)).all():
        if now - row.last_seen > WORKER_FORGET_AFTER:
            continue
        values = [row.id, row.device, ",".join(row.queues)]
        live = not is_stale(row.last_seen, now=now)
        for queue in row.queues:
            if live and queue in serving:
                serving[queue] += 1
        info.add_metric([*values, row.host or row.id.partition("@")[2], ",".join(row.renderers),
                         "" if row.concurrency is None else str(row.concurrency)], 1)
        up.add_metric(values, 1 if live else 0)
        seen.add_metric(values, max(0.0, (now - row.last_seen).total_seconds()))
        renders.add_metric(values, row.renders)
        stalled.add_metric(values, len(row.stalled or []))
        if row.render_fps is not None:
            fps.add_metric(values, row.render_fps)
        if row.realtime_factor is not None:
            rtf.add_metric(values, row.realtime_factor)
        if row.device_load_percent is not None:
            load.add_metric(values, row.device_load_percent)
        if row.device_memory_used_mb is not None:
            memory.add_metric(values, row.device_memory_used_mb * 2**20)
        if row.device_memory_mb is not None:
            total.add_metric(values, row.device_memory_mb * 2**20)
    workers = _gauge("studio_queue_workers", "Live workers (reported within 2 minutes) that consume the queue; 0 "
                     "with renders queued for it: nothing will take them", ["queue"])
    for queue, count in serving.items():
        workers.add_metric([queue], count)
    return [up, seen, fps, rtf, renders, stalled, load, memory, total, info, workers]


# --- the audit log (database) ---------------------------------------------------------------------------------------
def _audit_metrics(session: Session) -> list[Metric]:
    consent_counts = dict.fromkeys(CONSENT_KINDS, 0)
    # "consent." <= kind < "consent/" ('/' follows '.'): every consent.* kind, as a range the kind index serves
    # (SQLite's LIKE is case-insensitive and would scan the whole log).
    consent_counts.update(session.exec(select(AuditEvent.kind, func.count())
                                       .where(AuditEvent.kind >= "consent.", AuditEvent.kind < "consent/")
                                       .group_by(AuditEvent.kind)).all())
    consent = _counter("studio_consent_events_total", "Consent events in the audit log by kind (consent.granted, "
                       "consent.refused, consent.revoked, consent.expired, ...)", ["kind"])
    for kind, count in sorted(consent_counts.items()):
        consent.add_metric([kind], count)
    refusal_counts = dict.fromkeys(REFUSAL_KINDS, 0)
    refusal_counts.update(session.exec(select(AuditEvent.kind, func.count())
                                       .where(AuditEvent.kind.in_(REFUSAL_KINDS)).group_by(AuditEvent.kind)).all())
    refusals = _counter("studio_refusal_events_total", "Refusals in the audit log by kind: segment.refused (policy "
                        "check at air time), segment.cancelled (consent or policy before air), segment.skipped (missed "
                        "its turn), show.refused (nothing could be planned under the policy)", ["kind"])
    for kind, count in refusal_counts.items():
        refusals.add_metric([kind], count)
    return [consent, refusals]


# --- stream health (the streamer's status files) ---------------------------------------------------------------------
CHANNEL_COUNTERS = (  # status key, metric, help
    ("aired_seconds", "studio_channel_aired_seconds_total", "Seconds aired (segments, slate, idle loop) since the "
     "channel's feeder last started"),
    ("segments_aired", "studio_channel_segments_aired_total", "Segments aired since the channel's feeder last started"),
    ("slates_aired", "studio_channel_slates_aired_total", "Slate or idle-loop pieces aired (nothing ready, a break, "
     "before a planned air time) since the feeder last started"),
    ("breaks_aired", "studio_channel_breaks_aired_total", "Planned breaks aired since the channel's streamer started"),
    ("refused", "studio_channel_refused_total", "Segments the feeder refused at air time (stamp, consent, channel) "
     "since it last started"),
    ("underruns", "studio_channel_underruns_total", "Packets written more than one frame interval after their air "
     "moment (the feeder fell behind the wall clock) since it last started"),
    ("restarts", "studio_channel_restarts_total", "Times the channel's feeder was restarted after a crash"),
    ("lease_losses", "studio_channel_lease_losses_total", "Times the airing streamer lost the channel's lease while "
     "airing it (its renewals too slow, or it was paused past the lease) and stopped it; since that streamer "
     "started"),
)
LEASE_GAUGES = (  # status key, metric, help: the airing streamer's leases (workers.streamer.leasing)
    ("lease_renewal_seconds", "studio_channel_lease_renewal_seconds", "Seconds the slowest renewal of the airing "
     "streamer's leases took in the last minute (past 80 % of the lease, every channel it airs stops at once)"),
    ("lease_seconds", "studio_channel_lease_seconds", "How long the airing streamer's leases last "
     "(streamer.lease_seconds)"),
)


def _stream_metrics(statuses: dict[str, dict], now_epoch: float) -> list[Metric]:
    airing = _gauge("studio_channel_airing", "1 while the streamer airs the channel (its status file says so)",
                    ["channel"])
    age = _gauge("studio_channel_status_age_seconds", "Seconds since the streamer last wrote the channel's status "
                 "(it writes every second while it runs)", ["channel"])
    counters = [(key, _counter(name, doc, ["channel"])) for key, name, doc in CHANNEL_COUNTERS]
    gauges = [(key, _gauge(name, doc, ["channel"])) for key, name, doc in LEASE_GAUGES]
    dest_labels = ["channel", "destination", "platform", "url"]
    up = _gauge("studio_destination_up", "1 while the relay to the destination is live", dest_labels)
    reconnects = _counter("studio_destination_reconnects_total", "Times the relay went live again after its first "
                          "connection (since the relay started)", dest_labels)
    attempts = _gauge("studio_destination_connect_attempts", "Connection attempts in the current outage (0 after a "
                      "healthy run)", dest_labels)
    sent = _counter("studio_destination_relayed_bytes_total", "Bytes relayed to the destination (bitrate: "
                    "rate(...) * 8)", dest_labels)
    sent_s = _counter("studio_destination_relayed_seconds_total", "Seconds of stream relayed to the destination",
                      dest_labels)
    for key, st in sorted(statuses.items()):
        if not isinstance(st, dict):
            continue
        cid = str(st.get("channel_id") or key)
        airing.add_metric([cid], 1 if st.get("airing") else 0)
        if isinstance(st.get("updated"), int | float):
            age.add_metric([cid], max(0.0, now_epoch - st["updated"]))
        for key, family in counters:
            family.add_metric([cid], float(st.get(key) or 0))
        for key, family in gauges:  # a streamer without leases (no fleet fence) reports none
            if isinstance(st.get(key), int | float):
                family.add_metric([cid], float(st[key]))
        for dest in st.get("destinations") or []:
            values = [cid, str(dest.get("id", "")), str(dest.get("platform", "")), safe_url(dest.get("url"))]
            up.add_metric(values, 1 if dest.get("state") == "live" else 0)
            reconnects.add_metric(values, max(0, int(dest.get("connects") or 0) - 1))
            attempts.add_metric(values, int(dest.get("attempts") or 0))
            sent.add_metric(values, float(dest.get("bytes_relayed") or 0))
            sent_s.add_metric(values, float(dest.get("seconds_relayed") or 0))
    return [airing, age, *(family for _, family in counters),
            *(family for _, family in gauges), up, reconnects, attempts, sent, sent_s]


def safe_url(url: object) -> str:
    """A destination URL fit for a label: scheme://host[:port]/app/****. No user, password, query or fragment,
    and the last path part (the stream key in RTMP) masked, whether or not the URL was masked before."""
    text = "" if url is None else str(url)
    if text in URL_PLACEHOLDERS:
        return text
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "(hidden)"
    if not parts.scheme or not host:
        return "(hidden)"
    host = f"[{host}]" if ":" in host else host
    path = [p for p in parts.path.split("/") if p]
    if path:
        path[-1] = "****"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{''.join('/' + p for p in path)}"
