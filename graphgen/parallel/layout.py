"""Placements of a tensor on one mesh axis, and the one table that turns a change into a collective.

Megatron TP and sequence parallelism are not coded as rules: each op states the placement it
wants for its input and the one it gives its output; wherever a producer's placement differs
from its consumer's, `transition` names the collective. Backward grads follow `grad_required`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum


class Kind(str, Enum):
    REPLICATE = "R"
    SHARD = "S"
    PARTIAL = "P"


@dataclass(frozen=True)
class Placement:
    kind: Kind
    dim: str | None = None  # the sharded dimension's name ("seq", "hidden", "heads", "vocab")

    def __str__(self) -> str:
        return f"S({self.dim})" if self.kind is Kind.SHARD else self.kind.value


REPLICATE = Placement(Kind.REPLICATE)
PARTIAL = Placement(Kind.PARTIAL)


def shard(dim: str) -> Placement:
    return Placement(Kind.SHARD, dim)


class Collective(str, Enum):
    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_TO_ALL = "all_to_all"


class LayoutError(ValueError):
    pass


def transition(src: Placement, dst: Placement) -> Collective | None:
    """The collective that turns a tensor placed as `src` into one placed as `dst` (None: local).

    | from \\ to  | Replicate  | Shard(b)       | Partial |
    | Replicate  | -          | local slice    | illegal |
    | Shard(a)   | all-gather | all-to-all/-   | illegal |
    | Partial    | all-reduce | reduce-scatter | -       |
    """
    if src == dst:
        return None
    if src.kind is Kind.PARTIAL:
        if dst.kind is Kind.REPLICATE:
            return Collective.ALL_REDUCE
        if dst.kind is Kind.SHARD:
            return Collective.REDUCE_SCATTER
    if src.kind is Kind.SHARD:
        if dst.kind is Kind.REPLICATE:
            return Collective.ALL_GATHER
        if dst.kind is Kind.SHARD:
            return Collective.ALL_TO_ALL
    if src.kind is Kind.REPLICATE and dst.kind is Kind.SHARD:
        return None  # each rank keeps its slice: no communication
    raise LayoutError(f"no collective turns {src} into {dst}")


def grad_required(out: Placement) -> Placement:
    """Placement an op needs for the gradient of its output.

    The grad of a partial sum is needed in full by every contributor; any other placement's
    grad arrives placed like the tensor itself.
    """
    return REPLICATE if out.kind is Kind.PARTIAL else out


def grad_produced(inp: Placement, shards_input: bool) -> Placement:
    """Placement of the grad an op produces for its input.

    An op that consumes a replicated input with sharded weights (column-parallel linear,
    vocab-parallel LM head) produces only this rank's contribution to that grad: Partial.
    """
    if shards_input and inp.kind is Kind.REPLICATE:
        return PARTIAL
    return inp


# ----------------------------------------------------------------------------------- per mesh axis

# Mesh axes a tensor can be laid out on, tp innermost. The dense layers' ranks are tp x cp x dp x pp
# (Megatron order); the expert layers' are etp x ep x edp x pp over the same ranks (Megatron-Core's
# expert rank generator), so ep, etp and edp re-divide tp x cp x dp.
AXES: tuple[str, ...] = ("tp", "cp", "ep", "etp", "dp", "edp", "pp")


@dataclass(frozen=True)
class Layout:
    """A tensor's placement on every mesh axis; axes not listed are Replicate."""

    placements: tuple[tuple[str, Placement], ...] = ()

    def on(self, axis: str) -> Placement:
        for a, p in self.placements:
            if a == axis:
                return p
        return REPLICATE

    def __str__(self) -> str:
        return ",".join(f"{a}:{p}" for a, p in self.placements) or "R"


def layout(**per_axis: Placement) -> Layout:
    """Layout from axis=placement keywords (Replicate entries are dropped, so equal layouts compare equal)."""
    unknown = set(per_axis) - set(AXES)
    if unknown:
        raise LayoutError(f"unknown mesh axis {sorted(unknown)}")
    return Layout(tuple((a, per_axis[a]) for a in AXES if a in per_axis and per_axis[a] != REPLICATE))


def _axes(*layouts: Layout) -> list[str]:
    used = {a for lay in layouts for a, _ in lay.placements}
    return [a for a in AXES if a in used]


@functools.lru_cache(maxsize=4096)
def transitions(src: Layout, dst: Layout) -> tuple[tuple[str, Collective], ...]:
    """The collectives, axis by axis in mesh order, that turn a tensor laid out as src into dst."""
    out = []
    for a in _axes(src, dst):
        kind = transition(src.on(a), dst.on(a))
        if kind is not None:
            out.append((a, kind))
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def grad_required_layout(out: Layout) -> Layout:
    return layout(**{a: grad_required(out.on(a)) for a in _axes(out)})


@functools.lru_cache(maxsize=4096)
def grad_produced_layout(inp: Layout, shards_input: frozenset[str]) -> Layout:
    """Per axis: Partial where the op's sharded weights consume a replicated input, else as the input."""
    axes = [a for a in AXES if a in set(_axes(inp)) | shards_input]
    return layout(**{a: grad_produced(inp.on(a), a in shards_input) for a in axes})
