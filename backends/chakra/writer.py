"""Program -> Chakra execution traces: `<prefix>.<rank>.et` per rank plus the comm-group JSON.

Each file is a length-delimited GlobalMetadata record followed by length-delimited Nodes, as
ASTRA-sim's feeder reads them. Units (DESIGN.md idea 5): `num_ops` in FLOPs, `tensor_size` and
`comm_size` in bytes, `duration_micros` in integer microseconds; the exact duration in seconds
is kept in `rf_duration_s` so that the reader restores it. `comm_size` is the per-rank input for
an all-gather and the full buffer for all-reduce, reduce-scatter and all-to-all.

Speed: a role's nodes are encoded once. Only sends and receives (peer ranks) and collectives
addressed through a communicator group (pg_name) differ between the ranks of a role; their
rank-specific attributes are appended to the pre-encoded body when a rank is bound. Node ids
are the role's node indices and pipeline tags come from the program, so the same inputs give
byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from backends.chakra import wire
from graphgen.costs.evaluate import Costs
from graphgen.errors import RankflowError
from graphgen.ir import CollectiveNode, ComputeNode, Role, SendNode
from graphgen.parallel.layout import Collective
from graphgen.program import Program

SCHEMA_VERSION = "0.0.4"
MAX_RANKS = 65_536  # one file per rank: a trace set beyond this is not a useful artefact
MAX_BYTES = 2 * 2**30  # of a whole trace set: more takes minutes to write, and ASTRA-sim as long to load
BINDING_BYTES = 48     # at most, the rank's own attributes a bound node gains (pg_name, or comm_src/comm_dst)

# NodeType and CollectiveCommType values of et_def.proto.
COMP_NODE, COMM_SEND_NODE, COMM_RECV_NODE, COMM_COLL_NODE = 4, 5, 6, 7
COMM_TYPE = {Collective.ALL_REDUCE: 0, Collective.ALL_GATHER: 2, Collective.ALL_TO_ALL: 6,
             Collective.REDUCE_SCATTER: 7}


@dataclass(frozen=True)
class Addressing:
    """How a collective of one axis names its ranks: network dimensions or a communicator group."""

    involved_dim: tuple[bool, ...] | None  # all ranks, restricted to these network dimensions
    groups: dict[int, int] | None           # rank -> communicator-group id (flat ring over members)


def network_dims(prog: Program) -> list[int]:
    gpn = prog.scenario.hardware.node.gpus_per_node
    world = prog.mesh.world
    return [world] if world <= gpn else [gpn, world // gpn]


def comm_groups(prog: Program) -> tuple[dict[str, Addressing], dict[int, tuple[int, ...]]]:
    """Addressing per axis, and the communicator groups (id > 0 -> ranks) that need a JSON entry.

    An axis that spans whole network dimensions (TP filling a node, DP across nodes with one
    rank per node) is addressed as all ranks with `involved_dim`, so ASTRA-sim uses that
    dimension's topology; any other axis gets explicit groups, which ASTRA-sim runs as a flat ring.
    """
    dims = network_dims(prog)
    addressing: dict[str, Addressing] = {}
    groups: dict[int, tuple[int, ...]] = {}
    gpn = prog.scenario.hardware.node.gpus_per_node
    for axis in prog.axes:  # a one-rank axis runs no collective
        per_node, nodes = prog.axis_span(axis, gpn)
        shape = [per_node, nodes] if len(dims) == 2 else [per_node * nodes]
        involved = tuple(s == d and s > 1 for s, d in zip(shape, dims, strict=True))
        covers = all(s in (1, d) for s, d in zip(shape, dims, strict=True))
        if covers and any(involved):
            addressing[axis] = Addressing(involved, None)
            continue
        by_rank: dict[int, int] = {}
        for members in prog.axis_groups(axis):
            gid = len(groups) + 1
            groups[gid] = members
            for r in members:
                by_rank[r] = gid
        addressing[axis] = Addressing(None, by_rank)
    return addressing, groups


def comm_groups_json(prog: Program) -> str:
    _, groups = comm_groups(prog)
    return json.dumps({str(k): list(v) for k, v in groups.items()}, separators=(",", ":")) + "\n"


def _metadata() -> bytes:
    return wire.delimited(wire.f_string(1, SCHEMA_VERSION))


def _body(n, duration: float, ctrl: int | None, addressing: dict[str, Addressing]) -> tuple[bytes, str | None]:
    """Rank-independent encoding of a node, and what its rank-specific part depends on."""
    deps = list(n.deps)
    parts = [wire.f_varint(1, n.id), wire.f_string(2, n.name)]
    if isinstance(n, ComputeNode):
        ntype = COMP_NODE
    elif isinstance(n, CollectiveNode):
        ntype = COMM_COLL_NODE
    elif isinstance(n, SendNode):
        ntype = COMM_SEND_NODE
    else:
        ntype = COMM_RECV_NODE
    parts.append(wire.f_varint(3, ntype))
    ctrl_deps = [ctrl] if ctrl is not None and ctrl not in n.deps else []
    parts.append(wire.f_packed_varints(4, ctrl_deps))
    parts.append(wire.f_packed_varints(5, deps))
    parts.append(wire.f_varint(7, max(0, round(duration * 1e6))))
    attrs = [wire.attr_bool("is_cpu_op", False), wire.attr_string("rf_phase", n.phase.value),
             wire.attr_int64("rf_microbatch", n.microbatch), wire.attr_int64("rf_chunk", n.chunk)]
    attrs.append(wire.f_string(1, "rf_duration_s") + wire.f_double(3, duration))
    binding = None
    if isinstance(n, ComputeNode):
        attrs += [wire.attr_int64("num_ops", round(n.flops)), wire.attr_uint64("tensor_size", round(n.bytes)),
                  wire.f_string(1, "rf_flops") + wire.f_double(3, n.flops),
                  wire.f_string(1, "rf_bytes") + wire.f_double(3, n.bytes),
                  wire.attr_string("rf_ops", " ".join(n.ops)),
                  wire.attr_int64("rf_layer_first", n.layers[0]), wire.attr_int64("rf_layer_last", n.layers[1])]
    elif isinstance(n, CollectiveNode):
        size = n.bytes / n.group_size if n.kind is Collective.ALL_GATHER and n.group_size else n.bytes
        attrs += [wire.attr_int64("comm_type", COMM_TYPE[n.kind]), wire.attr_int64("comm_size", round(size)),
                  wire.f_string(1, "rf_bytes") + wire.f_double(3, n.bytes),
                  wire.attr_string("rf_axis", n.axis), wire.attr_int64("rf_group_size", n.group_size),
                  wire.attr_int64("rf_layer_first", n.layers[0]), wire.attr_int64("rf_layer_last", n.layers[1])]
        addr = addressing[n.axis]
        if addr.involved_dim is not None:
            attrs += [wire.attr_string("pg_name", ""), wire.attr_bool_list("involved_dim", list(addr.involved_dim))]
        else:
            binding = "group:" + n.axis
    else:
        attrs += [wire.attr_int64("comm_tag", n.tag), wire.attr_int64("comm_size", round(n.bytes)),
                  wire.f_string(1, "rf_bytes") + wire.f_double(3, n.bytes)]
        binding = "send" if isinstance(n, SendNode) else "recv"
    parts.extend(wire.node_attr(a) for a in attrs)
    return b"".join(parts), binding


@dataclass(frozen=True)
class _EncodedRole:
    pieces: tuple[bytes | tuple[bytes, str, int], ...]  # static bytes, or (body, binding, peer role)


def encode_role(role: Role, durations: list[float], addressing: dict[str, Addressing]) -> _EncodedRole:
    """Encode a role's nodes once; consecutive rank-independent records are merged."""
    pieces: list = []
    static: list[bytes] = []
    last_on_stream: dict = {}
    for n in role.nodes:
        ctrl = last_on_stream.get(n.stream) if n.stream is not None else None
        if n.stream is not None:
            last_on_stream[n.stream] = n.id
        body, binding = _body(n, durations[n.id], ctrl, addressing)
        if binding is None:
            static.append(wire.delimited(body))
        else:
            if static:
                pieces.append(b"".join(static))
                static = []
            pieces.append((body, binding, getattr(n, "peer_role", -1)))
    if static:
        pieces.append(b"".join(static))
    return _EncodedRole(tuple(pieces))


