"""A plan's step time without building its DAG: the same schedule, templates and costs, replayed as a
recurrence over stages and passes.

Each pass instance starts when its stage is free and its input has arrived (the producing pass's
end plus the transfer, as the DAG's send and receive give it), and runs its template's profile
(graphgen.search.passes). The data-parallel collectives the DAG would attach are timed on their own
streams in the order the DAG would issue them: ZeRO-1/2 parameter gathers at the step's start gating
the first forward use of their units, gradient buckets when they become final, ZeRO-3 gathers one
unit ahead of compute. The optimizer waits for the last pass and every gradient reduction.

Left out, because they move a step by well under 1 % in the plans checked
(benchmarks/search_speed.py prints the largest disagreement with the DAG replay on a sample of
every search): the compute slowdown while communication runs beside it (device.overlap_slowdown)
and contention of the pipeline stream between sends.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass

from graphgen.costs.evaluate import Coster
from graphgen.ir import comm_stream
from graphgen.model.shape import activation_bytes
from graphgen.parallel.mesh import Mesh
from graphgen.parallel.zero import (
    ZERO3_GATHER,
    GradGroup,
    gather_points,
    grad_collective,
    grad_groups,
    grads_every_microbatch,
)
from graphgen.program import Program
from graphgen.scenario import Scenario
from graphgen.schedule import SCHEDULES, stage_order
from graphgen.search.passes import Lowered, PassProfile, lowered, optimizer_time
from graphgen.units import dtype_bytes


@dataclass
class _Stage:
    """One stage's state during the recurrence."""

    chunks: tuple[int, ...]
    groups: list[GradGroup]
    free: float = 0.0                       # compute stream
    streams: dict[str, float] | None = None  # communication stream -> free time
    gate: dict[int, float] | None = None     # unit -> when its step-start parameter gather is done
    busy: list[tuple[float, float]] | None = None  # communication intervals not yet behind the compute stream
    reach: float = 0.0                      # when the last of them ends
    last: float = 0.0                       # when the last pass's last node (a trailing collective) ends

    def stream(self, name: str, ready: float, duration: float) -> float:
        s = self.streams.get(name, 0.0)
        if ready > s:
            s = ready
        e = self.streams[name] = s + duration
        if duration > 0:
            self.busy.append((s, e))
            if e > self.reach:
                self.reach = e
        return e

    def covered(self, lo: float, hi: float) -> float:
        """Time in [lo, hi] some communication stream is busy; forgets what ended before lo (the
        compute stream only moves forward)."""
        if self.reach <= lo:
            self.busy = []
            return 0.0
        self.busy = [iv for iv in self.busy if iv[1] > lo]
        if len(self.busy) == 1:
            a, b = self.busy[0]
            return max(0.0, min(b, hi) - max(a, lo))
        total, cur_a, cur_b = 0.0, None, None
        for a, b in sorted((max(a, lo), min(b, hi)) for a, b in self.busy if a < hi):
            if cur_b is None or a > cur_b:
                total += (cur_b - cur_a) if cur_b is not None else 0.0
                cur_a, cur_b = a, b
            else:
                cur_b = max(cur_b, b)
        return total + ((cur_b - cur_a) if cur_b is not None else 0.0)


