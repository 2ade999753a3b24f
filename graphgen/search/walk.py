"""One stage's streams during the fast recurrence (graphgen.search.fast), and the walk of a pass's items
across them.

The busy time of the communication streams is kept as a sorted list of disjoint intervals, merged as
they are issued, so the overlap a compute item sees (device.overlap_slowdown) is a short scan from
the front instead of a sort per item: the walk asks for it once per item while communication runs.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from graphgen.parallel.zero import GradGroup
from graphgen.search.passes import PassProfile


class Stage:
    """One stage's state during the recurrence."""

    __slots__ = ("chunks", "groups", "memo", "free", "streams", "gate", "lo", "hi", "reach", "last", "carry")

    def __init__(self, chunks: tuple[int, ...], groups: list[GradGroup], memo: dict) -> None:
        self.chunks, self.groups = chunks, groups
        self.memo = memo                        # the plan's per-stage cache (pass layouts)
        self.free = 0.0                         # compute stream
        self.streams: dict[str, float] = {}     # communication stream -> free time
        self.gate: dict[int, float] = {}        # unit -> when its step-start parameter gather is done
        self.lo: list[float] = []               # merged busy intervals not yet behind the compute
        self.hi: list[float] = []               # stream: starts and ends, both ascending
        self.reach = 0.0                        # when the last of them ends
        self.last = 0.0                         # when the last pass's last node (a trailing collective) ends
        self.carry = 0.0                        # a collective beside the next item, across a cut in a pass

    def copy(self) -> Stage:
        st = Stage(self.chunks, self.groups, self.memo)
        st.free, st.reach, st.last, st.carry = self.free, self.reach, self.last, self.carry
        st.streams, st.gate, st.lo, st.hi = dict(self.streams), dict(self.gate), list(self.lo), list(self.hi)
        return st

    def stream(self, name: str, ready: float, duration: float) -> float:
        streams = self.streams
        s = streams.get(name, 0.0)
        if ready > s:
            s = ready
        e = streams[name] = s + duration
        if duration > 0:
            hi = self.hi
            if not hi or s > hi[-1]:  # the usual case: after everything still pending
                self.lo.append(s)
                hi.append(e)
            elif s >= self.lo[-1]:  # the next usual one: it joins the last (intervals never touch)
                if e > hi[-1]:
                    hi[-1] = e
            else:
                self._busy(s, e)
            if e > self.reach:
                self.reach = e
        return e

    def _busy(self, s: float, e: float) -> None:
        lo, hi = self.lo, self.hi
        k, j = bisect_left(hi, s), bisect_right(lo, e)  # the intervals [k, j) touch [s, e]
        if k == j:
            lo.insert(k, s)
            hi.insert(k, e)
        else:
            lo[k:j] = [min(lo[k], s)]
            hi[k:j] = [max(hi[j - 1], e)]

    def covered(self, a: float, b: float) -> float:
        """Time in [a, b] some communication stream is busy; forgets what ended by a (the compute
        stream only moves forward)."""
        lo, hi = self.lo, self.hi
        if self.reach <= a:
            if hi:
                lo.clear()
                hi.clear()
            return 0.0
        if hi[0] <= a:
            k = bisect_right(hi, a)
            del lo[:k], hi[:k]
        total = 0.0
        for k, s in enumerate(lo):
            if s >= b:
                break
            e = hi[k]
            total += (b if e > b else e) - (a if s < a else s)
        return total


def run_items(st: Stage, prof: PassProfile, t: float, a: int, b: int, kappa: float) -> float:
    """Run items a..b-1 from t, as the replay runs a coarse node: each compute item slowed by the
    communication overlapping it, each inline collective waiting for its stream, walked one by one
    only while either can happen; the inline collectives' streams are busy until the last ends."""
    if a >= b:
        return t
    if prof.beside:
        return _walk_beside(st, prof, t, a, b, kappa)
    streams, inline = st.streams, prof.inline
    reach = st.reach if kappa else 0.0
    if inline:
        for n in inline:
            v = streams.get(n, 0.0)
            if v > reach:
                reach = v
    i = a
    if t < reach:
        i, t = _walk(st, prof, t, a, b, kappa, reach)
        if i >= b:
            return t
    base = t - prof.start[i]
    t = base + prof.stop[b]
    if inline:
        end = prof.end
        for name, k in prof.lasts[b]:
            if k >= i:
                v = base + end[k]
                if v > streams.get(name, 0.0):
                    streams[name] = v
    return t


def _walk(st: Stage, prof: PassProfile, t: float, i: int, b: int, kappa: float, reach: float) -> tuple[int, float]:
    """Items from i one by one while t is before reach: (the first item not walked, when it starts).
    Stage.covered inlined: the intervals that ended by t are dropped once, at the end (the compute
    only moves forward and nothing adds an interval meanwhile), with the same sums in the same order."""
    dur, comm, streams = prof.dur, prof.stream, st.streams
    lo, hi = st.lo, st.hi
    n, k0, gone = len(hi), 0, False  # intervals [k0, n) have not ended by the last covered() point
    while i < b and t < reach:
        name = comm[i]
        x = dur[i]
        if name is not None:
            v = streams.get(name, 0.0)
            t = (v if v > t else t) + x
            streams[name] = t
        elif x and kappa:
            while k0 < n and hi[k0] <= t:
                k0 += 1
            gone = True
            e_ = t + x
            if k0 == n or lo[k0] >= e_:  # nothing busy beside it: no slowdown (x + kappa * 0.0 is x)
                t = e_
            else:
                total, k = 0.0, k0
                while k < n:
                    s = lo[k]
                    if s >= e_:
                        break
                    e = hi[k]
                    total += (e_ if e > e_ else e) - (t if s < t else s)
                    k += 1
                t += x + kappa * total
        else:
            t += x
        i += 1
    if gone and k0:
        del lo[:k0], hi[:k0]
    return i, t