def bind_rank(enc: _EncodedRole, rank: int, prog: Program, addressing: dict[str, Addressing]) -> bytes:
    stage = prog.role_of_rank(rank)
    stride = prog.mesh.stride("pp")
    out = [_metadata()]
    cache: dict[tuple[str, int], bytes] = {}
    for piece in enc.pieces:
        if isinstance(piece, bytes):
            out.append(piece)
            continue
        body, binding, peer_role = piece
        ck = (binding, peer_role)
        extra = cache.get(ck)
        if extra is None:
            if binding.startswith("group:"):
                gid = addressing[binding[6:]].groups[rank]
                extra = wire.node_attr(wire.attr_string("pg_name", str(gid)))
            else:
                peer = rank + (peer_role - stage) * stride
                src, dst = (rank, peer) if binding == "send" else (peer, rank)
                extra = wire.node_attr(wire.attr_int64("comm_src", src)) + wire.node_attr(
                    wire.attr_int64("comm_dst", dst))
            cache[ck] = extra
        out.append(wire.delimited(body + extra))
    return b"".join(out)


def encode_traces(prog: Program, costs: Costs, ranks: list[int] | None = None) -> Iterator[tuple[int, bytes]]:
    """(rank, file bytes) for every rank (or the given ranks), each role encoded once."""
    addressing, _ = comm_groups(prog)
    encoded: dict[int, _EncodedRole] = {}
    for rank in (range(prog.mesh.world) if ranks is None else ranks):
        role = prog.role_of_rank(rank)
        if role not in encoded:
            encoded[role] = encode_role(prog.roles[role], costs.durations[role], addressing)
        yield rank, bind_rank(encoded[role], rank, prog, addressing)


