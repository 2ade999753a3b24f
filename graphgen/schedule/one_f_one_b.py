"""1F1B (PipeDream-Flush, Narayanan et al. 2021): warm-up forwards, then alternate, then drain.

Stage s runs pp - s - 1 warm-up forwards, so at most pp - s microbatches are in flight.
"""

from __future__ import annotations

from graphgen.schedule import SCHEDULES, Schedule, Step


class OneFOneB(Schedule):
    name = "1f1b"

    def order(self, pp: int, stage: int, microbatches: int, v: int) -> list[Step]:
        warmup = min(pp - stage - 1, microbatches)
        order = [Step("F", m, 0) for m in range(warmup)]
        b = 0
        for f in range(warmup, microbatches):
            order.append(Step("F", f, 0))
            order.append(Step("B", b, 0))
            b += 1
        order.extend(Step("B", m, 0) for m in range(b, microbatches))
        return order


SCHEDULES.add(OneFOneB.name, OneFOneB())
