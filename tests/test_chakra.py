"""Chakra traces: valid protobuf, exact round trip, determinism, a golden dp2/tp2/pp2 set."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from backends.analytical.scheduler import simulate
from backends.chakra.reader import read_records, read_traces
from backends.chakra.writer import comm_groups, encode_traces, trace_files
from graphgen.costs.evaluate import Costs, cost_program
from graphgen.ir import CollectiveNode, ComputeNode, RecvNode, SendNode
from tests.helpers import TINY_LLAMA, program, scenario


@pytest.fixture(scope="module")
def prog():
    return program(scenario(TINY_LLAMA, {"global_batch": 8}, tp=2, pp=2, dp=2, sp=True, zero_stage=1))


def write(prog, out, prefix="t"):
    total = 0
    for name, data in trace_files(prog, cost_program(prog), prefix):
        (out / name).write_bytes(data)
        total += len(data)
    return out / prefix, out / f"{prefix}.comm_groups.json", total


def test_round_trip_is_exact_and_replays_to_the_same_step_time(prog, tmp_path):
    prefix, groups_file, total = write(prog, tmp_path)
    assert total == sum(f.stat().st_size for f in tmp_path.iterdir())
    roles, durations = read_traces(prefix, prog.mesh.world)
    costs = cost_program(prog)
    for rank, role in enumerate(roles):
        orig = prog.roles[prog.role_of_rank(rank)].nodes
        assert len(role.nodes) == len(orig)
        assert durations[rank] == costs.durations[prog.role_of_rank(rank)]
        for a, b in zip(orig, role.nodes, strict=True):
            if isinstance(a, SendNode | RecvNode):
                # Traces name peer ranks; the program names peer stages.
                stride = prog.mesh.stride("pp")
                assert b.peer_role == rank + (a.peer_role - prog.role_of_rank(rank)) * stride
                b = dataclasses.replace(b, peer_role=a.peer_role)
            if isinstance(a, ComputeNode):
                b = dataclasses.replace(b, work=a.work)  # the template reference is Rankflow's own
            assert a == b
    read_costs = Costs(tuple(durations), tuple({} for _ in roles), costs.kappa)
    replay = simulate(dataclasses.replace(prog, roles=tuple(roles)), read_costs)
    assert replay.step_time == simulate(prog, costs).step_time


def test_traces_are_byte_identical_for_identical_inputs(prog):
    again = program(scenario(TINY_LLAMA, {"global_batch": 8}, tp=2, pp=2, dp=2, sp=True, zero_stage=1))
    h1 = hashlib.sha256(b"".join(d for _, d in encode_traces(prog, cost_program(prog)))).hexdigest()
    h2 = hashlib.sha256(b"".join(d for _, d in encode_traces(again, cost_program(again)))).hexdigest()
    assert h1 == h2


def test_coarse_programs_are_not_written_as_chakra(prog):
    coarse = program(prog.scenario, "coarse")
    with pytest.raises(ValueError):
        next(trace_files(coarse, cost_program(coarse)))


def test_golden_dp2_tp2_pp2_trace_contents(prog):
    files = dict(encode_traces(prog, cost_program(prog)))
    meta, nodes = read_records(files[0])
    assert meta.version == "0.0.4"
    by_type = {t: [n for n in nodes if n.type == t] for t in (4, 5, 6, 7)}
    role0 = prog.roles[0].nodes
    assert len(by_type[7]) == sum(isinstance(n, CollectiveNode) for n in role0)
    # Rank 0 (stage 0) sends activations to rank 4 (stage 1) and receives gradients from it.
    for n in by_type[5] + by_type[6]:
        attrs = {a.name: a for a in n.attr}
        peers = {attrs["comm_src"].int64_val, attrs["comm_dst"].int64_val}
        assert peers == {0, 4}
    # Integer attributes are integer-typed; groups come from the JSON, tp group of rank 0 is {0, 1}.
    addressing, groups = comm_groups(prog)
    tp_gid = addressing["tp"].groups[0]
    assert groups[tp_gid] == (0, 1)
    for n in by_type[7]:
        attrs = {a.name: a for a in n.attr}
        assert attrs["comm_size"].WhichOneof("value") == "int64_val"
        if attrs["rf_axis"].string_val == "tp":
            assert attrs["pg_name"].string_val == str(tp_gid)
    # Compute nodes carry FLOPs and bytes and an integer microsecond duration.
    comp = max(by_type[4], key=lambda n: n.duration_micros)
    attrs = {a.name: a for a in comp.attr}
    assert attrs["num_ops"].int64_val > 0 and attrs["tensor_size"].uint64_val > 0
    assert comp.duration_micros == round(attrs["rf_duration_s"].double_val * 1e6)


def test_axis_filling_a_node_is_addressed_by_network_dimension():
    prog = program(scenario(dict(TINY_LLAMA, kv_heads=8), {"global_batch": 4}, tp=8, dp=2))
    addressing, groups = comm_groups(prog)
    assert addressing["tp"].involved_dim == (True, False)
    assert addressing["dp"].involved_dim == (False, True)
    assert groups == {}
    _, nodes = read_records(dict(encode_traces(prog, cost_program(prog), [0]))[0])
    coll = [n for n in nodes if n.type == 7]
    assert coll and all({a.name for a in n.attr} >= {"pg_name", "involved_dim"} for n in coll)


def test_comm_group_json_lists_every_group_once(prog, tmp_path):
    _, groups_file, _ = write(prog, tmp_path)
    groups = json.loads(groups_file.read_text())
    assert all(int(k) > 0 for k in groups)
    for axis in ("tp", "dp", "pp"):
        assert sorted(tuple(v) for v in groups.values() if tuple(v) in set(prog.mesh.groups(axis))) == sorted(
            prog.mesh.groups(axis))


def test_moe_context_parallel_traces_round_trip_with_their_communicators(tmp_path):
    """All-to-all nodes on ep, the cp exchange and expert gradients on edp survive the round trip, and
    each of those axes gets its communicator groups (expert axes from the expert mesh)."""
    moe = dict(TINY_LLAMA, moe={"experts": 8, "top_k": 2, "expert_ffn_hidden": 256})
    p = program(scenario(moe, {"global_batch": 8, "seq_len": 1024}, dp=4, ep=4, cp=2, pp=2,
                         schedule="zb-h1", cp_algorithm="allgather"))
    prefix, groups_file, _ = write(p, tmp_path)
    roles, _ = read_traces(prefix, p.mesh.world)
    kinds = {(n.axis, n.kind.value) for r in roles for n in r.nodes if isinstance(n, CollectiveNode)}
    assert {("ep", "all_to_all"), ("cp", "all_gather"), ("edp", "all_reduce")} <= kinds
    groups = {tuple(v) for v in json.loads(groups_file.read_text()).values()}
    for axis in ("ep", "cp"):
        assert set(p.axis_groups(axis)) <= groups | {g for g in p.axis_groups(axis) if len(g) == 8}


def test_trace_set_size_is_bounded_before_anything_is_written(prog, monkeypatch):
    """The set's size is estimated from each role encoded once, close to what is written, and a set
    over the bound is refused before its first file (a 16k-rank plan once wrote 6 GB)."""
    from backends.chakra import writer
    from graphgen.errors import RankflowError

    costs = cost_program(prog)
    written = sum(len(data) for name, data in trace_files(prog, costs) if name.endswith(".et"))
    addressing, _ = comm_groups(prog)
    estimate = writer.set_bytes(prog, {r: writer.encode_role(role, costs.durations[r], addressing)
                                       for r, role in enumerate(prog.roles)})
    assert written <= estimate <= 1.1 * written
    monkeypatch.setattr(writer, "MAX_BYTES", written - 1)
    files = trace_files(prog, costs)
    with pytest.raises(RankflowError, match="--chakra-out.*trace set would be"):
        next(files)
