"""The reference planner: the plain definition of a plan, one item at a time.

At each airing boundary, in this order: outside a window the plan jumps to the next one (a window starts like a
show: banner, break clock, next avatar); a break that is due airs (one that would run past the window end closes
the window); a stint that is over hands over; an element that does not fit before the window end closes the
window; a consent with less than the longest airing left of its daily cap hands over (when every consent is at
its cap the plan stops); the policy callable may refuse the airing, which is then skipped and reported.

It also checks every airing against its quota and cooldown on the air clock, against the airings before it
(kept in the plan state); those checks can only fail after an airing was skipped or the rotation was edited, and
then the next element of the cycle that may air takes the turn (or the show waits if none may). `plan_reference`
is the oracle that tests hold `fast.plan_arrays` equal to, the benchmark's peer, and what the fast planner hands
a channel to when it must be planned item by item.
"""

from __future__ import annotations

from studio.schedule.cycle import _INF, _Cursor, _Show, _shows
from studio.schedule.model import HOUR_MS, Allowed, Plan, PlanItem, PlanRequest, Refusal, from_ms


def _window_at(windows: tuple[list[int], list[int]] | None, t: int) -> tuple[bool, int]:
    """(inside, end of this window) or (outside, start of the next one)."""
    if windows is None:
        return True, _INF
    for s, e in zip(*windows, strict=True):
        if t < s:
            return False, s
        if t < e:
            return True, e
    raise AssertionError(f"no on-air window after {from_ms(t)}: windows are computed two weeks past the horizon")


def _ready_at(sh: _Show, hist: list | None, i: int, t: int) -> int:
    """Earliest time from `t` at which script `i` keeps its cooldown and hourly quota on the air clock."""
    if hist is None:
        return t
    end, starts = hist
    ready = t if end is None else max(t, end + sh.cd[i])
    q = sh.quota[i]
    if q is not None:
        recent = [x for x in starts if x > t - HOUR_MS]
        if len(recent) >= q:
            ready = max(ready, recent[-q] + HOUR_MS)
    return ready


def plan_reference(request: PlanRequest, *, allowed: Allowed | None = None, words_per_minute: int = 165,
                   margin_s: float = 30.0, retry_s: float = 60.0) -> Plan:
    """The plan, decided item by item: the oracle for `plan_arrays`. Same arguments as `plan`."""
    sh = _shows([request], words_per_minute)[0]
    cur = _Cursor(sh)
    cy, margin, retry = sh.cycle, round(margin_s * 1000), round(retry_s * 1000)
    items: list[PlanItem] = []
    refusals: list[Refusal] = []
    while not cur.stopped and cur.t < sh.until:
        t = cur.t
        inside, bound = _window_at(sh.windows, t)
        if not inside:
            cur.t = bound
            cur.enter(sh)
            continue
        if sh.brk and t - cur.br >= sh.brk[0]:
            if t + sh.brk[1] > bound:
                cur.t = bound
                continue
            items.append(PlanItem("break", from_ms(t), sh.brk[1] / 1000, from_ms(t - margin)))
            cur.t = cur.br = t + sh.brk[1]
            cur.banner = True
            continue
        if t - cur.ss >= sh.stint_ms[cur.avatar]:
            cur.hand_over(sh)
            continue
        r = cur.k % cy.L
        s, d = cy.elems[r], cy.ms[r]
        if t + d > bound:
            cur.t = bound
            continue
        if s < 0:
            cur.t, cur.k, cur.banner = t + d, cur.k + 1, True
            continue
        c = sh.cons[cur.avatar]
        aid, cid, sid = sh.avatar_ids[cur.avatar], sh.consent_ids[c], sh.ids[s]
        if sh.budget[c] is not None and cur.planned[c] + cy.dmax > sh.budget[c]:
            refusals.append(Refusal(from_ms(t), aid, cid, sid, sh.cap_reason(c, cur.planned[c])))
            cur.exhausted.add(c)
            cur.hand_over(sh)
            continue
        if _ready_at(sh, cur.history.get(s), s, t) > t:   # only after a skip or an edit: see the module notes
            ready = {x: _ready_at(sh, cur.history.get(x), x, t) for x in set(cy.elems) if x >= 0}
            m = next((m for m in range(1, cy.L) if (x := cy.elems[(cur.k + m) % cy.L]) >= 0 and ready[x] <= t), None)
            if m is None:      # nothing in the cycle may air yet: wait for the first that may
                cur.t, cur.banner = min(ready.values()), True
            else:              # the next that may air takes the turn
                cur.k += m
                cur.guard_until = max(cur.guard_until, t + sh.guard_span)
            continue
        if allowed is not None and (reason := allowed(aid, cid, sid, from_ms(t), d / 1000)) is not None:
            refusals.append(Refusal(from_ms(t), aid, cid, sid, reason))
            cur.k += 1
            cur.skips += 1
            cur.guard_until = max(cur.guard_until, t + sh.guard_span)
            if cur.skips >= cy.n_airings:   # this avatar refused a whole cycle: the next one takes over
                cur.skips, cur.blocks = 0, cur.blocks + 1
                if cur.blocks >= len(sh.stint_ms):   # every avatar did: wait and try again
                    cur.blocks, cur.t, cur.banner = 0, t + retry, True
                else:
                    cur.hand_over(sh)
            continue
        at = t
        for p, (text, ms) in enumerate(sh.parts[s]):
            items.append(PlanItem("segment", from_ms(at), ms / 1000, from_ms(at - margin), cur.banner and p == 0,
                                  sid, p, text, aid, cid))
            at += ms
        hist = cur.history.setdefault(s, [None, []])
        if sh.quota[s] is not None:   # the last `quota` starts are all its check needs
            hist[1] = hist[1][-sh.quota[s] + 1:] + [t] if sh.quota[s] > 1 else [t]
        hist[0] = t + d
        cur.planned[c] += d
        cur.t, cur.k, cur.banner, cur.sa, cur.skips, cur.blocks = t + d, cur.k + 1, False, True, 0, 0
    return Plan(items, refusals, cur.state(sh), cur.planned_seconds(sh))
