"""DualPipe and DualPipeV (DeepSeek-V3 Technical Report, arXiv 2412.19437; deepseek-ai/DualPipe
dualpipe/dualpipe.py and dualpipe/dualpipev.py @3da1bbe, `step`): the eight phases of each rank's order,
written once for both.

DualPipe runs two copies of the model, fed from opposite ends: rank r holds stage r of the forward
copy and stage pp-1-r of the reverse copy, and half the microbatches go each way ("phase 0" is the
rank's own direction, the forward copy on the first half of the ranks, the reverse copy on the
second). DualPipeV cuts it in half into a V: pp ranks hold 2 pp stages, rank r stages r and 2pp-1-r,
and every microbatch enters at rank 0. Backward chunks marked zero-bubble defer their weight
gradients (Bi now, W later, oldest first). Overlapped forward-backward pairs are ordered forward
first; the overlap of their communication with compute is the plan's `moe_overlap`.

Bubble (README table): (pp/2 - 1)(F&B + B - 3W) for DualPipe with pp stages.
"""

from __future__ import annotations

from collections import deque

from graphgen.schedule import SCHEDULES, Schedule, Step


def dual_order(n: int, r: int, per_phase: int) -> list[tuple[str, int]]:
    """(pass, phase) in DualPipe's order for a rank at half-rank r of n half-ranks, per_phase
    microbatches per phase; passes are F, B (whole backward), Bi (zero bubble) and W."""
    out: list[tuple[str, int]] = []
    out += [("F", 0)] * ((n - r - 1) * 2)                                          # 1: nF0
    out += [("F", 0), ("F", 1)] * (r + 1)                                          # 2: nF0F1
    out += [("Bi", 1), ("W", -1), ("F", 1)] * (n - r - 1)                          # 3: nB1W1F1
    out += [("F", 0), ("B", 1), ("F", 1), ("B", 0)] * (per_phase - 2 * n + r + 1)  # 4: nF0B1F1B0
    out += [("B", 1), ("F", 1), ("B", 0)] * (n - r - 1)                            # 5: nB1F1B0
    zb = False
    for i in range(r + 1):                                                         # 6: nB1B0
        if i == (r + 1) // 2 and r % 2 == 1:
            zb = True
        out.append(("Bi" if zb else "B", 1))
        if i == (r + 1) // 2 and r % 2 == 0:
            zb = True
        out.append(("Bi" if zb else "B", 0))
    out += [("W", -1), ("Bi", 0)] * (n - r - 1)                                    # 7: nWB0
    out += [("W", -1)] * (r + 1)                                                   # 8: nW
    return out


def number(order: list[tuple[str, int]], first_mb: tuple[int, int]) -> list[Step]:
    """Steps with microbatch ids: each phase's forwards and backwards take its microbatches in order
    (first_mb[phase] is its first id); a W finishes the oldest deferred backward."""
    fwd, bwd = [0, 0], [0, 0]
    deferred: deque[tuple[int, int]] = deque()
    out = []
    for kind, phase in order:
        if kind == "W":
            mb, chunk = deferred.popleft()
            out.append(Step("W", mb, chunk))
            continue
        count = fwd if kind == "F" else bwd
        mb = first_mb[phase] + count[phase]
        count[phase] += 1
        out.append(Step(kind, mb, phase))
        if kind == "Bi":
            deferred.append((mb, phase))
    return out


class DualPipe(Schedule):
    name = "dualpipe"
    copies = 2
    phases = frozenset({"F", "B", "Bi", "W"})

    def chunks(self, pp: int, stage: int, v: int) -> tuple[int, ...]:
        forward, reverse = stage, pp + (pp - 1 - stage)  # stage r of copy 0; stage pp-1-r of copy 1
        return (forward, reverse) if stage < pp // 2 else (reverse, forward)

    def order(self, pp: int, stage: int, microbatches: int, v: int) -> list[Step]:
        n, r, half = pp // 2, min(stage, pp - 1 - stage), microbatches // 2
        # Phase 0 is the rank's own direction: copy 0's microbatches come first, copy 1's after.
        first = (0, half) if stage < n else (half, 0)
        return number(dual_order(n, r, half), first)

    def check(self, pp: int, v: int, microbatches: int | None, layers: int) -> tuple[str, str, str] | None:
        if pp % 2 or pp < 2:
            return "parallelism.pp", f"DualPipe needs an even pp (got {pp})", "choose an even number of stages"
        if microbatches is not None and (microbatches % 2 or microbatches < 2 * pp):
            return ("parallelism.microbatches", f"DualPipe needs an even number of microbatches, at least 2 x pp = "
                    f"{2 * pp} (got {microbatches})", "raise workload.global_batch")
        return None


class DualPipeV(Schedule):
    name = "dualpipev"
    virtual = True
    fixed_virtual = 2
    phases = frozenset({"F", "B", "Bi", "W"})

    def chunks(self, pp: int, stage: int, v: int) -> tuple[int, ...]:
        return (stage, 2 * pp - 1 - stage)

    def order(self, pp: int, stage: int, microbatches: int, v: int) -> list[Step]:
        return number(dual_order(pp, stage, microbatches), (0, 0))

    def check(self, pp: int, v: int, microbatches: int | None, layers: int) -> tuple[str, str, str] | None:
        if microbatches is not None and microbatches < 2 * pp:
            return ("parallelism.microbatches", f"DualPipeV needs at least 2 x pp = {2 * pp} microbatches "
                    f"(got {microbatches})", "raise workload.global_batch")
        return None


SCHEDULES.add(DualPipe.name, DualPipe())
SCHEDULES.add(DualPipeV.name, DualPipeV())
