"""Pipeline schedules: the order in which one stage runs forward (F) and backward (B) passes.

A schedule is a list of Step(phase, microbatch, chunk) per stage; the program builder turns
the order into compute-stream order (control edges), so the pipeline bubble is simulated,
never taken from a formula.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Step:
    phase: str      # "F" or "B"
    microbatch: int
    chunk: int      # local model chunk on this stage (0 .. virtual_stages-1)


def stage_order(schedule: str, pp: int, stage: int, microbatches: int, virtual_stages: int = 1) -> list[Step]:
    from graphgen.schedule.gpipe import gpipe
    from graphgen.schedule.interleaved import interleaved
    from graphgen.schedule.one_f_one_b import one_f_one_b

    if schedule == "gpipe":
        return gpipe(microbatches)
    if schedule == "1f1b":
        return one_f_one_b(pp, stage, microbatches)
    if schedule == "interleaved":
        return interleaved(pp, stage, microbatches, virtual_stages)
    raise ValueError(f"unknown schedule {schedule!r}")
