"""What a channel airs next, and the policy check at air time, backed by the database.

The feeder asks `next_segment()` in plan order; `verify()` refuses anything without a genuine stamp for
these bytes and this channel, and anything whose consent no longer holds (invariants 1, 2 and 4).

A segment that is not ready when its turn comes is waited for (the slate covers) for at most `max_wait_seconds`,
and not at all when it is already lost: its air time is known and more than `max_wait_seconds` past, or its
deadline passed while no render of it runs. It is then SKIPPED and the next one airs.

Rows of scheduled shows carry a planned air time: one does not air more than `streamer.early_tolerance_seconds`
before it (the idle loop airs until then: a window that opens at 09:00 opens at 09:00), and a row of kind "break"
airs as the idle loop for its length; the segment after it opens with the disclosure banner again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from sqlmodel import select

from studio import audit
from studio.admission import airing_problems, segment_problem
from studio.consent import consent_problem
from studio.db import session_scope
from studio.models import Channel, Consent, Segment, utcnow
from studio.policy import PolicyStamp, StampError, check_stamp
from studio.runtime import Runtime
from studio.segments import TERMINAL, SegmentState, move
from studio.storage import sha256_file
from workers.queue_policy import MAX_RENDER_ATTEMPTS
from workers.streamer.feeder import SegmentRef

log = logging.getLogger("studio.streamer")
S = SegmentState
FETCH_AHEAD = 3  # segments of the plan fetched into the host's cache ahead of air
# How long the idle loop's full consent check (scope, territories, daily cap: queries) stands, between the
# ConsentWatch's answers on status and term, which come without a query and catch a revocation at once.
IDLE_CHECK_S = 5.0


class LeaseGone(StampError):
    """The channel's lease is held by another streamer now (or expired): not a refusal of the segment."""


