"""The scheduler process: extends each live show's plan and sends render tasks to the render queue of each
segment's avatar (workers.queue_policy.render_queue).

Run by `studio up`; on its own: `studio scheduler` (or `python -m workers.plan.scheduler`). Several may run against one
database, on several hosts: one leads, holding the scheduler lease (workers.plan.leadership), the others stand by and
take over within the lease (`scheduler.lease_seconds`) plus a second of the leader's death. Only the leader plans,
queues renders, expires consents and checkpoints the audit log, and every write of a pass is fenced on its lease
(studio.leader): a pass that outlived its leader's term rolls back and queues nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from datetime import datetime, timedelta

from sqlalchemy import func, update
from sqlmodel import Session, select

from studio import audit
from studio.admission import airing_problems
from studio.audit_checkpoint import CheckpointPlaces
from studio.db import lock_row, session_scope
from studio.leader import LeaseLost
from studio.models import Avatar, Channel, Consent, Script, Segment, Show, utcnow
from studio.planner import estimate_seconds, plan_horizon, script_parts
from studio.runtime import Runtime
from studio.segments import TERMINAL, SegmentState, move, requeue_lost
from studio.store import StoreError
from studio.voiceover import recorded_parts
from workers.consent.grant import finalize_checked
from workers.plan.leadership import Leadership
from workers.provenance.audit_checkpoint import checkpoint_places
from workers.runtime import runtime

log = logging.getLogger("studio.scheduler")
PASS_S = 2.0  # a planning pass every this many seconds


def show_parts(s: Session, show: Show, consent: Consent, channel: Channel, *,
               at: datetime | None = None) -> list[tuple[str, str]]:
    """The show's rotation of (script_id, text), leaving out, with a log line naming why, each script that is
    gone, names a product that is gone, lies outside the consent scope, awaits the creator's approval or that
    the lint refuses (POLICY S1-S4, checked again at plan time: rules, scopes and approvals change)."""
    at = at or utcnow()
    parts = []
    for script_id in show.script_ids:
        script = s.get(Script, script_id)
        if script is None:
            log.warning("show %s: script %s not planned: it does not exist", show.id, script_id)
            continue
        if problem := airing_problems(s, consent, channel=channel, script=script, at=at):
            log.warning("show %s: script %s not planned: %s", show.id, script_id, problem)
            continue
        recorded = recorded_parts(s, script)  # a voice-over's cut at its word boundaries, else the text's
        texts = [t for t, _ in recorded] if recorded else script_parts(script.text)
        parts.extend((script_id, text) for text in texts)
    return parts


def plan_show(rt: Runtime, s: Session, show: Show) -> list[str]:
    """Add segments to one show's plan; return the ids of the new segments. A consent that does not hold for
    the show's channel as a whole (term, platforms, territories, daily cap reached) plans nothing."""
    now = utcnow()
    consent = s.get(Consent, show.consent_id)
    channel = s.get(Channel, show.channel_id)
    if channel is None:
        log.warning("show %s not planned: its channel %s is gone", show.id, show.channel_id)
        return []
    if problem := airing_problems(s, consent, channel=channel, script=None, at=now):
        log.warning("show %s not planned: %s", show.id, problem)
        return []
    rows = s.exec(select(Segment).where(Segment.show_id == show.id)).all()
    pending = sum(r.duration_s or estimate_seconds(r.text, rt.settings.tts.words_per_minute)
                  for r in rows if r.state not in TERMINAL)
    new = plan_horizon(parts=show_parts(s, show, consent, channel, at=now), planned_count=len(rows),
                       pending_seconds=pending, target_seconds=rt.settings.streamer.buffer_target_seconds,
                       words_per_minute=rt.settings.tts.words_per_minute)
    if not new:
        return []
    seq = s.exec(select(func.max(Segment.seq)).where(Segment.channel_id == show.channel_id)).one()
    seq = -1 if seq is None else seq
    ids = []
    for part in new:
        seq += 1
        seg = Segment(channel_id=show.channel_id, show_id=show.id, avatar_id=show.avatar_id,
                      consent_id=show.consent_id, script_id=part.script_id, text=part.text, seq=seq,
                      show_start=part.show_start, state=SegmentState.PLANNED)
        s.add(seg)
        ids.append(seg.id)
    audit.record(s, kind="show.planned", subject_id=show.id, data={"segments": len(ids), "last_seq": seq})
    return ids


