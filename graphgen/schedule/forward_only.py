"""Inference: forward passes only, one per microbatch and chunk, in order (no backward, no optimizer)."""

from __future__ import annotations

from graphgen.schedule import SCHEDULES, Schedule, Step


class ForwardOnly(Schedule):
    name = "inference"
    phases = frozenset({"F"})

    def order(self, pp: int, stage: int, microbatches: int, v: int) -> list[Step]:
        return [Step("F", mb, 0) for mb in range(microbatches)]


SCHEDULES.add(ForwardOnly.name, ForwardOnly())
