"""The fast planner: the same plan as `reference.plan_reference`, laid out as numpy arrays for many channels.

`plan_arrays` takes the reference's decisions a stretch at a time: between two events (a window edge, a break,
a hand-over, a consent's cap, the horizon) the cycle is laid out in one step, the next event found by bisection
on the cycle's prefix sums, and the stretches of every channel become arrays in one pass (`PlanArrays`). For an
hour after a skip or an edit of the rotation (when quotas and cooldowns must be checked on the air clock), and
whenever the policy refuses an airing, it hands the channel to the reference. Tests check its plans equal the
reference's. `plan` is the entry point for one show.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

import numpy as np

from studio.schedule.cycle import _INF, _Cursor, _Show, _shows
from studio.schedule.model import HOUR_MS, Allowed, Plan, PlanItem, PlanRequest, PlanState, Refusal, from_ms, to_ms
from studio.schedule.reference import plan_reference


class PlanArrays:
    """One channel's plan as arrays, one row per element of its rotation cycle as laid out: start (ms), script
    (-1 for a wait, when the idle loop airs), avatar, banner; and its breaks. `items(k)` makes the first k items,
    `to_plan()` all of them."""

    def __init__(self, sh: _Show, at: np.ndarray, script: np.ndarray, avatar: np.ndarray, show_start: np.ndarray,
                 breaks: list[int], refusals: list[Refusal], state: PlanState, planned: dict[str, float],
                 margin_ms: int):
        self._sh, self.at_ms, self.script, self.avatar, self.show_start = sh, at, script, avatar, show_start
        self.breaks_ms, self.refusals, self.state, self.planned_seconds = breaks, refusals, state, planned
        self._margin = margin_ms

    @property
    def airings(self) -> int:
        return int((self.script >= 0).sum())

    def __len__(self) -> int:
        counts = np.array([len(p) for p in self._sh.parts] + [0])   # index -1, a wait, has no items
        return int(counts[self.script].sum()) + len(self.breaks_ms)

    def items(self, limit: int | None = None) -> list[PlanItem]:
        sh, margin, out = self._sh, self._margin, []
        brk_s = sh.brk[1] / 1000 if sh.brk else 0.0
        breaks, bi, n = self.breaks_ms, 0, len(self.at_ms)
        step = n if limit is None else max(limit, 16)
        for lo in range(0, n, max(step, 1)):
            rows = zip(self.at_ms[lo:lo + step].tolist(), self.script[lo:lo + step].tolist(),
                       self.avatar[lo:lo + step].tolist(), self.show_start[lo:lo + step].tolist(), strict=True)
            for at, s, a, banner in rows:
                if s < 0:
                    continue
                while bi < len(breaks) and breaks[bi] < at:
                    out.append(PlanItem("break", from_ms(breaks[bi]), brk_s, from_ms(breaks[bi] - margin)))
                    bi += 1
                aid, cid, sid = sh.avatar_ids[a], sh.consent_ids[sh.cons[a]], sh.ids[s]
                for p, (text, ms) in enumerate(sh.parts[s]):
                    out.append(PlanItem("segment", from_ms(at), ms / 1000, from_ms(at - margin), banner and p == 0,
                                        sid, p, text, aid, cid))
                    at += ms
                if limit is not None and len(out) >= limit:
                    return out[:limit]
        out += [PlanItem("break", from_ms(b), brk_s, from_ms(b - margin)) for b in breaks[bi:]]
        return out if limit is None else out[:limit]

    def to_plan(self) -> Plan:
        return Plan(self.items(), self.refusals, self.state, self.planned_seconds)

    @classmethod
    def of_plan(cls, sh: _Show, plan: Plan, margin_ms: int) -> PlanArrays:
        firsts = [i for i in plan.items if i.kind == "segment" and i.part == 0]
        return cls(sh, np.array([to_ms(i.at) for i in firsts], dtype=np.int64),
                   np.array([sh.index[i.script_id] for i in firsts], dtype=np.int32),
                   np.array([_avatar_index(sh, i) for i in firsts], dtype=np.int32),
                   np.array([i.show_start for i in firsts], dtype=bool),
                   [to_ms(i.at) for i in plan.items if i.kind == "break"], plan.refusals, plan.state,
                   plan.planned_seconds, margin_ms)


def _avatar_index(sh: _Show, item: PlanItem) -> int:
    return next(a for a, (aid, c) in enumerate(zip(sh.avatar_ids, sh.cons, strict=True))
                if aid == item.avatar_id and sh.consent_ids[c] == item.consent_id)


def _layout(sh: _Show, cur: _Cursor, ch: int, out: list[list[int]]) -> tuple[list[int], list[tuple], int]:
    """Lay one channel out as stretches (ch, cycle position, start ms of that position's cycle, length, avatar,
    banner) appended to `out`; returns its breaks, refusals, and how far into its repeated cycle a stretch
    reaches. Mirrors `plan_reference` without a policy."""
    cy = sh.cycle
    L, D, C, A, AD, elems, ms, dmax, longest = cy.L, cy.D, cy.C, cy.A, cy.AD, cy.elems, cy.ms, cy.dmax, max(cy.ms)
    o_ch, o_r, o_shift, o_len, o_av, o_banner = out
    wstart, wend = sh.windows if sh.windows is not None else ([], [])
    wi, we = 0, _INF
    B, S = sh.brk if sh.brk else (None, 0)
    stint, cons, budget, planned, exhausted = sh.stint_ms, sh.cons, sh.budget, cur.planned, cur.exhausted
    until = sh.until
    t, k, a, ss, sa, br, banner = cur.t, cur.k, cur.avatar, cur.ss, cur.sa, cur.br, cur.banner
    breaks: list[int] = []
    refusals: list[tuple] = []
    stopped, need = False, 0
    while t < until:
        if wstart:
            while wend[wi] <= t:
                wi += 1
            if wstart[wi] > t:      # enter the next window
                t = br = wstart[wi]
                banner = True
                if sa:
                    nxt = sh.next_avatar(a, exhausted)
                    if nxt is None:
                        stopped = True
                        break
                    a, sa = nxt, False
                ss = t
                continue
            we = wend[wi]
        if B is not None and t - br >= B:
            if t + S > we:
                t = we
                continue
            breaks.append(t)
            t = br = t + S
            banner = True
            if t >= until or t >= we:
                continue
        if t - ss >= stint[a]:
            nxt = sh.next_avatar(a, exhausted)
            if nxt is None:
                stopped = True
                break
            a, ss, sa, banner = nxt, t, False, True
        r = k % L
        if t + ms[r] > we:
            t = we
            continue
        c = cons[a]
        bud = budget[c]
        if bud is not None and elems[r] >= 0 and planned[c] + dmax > bud:
            refusals.append((t, a, elems[r], sh.cap_reason(c, planned[c])))
            exhausted.add(c)
            nxt = sh.next_avatar(a, exhausted)
            if nxt is None:
                stopped = True
                break
            a, ss, sa, banner = nxt, t, False, True
            continue
        # Element k may air; the stretch runs to the first later boundary where something happens.
        qk = k // L
        ck, ak = qk * D + C[r], qk * AD + A[r]
        base = ck - t
        due = ss + stint[a]                    # the first of: hand-over, break, horizon end
        if B is not None and br + B < due:
            due = br + B
        if until < due:
            due = until
        q, x = divmod(due + base, D)
        j = q * L + bisect_left(C, x)
        if we < due + longest:                 # an element may not fit before the window ends
            q, x = divmod(we + base, D)
            m = q * L + bisect_right(C, x) - 1
            if m < j:
                j = m
        if bud is not None:                    # the consent reaches its cap
            q, x = divmod(ak + bud - planned[c] - dmax, AD)
            m = q * L + bisect_right(A, x)
            if m <= k:
                m = k + 1
            if elems[m % L] < 0:
                m += 1
            if m < j:
                j = m
        o_ch.append(ch)
        o_r.append(r)
        o_shift.append(t - C[r])
        o_len.append(j - k)
        o_av.append(a)
        o_banner.append(banner)
        if r + j - k > need:
            need = r + j - k
        qj, rj = divmod(j, L)
        t += qj * D + C[rj] - ck
        aired = qj * AD + A[rj] - ak
        if aired:
            planned[c] += aired
            sa, banner = True, False
        if elems[(j - 1) % L] < 0:
            banner = True
        k = j
    cur.t, cur.k, cur.avatar, cur.ss, cur.sa, cur.br, cur.banner, cur.stopped = t, k, a, ss, sa, br, banner, stopped
    return breaks, refusals, need


def _histories(shows: list[_Show], curs: dict[int, _Cursor], at: np.ndarray, script: np.ndarray,
               bounds: dict[int, tuple[int, int]]) -> None:
    """Bring each cursor's history up to date with the airings that can still bind, those of its run's last
    hour, for all channels at once."""
    chans = [ch for ch, cur in curs.items() if bounds[ch][1] > bounds[ch][0]]
    if not chans:
        return
    lo = np.array([bounds[ch][0] + int(np.searchsorted(at[slice(*bounds[ch])], curs[ch].t - HOUR_MS
                                                       - shows[ch].cycle.dmax, side="right")) for ch in chans])
    hi = np.array([bounds[ch][1] for ch in chans])
    n = hi - lo
    idx = np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
    who, s, t = np.repeat(np.array(chans), n), script[idx], at[idx]
    aired = s >= 0
    who, s, t = who[aired], s[aired], t[aired]
    if not len(who):
        return
    key = who * max(len(sh.ids) for sh in shows) + s
    order = np.argsort(key, kind="stable")               # by channel and script, in time order within
    key, t = key[order], t[order].tolist()
    firsts = np.flatnonzero(np.diff(key, prepend=-1)).tolist()
    for a, b, ch, sc in zip(firsts, firsts[1:] + [len(t)], who[order][firsts].tolist(), s[order][firsts].tolist(),
                            strict=True):
        h = curs[ch].history.setdefault(sc, [None, []])
        h[0] = t[b - 1] + shows[ch].dur[sc]
        h[1].extend(t[a:b])


def plan_arrays(requests: Sequence[PlanRequest], *, allowed: Allowed | None = None, words_per_minute: int = 165,
                margin_s: float = 30.0, retry_s: float = 60.0) -> list[PlanArrays]:
    """Plan many channels at once; the same plans as `plan_reference`, one `PlanArrays` per request."""
    shows = _shows(requests, words_per_minute)
    margin = round(margin_s * 1000)
    out: list[list[int]] = [[], [], [], [], [], []]
    runs: list[tuple | None] = []
    first_stretch = []
    for ch, sh in enumerate(shows):
        cur = _Cursor(sh)
        first_stretch.append(len(out[0]))
        if cur.guard_until > cur.t or cur.skips or cur.blocks:
            runs.append(None)      # limits must be checked on the air clock: the reference does that
            continue
        runs.append((cur, *_layout(sh, cur, ch, out)))
    first_stretch.append(len(out[0]))

    # One table per channel: its cycle repeated as often as its longest stretch needs, with start offsets.
    s_ch, s_r, s_len, s_av = (np.array(x, dtype=np.int32) for x in (out[0], out[1], out[3], out[4]))
    s_shift, s_banner = np.array(out[2], dtype=np.int64), np.array(out[5], dtype=bool)
    tab_len = np.array([max(run[3], 1) if run else 1 for run in runs], dtype=np.int64)
    tab_base = np.cumsum(tab_len) - tab_len
    cyc_L = np.array([sh.cycle.L for sh in shows], dtype=np.int64)
    cyc_D = np.array([sh.cycle.D for sh in shows], dtype=np.int64)
    cyc_base = np.cumsum(cyc_L) - cyc_L
    cyc_C = np.array([c for sh in shows for c in sh.cycle.C[:-1]], dtype=np.int64)
    cyc_S = np.array([e for sh in shows for e in sh.cycle.elems], dtype=np.int32)
    cyc_W = np.array([x for sh in shows for x in sh.cycle.after_wait], dtype=bool)
    tab_ch = np.repeat(np.arange(len(shows)), tab_len)
    q, r = np.divmod(np.arange(int(tab_len.sum())) - tab_base[tab_ch], cyc_L[tab_ch])
    g = cyc_base[tab_ch] + r
    tab_C, tab_S, tab_W = q * cyc_D[tab_ch] + cyc_C[g], cyc_S[g], cyc_W[g]

    # Every element of every stretch at once: element i of a stretch is table entry base + r + i.
    total = int(s_len.sum())
    s_first = np.cumsum(s_len, dtype=np.int64) - s_len
    g = np.repeat((tab_base[s_ch] + s_r - s_first).astype(np.int32), s_len) + np.arange(total, dtype=np.int32)
    script = tab_S[g]
    banner = tab_W[g]
    banner[s_first] = s_banner    # the first element of a stretch carries the stretch's own banner
    at = tab_C[g] + np.repeat(s_shift, s_len)
    avatar = np.repeat(s_av, s_len)
    elem_start = np.concatenate((s_first, [total])).tolist()

    bounds, curs = {}, {}
    for ch, run in enumerate(runs):
        if run is not None:
            bounds[ch] = (elem_start[first_stretch[ch]], elem_start[first_stretch[ch + 1]])
            curs[ch] = run[0]
    if allowed is not None:
        for ch, (lo, hi) in bounds.items():
            if _refuses(shows[ch], allowed, at[lo:hi], script[lo:hi], avatar[lo:hi]):
                runs[ch] = None
                del curs[ch]
    _histories(shows, curs, at, script, bounds)

    results: list[PlanArrays] = []
    for ch, (sh, run) in enumerate(zip(shows, runs, strict=True)):
        if run is None:
            results.append(PlanArrays.of_plan(sh, plan_reference(sh.req, allowed=allowed,
                                                                 words_per_minute=words_per_minute,
                                                                 margin_s=margin_s, retry_s=retry_s), margin))
            continue
        cur, breaks, refused, _ = run
        lo, hi = bounds[ch]
        refusals = [Refusal(from_ms(t), sh.avatar_ids[a], sh.consent_ids[sh.cons[a]], sh.ids[s], why)
                    for t, a, s, why in refused]
        results.append(PlanArrays(sh, at[lo:hi], script[lo:hi], avatar[lo:hi], banner[lo:hi], breaks, refusals,
                                  cur.state(sh), cur.planned_seconds(sh), margin))
    return results


def _refuses(sh: _Show, allowed: Allowed, at: np.ndarray, script: np.ndarray, avatar: np.ndarray) -> bool:
    for t, s, a in zip(at.tolist(), script.tolist(), avatar.tolist(), strict=True):
        if s >= 0 and allowed(sh.avatar_ids[a], sh.consent_ids[sh.cons[a]], sh.ids[s], from_ms(t),
                              sh.dur[s] / 1000) is not None:
            return True
    return False


def plan(request: PlanRequest, *, allowed: Allowed | None = None, words_per_minute: int = 165,
         margin_s: float = 30.0, retry_s: float = 60.0) -> Plan:
    """The next stretch of one show's plan: the airings that start from max(state, now) to now + horizon.

    `allowed(avatar_id, consent_id, script_id, at, seconds)` is asked about each airing and returns None or the
    reason it may not air; a refused airing is skipped and reported in `refusals`. It must be a pure question:
    the fast path may ask about an airing and then plan the channel again item by item. `max_hours_per_day`
    caps each consent's air time, counting `used_seconds` (aired or planned in the last 24 h, on every channel:
    plan shows that share a consent one after another, adding each result's `planned_seconds`). Items carry a
    `deadline` `margin_s` before they air; when every avatar is refused a whole cycle the show waits `retry_s`.
    The result's `state` is where the next pass starts.
    """
    return plan_arrays([request], allowed=allowed, words_per_minute=words_per_minute, margin_s=margin_s,
                       retry_s=retry_s)[0].to_plan()
