"""Pipeline schedules: where model chunks live and the order in which a stage runs its steps.

A schedule is a registry entry giving, per stage, the global chunks it holds and its list of
Step(phase, microbatch, chunk): F (forward), B (backward: input and weight gradients, or the input
gradient alone when the schedule splits the backward) and W (weight gradients). The program turns
the order into compute-stream order, so the pipeline bubble is simulated, never taken from a
formula. A new schedule is one module that registers itself here.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphgen.registry import Registry


@dataclass(frozen=True, slots=True)
class Step:
    phase: str      # "F", "B" or "W"
    microbatch: int
    chunk: int      # local model chunk on this stage (0 .. chunks per stage - 1)


class Schedule:
    """Base: one chunk per stage (chunk s on stage s), no split backward."""

    name = ""
    split_backward = False  # B steps compute input gradients only; W steps the weight gradients
    virtual = False         # takes virtual_stages > 1

    def chunks(self, pp: int, stage: int, v: int) -> tuple[int, ...]:
        """Global chunk ids held by a stage, in local-chunk order (chunk g feeds chunk g + 1)."""
        return tuple(c * pp + stage for c in range(v))

    def order(self, pp: int, stage: int, microbatches: int, v: int) -> list[Step]:
        raise NotImplementedError

    def check(self, pp: int, v: int, microbatches: int, layers: int) -> tuple[str, str, str] | None:
        """(field, problem, fix) when the schedule cannot run this plan, else None."""
        return None


SCHEDULES: Registry[Schedule] = Registry("pipeline schedule")


def stage_order(schedule: str, pp: int, stage: int, microbatches: int, virtual_stages: int = 1) -> list[Step]:
    return SCHEDULES[schedule].order(pp, stage, microbatches, virtual_stages)


def stage_chunks(schedule: str, pp: int, stage: int, virtual_stages: int = 1) -> tuple[int, ...]:
    return SCHEDULES[schedule].chunks(pp, stage, virtual_stages)


# Registration happens on import of each schedule module.
from graphgen.schedule import gpipe, interleaved, one_f_one_b  # noqa: E402,F401
