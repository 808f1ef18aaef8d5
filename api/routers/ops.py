"""Health, segments, channel air status, workers and Prometheus metrics."""

from __future__ import annotations

import json

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlmodel import select

from api.deps import RuntimeDep, SessionDep, get_or_404
from api.metrics import broker_client, collect
from studio.models import Channel, Segment, SegmentPublic, WorkerInfo, utcnow

router = APIRouter()           # /healthz and /metrics, at the root where probes and Prometheus look
channels_router = APIRouter()  # under /api with the other resources


@router.get("/healthz", tags=["ops"])
def health(session: SessionDep, rt: RuntimeDep):
    checks = {}
    try:
        session.exec(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # reported, not raised: health must answer
        checks["database"] = f"error: {exc}"
    try:
        import redis

        from workers.app import broker_url

        redis.Redis.from_url(broker_url(), socket_timeout=1).ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {exc}"
    ok = all(v == "ok" for v in checks.values())
    return Response(json.dumps({"status": "ok" if ok else "degraded", **checks}), status_code=200 if ok else 503,
                    media_type="application/json")


@channels_router.get("/channels/{channel_id}/segments", response_model=list[SegmentPublic], tags=["channels"])
def list_segments(channel_id: str, session: SessionDep, offset: int = 0, limit: int = 100):
    get_or_404(session, Channel, channel_id, "channel")
    q = select(Segment).where(Segment.channel_id == channel_id).order_by(Segment.seq)
    return session.exec(q.offset(offset).limit(min(limit, 500))).all()


@channels_router.get("/channels/{channel_id}/status", tags=["channels"])
def channel_status(channel_id: str, rt: RuntimeDep, session: SessionDep):
    get_or_404(session, Channel, channel_id, "channel")
    path = rt.data.run / f"channel-{channel_id}.json"
    if not path.exists():
        return {"channel_id": channel_id, "airing": False}
    return json.loads(path.read_text())


@channels_router.get("/workers", tags=["ops"])
def list_workers(session: SessionDep) -> list[dict]:
    """Every worker node that has reported: what it runs on (cpu, or the GPU's name and memory), its queues, how
    many renders it did and how fast (moving averages). `stale`: not heard from for 2 minutes, likely gone."""
    from workers.worker_report import is_stale

    now = utcnow()
    rows = session.exec(select(WorkerInfo).order_by(WorkerInfo.id)).all()
    return [{**row.model_dump(), "stale": is_stale(row.last_seen, now=now)} for row in rows]


@router.get("/metrics", include_in_schema=False)
def metrics(session: SessionDep, rt: RuntimeDep):
    """Prometheus exposition (api.metrics): queues, workers, buffer and air lag per channel, stream health per
    destination, consent events and refusals. Answers within about a second even when Redis is away."""
    client = broker_client(rt)
    try:
        body = collect(session, rt, client)
    finally:
        client.close()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
