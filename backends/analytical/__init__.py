"""The built-in analytical backend: event-driven replay of the Program on Rankflow's cost models."""

from __future__ import annotations

from backends.analytical.scheduler import Timeline, attribute, simulate
from backends.base import Breakdown, Result, RoleTiming, assemble_result
from graphgen.ir import ComputeNode
from graphgen.program import Program


class AnalyticalBackend:
    name = "analytical"

    def run(self, program: Program) -> tuple[Result, Timeline]:
        tl = simulate(program)
        step = tl.step_time
        finishes = [max(f) if f else 0.0 for f in tl.finish]
        critical = max(range(len(finishes)), key=lambda r: (finishes[r], -r))
        compute, exposed, bubble = attribute(program, tl, critical)
        timings = tuple(
            RoleTiming(role.name, finishes[r], sum(n.duration for n in role.nodes if type(n) is ComputeNode),
                       len(role.nodes)) for r, role in enumerate(program.roles))
        result = assemble_result(program, self.name, step, Breakdown(compute, exposed, bubble),
                                 program.roles[critical].name, timings)
        return result, tl
