"""The plan space a search walks: every factorisation of a GPU count into tp x cp x dp x pp (ep re-dividing
tp x cp x dp for MoE models), with micro-batch sizes, recompute modes, ZeRO stages and pipeline
schedules. Enumeration is cheap and blind; the scenario check (graphgen.scenario) refuses what cannot
run, and memory prunes what does not fit, before anything is simulated."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from graphgen.config import ModelSpec, Workload
from graphgen.errors import RankflowError
from graphgen.schedule import SCHEDULES

RECOMPUTE = ("none", "selective", "full")
ZERO = (0, 1, 2, 3)
MICRO_BATCHES = (1, 2, 4, 8)


@dataclass(frozen=True)
class Constraints:
    """What the user fixes or bounds; None leaves a dimension free."""

    max_tp: int | None = None
    tp: int | None = None
    pp: int | None = None
    cp: int | None = None
    ep: int | None = None
    zero_stage: tuple[int, ...] = ZERO
    recompute: tuple[str, ...] = RECOMPUTE
    micro_batch: tuple[int, ...] = MICRO_BATCHES
    schedules: tuple[str, ...] = ("1f1b", "interleaved", "zb-h1", "dualpipe")
    headroom_gib: float = 0.0  # memory each GPU must keep free beyond the plan's needs
    extra: dict = field(default_factory=dict)  # further plan fields every candidate gets

    def __post_init__(self) -> None:
        unknown = [s for s in self.schedules if s not in SCHEDULES]
        if unknown:
            raise RankflowError(f"unknown pipeline schedule '{unknown[0]}'", field="schedules",
                                fix=f"use some of: {', '.join(SCHEDULES)}")


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)})


def _pipeline(pp: int, layers: int, c: Constraints) -> Iterator[tuple[str, int]]:
    """(schedule, virtual stages) for a pipeline depth."""
    if pp == 1:
        yield "1f1b", 1
        return
    for s in c.schedules:
        if s == "interleaved":
            if layers >= 2 * pp:
                yield s, 2
        elif s in ("zb-v", "dualpipev"):
            if layers >= 2 * pp:
                yield s, 2
        elif s == "dualpipe":
            if pp % 2 == 0:
                yield s, 1
        else:
            yield s, 1


def candidates(model: ModelSpec, workload: Workload, gpus: int, gpus_per_node: int,
               c: Constraints = Constraints()) -> Iterator[dict]:
    """Every plan (as ParallelPlan fields plus 'micro_batch') for `gpus` GPUs, in a fixed order."""
    seq = workload.seq_len
    # Selective recompute of the attention core is a no-op under a fused flash kernel (it recomputes
    # inside its own backward): the same plan as none, not another candidate.
    recompute = tuple(r for r in c.recompute if not (r == "selective" and workload.flash_attention
                                                     and "recompute_modules" not in c.extra))
    tps = [t for t in divisors(gpus_per_node) if (c.max_tp is None or t <= c.max_tp) and (c.tp in (None, t))]
    cps = [x for x in (1, 2, 4, 8, 16) if (c.cp == x if c.cp else (x == 1 or seq >= 16384 * x // 2))]
    experts = model.moe.experts if model.moe else 1
    for tp in tps:
        for cp in cps:
            for pp in divisors(gpus // (tp * cp)) if gpus % (tp * cp) == 0 else ():
                if (c.pp and pp != c.pp) or pp > model.layers:
                    continue
                dp = gpus // (tp * cp * pp)
                eps = [e for e in divisors(experts) if (tp * cp * dp) % e == 0] if model.moe else [1]
                for ep in eps:
                    if c.ep and ep != c.ep:
                        continue
                    for schedule, v in _pipeline(pp, model.layers, c):
                        for mb in c.micro_batch:
                            for zero in c.zero_stage:
                                for rc in recompute:
                                    yield dict(c.extra, tp=tp, sp=tp > 1, cp=cp, pp=pp, dp=dp, ep=ep,
                                               schedule=schedule, virtual_stages=v, zero_stage=zero,
                                               recompute=rc, micro_batch=mb)
