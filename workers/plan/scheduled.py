"""Scheduled shows in the database: the rolling-horizon planner (studio.schedule) run against live rows.

Each pass, for every show with a `schedule`:
1. `retime_channel` walks the channel's rows that have not aired, in seq order, from now: a row airs when the one
   before it ends, but not more than `streamer.early_tolerance_seconds` before its planned time (the streamer
   waits with the idle loop). A row that will air more than `scheduler.late_tolerance_seconds` after its planned
   time gets the projected time and a deadline to match, and the plan state moves with the tail, so a channel
   that runs late (segments longer than estimated, a slow render) never accumulates stale deadlines that would
   skip renders it still has time for.
2. `plan_scheduled_show` extends the plan to now + `scheduler.horizon_seconds`: the planner takes the windows,
   rotation, hand-over and breaks; `allowed` answers for consent term and status, destination platforms and
   territories, scope, script approval and the lint (POLICY C3, C4, S1-S4); the daily cap is the planner's own
   arithmetic over air time already aired or planned. Segments get `air_at` and `deadline`; a break is a row of
   kind "break" (no script, no render) that the streamer airs as the idle loop for its length, and the next
   segment opens with the disclosure banner again.
3. `dispatch_within_buffer` (every show, scheduled or not) queues renders in seq order while the channel's
   rendered-or-queued material ahead of air is under `streamer.buffer_target_seconds`, and no more: the queue
   holds what the channels need soon, ordered by deadline. A row whose dispatch failed (Redis down longer than
   the retries) has its task id cleared and is queued again by a later pass, so nothing planned is lost.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from sqlmodel import Session, select

from studio import audit
from studio.admission import airing_problems
from studio.models import Channel, Consent, Script, Segment, Show
from studio.planner import estimate_seconds
from studio.runtime import Runtime
from studio.schedule import PlanRequest, PlanState, ScheduleError, ShowSchedule, from_ms, plan, to_ms
from studio.segments import TERMINAL, SegmentState
from studio.usage import aired_seconds
from studio.voiceover import recorded_parts

log = logging.getLogger("studio.scheduler")
S = SegmentState


def row_seconds(row: Segment, words_per_minute: int) -> float:
    """How long a row airs: its rendered duration, else the estimate (a break: its length)."""
    if row.duration_s is not None:
        return float(row.duration_s)
    return estimate_seconds(row.text, words_per_minute)


def pending_rows(s: Session, channel_id: str) -> list[Segment]:
    return list(s.exec(select(Segment).where(Segment.channel_id == channel_id,
                                             Segment.state.not_in([str(x) for x in TERMINAL]))
                       .order_by(Segment.seq)).all())


def retime_channel(rt: Runtime, s: Session, show: Show, *, now: datetime) -> float:
    """Move the rest of a late-running channel's plan to when it will air; return the lateness moved (s)."""
    cfg, early = rt.settings.scheduler, timedelta(seconds=rt.settings.streamer.early_tolerance_seconds)
    wpm = rt.settings.tts.words_per_minute
    cursor, moved, first = now, 0.0, True
    for row in pending_rows(s, show.channel_id):
        dur = timedelta(seconds=row_seconds(row, wpm))
        if row.air_at is None:
            cursor += dur
            continue
        if first and row.state == S.READY and row.air_at <= now:
            start = max(row.air_at, now - dur)  # probably on air now
        else:
            start = max(cursor, row.air_at - early)
        first = False
        late = (start - row.air_at).total_seconds()
        if late > cfg.late_tolerance_seconds and row.show_id == show.id:
            row.air_at = start
            if row.deadline is not None:
                row.deadline = start - timedelta(seconds=cfg.margin_seconds)
            moved = max(moved, late)
        cursor = start + dur
    if show.plan_state and moved:
        state = PlanState.from_dict(show.plan_state)
        end = to_ms(cursor)
        if end > state.t_ms:
            show.plan_state = replace(state, t_ms=end).as_dict()
    if moved:
        log.info("show %s runs %.1f s late: the rest of its plan moved with it", show.id, moved)
    return moved


class _Allowed:
    """The planner's policy question for one show and pass, answered from the database and remembered: the
    answer depends on the time only through the consent's term, so it is cached per side of the term's end."""

    def __init__(self, s: Session, channel: Channel):
        self.s, self.channel = s, channel
        self._memo: dict[tuple, str | None] = {}

    def __call__(self, avatar_id: str, consent_id: str, script_id: str, at: datetime, seconds: float) -> str | None:
        consent = self.s.get(Consent, consent_id)
        in_term = consent is not None and consent.ends_at is not None and at < consent.ends_at
        key = (avatar_id, consent_id, script_id, in_term)
        if key not in self._memo:
            self._memo[key] = self._ask(avatar_id, consent, script_id, at)
        return self._memo[key]

    def _ask(self, avatar_id: str, consent: Consent | None, script_id: str, at: datetime) -> str | None:
        if consent is not None and consent.avatar_id != avatar_id:
            return f"consent {consent.id} is for avatar {consent.avatar_id}, not {avatar_id}"
        script = self.s.get(Script, script_id)
        if script is None:
            return f"script {script_id} does not exist"
        verdict = airing_problems(self.s, consent, channel=self.channel, script=script, at=at, daily_cap=False)
        if verdict.usage is not None:
            return verdict.usage
        return "lint: " + "; ".join(verdict.lint) if verdict.lint else None