def tick(rt: Runtime, dispatch, fence=None) -> int:
    """One planning pass over every live show; `dispatch(segment_id)` queues a render. Returns how many rows
    were planned. Renders are queued per channel within its buffer target (workers.plan.scheduled). `fence(session)`
    runs last before the commit and raises to roll the pass back (studio.leader.fence)."""
    from workers.plan.scheduled import dispatch_within_buffer, plan_scheduled_show, retime_channel

    now = utcnow()
    horizon = timedelta(seconds=rt.settings.scheduler.horizon_seconds)
    planned, to_queue = 0, []
    with session_scope(rt.engine) as s:
        # A scheduled show is planned ahead of its start (its first renders are done when it opens).
        shows = s.exec(select(Show).where(Show.status == "scheduled", Show.starts_at <= now + horizon)).all()
        channels = []
        # Channels are locked in one order (by id), so two schedulers wait on each other instead of deadlocking.
        for show in sorted(shows, key=lambda show: show.channel_id):
            # Another scheduler may plan this channel now: its row lock makes the plan (and its sequence
            # numbers, read as max + 1) one process's at a time; the show is read again under the lock.
            lock_row(s, "channel", show.channel_id)
            s.refresh(show)
            if show.status != "scheduled":
                continue
            if show.ends_at is not None and show.ends_at <= now:
                continue
            if show.schedule is not None:
                retime_channel(rt, s, show, now=now)
                planned += len(plan_scheduled_show(rt, s, show, now=now))
            elif show.starts_at <= now:
                planned += len(plan_show(rt, s, show))
            else:
                continue
            channels.append(show.channel_id)
        s.flush()
        for channel_id in dict.fromkeys(channels):
            to_queue.extend(dispatch_within_buffer(rt, s, channel_id, now=now))
        if fence is not None:
            fence(s)
    for seg_id in to_queue:  # after commit, so a worker always finds the row
        dispatch(seg_id)
    return planned


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s scheduler %(levelname)s %(message)s")
    from workers.queue_policy import DISPATCH_RETRY, render_priority, render_queue
    from workers.tasks import render_segment_task

    rt = runtime()
    stop, wake = threading.Event(), threading.Event()  # wake: the next pass now (a stop, or a takeover)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: (stop.set(), wake.set()))
    leadership = Leadership(rt.engine, seconds=rt.settings.scheduler.lease_seconds, on_takeover=wake.set)
    places = checkpoint_places(rt)

    def dispatch(seg_id: str, term: int) -> None:
        # The task id is on the segment before the task is queued, so a revocation can revoke it in Celery
        # even before a worker picks it up.
        task_id = f"render-{seg_id}-{uuid.uuid4().hex[:8]}"
        with session_scope(rt.engine) as s:
            # One conditional write, so that of two schedulers dispatching the same row only one queues it.
            taken = s.exec(update(Segment).where(Segment.id == seg_id, Segment.task_id.is_(None))
                           .values(task_id=task_id)).rowcount
            if not taken:
                return
            leadership.fence(s, term)  # a deposed scheduler queues nothing
            seg = s.get(Segment, seg_id)
            priority = render_priority(seg.deadline, now=utcnow())
            queue = render_queue(s.get(Avatar, seg.avatar_id))
        # While Redis restarts, keep trying for a while rather than drop the render. Planning waits meanwhile;
        # the streamer does not. A dispatch that still fails clears the task id: a later pass queues it again.
        try:
            render_segment_task.apply_async(args=[seg_id], queue=queue, task_id=task_id, priority=priority,
                                            retry=True, retry_policy=DISPATCH_RETRY)
        except Exception:
            with session_scope(rt.engine) as s:
                seg = s.get(Segment, seg_id)
                if seg is not None and seg.task_id == task_id and seg.state == SegmentState.PLANNED:
                    seg.task_id = None
            raise
        log.info("queued the render of segment %s", seg_id, extra={"segment": seg_id})

    log.info("scheduler started (%s); buffer target %.0f s", leadership.owner,
             rt.settings.streamer.buffer_target_seconds)
    heartbeat = threading.Thread(target=leadership.keep, args=(stop,), name="scheduler-lease", daemon=True)
    heartbeat.start()
    try:
        while not stop.is_set():
            # Renewed now, not only by the heartbeat: a pass starts only on a lease that is fresh.
            if (term := leadership.poll()) is not None:
                leader_pass(rt, leadership, term, dispatch, places)
            wake.wait(PASS_S)
            wake.clear()
    finally:
        stop.set()
        heartbeat.join(timeout=leadership.seconds)
        leadership.release()


