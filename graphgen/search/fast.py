"""A plan's step time without building its DAG: the same schedule, templates and costs, replayed as a
recurrence over stages and passes.

Each pass instance starts when its stage is free and its input has arrived (the producing pass's
end plus the transfer, as the DAG's send and receive give it), and runs its template's profile
(graphgen.search.passes). The data-parallel collectives the DAG would attach are timed on their own
streams in the order the DAG would issue them: ZeRO-1/2 parameter gathers at the step's start gating
the first forward use of their units, gradient buckets when they become final, ZeRO-3 gathers one
unit ahead of compute. The optimizer waits for the last pass and every gradient reduction. Compute
overlapped by communication is slowed as the replay slows it, collectives beside an op run on their
own streams (graphgen.search.walk), and a long step is two shorter replays extrapolated once they
move at one pace (ZeRO-3 passes: graphgen.search.zero3); benchmarks/search_speed.py prints the
largest disagreement with the DAG replay on a sample.
"""

from __future__ import annotations

from graphgen.costs.evaluate import Coster
from graphgen.ir import comm_stream
from graphgen.model.shape import activation_bytes
from graphgen.parallel.mesh import Mesh
from graphgen.parallel.zero import (
    ZERO3_GATHER,
    GradGroup,
    grad_collective,
    grad_groups,
    grads_every_microbatch,
)
from graphgen.program import Program
from graphgen.scenario import Scenario
from graphgen.schedule import SCHEDULES, stage_order
from graphgen.search.passes import Lowered, PassProfile, lowered, optimizer_time
from graphgen.search.walk import Run, marks, paces, run_items, shared_prefix
from graphgen.search.walk import Stage as _Stage
from graphgen.search.zero3 import zero3_pass
from graphgen.stragglers import straggler_factor
from graphgen.units import dtype_bytes

STEADY_TOL = 1e-3  # the most a pace not yet reached may add to an extrapolated step


