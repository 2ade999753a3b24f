"""Chakra execution traces -> Rankflow nodes, for round-trip tests and for replaying traces.

Parsing uses the protobuf module generated from third_party/chakra/et_def.proto, so the reader also
checks that the writer's hand encoding is valid Chakra. A trace set read back becomes one role per
rank; sends and receives name peer ranks, which the analytical replay matches by (rank, tag).
"""

from __future__ import annotations

from pathlib import Path

from graphgen.errors import RankflowError
from graphgen.ir import CollectiveNode, ComputeNode, Phase, RecvNode, Role, SendNode, Work, comm_stream
from graphgen.parallel.layout import Collective

_KIND = {0: Collective.ALL_REDUCE, 2: Collective.ALL_GATHER, 6: Collective.ALL_TO_ALL, 7: Collective.REDUCE_SCATTER}


def _pb():
    from third_party.chakra import et_def_pb2

    return et_def_pb2


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def read_records(data: bytes):
    """(GlobalMetadata, [Node]) from one .et file's bytes."""
    pb = _pb()
    pos, msgs = 0, []
    while pos < len(data):
        size, pos = _varint(data, pos)
        msgs.append(data[pos:pos + size])
        pos += size
    if not msgs:
        raise ValueError("empty trace")
    meta = pb.GlobalMetadata()
    meta.ParseFromString(msgs[0])
    nodes = []
    for m in msgs[1:]:
        node = pb.Node()
        node.ParseFromString(m)
        nodes.append(node)
    return meta, nodes


def _attrs(node) -> dict:
    out = {}
    for a in node.attr:
        which = a.WhichOneof("value")
        val = getattr(a, which) if which else None
        if which == "bool_list":
            val = list(val.values)
        out[a.name] = val
    return out


def to_nodes(nodes, rank: int) -> tuple[list, list[float]]:
    """Rankflow nodes and their durations (seconds) from one rank's Chakra nodes."""
    out, durations = [], []
    for n in sorted(nodes, key=lambda x: x.id):
        a = _attrs(n)
        common = dict(id=n.id, name=n.name, deps=tuple(n.data_deps), phase=Phase(a["rf_phase"]),
                      microbatch=a["rf_microbatch"], chunk=a["rf_chunk"])
        durations.append(a["rf_duration_s"])
        if n.type == 4:
            out.append(ComputeNode(work=Work(-1, n.id, n.id), flops=a["rf_flops"], bytes=a["rf_bytes"],
                                   layers=(a["rf_layer_first"], a["rf_layer_last"]),
                                   ops=tuple(a["rf_ops"].split()) if a["rf_ops"] else (), **common))
        elif n.type == 7:
            out.append(CollectiveNode(kind=_KIND[a["comm_type"]], bytes=a["rf_bytes"], axis=a["rf_axis"],
                                      group_size=a["rf_group_size"], layers=(a["rf_layer_first"], a["rf_layer_last"]),
                                      stream=comm_stream(a["rf_axis"]), **common))
        elif n.type == 5:
            out.append(SendNode(bytes=a["rf_bytes"], peer_role=a["comm_dst"], tag=a["comm_tag"], **common))
        elif n.type == 6:
            out.append(RecvNode(bytes=a["rf_bytes"], peer_role=a["comm_src"], tag=a["comm_tag"], **common))
        else:
            raise ValueError(f"rank {rank}: node {n.id} has unsupported type {n.type}")
    return out, durations


def read_traces(prefix: str | Path, world: int) -> tuple[list[Role], list[list[float]]]:
    """One Role per rank from `<prefix>.<rank>.et`, rank order, with each node's duration."""
    roles, durations = [], []
    for rank in range(world):
        path = Path(f"{prefix}.{rank}.et")
        if not path.exists():
            raise RankflowError("trace file not found", file=str(path),
                                fix="write the full trace set with --chakra-out first")
        try:
            _, nodes = read_records(path.read_bytes())
            nodes, dur = to_nodes(nodes, rank)
            roles.append(Role(rank, f"rank{rank}", rank, (), (), nodes))
            durations.append(dur)
        except (ValueError, KeyError, IndexError) as exc:
            raise RankflowError(f"not a Rankflow Chakra trace ({exc})", file=str(path),
                                fix="pass traces written by Rankflow") from None
    return roles, durations
