"""The per-role DAG: typed, immutable nodes with durations already costed.

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


class Stream(str, Enum):
    COMPUTE = "compute"
    TP = "comm_tp"
    DP = "comm_dp"
    PP = "comm_pp"


class Phase(str, Enum):
    FORWARD = "fwd"
    BACKWARD = "bwd"
    RECOMPUTE = "recompute"
    OPTIMIZER = "optimizer"
    PARAM_SYNC = "param_sync"
    GRAD_SYNC = "grad_sync"


@dataclass(frozen=True, slots=True)
class ComputeNode:
    id: int
    name: str
    duration: float      # seconds
    flops: float         # FLOPs executed on this rank
    bytes: float         # HBM bytes moved
    deps: tuple[int, ...]
    phase: Phase
    microbatch: int
    chunk: int
    layers: tuple[int, int]  # first and last global layer index touched (-1: embedding/head/none)
    ops: tuple[str, ...]
    stream: Stream = Stream.COMPUTE


@dataclass(frozen=True, slots=True)
class CollectiveNode:
    """A collective over one parallel axis. `bytes` is the full buffer: the all-reduce size,
    the all-gather output, the reduce-scatter input (per-rank input of an all-gather is bytes/n)."""

    id: int
    name: str
    kind: Collective
    bytes: float
    axis: str
    group_size: int
    duration: float
    deps: tuple[int, ...]
    phase: Phase
    microbatch: int
    chunk: int
    layers: tuple[int, int]
    stream: Stream


@dataclass(frozen=True, slots=True)
class SendNode:
    id: int
    name: str
    bytes: float
    peer_role: int
    tag: int
    duration: float
    deps: tuple[int, ...]
    microbatch: int
    chunk: int
    phase: Phase
    stream: Stream = Stream.PP


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
    duration: float = 0.0
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


def to_networkx(role: Role):
    """The role's DAG as a networkx.DiGraph (data edges and stream-order edges marked)."""
    import networkx as nx

    g = nx.DiGraph()
    last_on_stream: dict[Stream, int] = {}
    for n in role.nodes:
        g.add_node(n.id, name=n.name, type=type(n).__name__, duration=n.duration,
                   stream=n.stream.value if n.stream else "")
        for d in n.deps:
            g.add_edge(d, n.id, kind="data")
        if n.stream is not None:
            prev = last_on_stream.get(n.stream)
            if prev is not None and not g.has_edge(prev, n.id):
                g.add_edge(prev, n.id, kind="stream")
            last_on_stream[n.stream] = n.id
    return g
