"""Health, segments, channel air status, workers and Prometheus metrics."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlmodel import select

from api.auth import PrincipalDep, channel_for, need_role
from api.deps import RuntimeDep, SessionDep
from api.metrics import broker_client, collect, metric_families, safe_url, snapshot
from api.ops_view import overview, scheduler_leader
from api.pagination import PageDep
from studio.accounts import Role
from studio.destinations import error_category
from studio.masking import scrub_url_keys
from studio.models import Segment, SegmentPublic, WorkerInfo, utcnow
from studio.segments import SegmentState
from workers.streamer import status as shared_status

router = APIRouter()           # /healthz and /metrics, at the root where probes and Prometheus look
channels_router = APIRouter()  # under /api with the other resources

log = logging.getLogger("studio.api")


@router.get("/healthz", tags=["ops"])
def health(request: Request, rt: RuntimeDep):
    """The older probe: {"status": ok|degraded, "database": ..., "redis": ...}; /readyz is its successor."""
    from api.health import run_checks

    checks = run_checks(rt, request.app.state.readiness)
    flat = {("redis" if name == "broker" else name): ("ok" if c["status"] == "ok" else f"error: {c['category']}")
            for name, c in checks.items()}
    ok = all(v == "ok" for v in flat.values())
    return Response(json.dumps({"status": "ok" if ok else "degraded", **flat}), status_code=200 if ok else 503,
                    media_type="application/json")


@channels_router.get("/channels/{channel_id}/segments", response_model=list[SegmentPublic], tags=["channels"])
def list_segments(channel_id: str, session: SessionDep, who: PrincipalDep, page: PageDep,
                  state: Annotated[SegmentState | None, Query(description="Only segments in this state.")] = None,
                  newest_first: bool = False):
    """The channel's segments in plan order (`newest_first`: the latest first, as "what aired" wants)."""
    channel_for(session, who, channel_id)
    q = select(Segment).where(Segment.channel_id == channel_id)
    if state is not None:
        q = q.where(Segment.state == str(state))
    return page.rows(session, q.order_by(Segment.seq.desc() if newest_first else Segment.seq))


def _lease_of(rt, channel_id: str) -> dict:
    """Which streamer host airs the channel and since when (its lease), from the lease store the streamers use
    (`streamer.lease_backend`): the same whichever API replica answers. `aired_by` None: no streamer holds the
    channel now."""
    from studio.lease_store import lease_store

    store = lease_store(rt.settings, rt.engine)
    try:
        lease = store.lease_of(channel_id)
    finally:
        store.close()
    return {"aired_by": lease.host if lease else None,
            "aired_since": lease.since.isoformat() + "Z" if lease else None,
            "lease_token": lease.token if lease else None}


@channels_router.get("/channels/{channel_id}/status", tags=["channels"])
def channel_status(channel_id: str, rt: RuntimeDep, session: SessionDep, who: PrincipalDep):
    channel_for(session, who, channel_id)
    hls = {"hls_url": rt.settings.hls_url(channel_id)} | _lease_of(rt, channel_id)
    client = broker_client(rt)
    try:
        status = shared_status.read_one(client, rt.data.run, channel_id)
    finally:
        client.close()
    if status is None:
        return {"channel_id": channel_id, "airing": False, **hls}
    # An agency sees a short category of each error (studio.destinations.error_category), never the socket error's
    # text, which can describe hosts on our network; ops and admins see the detail, masked.
    detail = who.role in (Role.ops, Role.admin)
    for dest in status.get("destinations") or []:  # masked when written; masked again, whatever a file holds
        if isinstance(dest, dict) and isinstance(dest.get("url"), str):
            dest["url"] = safe_url(dest["url"])
        if isinstance(dest, dict) and dest.get("last_error"):
            dest["error"] = error_category(str(dest["last_error"]))
            dest["last_error"] = scrub_url_keys(str(dest["last_error"])) if detail else dest["error"]
    if status.get("last_error") and not detail:
        status["last_error"] = error_category(str(status["last_error"]))
    return {**status, **hls}


