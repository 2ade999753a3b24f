"""Pass templates: one model chunk's forward or backward as a chain of items, built once per chunk.

This is where tensor parallelism (and every other per-axis layout) inserts its collectives: each
op states the layout it takes and the layout it gives on every mesh axis; wherever a producer's
layout differs from its consumer's, graphgen.parallel.layout.transitions names the collective
(Partial->Replicate all-reduce, Partial->Shard reduce-scatter, Shard->Replicate all-gather). The
backward's layouts follow grad_required_layout and grad_produced_layout, which gives Megatron's f/g
operators and sequence parallelism's gather/scatter pairs without special cases.

Adjacent ops of the same unit (layer, embedding, head) and phase fuse into one compute item; units
stay apart so that data-parallel buckets and FSDP gathers can attach at layer granularity.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from graphgen.ir import Phase, unit_span
from graphgen.model.layer_graph import EMBED, LayerGraph
from graphgen.model.ops import Op, OpKind, computes_wgrad, defers_wgrad, op_work
from graphgen.parallel.layout import (
    Collective,
    Layout,
    grad_produced_layout,
    grad_required_layout,
    transitions,
)

OpRef = tuple[int, int, str]  # (block id, op index, direction)


@dataclass(frozen=True, slots=True)
class Item:
    is_comm: bool
    name: str
    phase: Phase
    unit: int
    layers: tuple[int, int]
    ops: tuple[OpRef, ...] = ()
    op_names: tuple[str, ...] = ()
    flops: float = 0.0
    bytes: float = 0.0
    kind: Collective | None = None
    axis: str = ""
    group_size: int = 1
    kernel: OpKind | None = None  # an item without ops (the optimizer step) costed as this kernel kind
    parallel: bool = False        # a collective that runs beside the next item (its op's own exchange)


@dataclass(frozen=True)
class Template:
    items: tuple[Item, ...]
    first_use: dict[int, int]   # unit -> index of its first item in this pass
    last_use: dict[int, int]    # unit -> index of its last item (backward: its grads are final)


def make_template(items: list[Item], phase: Phase) -> Template:
    if not items:
        # A pass with nothing to do (a fully frozen stage's backward, a stage the balanced split
        # left without layers) still orders the schedule and passes tensors through.
        items = [Item(False, "noop", phase, -2, (-1, -1), op_names=("noop",))]
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for idx, it in enumerate(items):
        first.setdefault(it.unit, idx)
        last[it.unit] = idx
    return Template(tuple(items), first, last)


def _on_unit(it: Item, unit: int, n_layers: int) -> Item:
    # dataclasses.replace, without its per-call field introspection (this runs for every item of a
    # shared chunk); test_chunks_of_the_same_kinds_share_their_lowering compares the result field by field
    return Item(it.is_comm, it.name, it.phase, unit, unit_span(unit, n_layers), it.ops, it.op_names, it.flops,
                it.bytes, it.kind, it.axis, it.group_size, it.kernel, it.parallel)


def _issues(tag: str, op: Op, direction: str) -> bool:
    """Whether a pass in `direction` issues an op's side collective tagged 'fwd', 'bwd' (any backward
    of the op) or 'wgrad' (the backward step that runs the op's weight-gradient GEMM: the whole backward,
    the deferred weight-gradient step of a split one, or its input-gradient step for a shared weight)."""
    if direction == "fwd":
        return tag == "fwd"
    if tag == "wgrad":
        if direction == "bwd_w":
            return defers_wgrad(op)
        return computes_wgrad(op) and (direction == "bwd" or not defers_wgrad(op))
    return tag == "bwd"


def renumbered(tpl: Template, moved: dict[int, int], n_layers: int) -> Template:
    """A template's items on other layers of the same kinds (units not in `moved` stay: the embedding,
    the head)."""
    items = tuple(_on_unit(it, moved[it.unit], n_layers) if it.unit in moved else it for it in tpl.items)
    return Template(items, {moved.get(u, u): i for u, i in tpl.first_use.items()},
                    {moved.get(u, u): i for u, i in tpl.last_use.items()})


class PassBuilder:
    """Collects the items of one pass, fusing adjacent ops of one unit and phase."""

    def __init__(self, n_layers: int, sizes: dict[str, int], selective: bool,
                 overlap_axes: frozenset[str] = frozenset(), gemm_axes: frozenset[str] = frozenset()) -> None:
        self.n_layers, self.sizes, self.selective = n_layers, sizes, selective
        self.overlap_axes = overlap_axes  # relayouts on these axes run beside the next compute
        self.gemm_axes = gemm_axes        # relayouts on these axes run beside the GEMM next to them
        self.items: list[Item] = []
        self._seg: list[tuple[OpRef, str, float, float, bool]] = []  # ..., whether the op is a GEMM
        self._key: tuple[Phase, int] | None = None
        self._awaiting: int | None = None  # a collective that overlaps the next op if that op is a GEMM

    def _flush(self) -> None:
        if not self._seg:
            return
        phase, unit = self._key
        names = tuple(s[1] for s in self._seg)
        self.items.append(Item(False, f"{phase.value}:{names[0]}..{names[-1]}", phase, unit,
                               unit_span(unit, self.n_layers), tuple(s[0] for s in self._seg), names,
                               sum(s[2] for s in self._seg), sum(s[3] for s in self._seg)))
        self._seg = []

    def op(self, ref: tuple[int, int], op: Op, unit: int, phase: Phase, direction: str) -> None:
        sides = [c for c in op.side_comm if _issues(c[1], op, direction)]
        awaiting, self._awaiting = self._awaiting, None
        gemm = op.kind is OpKind.MATMUL and not sides
        if awaiting is not None and not gemm:  # no GEMM to hide behind: the collective stays in line
            self.items[awaiting] = replace(self.items[awaiting], parallel=False)
        if sides:
            return self._with_sides(ref, op, unit, phase, direction, sides)
        if (phase, unit) != self._key:
            self._flush()
            self._key = (phase, unit)
        fl, by = op_work(op, direction, self.selective)
        self._seg.append(((ref[0], ref[1], direction), op.name, fl, by, gemm))
        if awaiting is not None:  # the GEMM the collective overlaps is an item of its own
            self._flush()
            self._key = None

    def _with_sides(self, ref, op: Op, unit: int, phase: Phase, direction: str, sides) -> None:
        """An op with its own collectives: overlapped ones run beside it, the others before it or after
        it as each says; the op is an item of its own."""
        for axis, _, kind, nbytes, overlapped, after in sides:
            if overlapped or not after:
                self.comm(axis, kind, nbytes, phase, unit, parallel=overlapped)
        self._key = (phase, unit)
        fl, by = op_work(op, direction, self.selective)
        self._seg.append(((ref[0], ref[1], direction), op.name, fl, by, False))
        self._flush()
        self._key = None
        for axis, _, kind, nbytes, overlapped, after in sides:
            if not overlapped and after:
                self.comm(axis, kind, nbytes, phase, unit)

    def comm(self, axis: str, kind: Collective, nbytes: float, phase: Phase, unit: int, parallel: bool = False) -> None:
        self._flush()
        self._key = None
        self.items.append(Item(True, f"{phase.value}:{axis}_{kind.value}", phase, unit,
                               unit_span(unit, self.n_layers), bytes=nbytes, kind=kind, axis=axis,
                               group_size=self.sizes[axis], parallel=parallel))

    def relayout(self, src: Layout, dst: Layout, producer: Op | None, phase: Phase, unit: int) -> None:
        """The collectives that turn src into dst, one per axis whose placement differs, each moving
        the producer's tensor as that axis sees it."""
        for axis, kind in transitions(src, dst):
            nbytes = producer.comm_bytes(axis) if producer else 0.0
            if axis in self.gemm_axes:
                self._beside_gemm(axis, kind, nbytes, phase, unit)
            else:
                self.comm(axis, kind, nbytes, phase, unit, parallel=axis in self.overlap_axes)

    def _beside_gemm(self, axis: str, kind: Collective, nbytes: float, phase: Phase, unit: int) -> None:
        """A collective overlapped chunk by chunk with a GEMM (TE userbuffers, async TP): beside the GEMM
        that produced its tensor (row-parallel, then reduce-scatter), else beside the next op if that is
        a GEMM (all-gather, then column-parallel); the item after the GEMM waits for both."""
        if self._seg and self._seg[-1][4]:
            gemm, key = self._seg.pop(), self._key
            self.comm(axis, kind, nbytes, phase, unit, parallel=True)
            self._key = key
            self._seg.append(gemm)
            self._flush()
            self._key = None
            return
        self.comm(axis, kind, nbytes, phase, unit, parallel=True)
        self._awaiting = len(self.items) - 1

    def template(self, phase: Phase) -> Template:
        self._flush()
        # A collective runs beside the compute item after it only when a later item can wait for both.
        n = len(self.items)
        items = [replace(it, parallel=False) if it.parallel and (i + 2 >= n or self.items[i + 1].is_comm) else it
                 for i, it in enumerate(self.items)]
        return make_template(items, phase)


