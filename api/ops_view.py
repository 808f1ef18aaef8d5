"""What the ops page shows, from the same figures as /metrics: queues (with the live workers serving each), workers
(by host: queues, renderer backends, GPU), channels (buffer ahead of air, air lag, destinations, renders waiting
for a queue no worker serves) and the alerts that infra/prometheus/alerts.yml raises, evaluated here on one scrape
so the page needs no Prometheus."""

from __future__ import annotations

from datetime import datetime

from studio.leader import Lease
from studio.masking import scrub_url_keys

BUFFER_LOW_S = 30.0     # StudioBufferLow
AIR_LAG_S = 60.0        # StudioAirLag
STATUS_STALE_S = 30.0   # StudioStreamerStalled
LEASE_SLOW_SHARE = 0.5  # StudioLeaseRenewalSlow: a renewal took half the lease (channels stop at 80 %)


def _by(snap: dict, name: str, key: str) -> dict[str, float]:
    return {s["labels"].get(key, ""): s["value"] for s in snap.get(name, [])}


def overview(snap: dict, statuses: dict[str, dict] | None = None, scheduler: dict | None = None,
             leases: dict | None = None) -> dict:
    """`snap`: api.metrics.snapshot of one scrape. `statuses`: the streamer's status files by channel id, for
    what metrics cannot carry: each destination's state and last error (scrubbed of keys when written, masked
    again here). `scheduler`: who leads the scheduler (`scheduler_leader`). `leases`: the live channel leases
    by channel id (studio.lease_store.LeaseView): which streamer host airs each channel, and the streamers."""
    queues = {}
    for name, field in (("studio_queue_depth", "depth"), ("studio_queue_workers", "workers"),
                        ("studio_render_oldest_queued_seconds", "oldest_seconds")):
        for s in snap.get(name, []):
            queues.setdefault(s["labels"]["queue"], {})[field] = s["value"]
    unserved = unserved_renders(snap)
    for queue, by_channel in unserved.items():
        queues.setdefault(queue, {})["unserved_segments"] = sum(by_channel.values())
    workers = {}
    for name, field in (("studio_worker_up", "up"), ("studio_worker_render_fps", "render_fps"),
                        ("studio_worker_realtime_factor", "realtime_factor"),
                        ("studio_worker_last_seen_seconds", "last_seen_seconds"),
                        ("studio_worker_renders", "renders"),
                        ("studio_worker_stalled_renders", "stalled_renders"),
                        ("studio_worker_device_load_percent", "device_load_percent"),
                        ("studio_worker_device_memory_used_bytes", "device_memory_used_bytes"),
                        ("studio_worker_device_memory_bytes", "device_memory_bytes")):
        for s in snap.get(name, []):
            w = workers.setdefault(s["labels"]["worker"], {k: v for k, v in s["labels"].items() if k != "worker"})
            w[field] = s["value"]
    for s in snap.get("studio_worker_info", []):  # host, renderers, concurrency
        workers.setdefault(s["labels"]["worker"], {}).update((k, v) for k, v in s["labels"].items() if k != "worker")
    names = {s["labels"]["channel"]: s["labels"]["name"] for s in snap.get("studio_channel_info", [])}
    per = {field: _by(snap, metric, "channel") for field, metric in (
        ("buffer_seconds", "studio_channel_buffer_seconds"), ("ahead_seconds", "studio_channel_ahead_seconds"),
        ("air_lag_seconds", "studio_channel_air_lag_seconds"), ("airing", "studio_channel_airing"),
        ("status_age_seconds", "studio_channel_status_age_seconds"),
        ("lease_renewal_seconds", "studio_channel_lease_renewal_seconds"),
        ("lease_seconds", "studio_channel_lease_seconds"), ("lease_losses", "studio_channel_lease_losses"))}
    channels = {cid: {"id": cid, "name": name, "destinations": [], "unserved": []} for cid, name in names.items()}
    for field, values in per.items():
        for cid, v in values.items():
            _channel(channels, cid)[field] = v
    for queue, by_channel in sorted(unserved.items()):
        for cid, count in by_channel.items():
            _channel(channels, cid)["unserved"].append({"queue": queue, "segments": count,
                                                         "status": f"no worker serves {queue}"})
    # One target for every channel (the gauge has no channel label): given to each, not to a channel "".
    for s in snap.get("studio_channel_buffer_target_seconds", [])[:1]:
        for c in channels.values():
            c["buffer_target_seconds"] = s["value"]
    dests: dict[tuple, dict] = {}
    for name, field in (("studio_destination_up", "up"), ("studio_destination_reconnects", "reconnects"),
                        ("studio_destination_connect_attempts", "attempts"),
                        ("studio_destination_relayed_bytes", "relayed_bytes"),
                        ("studio_destination_relayed_seconds", "relayed_seconds")):
        for s in snap.get(name, []):
            key = (s["labels"].get("channel"), s["labels"].get("destination"))
            dests.setdefault(key, dict(s["labels"]))[field] = s["value"]
    for (cid, did), d in dests.items():
        for st in ((statuses or {}).get(cid, {}).get("destinations") or []):
            if isinstance(st, dict) and str(st.get("id", "")) == did:
                d["state"] = st.get("state")
                d["last_error"] = scrub_url_keys(str(st["last_error"])) if st.get("last_error") else None
        if d.get("relayed_seconds"):
            d["bitrate_kbps"] = round(8 * d.get("relayed_bytes", 0) / d["relayed_seconds"] / 1000, 1)
        _channel(channels, cid)["destinations"].append(d)
    streamers: dict[str, dict] = {}
    for cid, lease in sorted((leases or {}).items()):
        c = _channel(channels, cid)
        c.update(aired_by=lease.host, aired_since=f"{lease.since.isoformat()}Z", lease_token=lease.token)
        s = streamers.setdefault(lease.owner, {"owner": lease.owner, "host": lease.host, "channels": []})
        s["channels"].append(cid)
    broker = snap.get("studio_broker_up", [{"value": None}])[0]["value"]
    return {"broker_up": broker, "scheduler": scheduler or scheduler_leader(None, None), "queues": queues,
            "workers": workers, "streamers": sorted(streamers.values(), key=lambda s: (s["host"] or "", s["owner"])),
            "channels": sorted(channels.values(), key=lambda c: c["name"]),
            "alerts": alerts(broker, workers, channels.values(), unserved)}