class FastStep:
    """The recurrence for one plan (built per plan; the lowering comes from the shared cache)."""

    def __init__(self, sc: Scenario, cache: dict) -> None:
        p = sc.plan
        self.sc, self.low, self.cache = sc, lowered(sc, cache), cache
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
        self.memo: dict = {}
        self._pp = comm_stream("pp")
        any_sync = p.dp * p.cp > 1 or (sc.model.moe is not None and p.edp > 1)
        self._zero3 = p.zero_stage == 3 and any_sync
        self._every_mb = grads_every_microbatch(p.zero_stage)
        self._overlap_reduce = p.overlap_grad_reduce
        self._stage_memo: list[dict] = [{} for _ in range(p.pp)]  # per stage: pass layouts, shared by replays
        self._resume: Run | None = None  # a probe that was not steady, at its cooldown (step_time)

    def _coll(self, grp: GradGroup, kind, nbytes: float, purpose: str = "") -> float:
        return self.coster.collective_time(kind, nbytes, grp.axis, purpose)

    def _sync(self, grp: GradGroup, b) -> float:
        kind = grad_collective(self.sc.plan.zero_stage, self.sc.plan.zero_stage == 3 and self.sc.plan.zero3_grad_all_reduce)
        return self._coll(grp, kind, b.params * self.gbytes) if b.params > 0 else 0.0

    def gather(self, grp: GradGroup, b) -> float:
        from graphgen.parallel.layout import Collective

        zero3 = self.sc.plan.zero_stage == 3
        nb = (b.gather_params if zero3 else b.params) * self.pbytes
        return self._coll(grp, Collective.ALL_GATHER, nb, ZERO3_GATHER if zero3 else "")

    def _transfer(self, src: int, dst: int) -> float:
        key = ("p2p", src, dst)
        got = self.memo.get(key)
        if got is None:
            stride, gpn = self.coster.prog.mesh.stride("pp"), self.sc.hardware.node.gpus_per_node
            same = (src * stride) // gpn == (dst * stride) // gpn
            got = self.memo[key] = self.coster.net.p2p_time(self.boundary, same)
        return got

    def syncs(self, st: _Stage, tpl_id: int, g: int) -> list[tuple[int, str, float]]:
        """(item after which it is issued, stream, seconds) of the gradient buckets a grad pass of
        chunk g makes final, in the order the DAG issues them (cached per plan)."""
        key = ("syncs", tpl_id, g, st.chunks)
        got = self.memo.get(key)
        if got is None:
            tpl = self.low.profiles[tpl_id].template
            n, got = len(tpl.items), []
            for grp in st.groups:
                if grp.sync:
                    for b in grp.buckets[g]:
                        if b.units:
                            got.append((max(tpl.last_use.get(u, n - 1) for u in b.units), comm_stream(grp.axis),
                                        self._sync(grp, b)))
            got = self.memo[key] = sorted(got, key=lambda x: x[0])
        return got

    def _run_pass(self, st: _Stage, tpl_id: int, g: int, phase: str, last_grad: bool,
                  input_ready: float) -> tuple[float, float]:
        """(when the stage's compute stream is free again, when the pass's output is done) for a pass
        whose input arrived at input_ready, timing the collectives it issues on the stage's streams.
        Collectives before its first compute item and after its last run on their own streams, as the
        DAG's leading and trailing collective nodes do: the former from the input's arrival, over the
        previous pass's compute; the latter beside the next pass's."""
        reduce_now = (phase == "B" or phase == "W") and (self._every_mb or (last_grad and self._overlap_reduce))
        if self._zero3 and phase != "W":
            return zero3_pass(self, st, self.low.profiles[tpl_id], tpl_id, g, reduce_now, input_ready)
        key = (tpl_id, g, reduce_now)
        prof, after, mids = st.memo.get(key) or self._layout(st, key)
        t = input_ready
        for i in range(prof.lead):
            t = self._comm_item(st, prof, i, t, after)
        start = st.free if st.free > t else t
        if st.gate and phase == "F":
            start = self._gated(st, prof, start)
        t, ai, kappa = start, prof.lead, self.kappa
        for idx in mids:
            t = run_items(st, prof, t, ai, idx + 1, kappa)
            ai = idx + 1
            for name, dur in after[idx]:
                st.stream(name, t, dur)
        core_end = t = run_items(st, prof, t, ai, prof.trail, kappa)
        if st.carry:  # the trailing collectives wait for one still beside the compute
            t, st.carry = max(t, st.carry), 0.0
        if prof.trail < len(prof.start):
            for i in range(prof.trail, len(prof.start)):
                t = self._comm_item(st, prof, i, t, after)
        return core_end, t

    @staticmethod
    def _gated(st: _Stage, prof: PassProfile, start: float) -> float:
        """A forward pass's start, held until the step-start gathers of the units it uses are done."""
        shift = 0.0
        for u, idx in prof.template.first_use.items():
            done = st.gate.pop(u, None)
            if done is not None:
                shift = max(shift, done - (start + prof.start[idx] - prof.start[prof.lead]))
        return start + shift

    def _layout(self, st: _Stage, key: tuple[int, int, bool]) -> tuple[PassProfile, dict, list[int]]:
        """A pass's profile, the gradient buckets it issues by the item after which it issues them, and
        those items between its first and last compute item in order (cached per stage)."""
        tpl_id, g, reduce_now = key
        prof = self.low.profiles[tpl_id]
        after: dict[int, list[tuple[str, float]]] = {}
        for idx, name, dur in (self.syncs(st, tpl_id, g) if reduce_now else ()):
            after.setdefault(idx, []).append((name, dur))
        got = st.memo[key] = (prof, after, sorted(i for i in after if prof.lead <= i < prof.trail))
        return got

    def _comm_item(self, st: _Stage, prof: PassProfile, i: int, ready: float, after: dict) -> float:
        """A leading or trailing collective of a pass on its own stream, and what it makes final."""
        it = prof.template.items[i]
        end = st.stream(comm_stream(it.axis), ready, prof.end[i] - prof.start[i])
        for name, dur in after.get(i, ()):
            st.stream(name, end, dur)
        return end

    # --------------------------------------------------------------------- the step
    def step_time(self) -> float:
        """The step at the plan's microbatch count. Past the pipeline's fill the timeline repeats
        with every further microbatch, so a long step is two short replays extrapolated, once the
        replays show it steady (else from twice as many microbatches, or in full)."""
        M = self.sc.microbatches
        m1, m2 = self._probes()
        while m2 < M:
            got = self._extrapolate(m1, m2, M)
            if got is not None:
                return got
            m1, m2 = 2 * m1, 2 * m1 + m2 - m1
        return self._drive(self._resumed(M))

    def _extrapolate(self, m1: int, m2: int, M: int) -> float | None:
        """The step at M from replays of m1 and m2 microbatches, or None when some stage or stream in
        them moved faster or slower than the line through them, by more than STEADY_TOL of the step by M."""
        # The probes run the same passes until the shorter one's cooldown: replay that shared
        # prefix once and carry on from it with each count.
        run2 = self._resumed(m2)
        orders1 = [self._plan_steps(s, st, m1) for s, st in enumerate(run2.stages)]
        cut = shared_prefix(orders1, run2.orders)
        if any(a > b for a, b in zip(run2.ptr, cut, strict=True)):
            run2 = self._start(m2)
        self._drive(run2, cut)
        before = marks(run2)
        t1 = self._drive(run2.fork(orders1))
        # The same point of the longer replay: where its own cooldown starts.
        later = [c + len(b) - len(a) for c, a, b in zip(cut, orders1, run2.orders, strict=True)]
        if not self._drive_to(run2, later):
            return None
        self._resume = run2.fork(run2.orders)  # where a longer replay carries on if this one is not steady
        slow, fast = paces(before, marks(run2), m2 - m1)
        t2 = self._drive(run2)
        slope = (t2 - t1) / (m2 - m1)
        got = t2 + slope * (M - m2)
        if not self.sched.steady:  # no steady phase to watch: every forward, then every backward
            return got
        return got if max(fast - slope, slope - slow) * (M - m2) <= STEADY_TOL * got else None

    def _probes(self) -> tuple[int, int]:
        """Two microbatch counts past the fill that the schedule accepts (interleaving wants
        multiples of pp, DualPipe an even count of at least 2 pp)."""
        p = self.sc.plan
        unit = p.pp if p.schedule == "interleaved" else (2 if self.sched.copies > 1 else 1)
        # Steady state sets in after two pipelines' worth of microbatches; DualPipe's two directions
        # and ZeRO-3's gathers take longer to settle.
        factor = 4 if p.zero_stage == 3 or self.sched.copies > 1 else 2
        fill = factor * p.pp * max(p.virtual_stages, 1)
        first = -(-fill // unit) * unit
        return first, first + unit * max(1, -(-p.pp // unit))  # a whole period of the stages

    def replay(self, M: int) -> float:
        return self._drive(self._start(M))

    def _resumed(self, M: int) -> Run:
        """A replay of M microbatches carried on from where the last probe stopped, at its cooldown,
        when every step it ran is also one of this replay's shared prefix (then the state is the same
        as if replayed from the start, and so is every time after it); else from the start."""
        run = self._start(M)
        got, self._resume = self._resume, None
        if got is not None and all(a <= b for a, b in zip(got.ptr, shared_prefix(got.orders, run.orders), strict=True)):
            got.orders = run.orders
            return got
        return run

    def _start(self, M: int) -> Run:
        p = self.sc.plan
        stages, orders = [], []
        for s in range(p.pp):
            chunks = self.sched.chunks(p.pp, s, p.virtual_stages)
            st = _Stage(chunks, self._groups(s, chunks), self._stage_memo[s])
            self._step_start(st)
            stages.append(st)
            orders.append(self._plan_steps(s, st, M))
        return Run(stages, orders)

    def _drive(self, run: Run, stop: list[int] | None = None) -> float:
        """Run every stage up to its stop (default: the end; then the step's time)."""
        stop = stop or [len(o) for o in run.orders]
        if not self._drive_to(run, stop):
            raise RuntimeError("pipeline schedule deadlocks in the fast evaluator")
        if any(n != len(o) for n, o in zip(stop, run.orders, strict=True)):
            return 0.0
        return max(self._finish(s, st) for s, st in enumerate(run.stages))

    def _drive_to(self, run: Run, stop: list[int]) -> bool:
        """Run every stage up to its stop; whether all got there. Stages share nothing but the
        arrivals, so any order that respects them gives the same times: run a stage until it waits
        for an input, and wake it when that input arrives."""
        if any(a > b for a, b in zip(run.ptr, stop, strict=True)):
            return False
        waiting: dict[tuple[bool, int, int], int] = {}
        ready = list(range(len(stop) - 1, -1, -1))
        while ready:
            s = ready.pop()
            self._advance(s, run.stages[s], run.orders[s], run.ptr, run.arrive, waiting, ready, stop[s])
        return run.ptr == stop

    def _groups(self, s: int, chunks: tuple[int, ...]) -> list[GradGroup]:
        key = ("groups", s)
        got = self.memo.get(key)
        if got is None:
            p, low = self.sc.plan, self.low
            units_of = lambda g: low.lg.chunk_units(low.chunk_layers, g)  # noqa: E731
            got = self.memo[key] = grad_groups(p, low.lg, chunks, units_of, self.gbytes, self.sc.model.moe is not None)
        return got

    def _step_start(self, st: _Stage) -> None:
        p = self.sc.plan
        if p.zero_stage in (1, 2) and p.overlap_param_gather:
            for grp in st.groups:
                if grp.sync:
                    for g in st.chunks:
                        for b in grp.buckets[g]:
                            done = st.stream(comm_stream(grp.axis), 0.0, self.gather(grp, b))
                            for u in b.units:
                                st.gate[u] = max(st.gate.get(u, 0.0), done)

    def _plan_steps(self, s: int, st: _Stage, M: int) -> list[tuple]:
        """Each step as (template, chunk, phase, input key or None, output key or None, transfer
        seconds or None for a hand-over in memory, last grad pass of its chunk). Shared between the
        plans of a search with the same lowering, pipeline shape, microbatches and transfer times
        (the ZeRO and overlap variants of a plan)."""
        p = self.sc.plan
        key = ("steps", p.schedule, p.pp, p.virtual_stages, self.P, M, s)
        skel = self.cache.get(key)
        if skel is None:
            order = stage_order(p.schedule, p.pp, s, M, p.virtual_stages)
            skel = self.cache[key] = self._skeleton(s, st, order, self._ranks(M))
        steps, peers = skel
        tr = {peer: self._transfer(s, peer) if peer != s else None for peer in peers}
        full = (key, id(self.low), tuple(tr.items()))
        got = self.cache.get(full)
        if got is None:
            ids = self.low.ids
            tpl = {(ph, g): ids.of(ph, g) for _, g, ph, _, _, _, _ in steps}
            got = self.cache[full] = [(tpl[ph, g], g, ph, need, give, tr[peer], last)
                                      for _, g, ph, need, give, peer, last in steps]
        return got

    def _ranks(self, M: int) -> dict[int, int]:
        """Each microbatch's place among those through the same model copy. Inputs are keyed by it, so
        replays of different lengths name the same steps alike up to their cooldowns (DualPipe numbers
        its second direction's microbatches after all of the first's)."""
        p = self.sc.plan
        key = ("ranks", p.schedule, p.pp, p.virtual_stages, M)
        got = self.cache.get(key)
        if got is None:
            chunks = self.sched.chunks(p.pp, 0, p.virtual_stages)
            by_copy: dict[int, set[int]] = {}
            for x in stage_order(p.schedule, p.pp, 0, M, p.virtual_stages):
                by_copy.setdefault(chunks[x.chunk] // self.P, set()).add(x.microbatch)
            got = self.cache[key] = {mb: i for mbs in by_copy.values() for i, mb in enumerate(sorted(mbs))}
        return got

    def _skeleton(self, s: int, st: _Stage, order, ranks: dict[int, int]) -> tuple[list[tuple], set[int]]:
        """The steps with the peer stage in place of the template and transfer, and the peers."""
        last = {st.chunks[x.chunk]: i for i, x in enumerate(order) if x.phase in ("B", "W")}
        out = []
        for i, x in enumerate(order):
            g, mb, phase = st.chunks[x.chunk], ranks[x.microbatch], x.phase
            fwd, pos = phase == "F", g % self.P
            needs = phase != "W" and ((fwd and pos > 0) or (not fwd and pos < self.P - 1))
            gives = phase != "W" and ((fwd and pos < self.P - 1) or (not fwd and pos > 0))
            dst = g + 1 if fwd else g - 1
            peer = self.stage_of.get(dst, s) if gives else s
            out.append((None, g, phase, (fwd, g, mb) if needs else None, (fwd, dst, mb) if gives else None, peer,
                        last.get(g) == i))
        return out, {peer for *_, peer, _ in out}

    def _advance(self, s: int, st: _Stage, steps: list[tuple], ptr: list[int], arrive: dict, waiting: dict,
                 ready: list[int], n: int) -> None:
        """Run stage s's passes up to the n-th until one waits for an input that has not arrived (registered in
        waiting) or the stage is done, waking the stages its outputs unblock."""
        i = ptr[s]
        pp_stream, run_pass = self._pp, self._run_pass
        while i < n:
            tpl_id, g, phase, need, give, transfer, last = steps[i]
            got = 0.0
            if need is not None:
                got = arrive.get(need)
                if got is None:
                    waiting[need] = s
                    break
            st.free, end = run_pass(st, tpl_id, g, phase, last, got)
            st.last = end
            if give is not None:
                arrive[give] = end if transfer is None else st.stream(pp_stream, end, transfer)
                w = waiting.pop(give, None)
                if w is not None:
                    ready.append(w)
            i += 1
        ptr[s] = i

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
                            end = st.stream(comm_stream(grp.axis), end, self.gather(grp, b))
        return end


def fast_step_time(sc: Scenario, cache: dict) -> float:
    """A plan's step time from the recurrence (cache: shared between the plans of a search), with the
    slowest-host wait that a full simulation adds (graphgen.stragglers)."""
    return FastStep(sc, cache).step_time() * straggler_factor(sc)


__all__ = ["FastStep", "Lowered", "fast_step_time"]
