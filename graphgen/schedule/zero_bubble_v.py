"""ZB-V (Qi et al. 2024, "Zero Bubble Pipeline Parallelism", Section 6): a V-shaped schedule, rank r
holding stages r and 2pp-1-r (so rank 0 runs the first and the last), each backward split into its
input-gradient half (Bi) and a weight-gradient half (W) that fills the bubbles. It is bubble-free
when F, Bi and W take equal time, and keeps 1F1B's activation memory.

The order is PyTorch's ScheduleZBVZeroBubble (torch/distributed/pipelining/schedules.py,
`_calculate_single_rank_operations`), what torchtitan runs: warm-up forwards down the V and back up,
a steady state of F, Bi, W on each chunk in turn, then the remaining input gradients and the
deferred weight gradients. As in PyTorch, the pattern is laid out for at least 2pp - 1 microbatches
and passes of microbatches beyond the real count are dropped.
"""

from __future__ import annotations

from graphgen.schedule import SCHEDULES, Schedule, Step


def zbv_order(pp: int, rank: int, microbatches: int) -> list[Step]:
    n = max(2 * pp - 1, microbatches)
    count = {(k, c): 0 for k in ("F", "Bi", "W") for c in (0, 1)}
    out: list[Step] = []

    def step(kind: str, chunk: int) -> None:
        out.append(Step(kind, count[(kind, chunk)], chunk))
        count[(kind, chunk)] += 1

    for _ in range(2 * (pp - rank) - 1):            # warm-up: down the V on chunk 0
        step("F", 0)
    for _ in range(rank):                           # both chunks, alternately
        step("F", 1)
        step("F", 0)
    for _ in range(pp - rank):                      # the bottom of the V starts its backwards
        step("F", 1)
        step("Bi", 1)
        step("W", 1)
    while count[("F", 1)] < count[("F", 0)] or count[("F", 0)] < n:  # steady state
        if count[("F", 0)] < n:
            step("F", 0)
        step("Bi", 0)
        step("W", 0)
        step("F", 1)
        step("Bi", 1)
        step("W", 1)
    for _ in range(rank):                           # cool-down: input gradients first
        step("Bi", 0)
        step("Bi", 1)
    for _ in range(pp - rank):
        step("Bi", 0)
        step("W", 0)
    for chunk in (1, 0):                            # then the deferred weight gradients
        while count[("W", chunk)] < count[("Bi", chunk)]:
            step("W", chunk)
    return [s for s in out if s.microbatch < microbatches]


class ZBV(Schedule):
    name = "zb-v"
    phases = frozenset({"F", "Bi", "W"})
    virtual = True
    fixed_virtual = 2

    def chunks(self, pp: int, stage: int, v: int) -> tuple[int, ...]:
        return (stage, 2 * pp - 1 - stage)

    def order(self, pp: int, stage: int, microbatches: int, v: int) -> list[Step]:
        return zbv_order(pp, stage, microbatches)


SCHEDULES.add(ZBV.name, ZBV())