class ChannelAir:
    def __init__(self, rt: Runtime, channel_id: str, *, max_wait_seconds: float = 120.0,
                 on_aired_segment: Callable[[str], None] | None = None, lease=None, token: int | None = None,
                 consents=None, consent_id: str | None = None):
        self.rt = rt
        self.channel_id = channel_id
        # The channel lease (workers.streamer.leasing.LeaseKeeper) and its fencing token; None: no fleet check.
        self.lease, self.token = lease, token
        self._lease_gone = False
        # The streamer's ConsentWatch and the show's consent: the on-air check without a query per check.
        self.consents, self.consent_id = consents, consent_id
        self.max_wait = max_wait_seconds
        self.on_aired_segment = on_aired_segment
        self.next_seq = self._first_seq()
        self._waiting_since: float | None = None
        self._break_until: float | None = None
        self.early = timedelta(seconds=rt.settings.streamer.early_tolerance_seconds)
        self.last_refusal: str | None = None
        self.breaks_aired = 0
        self._idle_check: tuple[float, str, bool] | None = None  # (monotonic time, consent, answer) of the last
        self.idle_queries = 0  # full idle-loop checks that went to the database, for the tests

    def _first_seq(self) -> int:
        """Resume after the last segment that aired, so a restarted streamer never airs one twice."""
        with session_scope(self.rt.engine) as s:
            done = s.exec(select(Segment.seq).where(Segment.channel_id == self.channel_id,
                                                    Segment.state == S.AIRED)
                          .order_by(Segment.seq.desc()).limit(1)).first()
            return 0 if done is None else done + 1

    def next_segment(self) -> SegmentRef | None:
        if self._break_until is not None:
            if time.monotonic() < self._break_until:
                return None  # a break: the idle loop airs
            self._break_until = None
        with session_scope(self.rt.engine) as s:
            while True:
                seg = s.exec(select(Segment).where(Segment.channel_id == self.channel_id,
                                                   Segment.seq == self.next_seq)).first()
                if seg is None:
                    return None
                if seg.state not in TERMINAL and seg.air_at is not None and utcnow() < seg.air_at - self.early:
                    self._waiting_since = None
                    return None  # too early for its planned time: the idle loop airs until then
                if seg.kind == "break" and seg.state == S.READY:
                    self._air_break(s, seg)
                    return None
                if seg.state == S.READY and self._began_elsewhere(seg):
                    self._interrupted(s, seg)
                    continue
                if seg.state == S.READY:
                    self._waiting_since = None
                    self._fetch_ahead(s, seg.seq)
                    return SegmentRef(seg.id, self._local(seg.path))
                if seg.state in TERMINAL or (seg.state == S.FAILED and seg.attempts >= MAX_RENDER_ATTEMPTS):
                    self._advance(s, seg, "failed" if seg.state == S.FAILED else None)
                    continue
                if late := self._lost(seg):
                    self._advance(s, seg, late)
                    continue
                # Still rendering: the slate covers, but not forever.
                now = time.monotonic()
                self._waiting_since = self._waiting_since or now
                if now - self._waiting_since > self.max_wait:
                    self._advance(s, seg, f"not ready after {self.max_wait:.0f} s")
                    continue
                return None

    def _local(self, key: str | None) -> str:
        """The segment's bytes on this host (prefetched into the cache, or fetched now). One that cannot be had
        gets a path that does not exist, so `verify` refuses it and the next one airs."""
        if key and key.startswith("/"):
            return key  # a path left by 0007_store_keys (outside the data directory)
        try:
            return str(self.rt.local(key or "", sidecars=(".vtt",)))
        except Exception as exc:  # noqa: BLE001 - a store outage must not stop the channel: the slate covers
            log.warning("channel %s: segment %s cannot be fetched from the store: %s", self.channel_id, key, exc)
            return str(self.rt.data.run / "unavailable" / (key or "none"))

    def _fetch_ahead(self, s, seq: int) -> None:
        """Start fetching the next READY segments of the plan into this host's cache, so air never waits on the
        network (with the default store they are local already and nothing happens)."""
        if self.rt.store_is_data_dir:
            return
        ahead = s.exec(select(Segment.path).where(Segment.channel_id == self.channel_id, Segment.seq > seq,
                                                  Segment.state == S.READY, Segment.path.is_not(None))
                       .order_by(Segment.seq).limit(FETCH_AHEAD)).all()
        self.rt.prefetch([p for p in ahead if p])

    def _air_break(self, s, seg: Segment) -> None:
        seconds = float(seg.duration_s or 0.0)
        seg.aired_at = utcnow()
        move(s, seg, S.AIRED, event="break.aired", data={"channel_id": self.channel_id,
                                                          "seconds": round(seconds, 3)})
        self._break_until = time.monotonic() + seconds
        self.breaks_aired += 1
        self.next_seq = seg.seq + 1
        self._waiting_since = None

    def _began_elsewhere(self, seg: Segment) -> bool:
        """It began to air under an earlier lease of this channel (its streamer died or lost the lease mid-way)."""
        return seg.air_token is not None and self.token is not None and seg.air_token != self.token

    def _interrupted(self, s, seg: Segment) -> None:
        """Never air a segment twice: one that began under another lease is on the record as aired (cut short
        where that streamer stopped), and the plan goes on with the next."""
        seg.aired_at = seg.aired_at or utcnow()
        move(s, seg, S.AIRED, data={"channel_id": self.channel_id, "produce_id": seg.produce_id,
                                    "consent_id": seg.consent_id, "cut_short": True,
                                    "interrupted": f"began under lease token {seg.air_token}, taken over "
                                    f"under {self.token}", "state": S.AIRED})
        log.warning("channel %s: segment %s began airing under lease token %s and is not aired again",
                    self.channel_id, seg.id, seg.air_token)
        self.next_seq = seg.seq + 1
        self._waiting_since = None

    def _lost(self, seg: Segment) -> str | None:
        """Why waiting for this not-ready segment is pointless, or None."""
        now = utcnow()
        if seg.air_at is not None and now - seg.air_at > timedelta(seconds=self.max_wait):
            return f"air time {seg.air_at:%H:%M:%S} UTC passed more than {self.max_wait:.0f} s ago"
        if seg.state in (S.PLANNED, S.FAILED) and seg.deadline is not None and now > seg.deadline:
            return f"deadline {seg.deadline:%H:%M:%S} UTC passed with no render of it running"
        return None

    def _advance(self, s, seg: Segment, reason: str | None) -> None:
        if reason and seg.state not in TERMINAL:
            move(s, seg, S.SKIPPED, error=reason, data={"reason": reason})
        self.next_seq = seg.seq + 1
        self._waiting_since = None

    def verify(self, ref: SegmentRef) -> bool:
        """The check just before a segment airs: a genuine stamp for these bytes and this channel, and a consent
        that allows it here and now (term, platforms, territories, scope, script approval, and the daily cap with
        this segment's duration added). A refusal's reason is kept for on_refused."""
        try:
            # The fence, by the lease store (the database or Redis: streamer.lease_backend), before every segment
            # airs; asked before the session below opens, so that it never needs a second connection at once.
            if self.lease is not None and not self.lease.holds(self.channel_id, self.token):
                self.lease.lost(self.channel_id, self.token)  # the feeder's fence stops the stream next
                raise LeaseGone(f"this streamer no longer holds channel {self.channel_id}'s lease "
                                f"(token {self.token})")
            with session_scope(self.rt.engine) as s:
                seg = s.get(Segment, ref.id)
                if seg is None or seg.stamp is None:
                    raise StampError(f"segment {ref.id} has no policy stamp")
                check_stamp(self.rt.key, PolicyStamp.from_dict(seg.stamp), channel_id=self.channel_id,
                            sha256=sha256_file(ref.path))
                if problem := segment_problem(s, seg, at=utcnow(), airing=True):
                    raise StampError(problem)
                if self.lease is not None:  # the mark stays in the database whichever store holds the lease
                    seg.air_token = self.token
        except LeaseGone as exc:
            self.last_refusal = str(exc)
            self._lease_gone = True
            return False
        except (StampError, OSError) as exc:
            self.last_refusal = str(exc)
            return False
        return True

    def still_allowed(self, ref: SegmentRef) -> bool:
        """Asked every fraction of a second while a segment airs: False once its consent is revoked or ended,
        and the feeder cuts to the slate (POLICY C5: off air within 2 s). Status and term only, to stay cheap:
        scope, approval and the daily cap were checked by `verify` for the whole segment before it aired. With a
        ConsentWatch (a streamer's runners) it is answered from the watch: no query per check."""
        if self.consents is not None and self.consent_id is not None:
            problem = self.consents.problem(self.consent_id, at=utcnow())
            if problem:
                self.last_refusal = problem
                log.warning("channel %s: cutting segment %s off air: %s", self.channel_id, ref.id, problem)
            return problem is None
        with session_scope(self.rt.engine) as s:
            seg = s.get(Segment, ref.id)
            problem = "segment gone" if seg is None else consent_problem(s.get(Consent, seg.consent_id), at=utcnow())
        if problem:
            self.last_refusal = problem
            log.warning("channel %s: cutting segment %s off air: %s", self.channel_id, ref.id, problem)
        return problem is None

    def consent_holds(self, consent_id: str) -> bool:
        """May the clone's idle loop be on this channel now? Its term and status, this channel's platforms and
        territories, and the daily cap (the idle loop shows the clone too); otherwise the plain card airs.

        The feeder asks a few times a second while the loop airs. With a ConsentWatch (a streamer's runners) status
        and term come from the watch, with no query, so a revocation turns the answer at once; the full check
        queries the database at most every IDLE_CHECK_S (before: on every call, four full checks a second for
        each channel airing its idle loop, where a segment on air costs none)."""
        watched = self.consents is not None and consent_id == self.consent_id
        if watched and self.consents.problem(consent_id, at=utcnow()):
            return False
        now = time.monotonic()
        last = self._idle_check
        if watched and last is not None and last[1] == consent_id and now - last[0] < IDLE_CHECK_S:
            return last[2]
        self.idle_queries += 1
        with session_scope(self.rt.engine) as s:
            channel = s.get(Channel, self.channel_id)
            holds = channel is not None and not airing_problems(s, s.get(Consent, consent_id), channel=channel,
                                                                script=None, at=utcnow())
        self._idle_check = (now, consent_id, holds)
        return holds

    def on_refused(self, ref: SegmentRef, reason: str) -> None:
        detail = self.last_refusal or reason
        self.last_refusal = None
        if self._lease_gone:  # not ours to refuse: the streamer that holds the channel now airs it
            log.warning("channel %s: segment %s left to the channel's new streamer: %s", self.channel_id, ref.id,
                        detail)
            return
        log.warning("channel %s refused segment %s: %s", self.channel_id, ref.id, detail)
        with session_scope(self.rt.engine) as s:
            seg = s.get(Segment, ref.id)
            if seg is not None and seg.state == S.READY:
                move(s, seg, S.REFUSED, error=detail, data={"reason": detail})
                self.next_seq = seg.seq + 1

    def on_idle_off_air(self, show, air_start: float, seconds: float) -> None:
        """The clone's idle loop left the air (its consent no longer holds): when its last frame ended."""
        with session_scope(self.rt.engine) as s:
            audit.record(s, kind="idle.off_air", subject_id=self.channel_id,
                         data={"channel_id": self.channel_id, "consent_id": show.consent_id,
                               "avatar_id": show.avatar_id, "air_start": round(air_start, 3),
                               "seconds": round(seconds, 3)})
        log.info("channel %s: the idle loop of avatar %s is off air; the card airs", self.channel_id, show.avatar_id)

    def on_aired(self, ref: SegmentRef, air_start: float, pts_offset: float, seconds: float) -> None:
        """Record the segment as aired; `seconds` is how much of it went out (less when the stream stopped
        part-way, or when a revocation cut it: a segment cancelled while on air is on the record too)."""
        with session_scope(self.rt.engine) as s:
            seg = s.get(Segment, ref.id)
            if seg is None or seg.state not in (S.READY, S.CANCELLED) or (seg.state == S.CANCELLED and seconds <= 0):
                return
            if seg.state == S.READY:  # a cancelled one cut short on air is recorded as aired for what went out
                move(s, seg, S.AIRED, event=None)
                seg.aired_at = utcnow()
            audit.record(s, kind="segment.aired", subject_id=seg.id,
                         data={"channel_id": self.channel_id, "produce_id": seg.produce_id,
                               "consent_id": seg.consent_id, "pts_offset": round(pts_offset, 3),
                               "seconds": round(seconds, 3), "air_start": round(air_start, 3),
                               "cut_short": seg.duration_s is not None and seconds < seg.duration_s - 0.05,
                               "state": seg.state})
            self.next_seq = seg.seq + 1
            archive = seg.state == S.AIRED
        if self.on_aired_segment and archive:
            self.on_aired_segment(ref.id)
