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


class DataParallelEmitter:
    """Data-parallel collectives of one role: gradient reduction per bucket, ZeRO-1/2 parameter
    all-gathers at the step's start, ZeRO-3 per-unit gathers one unit ahead of compute."""

    def __init__(self, em, plan, chunks, units_of, lg, param_bytes: float, grad_bytes: float) -> None:
        self.em, self.plan, self.lg = em, plan, lg
        self.param_bytes, self.grad_bytes = param_bytes, grad_bytes
        self.sync = plan.dp > 1
        self.zero = plan.zero_stage
        self.buckets: dict[int, list[Bucket]] = {}
        self.bucket_of: dict[int, Bucket] = {}
        for g in chunks:
            units = [(u, lg.unit_trainable(u), lg.unit_params(u)) for u in reversed(units_of(g))]
            self.buckets[g] = make_buckets(units, plan.bucket_mb, grad_bytes, per_unit=self.zero == 3)
            self.bucket_of.update({u: b for b in self.buckets[g] for u in b.units})
        self.grad_syncs: list[int] = []
        self.step_start_gather: dict[int, int] = {}

    def param_gather(self, g: int, b: Bucket, deps: tuple[int, ...], phase, mb: int) -> int:
        """All-gather of a bucket's full parameters on this TP rank: every parameter under ZeRO-3,
        only the updated (trainable) ones when ZeRO-1/2 re-gathers after the optimizer step."""
        nb = (b.gather_params if self.zero == 3 else b.params) * self.param_bytes
        return self.em.add(CollectiveNode, name=f"dp_all_gather_params.c{g}.b{b.index}", kind=Collective.ALL_GATHER,
                           bytes=nb, axis="dp", group_size=self.plan.dp, deps=deps, phase=phase, microbatch=mb,
                           chunk=g, layers=layer_span(b.units, self.lg.layers), stream=comm_stream("dp"),
                           purpose=ZERO3_GATHER if self.zero == 3 else "")

    def grad_sync(self, g: int, b: Bucket, dep: int, mb: int) -> None:
        if b.params <= 0:
            return
        kind = grad_collective(self.zero, self.zero == 3 and self.plan.zero3_grad_all_reduce)
        nb = b.params * self.grad_bytes  # the full gradient buffer, all-reduced or reduce-scattered
        self.grad_syncs.append(self.em.add(
            CollectiveNode, name=f"dp_{kind.value}_grads.c{g}.b{b.index}.mb{mb}", kind=kind, bytes=nb, axis="dp",
            group_size=self.plan.dp, deps=(dep,), phase=Phase.GRAD_SYNC, microbatch=mb, chunk=g,
            layers=layer_span(b.units, self.lg.layers), stream=comm_stream("dp")))

    def step_start(self, chunks) -> None:
        """ZeRO-1/2 with overlapped gathers: every bucket's gather is issued at the step's start and
        gates the first forward use of its units."""
        if self.zero in (1, 2) and self.plan.overlap_param_gather and self.sync:
            for g in chunks:
                for b in self.buckets[g]:
                    ag = self.param_gather(g, b, (), Phase.PARAM_SYNC, -1)
                    self.step_start_gather.update({u: ag for u in b.units})

    def attach(self, att, tpl, g: int, mb: int, phase: str, first_forward: bool, last_backward: bool,
               first_deps: list[int], grads_here: bool) -> None:
        """Fill one pass instance's attachments: gates before first uses, FSDP gathers (weight-gradient
        steps need no weights), and the gradient buckets that become final inside this pass."""
        fwd = phase == "F"
        if fwd and first_forward and self.step_start_gather:
            for u, idx in tpl.first_use.items():
                if u in self.step_start_gather:
                    att.before.setdefault(idx, []).append(self.step_start_gather[u])
        if self.zero == 3 and self.sync and phase != "W":
            self._fsdp(att, tpl, g, mb, first_deps)
        if grads_here and self.sync and (grads_every_microbatch(self.zero) or (last_backward and self.plan.overlap_grad_reduce)):
            for b in self.buckets[g]:
                done = [tpl.last_use[u] for u in b.units if u in tpl.last_use]
                if done:
                    att.after.setdefault(max(done), []).append(
                        lambda node, g=g, b=b, mb=mb: self.grad_sync(g, b, node, mb))

    def _fsdp(self, att, tpl, g: int, mb: int, first_deps: list[int]) -> None:
        """Each unit's parameters are all-gathered before its first item (see gather_points); the
        k-th gather waits for the span of the (k-2)-th to finish, so at most one unit is prefetched
        ahead of compute, as FSDP's all-gather rate limiter allows."""
        points = gather_points(tpl, self.bucket_of, self.plan.zero3_regather_after_recompute)
        for first, _, _ in points:
            att.before.setdefault(first, [])

        def gather(k: int, deps: tuple[int, ...]) -> None:
            idx, _, u = points[k]
            att.before[idx].append(self.param_gather(g, self.bucket_of[u], deps, tpl.items[idx].phase, mb))

        for k in range(min(2, len(points))):
            gather(k, tuple(first_deps))
        for k in range(2, len(points)):
            att.after.setdefault(points[k - 2][1], []).append(lambda node, k=k: gather(k, (node,)))

    def finish(self, chunks, last: int, microbatches: int) -> None:
        """Gradient reduction after the last backward when it is not overlapped with it."""
        if self.sync and not self.plan.overlap_grad_reduce and not grads_every_microbatch(self.zero):
            for g in chunks:
                for b in self.buckets[g]:
                    self.grad_sync(g, b, last, microbatches - 1)

    def after_optimizer(self, chunks, opt: int) -> None:
        """ZeRO-1/2 without overlap gathers the updated parameters after the optimizer step."""
        if self.zero in (1, 2) and not self.plan.overlap_param_gather and self.sync:
            for g in chunks:
                for b in self.buckets[g]:
                    self.param_gather(g, b, (opt,), Phase.PARAM_SYNC, -1)


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