Stream = list[tuple[tuple[int, int], Op, int]]  # ((block id, op index), op, unit)


def chunk_stream(lg: LayerGraph, layers: tuple[int, ...], first: bool, last: bool) -> Stream:
    out: Stream = []
    units = ([EMBED] if first else []) + list(layers) + ([lg.layers] if last else [])
    for unit in units:
        block = lg.unit_block(unit)
        out.extend(((block.id, i), op, unit) for i, op in enumerate(block.ops))
    return out


def lower_forward(pb: PassBuilder, stream: Stream, start: Layout, end: Layout, phase: Phase) -> None:
    """Lower ops in order; wherever a producer's layout differs from its consumer's, insert the
    collectives the layout table names (this is where TP all-reduces appear)."""
    if not stream:
        return
    cur, producer, cur_unit = start, None, stream[0][2]
    for ref, op, unit in stream:
        pb.relayout(cur, op.in_layout, producer, phase, cur_unit)
        pb.op(ref, op, unit, phase, "fwd")
        cur, producer, cur_unit = op.out_layout, op, unit
    pb.relayout(cur, end, producer, phase, cur_unit)


def _by_unit(stream: Stream) -> list[tuple[int, Stream]]:
    out: list[tuple[int, Stream]] = []
    for entry in stream:
        if not out or out[-1][0] != entry[2]:
            out.append((entry[2], []))
        out[-1][1].append(entry)
    return out