@channels_router.get("/workers", tags=["ops"])
def list_workers(session: SessionDep, who: PrincipalDep) -> list[dict]:
    """Every worker node that has reported: what it runs on (cpu, or the GPU's name and memory), its queues, how
    many renders it did and how fast (moving averages). `stale`: not heard from for 2 minutes, likely gone."""
    from workers.worker_report import is_stale

    need_role(who, Role.ops)
    now = utcnow()
    rows = session.exec(select(WorkerInfo).order_by(WorkerInfo.id)).all()
    return [{**row.model_dump(mode="json"), "last_seen": row.last_seen.isoformat() + "Z",
             "started_at": row.started_at.isoformat() + "Z", "stale": is_stale(row.last_seen, now=now)} for row in rows]


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, session: SessionDep, rt: RuntimeDep):
    """Prometheus exposition (api.metrics): queues, workers, buffer and air lag per channel, stream health per
    destination, consent events and refusals. Answers within about a second even when Redis is away. Only to
    `Authorization: Bearer <metrics token>` (studio.keys.load_metrics_token); 401 otherwise."""
    from studio.keys import load_metrics_token

    expected = load_metrics_token(rt.settings)
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not expected or not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "send the metrics token as 'Authorization: Bearer ...' (the file "
                                 "data/keys/metrics.token, or the setting metrics_token)" if expected else
                            "no metrics token is set: run `studio up` (it makes data/keys/metrics.token) or set "
                            "metrics_token", headers={"WWW-Authenticate": "Bearer"})
    client = broker_client(rt)
    try:
        body = collect(session, rt, client)
    finally:
        client.close()
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@channels_router.get("/ops/overview", tags=["ops"])
def ops_overview(session: SessionDep, rt: RuntimeDep, who: PrincipalDep) -> dict:
    """What the ops page shows: which host leads the scheduler and since when, queue depth and age, workers
    (device, render speed, up), per channel the seconds rendered ahead of air, air lag and each destination's health
    (live, reconnects, bitrate), and the alerts that infra/prometheus/alerts.yml would raise now. The same figures
    as /metrics."""
    from studio import leases
    from studio.leader import current

    need_role(who, Role.ops)
    client = broker_client(rt)
    try:
        families = metric_families(session, rt, client)
        statuses = shared_status.read_all(client, rt.data.run)
    finally:
        client.close()
    leader = scheduler_leader(current(session, "scheduler"), leases.db_now(session))
    snap = snapshot(families)
    return overview(snap, statuses, leader, _channel_leases(rt, snap))


def _channel_leases(rt, snap: dict) -> dict:
    """The live lease of every channel the metrics name, from the streamers' lease store (one round trip); none
    when the store does not answer (the page still shows everything else)."""
    from studio.lease_store import lease_store

    ids = [s["labels"]["channel"] for s in snap.get("studio_channel_info", [])]
    try:
        store = lease_store(rt.settings, rt.engine)
        try:
            return store.leases_of(ids)
        finally:
            store.close()
    except Exception as exc:  # noqa: BLE001 - Redis away: the channels show without their streamer
        log.warning("channel leases not read for the ops page (%s)", type(exc).__name__)
        return {}


@channels_router.get("/channels/{channel_id}/preview.jpg", tags=["channels"],
                     responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "not airing"}})
def channel_preview(channel_id: str, rt: RuntimeDep, session: SessionDep, who: PrincipalDep):
    """The newest picture of the channel's live HLS preview (the first frame of its newest fragment, at most a
    few seconds old), for pages whose browser plays no HLS. The playlist itself: the HLS URL in the status.

    Shared in Redis by the streamer that airs the channel (workers.streamer.preview_share), so any API host shows
    it; this host's own HLS directory only when Redis holds none (an older streamer, or Redis away)."""
    from workers.media.preview import PreviewError, hls_dir, latest_preview_jpeg
    from workers.streamer import preview_share

    channel_for(session, who, channel_id)
    client = broker_client(rt)
    try:
        jpeg = preview_share.read(client, channel_id, max_bytes=rt.settings.streamer.preview_max_kb << 10)
    finally:
        client.close()
    if jpeg is None:
        try:
            jpeg = latest_preview_jpeg(hls_dir(rt.data.root), channel_id)
        except PreviewError as exc:
            raise HTTPException(404, str(exc)) from None
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
