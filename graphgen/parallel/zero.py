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