class Alone:
    """A pass with collectives beside its compute, walked once with nothing else communicating: when
    each compute item starts (`at`), which of them start with nothing of the pass's own in flight
    (`idle`), and after each item when its compute ends and when what runs beside it does (`ends`)."""

    __slots__ = ("at", "idle", "ends", "streams")

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.idle: set[int] = set()
        self.ends: list[tuple[float, float]] = []
        self.streams: list[dict[str, float]] = []  # after each item: when each stream it used is free again


def _alone(prof: PassProfile, kappa: float) -> Alone:
    got = prof._alone.get(kappa)
    if got is None:
        got = prof._alone[kappa] = Alone()
        _walk_beside(Stage((), [], {}), prof, 0.0, 0, len(prof.dur), kappa, got)
    return got


def _walk_beside(st: Stage, prof: PassProfile, t: float, a: int, b: int, kappa: float,
                 record: Alone | None = None) -> float:
    """Items a..b-1 one by one for a pass with collectives beside its compute (ring attention's K/V
    exchange, overlapped expert dispatch), as the DAG runs them: such a collective starts with the item
    after it, on its own stream, slowing the compute it overlaps; the item after that waits for both.
    From the first item reached with every stream idle (and nothing in flight there in the pass walked
    alone), the rest is that of the pass walked alone (graphgen.search.walk._alone)."""
    dur, comm, beside = prof.dur, prof.stream, prof.beside
    pending, st.carry = st.carry, 0.0
    alone = record or _alone(prof, kappa)
    for i in range(a, b):
        x, name = dur[i], comm[i]
        if beside[i]:
            pending = max(pending, st.stream(name, t, x))
        else:
            if pending and i and not beside[i - 1]:
                t, pending = max(t, pending), 0.0
            if record is not None:
                record.at[i] = t
                if not pending and t >= st.reach:
                    record.idle.add(i)
            elif not pending and t >= st.reach and i in alone.idle:  # from here on, as the pass walked alone
                end, late = alone.ends[b - 1]
                shift = t - alone.at[i]
                for name, free in alone.streams[b - 1].items():  # the collectives up to b keep their streams busy
                    if free + shift > st.streams.get(name, 0.0):
                        st.streams[name] = free + shift
                if b < len(dur):
                    st.carry = t + late - alone.at[i] if late > end else 0.0
                    return t + end - alone.at[i]
                return t + max(end, late) - alone.at[i]
            if name is not None:  # in line with the compute: it overlaps none of it, so no interval
                v = st.streams.get(name, 0.0)
                t = (v if v > t else t) + x
                st.streams[name] = t
            elif x and kappa:
                t += x + kappa * st.covered(t, t + x)
            else:
                t += x
        if record is not None:
            record.ends.append((t, pending))
            record.streams.append(dict(st.streams))
    if b < len(dur):  # a cut in the pass (ZeRO-3's gates, a gradient bucket's issue point): what follows
        st.carry = pending  # the cut and waits for a collective still beside it waits there; the cut
        return t            # itself (what it issues) comes with the compute, as in the DAG
    return max(t, pending)


class Run:
    """One replay in progress: every stage's state, its steps (FastStep._plan_steps), how many it
    has run, and the arrivals so far."""

    def __init__(self, stages: list[Stage], orders: list[list[tuple]]) -> None:
        self.stages, self.orders = stages, orders
        self.ptr = [0] * len(stages)
        self.arrive: dict[tuple[bool, int, int], float] = {}

    def fork(self, orders: list[list[tuple]]) -> Run:
        """A copy of this replay's state that carries on with other steps."""
        run = Run([st.copy() for st in self.stages], orders)
        run.ptr, run.arrive = list(self.ptr), dict(self.arrive)
        return run


def marks(run: Run) -> list[tuple[float, dict[str, float]]]:
    """Per stage, where its compute and its communication streams stand."""
    return [(st.free, dict(st.streams)) for st in run.stages]


def paces(before: list[tuple[float, dict]], after: list[tuple[float, dict]], microbatches: int) -> tuple[float, float]:
    """Seconds per microbatch of the slowest- and the fastest-moving stage compute (the fastest may be
    a stream still busy past its compute) between two points of a replay the given microbatches apart.
    A pipeline is steady only when every one moves at the step's own pace: one moving faster is a stage
    or a backlog that will set the pace once its lead is spent (later stages falling behind earlier
    ones, ZeRO-3 gathers losing a little ground with every microbatch); one moving slower, a lead still
    being spent, the step's line steeper than it will stay."""
    slow, fast = float("inf"), 0.0
    for (f0, s0), (f1, s1) in zip(before, after, strict=True):
        slow, fast = min(slow, f1 - f0), max(fast, f1 - f0)
        for n, v in s1.items():
            if v > f1:
                fast = max(fast, v - s0.get(n, 0.0))
    return slow / microbatches, fast / microbatches


def shared_prefix(a: list[list[tuple]], b: list[list[tuple]]) -> list[int]:
    """Per stage, how many leading steps two replays run identically: the same steps whose inputs
    come from such steps (then their times are the same too, whatever follows)."""
    done = [0] * len(a)
    made: set = set()
    moved = True
    while moved:
        moved = False
        for s, (x, y) in enumerate(zip(a, b, strict=True)):
            i, n = done[s], min(len(x), len(y))
            while i < n and x[i] == y[i] and (x[i][3] is None or x[i][3] in made):
                if x[i][4] is not None:
                    made.add(x[i][4])
                i += 1
            if i != done[s]:
                done[s], moved = i, True
    return done
