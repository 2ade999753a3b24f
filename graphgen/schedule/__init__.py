"""Pipeline schedules: where model chunks live and the order in which a stage runs its steps.

A schedule is a registry entry giving, per stage, the global chunks it holds and its list of
Step(phase, microbatch, chunk): F (forward), B (the whole backward), Bi (the input-gradient half
of a backward whose weight gradients are deferred) and W (those weight gradients). The program turns
the order into compute-stream order, so the pipeline bubble is simulated, never taken from a
formula. A new schedule is one module that registers itself here.

Chunks: a model is cut into pp x v chunks; a schedule may run `copies` of it (DualPipe runs two, fed
from opposite ends). Global chunk g is position g % (pp x v) of copy g // (pp x v); a microbatch
flows through one copy's chunks in position order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from graphgen.registry import Registry

PHASES = ("F", "B", "Bi", "W")


@dataclass(frozen=True, slots=True)
class Step:
    phase: str      # "F", "B" (whole backward), "Bi" (input gradients only) or "W" (deferred weight gradients)
    microbatch: int
    chunk: int      # local model chunk on this stage (0 .. chunks per stage - 1)


class Schedule:
    """Base: chunk c x pp + s on stage s (one per stage unless virtual), one copy of the model."""

    name = ""
    virtual = False         # takes virtual_stages > 1
    fixed_virtual = 0       # a schedule defined for exactly this many chunks per stage (V shapes: 2)
    copies = 1              # model copies the schedule runs (DualPipe: 2)
    phases = frozenset({"F", "B"})  # the passes its orders use
    steady = True           # forwards and backwards interleave in a repeating pattern past the fill

    def chunks(self, pp: int, stage: int, v: int) -> tuple[int, ...]:
        """Global chunk ids held by a stage, in local-chunk order."""
        return tuple(c * pp + stage for c in range(v))

    def order(self, pp: int, stage: int, microbatches: int, v: int) -> list[Step]:
        raise NotImplementedError

    def check(self, pp: int, v: int, microbatches: int | None, layers: int) -> tuple[str, str, str] | None:
        """(field, problem, fix) when the schedule cannot run this plan, else None (microbatches None:
        the plan's shape alone, before the batch is known)."""
        return None


SCHEDULES: Registry[Schedule] = Registry("pipeline schedule")


@functools.lru_cache(maxsize=4096)
def stage_order(schedule: str, pp: int, stage: int, microbatches: int, virtual_stages: int = 1) -> tuple[Step, ...]:
    """A stage's steps, memoised: a pure function of its arguments that a plan search asks for again and
    again (every plan with the same pipeline shape shares its orders)."""
    return tuple(SCHEDULES[schedule].order(pp, stage, microbatches, virtual_stages))


def stage_chunks(schedule: str, pp: int, stage: int, virtual_stages: int = 1) -> tuple[int, ...]:
    return SCHEDULES[schedule].chunks(pp, stage, virtual_stages)


# Registration happens on import of each schedule module.
from graphgen.schedule import (  # noqa: E402,F401
    dualpipe,
    forward_only,
    gpipe,
    interleaved,
    one_f_one_b,
    zero_bubble,
    zero_bubble_v,
)

# What each step adds to a stage's in-flight activations: +weight (F), -weight (B), kept - weight (Bi,
# its W still reads the kept part), -kept (W); per local chunk.
_WEIGHT = {"F": 1, "B": -1, "Bi": -1, "W": 0}
_KEPT = {"F": 0, "B": 0, "Bi": 1, "W": -1}


@functools.lru_cache(maxsize=4096)
def in_flight_counts(schedule: str, pp: int, stage: int, microbatches: int, virtual_stages: int = 1):
    """(A, K): after each step of the stage's order, how many chunk weights (A) and kept parts (K) are
    in flight, per local chunk; the in-flight bytes after step i are A[i] . weight + K[i] . kept."""
    import numpy as np

    order = stage_order(schedule, pp, stage, microbatches, virtual_stages)
    chunks = len(SCHEDULES[schedule].chunks(pp, stage, virtual_stages))
    a = np.zeros((len(order), chunks))
    k = np.zeros((len(order), chunks))
    for i, st in enumerate(order):
        a[i, st.chunk], k[i, st.chunk] = _WEIGHT[st.phase], _KEPT[st.phase]
    return np.cumsum(a, axis=0), np.cumsum(k, axis=0)
