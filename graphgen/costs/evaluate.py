"""Attach durations to a Program: the one place where structure meets the cluster's costs.

Compute items are costed op by op (roofline x efficiency, graphgen.costs.compute); collectives by the
bus-bandwidth model over the network dimensions their axis's groups span (graphgen.costs.network);
pipeline transfers as point-to-point sends. Template items are costed once and summed by prefix, so
a coarse node spanning a whole pass costs no more to evaluate than an op-level one.

The same Program can be costed under another cluster, or with communication times measured by
ASTRA-sim (`comm_override`), without rebuilding it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from graphgen.config import Cluster
from graphgen.costs.compute import LOW_PRECISION, ComputeModel
from graphgen.costs.network import NetworkModel, bus_coefficient, deepep_remote_share
from graphgen.ir import CollectiveNode, ComputeNode, SendNode, Work, comm_stream
from graphgen.parallel.layout import Collective
from graphgen.parallel.zero import ZERO3_GATHER
from graphgen.program import Program
from graphgen.program.templates import Item
from graphgen.units import GB


def comm_key(n) -> tuple | None:
    """The signature under which a communication's time may be overridden (ASTRA-sim's scalable mode)."""
    if isinstance(n, CollectiveNode):
        return ("coll", n.kind, n.axis, round(n.bytes), n.group_size)
    if isinstance(n, SendNode):
        return ("send", n.peer_role, round(n.bytes))
    if isinstance(n, Item) and n.is_comm:
        return ("coll", n.kind, n.axis, round(n.bytes), n.group_size)
    return None


@dataclass(frozen=True, slots=True)
class Segment:
    """The items a multi-item (coarse) node spans, in order: ("", seconds) for compute, (axis,
    seconds) for an inline collective. The replay walks them where other work could interact with the
    node (communication overlapping its compute, its axes' streams still busy), so that it runs
    exactly as its op-level items would."""

    parts: tuple[tuple[str, float], ...]
    comm_streams: tuple[str, ...]   # streams of its inline collectives
    last_comm_end: float            # nominal offset at which its last inline collective ends


@dataclass(frozen=True)
class Costs:
    """Seconds per node of every role; inline[r][i] is the communication inside coarse node i, per
    axis, which its duration includes; segments[r][i] describes multi-item node i; kappa is the
    device's overlap slowdown; cluster is the one these costs are for (a program may be re-costed under
    another), so that the Result names, peaks and sizes memory by what was actually costed."""

    durations: tuple[list[float], ...]
    inline: tuple[dict[int, tuple[tuple[str, float], ...]], ...]
    kappa: float
    segments: tuple[dict[int, Segment], ...] = ()
    cluster: Cluster | None = None


class Coster:
    def __init__(self, prog: Program, cluster: Cluster | None = None,
                 comm_override: Mapping[tuple, float] | None = None) -> None:
        self.prog = prog
        self.cluster = cluster or prog.scenario.hardware
        sc = prog.scenario
        w = sc.workload
        self.cm = ComputeModel(self.cluster.device, w.precision, w.attention_kernel,
                               casts=w.precision in LOW_PRECISION and w.run_type == "training",
                               fused_loss=w.fused_cross_entropy, fused_permute=sc.plan.moe_permute_fusion)
        self.net = NetworkModel(self.cluster)
        self.override = comm_override or {}
        self.selective = sc.plan.recompute == "selective"
        self._ops: dict[tuple[int, int, str], float] = {}
        self._coll: dict[tuple, float] = {}
        self._prefix: dict[int, tuple[list[float], dict[str, list[float]]]] = {}
        self._work: dict[Work, tuple[float, tuple[tuple[str, float], ...]]] = {}
        self._parts: dict[Work, Segment] = {}

    # ---------------------------------------------------------------------------- primitives
    def op_time(self, bid: int, idx: int, direction: str) -> float:
        key = (bid, idx, direction)
        t = self._ops.get(key)
        if t is None:
            op = self.prog.layer_graph.blocks[bid].ops[idx]
            t = self._ops[key] = self.cm.op_time(op, direction, self.selective)
        return t

    def collective_time(self, kind: Collective, nbytes: float, axis: str, purpose: str = "") -> float:
        key = (kind, nbytes, axis, purpose)
        t = self._coll.get(key)
        if t is None:
            per_node, nodes = self.prog.axis_span(axis, self.cluster.node.gpus_per_node)
            sc = self.prog.scenario
            deepep = axis == "ep" and sc.plan.moe_dispatcher == "deepep" and sc.model.moe is not None
            moe = sc.model.moe
            share = deepep_remote_share(moe.experts, moe.top_k, nodes, moe.expert_groups, moe.groups_per_token) \
                if deepep and kind is Collective.ALL_TO_ALL and nodes > 1 else None
            t = self.net.collective_time(kind, nbytes, per_node, nodes, "deepep" if deepep else "", share)
            cap = self.prog.scenario.plan.zero3_gather_gbs
            if purpose == ZERO3_GATHER and cap is not None:
                # A host-limited gather implementation moves data no faster than its own rate.
                t = max(t, bus_coefficient(kind, per_node * nodes) * nbytes / (cap * GB))
            self._coll[key] = t
        return t

    def item_time(self, it: Item) -> float:
        if it.is_comm:
            o = self.override.get(comm_key(it))
            return o if o is not None else self.collective_time(it.kind, it.bytes, it.axis)
        if it.kernel is not None:
            return self.cm.time(it.kernel, 0.0, it.bytes)
        return sum(self.op_time(*ref) for ref in it.ops)

    def _prefixes(self, tpl_id: int) -> tuple[list[float], dict[str, list[float]]]:
        pre = self._prefix.get(tpl_id)
        if pre is None:
            items = self.prog.templates[tpl_id].items
            comp = [0.0]
            comm: dict[str, list[float]] = {it.axis: [0.0] * (len(items) + 1) for it in items if it.is_comm}
            for i, it in enumerate(items):
                t = self.item_time(it)
                comp.append(comp[-1] + (0.0 if it.is_comm else t))
                for axis, acc in comm.items():
                    acc[i + 1] = acc[i] + (t if it.is_comm and it.axis == axis else 0.0)
            pre = self._prefix[tpl_id] = (comp, comm)
        return pre

    def work_time(self, w: Work) -> tuple[float, tuple[tuple[str, float], ...]]:
        """(compute seconds, ((axis, inline communication seconds), ...)) of a span of a template."""
        got = self._work.get(w)
        if got is None:
            comp, comm = self._prefixes(w.template)
            inline = tuple((a, acc[w.last + 1] - acc[w.first]) for a, acc in comm.items()
                           if acc[w.last + 1] > acc[w.first])
            got = self._work[w] = (comp[w.last + 1] - comp[w.first], inline)
        return got

    def segment(self, w: Work) -> Segment:
        got = self._parts.get(w)
        if got is None:
            items = self.prog.templates[w.template].items[w.first:w.last + 1]
            parts = tuple((it.axis if it.is_comm else "", self.item_time(it)) for it in items)
            streams = tuple(sorted({comm_stream(a) for a, _ in parts if a}))
            offset = last = 0.0
            for axis, x in parts:
                offset += x
                if axis:
                    last = offset
            got = self._parts[w] = Segment(parts, streams, last)
        return got

    def send_time(self, role: int, n: SendNode) -> float:
        o = self.override.get(comm_key(n))
        if o is not None:
            return o
        stride, gpn = self.prog.mesh.stride("pp"), self.cluster.node.gpus_per_node
        same = (role * stride) // gpn == (n.peer_role * stride) // gpn
        return self.net.p2p_time(n.bytes, same)

    # ------------------------------------------------------------------------------- program
    def node_time(self, role: int, n) -> tuple[float, tuple[tuple[str, float], ...]]:
        t = type(n)
        if t is ComputeNode:
            comp, inline = self.work_time(n.work)
            return comp + sum(s for _, s in inline), inline
        if t is CollectiveNode:
            o = self.override.get(comm_key(n))
            return (o if o is not None else self.collective_time(n.kind, n.bytes, n.axis, n.purpose)), ()
        if t is SendNode:
            return self.send_time(role, n), ()
        return 0.0, ()

    def costs(self) -> Costs:
        durations, inlines, parts = [], [], []
        for r, role in enumerate(self.prog.roles):
            dur, inl, prt = [], {}, {}
            for n in role.nodes:
                d, inline = self.node_time(r, n)
                dur.append(d)
                if inline:
                    inl[n.id] = inline
                if type(n) is ComputeNode and n.work.last > n.work.first:
                    prt[n.id] = self.segment(n.work)
            durations.append(dur)
            inlines.append(inl)
            parts.append(prt)
        return Costs(tuple(durations), tuple(inlines), self.cluster.device.overlap_slowdown, tuple(parts),
                     self.cluster)


def cost_program(prog: Program, cluster: Cluster | None = None,
                 comm_override: Mapping[tuple, float] | None = None) -> Costs:
    """Durations of every node of a program under a cluster (default: the scenario's own)."""
    return Coster(prog, cluster, comm_override).costs()