def leader_pass(rt: Runtime, leadership: Leadership, term: int, dispatch, places: CheckpointPlaces) -> None:
    """What the leader does every PASS_S under `term`: audit its takeover, checkpoint the audit log to `places`,
    expire consents, plan and queue."""
    try:
        leadership.record_takeover(term)
        checkpoint_audit(rt, places)
        for consent in finalize_checked(rt):  # consents whose video passed the check on an ingest worker
            log.info("consent %s checked on the ingest queue: now %s", consent.id, consent.status)
        if lost := requeue_lost_renders(rt, fence=lambda s: leadership.fence(s, term)):
            log.warning("renders lost with their worker, queued again: %s", ", ".join(lost))
        for consent_id in expire_consents(rt):
            log.info("consent %s reached the end of its term: off air, data deleted, certificate issued",
                     consent_id)
        if n := tick(rt, lambda seg_id: dispatch(seg_id, term), lambda s: leadership.fence(s, term)):
            log.info("planned %d segments", n)
    except LeaseLost as exc:
        log.warning("lost the scheduler lease mid-pass (%s): its uncommitted plan rolled back, nothing more "
                    "queued; standby", exc)
    except Exception:
        log.exception("planning pass failed; retrying")


def checkpoint_audit(rt: Runtime, places: CheckpointPlaces) -> None:
    """The audit head, MACed, outside the database (Redis, the store): `studio audit verify` on any host can then
    see deleted tail events. None of its failures stops the pass."""
    try:
        with session_scope(rt.engine) as s:
            audit.checkpoint(s, rt.audit_keys, places, legacy_key=rt.key)
    except audit.AuditError as exc:
        log.error("audit log does not verify; checkpoint kept where it was: %s", exc)
    except audit.CheckpointRefused as exc:
        log.warning("%s; kept the later one", exc)
    except (audit.CheckpointUnavailable, StoreError) as exc:
        log.error("audit checkpoint not written: %s", exc)


def requeue_lost_renders(rt: Runtime, *, fence=None, now: datetime | None = None) -> list[str]:
    """RENDERING segments whose attempt stopped beating `scheduler.render_lost_seconds` ago (the render host died
    whole, froze or was cut off; a pool process alone that dies is redelivered by Celery at once) go back to
    PLANNED with no task, so this pass queues them to a worker that is alive. Returns their ids. One conditional
    write per row: a beat that lands first keeps its segment. `fence(session)` runs before the commit.

    One lost on its last attempt (MAX_RENDER_ATTEMPTS) is FAILED here, as its next claim would fail it: that claim
    may never come (a render stuck in a GPU worker's thread holds its task), and the row would say RENDERING for
    good."""
    from workers.queue_policy import MAX_RENDER_ATTEMPTS

    now = now or utcnow()
    lost_after = rt.settings.scheduler.render_lost_seconds
    before = now - timedelta(seconds=lost_after)
    requeued = []
    with session_scope(rt.engine) as s:
        rows = s.exec(select(Segment.id, Segment.attempts, Segment.updated_at)
                      .where(Segment.state == SegmentState.RENDERING, Segment.updated_at < before)).all()
        for seg_id, attempts, beat_at in rows:
            silent = (now - beat_at).total_seconds()
            if attempts >= MAX_RENDER_ATTEMPTS:
                seg = s.get(Segment, seg_id, with_for_update=True, populate_existing=True)
                if seg.state == SegmentState.RENDERING and seg.attempts == attempts and seg.updated_at < before:
                    reason = (f"its render (attempt {attempts}, the last) stopped beating {silent:.0f} s ago; "
                              f"no more tries")
                    move(s, seg, SegmentState.FAILED, error=reason, at=now, data={"reason": reason,
                                                                                "attempts": attempts})
                    log.warning("segment %s failed: %s", seg_id, reason)
                continue
            if requeue_lost(s, seg_id, attempts=attempts, beat_before=before, now=now,
                            reason=f"its render (attempt {attempts}) stopped beating {silent:.0f} s ago"):
                requeued.append(seg_id)
        if fence is not None:
            fence(s)
    return requeued


def expire_consents(rt: Runtime) -> list[str]:
    """Consents whose term has ended go the way of a revocation (POLICY C4, C5)."""
    from workers.consent.revocation import revoke_consent_direct

    with session_scope(rt.engine) as s:
        ended = [c.id for c in s.exec(select(Consent).where(Consent.status == "granted",
                                                             Consent.ends_at <= utcnow())).all()]
    for consent_id in ended:
        revoke_consent_direct(rt, consent_id, reason="expired")
    return ended


if __name__ == "__main__":
    main()
