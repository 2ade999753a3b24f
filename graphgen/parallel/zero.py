"""Data-parallel gradient and parameter synchronisation: which collectives, over which units.

| zero_stage | gradients                                   | parameters                              |
| 0 (DDP)    | all-reduce per bucket, last microbatch only | replicated                              |
| 1 (dist.   | reduce-scatter per bucket, last microbatch  | all-gather per bucket after the step    |
|  optimizer)|                                             | (overlapped with the next forward)      |
| 2          | reduce-scatter per bucket, every microbatch | as stage 1                              |
| 3 (FSDP)   | reduce-scatter per layer, every microbatch  | all-gather per layer before forward and |
|            |                                             | before backward, one layer prefetched   |

Megatron-LM (distributed optimizer), DeepSpeed ZeRO and PyTorch FSDP FULL_SHARD do it this way.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphgen.ir import CollectiveNode, Phase, comm_stream, layer_span
from graphgen.parallel.layout import Collective
from graphgen.units import MIB


@dataclass(frozen=True)
class Bucket:
    index: int
    units: tuple[int, ...]   # model units (layer index; -1 embedding; L head) in backward order
    params: float            # trainable parameters on this rank (after TP sharding): grads, updates
    gather_params: float = 0.0  # all parameters of the units (ZeRO-3 gathers frozen ones too)


def grad_collective(zero_stage: int, all_reduce: bool = False) -> Collective:
    """DDP all-reduces; ZeRO reduce-scatters, unless the implementation all-reduces and keeps its shard."""
    return Collective.ALL_REDUCE if zero_stage == 0 or all_reduce else Collective.REDUCE_SCATTER


def grads_every_microbatch(zero_stage: int) -> bool:
    """Stages 2 and 3 keep no full gradient buffer, so they reduce after every backward."""
    return zero_stage >= 2


def make_buckets(units_bwd_order: list[tuple[int, float, float]], bucket_mb: float, grad_bytes: float,
                 per_unit: bool = False) -> list[Bucket]:
    """Group units (unit, trainable params, all params), in the order their grads become ready,
    into buckets of about bucket_mb MiB of gradients. Per-unit (FSDP) buckets keep frozen units,
    whose parameters are still gathered; otherwise units without trainable parameters are left out."""
    limit = bucket_mb * MIB
    buckets: list[Bucket] = []
    cur: list[int] = []
    params = total = 0.0
    for unit, p, allp in units_bwd_order:
        if p <= 0 and not (per_unit and allp > 0):
            continue
        cur.append(unit)
        params += p
        total += allp
        if per_unit or params * grad_bytes >= limit:
            buckets.append(Bucket(len(buckets), tuple(cur), params, total))
            cur, params, total = [], 0.0, 0.0
    if cur:
        buckets.append(Bucket(len(buckets), tuple(cur), params, total))
    return buckets


# ------------------------------------------------------------------------------------ emission
# Where ZeRO's collectives enter a role's DAG. The role builder (graphgen.program.roles) asks for
# the attachments of each pass instance and calls step_start / finish / after_optimizer around the
# schedule walk.

ZERO3_GATHER = "zero3_param_gather"  # purpose of ZeRO-3/FSDP parameter gathers (a cost rule may cap them)


@dataclass(frozen=True)
class GradGroup:
    """Parameters whose gradients reduce over one group: dense weights over dp x cp, routed experts'
    over their expert data-parallel group (edp), each with its own buckets, as Megatron keeps them."""

    axis: str
    size: int
    expert: bool
    buckets: dict[int, list[Bucket]]
    bucket_of: dict[int, Bucket]

    @property
    def sync(self) -> bool:
        return self.size > 1


def grad_groups(plan, lg, chunks, units_of, grad_bytes: float, moe: bool) -> list[GradGroup]:
    specs = [("dp", plan.dp * plan.cp, False if moe else None)]
    if moe:
        specs.append(("edp", plan.edp, True))
    out = []
    for axis, size, expert in specs:
        buckets, bucket_of = {}, {}
        for g in chunks:
            units = [(u, lg.unit_trainable(u, expert), lg.unit_params(u, expert)) for u in reversed(units_of(g))]
            buckets[g] = make_buckets(units, plan.bucket_mb, grad_bytes, per_unit=plan.zero_stage == 3)
            bucket_of.update({u: b for b in buckets[g] for u in b.units})
        out.append(GradGroup(axis, size, bool(expert), buckets, bucket_of))
    return out


class DataParallelEmitter:
    """Data-parallel collectives of one role: gradient reduction per bucket, ZeRO-1/2 parameter
    all-gathers at the step's start, ZeRO-3 per-unit gathers one unit ahead of compute; for each
    gradient group (dense weights, routed experts)."""

    def __init__(self, em, plan, chunks, units_of, lg, param_bytes: float, grad_bytes: float, moe: bool = False) -> None:
        self.em, self.plan, self.lg = em, plan, lg
        self.param_bytes, self.grad_bytes = param_bytes, grad_bytes
        self.zero = plan.zero_stage
        self.groups = grad_groups(plan, lg, chunks, units_of, grad_bytes, moe)
        self.grad_syncs: list[int] = []
        self.step_start_gather: dict[int, list[int]] = {}

    def param_gather(self, grp: GradGroup, g: int, b: Bucket, deps: tuple[int, ...], phase, mb: int) -> int:
        """All-gather of a bucket's full parameters on this TP rank: every parameter under ZeRO-3,
        only the updated (trainable) ones when ZeRO-1/2 re-gathers after the optimizer step."""
        nb = (b.gather_params if self.zero == 3 else b.params) * self.param_bytes
        tag = "" if grp.axis == "dp" else f"{grp.axis}_"
        return self.em.add(CollectiveNode, name=f"{tag}dp_all_gather_params.c{g}.b{b.index}", kind=Collective.ALL_GATHER,
                           bytes=nb, axis=grp.axis, group_size=grp.size, deps=deps, phase=phase, microbatch=mb,
                           chunk=g, layers=layer_span(b.units, self.lg.layers), stream=comm_stream(grp.axis),
                           purpose=ZERO3_GATHER if self.zero == 3 else "")

    def grad_sync(self, grp: GradGroup, g: int, b: Bucket, dep: int, mb: int) -> None:
        if b.params <= 0:
            return
        kind = grad_collective(self.zero, self.zero == 3 and self.plan.zero3_grad_all_reduce)
        nb = b.params * self.grad_bytes  # the full gradient buffer, all-reduced or reduce-scattered
        tag = "" if grp.axis == "dp" else f"{grp.axis}_"
        self.grad_syncs.append(self.em.add(
            CollectiveNode, name=f"{tag}dp_{kind.value}_grads.c{g}.b{b.index}.mb{mb}", kind=kind, bytes=nb,
            axis=grp.axis, group_size=grp.size, deps=(dep,), phase=Phase.GRAD_SYNC, microbatch=mb, chunk=g,
            layers=layer_span(b.units, self.lg.layers), stream=comm_stream(grp.axis)))

    def step_start(self, chunks) -> None:
        """ZeRO-1/2 with overlapped gathers: every bucket's gather is issued at the step's start and
        gates the first forward use of its units."""
        if self.zero in (1, 2) and self.plan.overlap_param_gather:
            for grp in self.groups:
                if not grp.sync:
                    continue
                for g in chunks:
                    for b in grp.buckets[g]:
                        ag = self.param_gather(grp, g, b, (), Phase.PARAM_SYNC, -1)
                        for u in b.units:
                            self.step_start_gather.setdefault(u, []).append(ag)

    def attach(self, att, tpl, g: int, mb: int, phase: str, first_forward: bool, last_backward: bool,
               first_deps: list[int], grads_here: bool) -> None:
        """Fill one pass instance's attachments: gates before first uses, FSDP gathers (weight-gradient
        steps need no weights), and the gradient buckets that become final inside this pass."""
        if phase == "F" and first_forward and self.step_start_gather:
            for u, idx in tpl.first_use.items():
                if u in self.step_start_gather:
                    att.before.setdefault(idx, []).extend(self.step_start_gather[u])
        for grp in self.groups:
            if self.zero == 3 and grp.sync and phase != "W":
                self._fsdp(grp, att, tpl, g, mb, first_deps)
        reduce_now = grads_every_microbatch(self.zero) or (last_backward and self.plan.overlap_grad_reduce)
        for grp in self.groups:
            if grads_here and grp.sync and reduce_now:
                for b in grp.buckets[g]:
                    # a unit with no item in this pass (the embedding in a W pass) is final at its end
                    done = [tpl.last_use.get(u, len(tpl.items) - 1) for u in b.units]
                    if done and tpl.items:
                        att.after.setdefault(max(done), []).append(
                            lambda node, grp=grp, g=g, b=b, mb=mb: self.grad_sync(grp, g, b, node, mb))

    def _fsdp(self, grp: GradGroup, att, tpl, g: int, mb: int, first_deps: list[int]) -> None:
        """Each unit's parameters are all-gathered before its first item (see gather_points); the
        k-th gather waits for the span of the (k-2)-th to finish, so at most one unit is prefetched
        ahead of compute, as FSDP's all-gather rate limiter allows."""
        points = gather_points(tpl, grp.bucket_of, self.plan.zero3_regather_after_recompute)
        for first, _, _ in points:
            att.before.setdefault(first, [])

        def gather(k: int, deps: tuple[int, ...]) -> None:
            idx, _, u = points[k]
            att.before[idx].append(self.param_gather(grp, g, grp.bucket_of[u], deps, tpl.items[idx].phase, mb))

        for k in range(min(2, len(points))):
            gather(k, tuple(first_deps))
        for k in range(2, len(points)):
            att.after.setdefault(points[k - 2][1], []).append(lambda node, k=k: gather(k, (node,)))

    def finish(self, chunks, last: int, microbatches: int) -> None:
        """Gradient reduction after the last backward when it is not overlapped with it."""
        if not self.plan.overlap_grad_reduce and not grads_every_microbatch(self.zero):
            for grp in self.groups:
                for g in chunks:
                    for b in grp.buckets[g] if grp.sync else ():
                        self.grad_sync(grp, g, b, last, microbatches - 1)

    def after_optimizer(self, chunks, opt: int) -> None:
        """ZeRO-1/2 without overlap gathers the updated parameters after the optimizer step."""
        if self.zero in (1, 2) and not self.plan.overlap_param_gather:
            for grp in self.groups:
                for g in chunks:
                    for b in grp.buckets[g] if grp.sync else ():
                        self.param_gather(grp, g, b, (opt,), Phase.PARAM_SYNC, -1)


def gather_points(tpl, bucket_of: dict, regather: bool) -> list[tuple[int, int, int]]:
    """(first item, last item, unit) of each span that needs a unit's full parameters. A unit's
    items are one span, except that with `regather` a recomputed unit is gathered again for its
    backward: DeepSpeed ZeRO-3 frees parameters after every module forward, the recompute's too."""
    spans: list[tuple[int, int, int]] = []
    for u, first in sorted(tpl.first_use.items(), key=lambda kv: kv[1]):
        if u not in bucket_of:
            continue
        last = tpl.last_use[u]
        if regather and tpl.items[first].phase is Phase.RECOMPUTE:
            bwd = next(i for i in range(first, last + 1) if tpl.items[i].phase is not Phase.RECOMPUTE)
            spans.append((first, bwd - 1, u))
            first = bwd
        spans.append((first, last, u))
    return spans