class FastStep:
    """The recurrence for one plan (built per plan; the lowering comes from the shared cache)."""

    def __init__(self, sc: Scenario, cache: dict) -> None:
        p = sc.plan
        self.sc, self.low = sc, lowered(sc, cache)
        self.sched = SCHEDULES[p.schedule]
        self.P = len(self.low.chunk_layers)
        prog = Program(sc, Mesh(tp=p.tp, cp=p.cp, dp=p.dp, pp=p.pp), (), self.low.lg, (), self.low.chunk_layers,
                       "coarse", Mesh(tp=p.etp, ep=p.ep, dp=p.edp, pp=p.pp))
        self.coster = Coster(prog)  # this plan's own data-parallel and pipeline groups
        self.pbytes = activation_bytes(sc.workload.precision)
        self.gbytes = dtype_bytes(p.grad_reduce_dtype)
        w = sc.workload
        self.boundary = self.pbytes * w.micro_batch * w.seq_len / p.cp * sc.model.hidden / p.tp
        self.stage_of = {g: s for s in range(p.pp) for g in self.sched.chunks(p.pp, s, p.virtual_stages)}
        self.kappa = sc.hardware.device.overlap_slowdown
        self._memo: dict = {}
        self._pp = comm_stream("pp")
        self._any_sync = p.dp * p.cp > 1 or (sc.model.moe is not None and p.edp > 1)

    # ------------------------------------------------------------------------- pieces
    def _coll(self, grp: GradGroup, kind, nbytes: float, purpose: str = "") -> float:
        return self.coster.collective_time(kind, nbytes, grp.axis, purpose)

    def _sync(self, grp: GradGroup, b) -> float:
        kind = grad_collective(self.sc.plan.zero_stage, self.sc.plan.zero_stage == 3 and self.sc.plan.zero3_grad_all_reduce)
        return self._coll(grp, kind, b.params * self.gbytes) if b.params > 0 else 0.0

    def _gather(self, grp: GradGroup, b) -> float:
        from graphgen.parallel.layout import Collective

        zero3 = self.sc.plan.zero_stage == 3
        nb = (b.gather_params if zero3 else b.params) * self.pbytes
        return self._coll(grp, Collective.ALL_GATHER, nb, ZERO3_GATHER if zero3 else "")

    def _transfer(self, src: int, dst: int) -> float:
        key = ("p2p", src, dst)
        got = self._memo.get(key)
        if got is None:
            stride, gpn = self.coster.prog.mesh.stride("pp"), self.sc.hardware.node.gpus_per_node
            same = (src * stride) // gpn == (dst * stride) // gpn
            got = self._memo[key] = self.coster.net.p2p_time(self.boundary, same)
        return got

    # ---------------------------------------------------------------------- one pass
    def _syncs(self, st: _Stage, tpl_id: int, g: int) -> list[tuple[int, str, float]]:
        """(item after which it is issued, stream, seconds) of the gradient buckets a grad pass of
        chunk g makes final, in the order the DAG issues them (cached per plan)."""
        key = ("syncs", tpl_id, g, st.chunks)
        got = self._memo.get(key)
        if got is None:
            tpl = self.low.profiles[tpl_id].template
            n, got = len(tpl.items), []
            for grp in st.groups:
                if grp.sync:
                    for b in grp.buckets[g]:
                        if b.units:
                            got.append((max(tpl.last_use.get(u, n - 1) for u in b.units), comm_stream(grp.axis),
                                        self._sync(grp, b)))
            got = self._memo[key] = sorted(got, key=lambda x: x[0])
        return got

    def _run_pass(self, st: _Stage, tpl_id: int, g: int, phase: str, last_grad: bool,
                  input_ready: float) -> tuple[float, float]:
        """(when the stage's compute stream is free again, when the pass's output is done) for a pass
        whose input arrived at input_ready, timing the collectives it issues on the stage's streams.
        Collectives before its first compute item and after its last run on their own streams, as the
        DAG's leading and trailing collective nodes do: the former from the input's arrival, over the
        previous pass's compute; the latter beside the next pass's."""
        p = self.sc.plan
        prof = self.low.profiles[tpl_id]
        grads_here = phase in ("B", "W")
        reduce_now = grads_here and (grads_every_microbatch(p.zero_stage) or (last_grad and p.overlap_grad_reduce))
        syncs = self._syncs(st, tpl_id, g) if reduce_now else ()
        if p.zero_stage == 3 and phase != "W" and self._any_sync:
            end = self._zero3_pass(st, prof, tpl_id, g, max(st.free, input_ready), input_ready, syncs)
            return end, end
        items, n = prof.template.items, len(prof.start)
        after = {}
        for idx, name, dur in syncs:
            after.setdefault(idx, []).append((name, dur))
        t = input_ready
        for i in range(prof.lead):
            t = self._comm_item(st, prof, i, t, after)
        start = max(st.free, t)
        if st.gate and phase == "F":
            shift = 0.0
            for u, idx in prof.template.first_use.items():
                done = st.gate.pop(u, None)
                if done is not None:
                    shift = max(shift, done - (start + prof.start[idx] - prof.start[prof.lead]))
            start += shift
        t, ai = start, prof.lead
        for idx in sorted(i for i in after if prof.lead <= i < prof.trail):
            t = self._items(st, prof, t, ai, idx + 1)
            ai = idx + 1
            for name, dur in after[idx]:
                st.stream(name, t, dur)
        core_end = t = self._items(st, prof, t, ai, prof.trail)
        for i in range(prof.trail, n):
            t = self._comm_item(st, prof, i, t, after)
        del items
        return core_end, t

    def _comm_item(self, st: _Stage, prof: PassProfile, i: int, ready: float, after: dict) -> float:
        """A leading or trailing collective of a pass on its own stream, and what it makes final."""
        it = prof.template.items[i]
        end = st.stream(comm_stream(it.axis), ready, prof.end[i] - prof.start[i])
        for name, dur in after.get(i, ()):
            st.stream(name, end, dur)
        return end

    def _spans(self, st: _Stage, tpl_id: int) -> list[tuple[str, list[tuple[int, int, float]]]]:
        """Per gradient group: its stream and the (first item, last item, gather seconds) of every
        span that needs a unit's full parameters (cached per plan)."""
        key = ("spans", tpl_id, st.chunks)
        got = self._memo.get(key)
        if got is None:
            tpl = self.low.profiles[tpl_id].template
            got = []
            for grp in (x for x in st.groups if x.sync):
                points = gather_points(tpl, grp.bucket_of, self.sc.plan.zero3_regather_after_recompute)
                got.append((comm_stream(grp.axis), [(f, la, self._gather(grp, grp.bucket_of[u])) for f, la, u in points]))
            got = self._memo[key] = got
        return got

    def _zero3_pass(self, st: _Stage, prof: PassProfile, tpl_id: int, g: int, start: float, input_ready: float,
                    syncs) -> float:
        """Each unit's parameters gathered before its first item, one unit ahead (the k-th gather
        waits for the (k-2)-th span to end), reduce-scatters issued as their buckets become final."""
        spans = self._spans(st, tpl_id)
        gates: dict[int, float] = {}
        after: dict[int, list] = defaultdict(list)  # item -> issues after it: gathers first, then syncs
        for name, points in spans:
            for k in range(len(points)):
                if k < 2:  # the first two wait only for the pass's input, not the stage
                    done = st.stream(name, input_ready, points[k][2])
                    gates[points[k][0]] = max(gates.get(points[k][0], 0.0), done)
                else:
                    after[points[k - 2][1]].append((name, points[k][2], points[k][0]))
        for idx, name, dur in syncs:
            after[idx].append((name, dur, None))
        ai = 0  # the next item to run
        t = start
        for i in sorted({*gates, *(f for _, pts in spans for f, _, _ in pts[2:]), *after}):
            t = self._items(st, prof, t, ai, i)
            if i in gates:
                t = max(t, gates[i])
            t = self._items(st, prof, t, i, i + 1)
            ai = i + 1
            for name, dur, gated in after.get(i, ()):
                done = st.stream(name, t, dur)
                if gated is not None:
                    gates[gated] = max(gates.get(gated, 0.0), done)
        return self._items(st, prof, t, ai, len(prof.start))

    def _items(self, st: _Stage, prof: PassProfile, t: float, a: int, b: int) -> float:
        """Run items a..b-1 from t, as the replay runs a coarse node: each compute item slowed by the
        communication overlapping it, each inline collective waiting for its stream, walked one by one
        only while either can happen; the inline collectives' streams are busy until the last ends."""
        if a >= b:
            return t
        streams, inline = st.streams, prof.inline
        reach = st.reach if self.kappa else 0.0
        for n in inline:
            if streams.get(n, 0.0) > reach:
                reach = streams[n]
        items, kappa = prof.template.items, self.kappa
        i = a
        while i < b and t < reach:
            x = prof.end[i] - prof.start[i]
            if items[i].is_comm:
                name = comm_stream(items[i].axis)
                t = max(t, streams.get(name, 0.0)) + x
                streams[name] = t
            else:
                t += x + (kappa * st.covered(t, t + x) if x and kappa else 0.0)
            i += 1
        if i < b:
            base = t - prof.start[i]
            t = base + (prof.start[b] if b < len(prof.start) else prof.duration)
            for name, idx in inline.items():
                k = bisect_left(idx, b) - 1  # the stream's last collective before b
                if k >= 0 and idx[k] >= i:
                    streams[name] = max(streams.get(name, 0.0), base + prof.end[idx[k]])
        return t

    # --------------------------------------------------------------------- the step
    def step_time(self) -> float:
        """The step at the plan's microbatch count. Past the pipeline's fill the timeline repeats
        with every further microbatch, so a long step is two short replays extrapolated."""
        M = self.sc.microbatches
        m1, m2 = self._probes()
        if M <= m2:
            return self.replay(M)
        t1, t2 = self.replay(m1), self.replay(m2)
        return t2 + (t2 - t1) * (M - m2) / (m2 - m1)

    def _probes(self) -> tuple[int, int]:
        """Two microbatch counts past the fill that the schedule accepts (interleaving wants
        multiples of pp, DualPipe an even count of at least 2 pp)."""
        p = self.sc.plan
        unit = p.pp if p.schedule == "interleaved" else (2 if self.sched.copies > 1 else 1)
        # ZeRO-3's per-unit gathers settle into their steady state later than the pipeline does
        # Steady state sets in after two pipelines' worth of microbatches; DualPipe's two directions
        # and ZeRO-3's gathers take longer to settle.
        factor = 4 if p.zero_stage == 3 or self.sched.copies > 1 else 2
        fill = factor * p.pp * max(p.virtual_stages, 1)
        first = -(-fill // unit) * unit
        return first, first + unit * max(1, -(-p.pp // unit))  # a whole period of the stages

    def replay(self, M: int) -> float:
        p = self.sc.plan
        stages, orders = [], []
        units_of = lambda g: self.low.lg.chunk_units(self.low.chunk_layers, g)  # noqa: E731
        for s in range(p.pp):
            chunks = self.sched.chunks(p.pp, s, p.virtual_stages)
            groups = grad_groups(p, self.low.lg, chunks, units_of, self.gbytes, self.sc.model.moe is not None)
            st = _Stage(chunks, groups, streams={}, gate={}, busy=[])
            self._step_start(st)
            stages.append(st)
            orders.append(self._plan_steps(s, st, stage_order(p.schedule, p.pp, s, M, p.virtual_stages)))
        arrive: dict[tuple[bool, int, int], float] = {}
        ptr = [0] * p.pp
        while True:
            moved = False
            for s in range(p.pp):
                moved |= self._advance(s, stages[s], orders[s], ptr, arrive)
            if all(ptr[s] == len(orders[s]) for s in range(p.pp)):
                break
            if not moved:
                raise RuntimeError("pipeline schedule deadlocks in the fast evaluator")
        return max(self._finish(s, st) for s, st in enumerate(stages))

    def _step_start(self, st: _Stage) -> None:
        p = self.sc.plan
        if p.zero_stage in (1, 2) and p.overlap_param_gather:
            for grp in st.groups:
                if grp.sync:
                    for g in st.chunks:
                        for b in grp.buckets[g]:
                            done = st.stream(comm_stream(grp.axis), 0.0, self._gather(grp, b))
                            for u in b.units:
                                st.gate[u] = max(st.gate.get(u, 0.0), done)

    def _plan_steps(self, s: int, st: _Stage, order) -> list[tuple]:
        """Each step as (template, chunk, phase, input key or None, output key or None, transfer
        seconds or None for a hand-over in memory, last grad pass of its chunk)."""
        last = {st.chunks[x.chunk]: i for i, x in enumerate(order) if x.phase in ("B", "W")}
        out = []
        for i, x in enumerate(order):
            g, mb, phase = st.chunks[x.chunk], x.microbatch, x.phase
            fwd, pos = phase == "F", g % self.P
            needs = phase != "W" and ((fwd and pos > 0) or (not fwd and pos < self.P - 1))
            gives = phase != "W" and ((fwd and pos < self.P - 1) or (not fwd and pos > 0))
            dst = g + 1 if fwd else g - 1
            peer = self.stage_of.get(dst, s) if gives else s
            out.append((self.low.ids.of(phase, g), g, phase, (fwd, g, mb) if needs else None,
                        (fwd, dst, mb) if gives else None, self._transfer(s, peer) if peer != s else None,
                        last.get(g) == i))
        return out

    def _advance(self, s: int, st: _Stage, steps: list[tuple], ptr: list[int], arrive: dict) -> bool:
        i0, i, n = ptr[s], ptr[s], len(steps)
        pp_stream = self._pp
        while i < n:
            tpl_id, g, phase, need, give, transfer, last = steps[i]
            got = 0.0
            if need is not None:
                got = arrive.get(need)
                if got is None:
                    break
            st.free, end = self._run_pass(st, tpl_id, g, phase, last, got)
            st.last = end
            if give is not None:
                arrive[give] = end if transfer is None else st.stream(pp_stream, end, transfer)
            i += 1
        ptr[s] = i
        return i != i0

    def _finish(self, s: int, st: _Stage) -> float:
        """The optimizer after the last pass and every gradient reduction; ZeRO-1/2 without overlap
        gathers the updated parameters after it."""
        p = self.sc.plan
        if not p.overlap_grad_reduce and not grads_every_microbatch(p.zero_stage):
            for grp in st.groups:
                if grp.sync:
                    for g in st.chunks:
                        for b in grp.buckets[g]:
                            st.stream(comm_stream(grp.axis), max(st.free, st.last), self._sync(grp, b))
        dp_done = max((v for k, v in st.streams.items() if k != comm_stream("pp")), default=0.0)
        end = max(st.free, st.last, dp_done) + optimizer_time(self.sc, self.low, s)
        if p.zero_stage in (1, 2) and not p.overlap_param_gather:
            for grp in st.groups:
                if grp.sync:
                    for g in st.chunks:
                        for b in grp.buckets[g]:
                            end = st.stream(comm_stream(grp.axis), end, self._gather(grp, b))
        return end


def fast_step_time(sc: Scenario, cache: dict) -> float:
    """A plan's step time from the recurrence (cache: shared between the plans of a search)."""
    return FastStep(sc, cache).step_time()


__all__ = ["FastStep", "Lowered", "fast_step_time"]
