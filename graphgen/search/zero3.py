"""A pass under ZeRO-3 in the fast recurrence (graphgen.search.fast): each unit's parameters gathered
one unit ahead of the compute that needs them, on the data-parallel stream, and the gradient buckets
reduce-scattered as they become final, as the DAG issues them (graphgen.parallel.zero)."""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol

from graphgen.ir import comm_stream
from graphgen.parallel.zero import GradGroup, gather_points
from graphgen.scenario import Scenario
from graphgen.search.passes import Lowered, PassProfile
from graphgen.search.walk import Stage, run_items


class FastStep(Protocol):
    """What a ZeRO-3 pass reads of the plan's recurrence (graphgen.search.fast.FastStep)."""

    sc: Scenario
    low: Lowered
    kappa: float
    memo: dict

    def gather(self, grp: GradGroup, b) -> float: ...

    def syncs(self, st: Stage, tpl_id: int, g: int) -> list[tuple[int, str, float]]: ...


def _spans(fs: FastStep, st: Stage, tpl_id: int) -> list[tuple[str, list[tuple[int, int, float]]]]:
    """Per gradient group: its stream and the (first item, last item, gather seconds) of every
    span that needs a unit's full parameters (cached per plan)."""
    key = ("spans", tpl_id, st.chunks)
    got = fs.memo.get(key)
    if got is None:
        tpl = fs.low.profiles[tpl_id].template
        got = []
        for grp in (x for x in st.groups if x.sync):
            points = gather_points(tpl, grp.bucket_of, fs.sc.plan.zero3_regather_after_recompute)
            got.append((comm_stream(grp.axis), [(f, la, fs.gather(grp, grp.bucket_of[u])) for f, la, u in points]))
        got = fs.memo[key] = got
    return got


def zero3_pass(fs: FastStep, st: Stage, prof: PassProfile, tpl_id: int, g: int, reduce_now: bool,
               input_ready: float) -> tuple[float, float]:
    """Units' parameters gathered one unit ahead (the k-th waits for the (k-2)-th span), buckets
    reduce-scattered as they become final; (compute free, pass done), as _run_pass."""
    key = ("z3", tpl_id, g, reduce_now)
    firsts, after, order = st.memo.get(key) or _zero3_layout(fs, st, key, prof.trail)
    gates: dict[int, float] = {}  # item -> when the gathers it waits for are done
    stream = st.stream
    for name, dur, f in firsts:  # the first two wait only for the pass's input, not the stage
        done = stream(name, input_ready, dur)
        if done > gates.get(f, 0.0):
            gates[f] = done
    ai, kappa, trail = 0, fs.kappa, prof.trail  # the next item to run; where the compute ends
    t = st.free if st.free > input_ready else input_ready
    for i in order:
        if ai < i:
            t = run_items(st, prof, t, ai, i, kappa)
        gate = gates.get(i)
        if gate is not None and gate > t:
            t = gate
        t = run_items(st, prof, t, i, i + 1, kappa)
        ai = i + 1
        for name, dur, gated in after.get(i, ()):
            done = stream(name, t, dur)
            if gated is not None and done > gates.get(gated, 0.0):
                gates[gated] = done
    core = t = run_items(st, prof, t, ai, trail, kappa)
    if st.carry:
        t, st.carry = max(t, st.carry), 0.0
    for i in range(trail, len(prof.start)):  # trailing collectives on their own streams
        ready = max(t, gates.get(i, 0.0))
        t = stream(comm_stream(prof.template.items[i].axis), ready, prof.end[i] - prof.start[i])
        for name, dur, gated in after.get(i, ()):
            done = stream(name, t, dur)
            if gated is not None and done > gates.get(gated, 0.0):
                gates[gated] = done
    return core, t


def _zero3_layout(fs: FastStep, st: Stage, key: tuple, trail: int) -> tuple[list, dict, list[int]]:
    """A ZeRO-3 pass's issues, cached per stage: the gathers at its input's arrival (stream, seconds,
    the item they gate), the collectives issued after each item (gathers first, then the buckets
    it makes final), and the items before the trail where something is gated or issued, in order."""
    _, tpl_id, g, reduce_now = key
    spans = _spans(fs, st, tpl_id)
    firsts: list[tuple[str, float, int]] = []
    after: dict[int, list] = defaultdict(list)
    for name, points in spans:
        for k in range(len(points)):
            if k < 2:
                firsts.append((name, points[k][2], points[k][0]))
            else:
                after[points[k - 2][1]].append((name, points[k][2], points[k][0]))
    for idx, name, dur in (fs.syncs(st, tpl_id, g) if reduce_now else ()):
        after[idx].append((name, dur, None))
    order = sorted({*(f for _, _, f in firsts), *(f for _, pts in spans for f, _, _ in pts[2:]), *after})
    got = st.memo[key] = (firsts, dict(after), [i for i in order if i < trail])
    return got