def _planned_seconds(s: Session, consent_id: str, words_per_minute: int) -> float:
    rows = s.exec(select(Segment).where(Segment.consent_id == consent_id, Segment.kind == "segment",
                                        Segment.state.not_in([str(x) for x in TERMINAL]))).all()
    return sum(row_seconds(r, words_per_minute) for r in rows)


def plan_scheduled_show(rt: Runtime, s: Session, show: Show, *, now: datetime) -> list[str]:
    """Extend a scheduled show's plan to now + horizon; return the ids of the new rows (segments and breaks)."""
    cfg, wpm = rt.settings.scheduler, rt.settings.tts.words_per_minute
    channel = s.get(Channel, show.channel_id)
    if channel is None:
        log.warning("show %s not planned: its channel %s is gone", show.id, show.channel_id)
        return []
    try:
        schedule = ShowSchedule.model_validate(show.schedule)
    except ValueError as exc:
        log.warning("show %s not planned: its schedule does not validate: %s", show.id, exc)
        return []
    if show.plan_state:
        state = PlanState.from_dict(show.plan_state)
    else:
        state = PlanState.initial(max(show.starts_at, now + timedelta(seconds=cfg.start_lead_seconds)))
    horizon = cfg.horizon_seconds
    if show.ends_at is not None:
        horizon = min(horizon, (show.ends_at - now).total_seconds())
    if state.t_ms >= to_ms(now) + horizon * 1000 or horizon <= 0:
        return []
    scripts, consents = {}, {}
    for entry in schedule.rotation:
        script = s.get(Script, entry.script_id)
        recorded = recorded_parts(s, script) if script is not None else None
        scripts[entry.script_id] = tuple(recorded) if recorded else script.text if script is not None else ""
    for stint in schedule.avatars:
        consents[stint.consent_id] = s.get(Consent, stint.consent_id)
    used = {cid: aired_seconds(s, cid, at=now) + _planned_seconds(s, cid, wpm) for cid in consents}
    caps = {cid: float(c.scope.get("max_hours_per_day", 24)) for cid, c in consents.items() if c is not None}
    request = PlanRequest(schedule=schedule, scripts=scripts, state=state, now=now, horizon_s=horizon,
                          used_seconds=used, max_hours_per_day=caps)
    try:
        result = plan(request, allowed=_Allowed(s, channel), words_per_minute=wpm, margin_s=cfg.margin_seconds,
                      retry_s=cfg.retry_seconds)
    except ScheduleError as exc:
        log.warning("show %s not planned: %s", show.id, exc)
        return []
    show.plan_state = result.state.as_dict()
    # Breaks alone (every avatar refused, the plan waiting) air nothing. (The result is cached: not mutated.)
    items = result.items if any(i.kind == "segment" for i in result.items) else []
    for refusal in result.refusals[:20]:
        log.warning("show %s: %s by %s at %s not planned: %s", show.id, refusal.script_id, refusal.avatar_id,
                    f"{refusal.at:%H:%M:%S}", refusal.reason)
    if not items:
        if result.refusals:
            audit.record(s, kind="show.refused", subject_id=show.id,
                         data={"refusals": len(result.refusals), "reason": result.refusals[0].reason})
        return []
    last = s.exec(select(Segment.seq).where(Segment.channel_id == show.channel_id)
                  .order_by(Segment.seq.desc()).limit(1)).first()
    seq = -1 if last is None else last
    ids, prev = [], None
    for item in items:
        seq += 1
        if item.kind == "break":
            # The idle loop airs for its length; it needs no render, so it is ready as planned.
            who = prev or (schedule.avatars[0].avatar_id, schedule.avatars[0].consent_id)
            row = Segment(channel_id=show.channel_id, show_id=show.id, avatar_id=who[0], consent_id=who[1],
                          script_id=None, text="", seq=seq, kind="break", air_at=item.at, deadline=None,
                          duration_s=item.seconds, state=S.READY)
        else:
            prev = (item.avatar_id, item.consent_id)
            row = Segment(channel_id=show.channel_id, show_id=show.id, avatar_id=item.avatar_id,
                          consent_id=item.consent_id, script_id=item.script_id, text=item.text, seq=seq,
                          show_start=item.show_start, kind="segment", air_at=item.at, deadline=item.deadline,
                          state=S.PLANNED)
        s.add(row)
        ids.append(row.id)
    audit.record(s, kind="show.planned", subject_id=show.id,
                 data={"segments": sum(i.kind == "segment" for i in items),
                       "breaks": sum(i.kind == "break" for i in items), "last_seq": seq,
                       "until": f"{from_ms(result.state.t_ms):%Y-%m-%dT%H:%M:%S}", "refusals": len(result.refusals)})
    return ids


def dispatch_within_buffer(rt: Runtime, s: Session, channel_id: str, *, now: datetime) -> list[str]:
    """Segment ids to queue now, in seq order: those not yet queued, while what is rendered or queued ahead of
    air stays under the channel's buffer target and airs within it (backpressure)."""
    wpm, target = rt.settings.tts.words_per_minute, rt.settings.streamer.buffer_target_seconds
    rows = pending_rows(s, channel_id)
    # Ahead of air: from where the channel's air stands (now, or the first planned row of a show yet to open).
    anchor = max([now] + [r.air_at for r in rows[:1] if r.air_at is not None])
    soon = anchor + timedelta(seconds=target + rt.settings.scheduler.margin_seconds)
    ahead, out = 0.0, []
    for row in rows:
        if row.kind != "segment":
            continue
        if row.state == S.PLANNED and row.task_id is None:
            if ahead >= target or (row.air_at is not None and row.air_at > soon):
                break
            out.append(row.id)
        ahead += row_seconds(row, wpm)
    return out
