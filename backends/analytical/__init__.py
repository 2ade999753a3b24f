"""The built-in analytical backend: event-driven replay of the Program on Rankflow's cost models."""

from __future__ import annotations

from backends.analytical.attribution import attribute
from backends.analytical.scheduler import Timeline, simulate
from backends.base import Breakdown, Evaluation, assemble_result, role_timings
from graphgen.costs.evaluate import Costs, cost_program
from graphgen.program import Program

__all__ = ["AnalyticalBackend", "Timeline", "replay"]


def replay(program: Program, costs: Costs, backend: str = "analytical", notes: tuple[str, ...] = ()) -> Evaluation:
    """Replay a costed program and assemble its Result (also used by ASTRA-sim's scalable mode)."""
    tl = simulate(program, costs)
    finishes = [max(f) if f else 0.0 for f in tl.finish]
    critical = max(range(len(finishes)), key=lambda r: (finishes[r], -r))
    compute, exposed, bubble = attribute(program, costs, tl, critical)
    result = assemble_result(program, backend, tl.step_time, Breakdown(compute, exposed, bubble),
                             program.roles[critical].name, role_timings(program, costs, finishes), notes,
                             costs.cluster)
    return Evaluation(result, tl, costs)


class AnalyticalBackend:
    name = "analytical"

    def run(self, program: Program) -> Evaluation:
        return replay(program, cost_program(program))
