"""Stamping a pass template out as nodes, op by op or coarse.

Op level: one node per template item; items on a mesh axis become CollectiveNodes on that axis's
stream. Coarse: maximal runs of items between attachment points (where a bucket's gradients
become final, where a parameter gather gates an item, where a prefetch is issued) become one
compute node whose work spans them, its inline collectives included; with nothing attached, a
whole pass is one node. Both lowerings issue every attached collective at the same item, so
they agree on timing; the coarse one grows with the schedule, not with the ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from graphgen.ir import CollectiveNode, ComputeNode, Node, Phase, Work, comm_stream
from graphgen.program.templates import Template


class Emitter:
    """Appends nodes to one role's list; ids are list positions (deterministic). `shared` caches what
    every instance of a template segment has in common, across microbatches and roles."""

    def __init__(self, shared: dict | None = None) -> None:
        self.nodes: list[Node] = []
        self.shared = {} if shared is None else shared

    def add(self, node_cls, **kw) -> int:
        self.nodes.append(node_cls(id=len(self.nodes), **kw))
        return len(self.nodes) - 1


@dataclass
class Attachments:
    """What one pass instance connects to beyond its own chain, keyed by template item index."""

    before: dict[int, list[int]] = field(default_factory=dict)        # extra deps of an item
    after: dict[int, list[Callable[[int], None]]] = field(default_factory=dict)  # called with the item's node id

    def cuts(self) -> set[int]:
        """Item indices a coarse segment must start at (before) or end at (after, as idx + 1)."""
        return set(self.before) | {i + 1 for i in self.after}


def pass_segments(tpl: Template, cuts: set[int], coarse: bool) -> list[tuple[int, int]]:
    """Item ranges, one node each. A coarse node never starts or ends with a collective: leading and
    trailing collectives stay nodes of their own, which (as at op level) may overlap the compute of
    a neighbouring pass instead of waiting for it."""
    n = len(tpl.items)
    if not coarse:
        return [(i, i) for i in range(n)]
    lead = next((i for i, it in enumerate(tpl.items) if not it.is_comm), n)
    trail = next((i for i, it in enumerate(reversed(tpl.items)) if not it.is_comm), n)
    edges = set(range(lead + 1)) | set(range(n - trail, n + 1))
    for i, it in enumerate(tpl.items):
        if it.parallel:  # the collective and the item it runs beside stay nodes of their own
            edges |= {i, i + 1, i + 2}
    bounds = sorted({0, n} | {c for c in cuts | edges if 0 < c < n})
    return [(a, b - 1) for a, b in zip(bounds, bounds[1:], strict=False)]


def emit_pass(em: Emitter, tpl: Template, tpl_id: int, first_deps: list[int], att: Attachments, mb: int,
              chunk: int, coarse: bool) -> int:
    """Stamp out one pass; returns the id of its last node."""
    prev: int | None = None
    cuts = frozenset(att.cuts())
    key = ("segments", tpl_id, cuts, coarse)
    segments = em.shared.get(key)
    if segments is None:
        segments = em.shared[key] = pass_segments(tpl, cuts, coarse)
    beside: list[int] = []  # collectives running beside the previous node: the next one waits for them too
    for a, b in segments:
        deps = list(first_deps) if prev is None else [prev]
        deps.extend(att.before.get(a, ()))
        it = tpl.items[a]
        if a == b and it.parallel:
            beside.append(em.add(CollectiveNode, name=it.name, kind=it.kind, bytes=it.bytes, axis=it.axis,
                                 group_size=it.group_size, deps=tuple(deps), phase=it.phase, microbatch=mb,
                                 chunk=chunk, layers=it.layers, stream=comm_stream(it.axis)))
            continue
        if not tpl.items[a - 1].parallel if a else True:
            deps.extend(beside)
            beside = []
        if a == b and it.is_comm:
            prev = em.add(CollectiveNode, name=it.name, kind=it.kind, bytes=it.bytes, axis=it.axis,
                          group_size=it.group_size, deps=tuple(deps), phase=it.phase, microbatch=mb, chunk=chunk,
                          layers=it.layers, stream=comm_stream(it.axis))
        else:
            prev = _compute(em, tpl, tpl_id, a, b, tuple(deps), mb, chunk)
        for cb in att.after.get(b, ()):
            cb(prev)
    if beside:
        raise ValueError("a pass ends with a collective still beside its last item")
    return prev


def _segment_fields(tpl: Template, tpl_id: int, a: int, b: int) -> dict:
    """What every compute node spanning items a..b of a template has in common."""
    items = tpl.items[a:b + 1]
    first, last = items[0], items[-1]
    if a == b:
        name, ops, layers = first.name, first.op_names, first.layers
    else:
        name, ops = f"{first.phase.value}:{first.op_names[0] if first.op_names else first.name}..", ()
        spans = [it.layers for it in items if it.layers[0] >= 0]
        layers = (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else (-1, -1)
        name += last.op_names[-1] if last.op_names else last.name
    phase = first.phase if a == b or first.phase is not Phase.RECOMPUTE else Phase.BACKWARD
    return dict(name=name, work=Work(tpl_id, a, b), flops=sum(it.flops for it in items if not it.is_comm),
                bytes=sum(it.bytes for it in items if not it.is_comm), phase=phase, layers=layers, ops=ops)


def _compute(em: Emitter, tpl: Template, tpl_id: int, a: int, b: int, deps: tuple[int, ...], mb: int,
             chunk: int) -> int:
    key = ("compute", tpl_id, a, b)
    fields = em.shared.get(key)
    if fields is None:
        fields = em.shared[key] = _segment_fields(tpl, tpl_id, a, b)
    node_id = len(em.nodes)
    em.nodes.append(ComputeNode(node_id, deps=deps, microbatch=mb, chunk=chunk, **fields))
    return node_id