def lower_backward(pb: PassBuilder, stream: Stream, grad_in: Layout, resid: Layout, lg: LayerGraph,
                   recompute_every: int | None, direction: str = "bwd") -> None:
    """Reverse pass: each op's gradient layout is derived from its forward layouts. Units that need
    no gradient (a frozen prefix) get no backward at all. With recompute_every, every k-th block
    is checkpointed and reruns its forward (TP collectives included) before its backward."""
    cur = grad_in
    for unit, entries in reversed(_by_unit(stream)):
        if not lg.has_backward(unit):
            continue
        if recompute_every and 0 <= unit < lg.layers and unit % recompute_every == 0:
            lower_forward(pb, entries, resid, resid, Phase.RECOMPUTE)
        for ref, op, _ in reversed(entries):
            pb.relayout(cur, grad_required_layout(op.out_layout), op, Phase.BACKWARD, unit)
            pb.op(ref, op, unit, Phase.BACKWARD, direction)
            cur = grad_produced_layout(op.in_layout, op.shards_input)


def lower_wgrad(pb: PassBuilder, stream: Stream, lg: LayerGraph) -> None:
    """Weight-gradient step of a split backward: each trainable linear's wgrad GEMM, last unit first."""
    for unit, entries in reversed(_by_unit(stream)):
        if not lg.has_backward(unit):
            continue
        for ref, op, _ in reversed(entries):
            if op_work(op, "bwd_w")[0] > 0:
                pb.op(ref, op, unit, Phase.WGRAD, "bwd_w")
