"""ZB-H1 (Qi et al. 2024, "Zero Bubble Pipeline Parallelism", Section 3): 1F1B with each backward split
into its input-gradient half (Bi), which the previous stage waits for, and its weight-gradient half (W),
deferred to fill what would be bubble. Stage s defers s weight passes, so its in-flight activations are
1F1B's and the bubble falls from (pp-1)(F+B) to (pp-1)(F+B-2W).

The order follows the reference schedule of sail-sg/zero-bubble-pipeline-parallelism (the DeepSpeed
ZeroBubbleH1Pipeline with exact semantics): pp-s-1 warm-up forwards; s pairs F, Bi; then F, Bi, W until
the forwards run out; then Bi, W; then the deferred W.
"""

from __future__ import annotations

from graphgen.schedule import SCHEDULES, Schedule, Step


class ZBH1(Schedule):
    name = "zb-h1"
    phases = frozenset({"F", "Bi", "W"})

    def order(self, pp: int, stage: int, microbatches: int, v: int) -> list[Step]:
        M = microbatches
        f = b = w = 0
        out: list[Step] = []

        def step(phase: str) -> None:
            nonlocal f, b, w
            n = {"F": f, "Bi": b, "W": w}[phase]
            out.append(Step(phase, n, 0))
            f, b, w = f + (phase == "F"), b + (phase == "Bi"), w + (phase == "W")

        for _ in range(min(pp - stage - 1, M)):
            step("F")
        for _ in range(stage):
            if f < M:
                step("F")
                step("Bi")
        while f < M:
            step("F")
            step("Bi")
            step("W")
        while b < M:
            step("Bi")
            step("W")
        while w < M:
            step("W")
        return out


SCHEDULES.add(ZBH1.name, ZBH1())
