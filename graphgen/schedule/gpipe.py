"""GPipe (Huang et al. 2019): every forward, then every backward in reverse microbatch order."""

from __future__ import annotations

from graphgen.schedule import SCHEDULES, Schedule, Step


class GPipe(Schedule):
    name = "gpipe"
    steady = False  # all forwards, then all backwards: a step grows by one F and one B per microbatch

    def order(self, pp: int, stage: int, microbatches: int, v: int) -> list[Step]:
        return [Step("F", m, 0) for m in range(microbatches)] + [
            Step("B", m, 0) for m in reversed(range(microbatches))]


SCHEDULES.add(GPipe.name, GPipe())