def set_bytes(prog: Program, encoded: dict[int, _EncodedRole]) -> int:
    """An upper bound on the bytes of a trace set whose roles are encoded: each rank's file is its
    role's, plus at most BINDING_BYTES per node bound to the rank."""
    per_role = {r: len(_metadata()) + sum(len(x) if isinstance(x, bytes) else len(x[0]) + BINDING_BYTES
                                          for x in enc.pieces) for r, enc in encoded.items()}
    return sum(per_role[prog.role_of_rank(rank)] for rank in range(prog.mesh.world))


TOO_BIG_FIX = ("write traces for fewer GPUs, layers or microbatches (--set workload.global_batch=...), or use the "
               "analytical backend")


def trace_files(prog: Program, costs: Costs, prefix: str = "rankflow", field: str = "--chakra-out",
                fix: str = TOO_BIG_FIX) -> Iterator[tuple[str, bytes]]:
    """(file name, bytes) of `<prefix>.<rank>.et` for every rank and `<prefix>.comm_groups.json`.
    Programs must be op level: a coarse node would hide its inline collectives from ASTRA-sim. A set
    too large is refused naming `field` (what asked for the traces) and `fix`."""
    if prog.detail != "ops":
        raise ValueError("Chakra traces are written from op-level programs")
    if prog.mesh.world > MAX_RANKS:
        raise RankflowError(f"{prog.mesh.world:,} ranks would need as many trace files, more than {MAX_RANKS:,}",
                            field="--chakra-out", fix="simulate fewer GPUs for traces, or use the analytical backend")
    addressing, _ = comm_groups(prog)
    encoded = {r: encode_role(role, costs.durations[r], addressing) for r, role in enumerate(prog.roles)}
    total = set_bytes(prog, encoded)
    if total > MAX_BYTES:
        raise RankflowError(f"the trace set would be about {total / 2**30:.1f} GiB over {prog.mesh.world:,} ranks, more "
                            f"than {MAX_BYTES // 2**30} GiB", field=field, fix=fix)
    for rank in range(prog.mesh.world):
        yield f"{prefix}.{rank}.et", bind_rank(encoded[prog.role_of_rank(rank)], rank, prog, addressing)
    yield f"{prefix}.comm_groups.json", comm_groups_json(prog).encode()