def scheduler_leader(lease: Lease | None, now: datetime | None) -> dict:
    """Which host leads the scheduler and since when (studio.leader); `now` by the database's clock. `leading` is
    false when the lease ran out (every `studio scheduler` is gone, or a standby is about to take over): host and
    owner then name the last leader."""
    if lease is None:
        return {"leading": False, "host": None, "owner": None, "since": None, "token": None, "expires_at": None}
    return {"leading": lease.live(now), "host": lease.host, "owner": lease.owner,
            "since": f"{lease.since.isoformat()}Z", "token": lease.token,
            "expires_at": f"{lease.expires_at.isoformat()}Z"}


def _channel(channels: dict, cid: str) -> dict:
    """The channel's entry, made for a channel the metrics name but the channel list does not (deleted)."""
    return channels.setdefault(cid, {"id": cid, "name": cid, "destinations": [], "unserved": []})


def unserved_renders(snap: dict) -> dict[str, dict[str, float]]:
    """Renders queued for a queue that no live worker consumes: {queue: {channel id: segments}}. They are not
    failed: they wait, and are taken as soon as a worker for their queue starts (StudioRenderQueueUnserved)."""
    serving = _by(snap, "studio_queue_workers", "queue")
    out: dict[str, dict[str, float]] = {}
    for s in snap.get("studio_render_queued_segments", []):
        queue = s["labels"]["queue"]
        if s["value"] > 0 and not serving.get(queue):
            out.setdefault(queue, {})[s["labels"]["channel"]] = s["value"]
    return out


def alerts(broker_up, workers: dict, channels, unserved: dict[str, dict[str, float]]) -> list[dict]:
    out = []
    if broker_up == 0:
        out.append({"alert": "StudioBrokerDown", "severity": "critical",
                    "message": "the Redis broker does not answer: no render can be queued"})
    channels = list(channels)
    names = {c["id"]: c["name"] for c in channels}
    for queue, by_channel in sorted(unserved.items()):
        waiting = ", ".join(f"{names.get(cid, cid)} ({count:.0f})" for cid, count in sorted(by_channel.items()))
        out.append({"alert": "StudioRenderQueueUnserved", "severity": "critical", "queue": queue,
                    "message": f"no worker serves {queue}: {sum(by_channel.values()):.0f} segment(s) wait for it "
                               f"(channel: segments {waiting}); start `studio worker --queues {queue}` on a host "
                               "that can serve it"})
    for wid, w in workers.items():
        if w.get("up") == 0:
            out.append({"alert": "StudioWorkerLost", "severity": "warning", "worker": wid,
                        "message": f"worker {wid} has not reported for {w.get('last_seen_seconds', 0):.0f} s"})
        elif w.get("stalled_renders", 0) > 0:
            out.append({"alert": "StudioRenderStalled", "severity": "warning", "worker": wid,
                        "message": f"worker {wid}: {w['stalled_renders']:.0f} render(s) stuck without progress; "
                                   "their segments went to other workers, but each still takes one of its slots: "
                                   "restart the worker to free them"})
    for c in channels:
        if c.get("airing") != 1:
            continue
        if c.get("buffer_seconds", 0) < BUFFER_LOW_S:
            out.append({"alert": "StudioBufferLow", "severity": "warning", "channel": c["id"],
                        "message": f"{c['name']}: {c.get('buffer_seconds', 0):.0f} s rendered ahead of air "
                                   f"(under {BUFFER_LOW_S:.0f} s)"})
        if c.get("air_lag_seconds", 0) > AIR_LAG_S:
            out.append({"alert": "StudioAirLag", "severity": "warning", "channel": c["id"],
                        "message": f"{c['name']}: {c['air_lag_seconds']:.0f} s behind its plan"})
        renewal, lease, lost = c.get("lease_renewal_seconds", 0), c.get("lease_seconds"), c.get("lease_losses", 0)
        if lease and renewal >= LEASE_SLOW_SHARE * lease:
            out.append({"alert": "StudioLeaseRenewalSlow", "severity": "warning", "channel": c["id"],
                        "message": f"{c['name']}: a renewal of its streamer's leases took {renewal:.1f} s of the "
                                   f"{lease:.0f} s they last; past {0.8 * lease:.1f} s every channel that streamer "
                                   f"airs stops and comes back (lost {lost:.0f} time(s) so far). The lease store is "
                                   "slow (on SQLite: other writers or a busy disk): raise streamer.lease_seconds, or "
                                   "keep leases in PostgreSQL or Redis"})
        if c.get("status_age_seconds", 0) > STATUS_STALE_S:
            out.append({"alert": "StudioStreamerStalled", "severity": "critical", "channel": c["id"],
                        "message": f"{c['name']}: no streamer status for {c['status_age_seconds']:.0f} s"})
        for d in c["destinations"]:
            if d.get("up") == 0:
                out.append({"alert": "StudioDestinationDown", "severity": "critical", "channel": c["id"],
                            "message": f"{c['name']}: destination {d.get('url', d.get('destination'))} is down "
                                       f"({d.get('attempts', 0):.0f} attempts)"})
    return out
