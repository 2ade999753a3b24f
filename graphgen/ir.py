"""The per-role DAG: typed, immutable nodes that say what runs and what moves, never how long.

Durations are attached when a program is evaluated (graphgen.costs.evaluate), so one structure can
be re-costed under another cluster or efficiency table, or with ASTRA-sim's network times.

Nodes live in a list in emission order, which is both a topological order of the role's own
edges and the issue order of each stream (streams are in-order, like CUDA streams). Cross-role
edges exist only from a RecvNode to the SendNode with the same tag in its peer role.
networkx is used only for export and analysis (`to_networkx`): building 10^5-node graphs
through it would dominate run time, so the builder and backends use these plain lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from graphgen.parallel.layout import Collective

COMPUTE = "compute"


def comm_stream(axis: str) -> str:
    """The communication stream of one mesh axis (each axis's collectives queue on their own stream)."""
    return f"comm_{axis}"


def stream_axis(stream: str) -> str | None:
    return stream[len("comm_"):] if stream.startswith("comm_") else None


class Phase(str, Enum):
    FORWARD = "fwd"
    BACKWARD = "bwd"
    WGRAD = "wgrad"
    RECOMPUTE = "recompute"
    OPTIMIZER = "optimizer"
    PARAM_SYNC = "param_sync"
    GRAD_SYNC = "grad_sync"


@dataclass(frozen=True, slots=True)
class Work:
    """What a compute node computes: items first..last of pass template `template` (graphgen.program)."""

    template: int
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class ComputeNode:
    id: int
    name: str
    work: Work
    flops: float         # FLOPs executed on this rank
    bytes: float         # HBM bytes moved
    deps: tuple[int, ...]
    phase: Phase
    microbatch: int
    chunk: int
    layers: tuple[int, int]  # first and last global layer index touched (-1: embedding/head/none)
    ops: tuple[str, ...]
    stream: str = COMPUTE


@dataclass(frozen=True, slots=True)
class CollectiveNode:
    """A collective over one mesh axis. `bytes` is the full buffer: the all-reduce size, the
    all-gather output, the reduce-scatter input (per-rank input of an all-gather is bytes/n).
    `purpose` names what a cost rule may treat specially (ZeRO-3 parameter gathers)."""

    id: int
    name: str
    kind: Collective
    bytes: float
    axis: str
    group_size: int
    deps: tuple[int, ...]
    phase: Phase
    microbatch: int
    chunk: int
    layers: tuple[int, int]
    stream: str
    purpose: str = ""


@dataclass(frozen=True, slots=True)
class SendNode:
    id: int
    name: str
    bytes: float
    peer_role: int
    tag: int
    deps: tuple[int, ...]
    microbatch: int
    chunk: int
    phase: Phase
    stream: str = "comm_pp"


@dataclass(frozen=True, slots=True)
class RecvNode:
    """Completes when the peer's SendNode with the same tag completes; occupies no stream."""

    id: int
    name: str
    bytes: float
    peer_role: int
    tag: int
    deps: tuple[int, ...]
    microbatch: int
    chunk: int
    phase: Phase
    stream: None = None


Node = ComputeNode | CollectiveNode | SendNode | RecvNode


@dataclass(frozen=True)
class Role:
    """Ranks that run the same graph up to rank ids: here, one pipeline stage."""

    id: int
    name: str
    stage: int
    chunks: tuple[int, ...]            # global model-chunk indices held by this stage
    layers: tuple[int, ...]            # global layer indices held
    nodes: list[Node] = field(repr=False)


def unit_span(unit: int, n_layers: int) -> tuple[int, int]:
    """layer_span of one unit (the hot case: every item of a pass template)."""
    return (unit, unit) if 0 <= unit < n_layers else (-1, -1)


def layer_span(units, n_layers: int) -> tuple[int, int]:
    """First and last global layer among units (-1: only the embedding, the head or nothing)."""
    us = [u for u in units if 0 <= u < n_layers]
    return (min(us), max(us)) if us else (-1, -1)


def streams_of(roles) -> list[str]:
    """Streams the roles use, compute first, then communication streams in order of first use."""
    seen: dict[str, None] = {COMPUTE: None}
    for role in roles:
        for n in role.nodes:
            if n.stream is not None:
                seen.setdefault(n.stream, None)
    return list(seen)


def to_networkx(role: Role, durations=None):
    """The role's DAG as a networkx.DiGraph (data edges and stream-order edges marked)."""
    import networkx as nx

    g = nx.DiGraph()
    last_on_stream: dict[str, int] = {}
    for n in role.nodes:
        g.add_node(n.id, name=n.name, type=type(n).__name__, stream=n.stream or "",
                   duration=durations[n.id] if durations is not None else None)
        for d in n.deps:
            g.add_edge(d, n.id, kind="data")
        if n.stream is not None:
            prev = last_on_stream.get(n.stream)
            if prev is not None and not g.has_edge(prev, n.id):
                g.add_edge(prev, n.id, kind="stream")
            last_on_stream[n.stream] = n.id
    return g
