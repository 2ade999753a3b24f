"""Interleaved 1F1B (Narayanan et al. 2021, Megatron-LM `forward_backward_pipelining_with_interleaving`).

Each stage holds `v` model chunks (chunk c of stage s is global chunk c x pp + s); microbatches
advance in groups of pp through the chunks. The warm-up length and the chunk/microbatch of the k-th
virtual step follow Megatron's code. When microbatches == pp we run every forward first, as
Megatron did until late 2024 (commit 4295be1); later Megatron keeps the regular warm-up there,
which differs only on stages after the first.
"""

from __future__ import annotations

from graphgen.schedule import SCHEDULES, Schedule, Step


def _chunk(k: int, pp: int, v: int, forward: bool) -> int:
    c = (k // pp) % v
    return c if forward else v - 1 - c


def _microbatch(k: int, pp: int, v: int) -> int:
    return (k // (pp * v)) * pp + k % pp


class Interleaved(Schedule):
    name = "interleaved"
    virtual = True

    def order(self, pp: int, stage: int, microbatches: int, v: int) -> list[Step]:
        total = microbatches * v
        if microbatches == pp:
            warmup = total  # Megatron runs all forwards first when microbatches == pp
        else:
            warmup = min((pp - stage - 1) * 2 + (v - 1) * pp, total)
        order = [Step("F", _microbatch(k, pp, v), _chunk(k, pp, v, True)) for k in range(warmup)]
        for i in range(total - warmup):
            k = warmup + i
            order.append(Step("F", _microbatch(k, pp, v), _chunk(k, pp, v, True)))
            order.append(Step("B", _microbatch(i, pp, v), _chunk(i, pp, v, False)))
        for i in range(total - warmup, total):
            order.append(Step("B", _microbatch(i, pp, v), _chunk(i, pp, v, False)))
        return order

    def check(self, pp: int, v: int, microbatches: int | None, layers: int) -> tuple[str, str, str] | None:
        if pp > 1 and microbatches is not None and microbatches % pp:
            return ("parallelism.microbatches",
                    f"interleaved schedule needs microbatches={microbatches} to be a multiple of pp={pp}",
                    "change workload.global_batch or parallelism.pp")
        return None


SCHEDULES.add(Interleaved.name, Interleaved())
