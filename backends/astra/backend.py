"""The ASTRA-sim backend: the Program's traces replayed by an external ASTRA-sim analytical build.

Modes (execution_backend.astra.mode):
- full: every rank's whole op-level trace is replayed by ASTRA-sim; it reports each rank's finish
  time and its exposed (non-compute) time. Compute nodes carry Rankflow's own durations (roofline
  off), so a difference from the analytical backend is the network's.
- scalable: every distinct communication op of each role (kind, axis, size, peer), including the
  collectives inside coarse nodes, is replayed once by ASTRA-sim on all ranks, in a short probe
  trace, with per-node timing; those durations replace the analytical network costs when the
  same program (coarse or op level) is costed, and the analytical scheduler replays it. This keeps
  ASTRA-sim's network model (topology, chunking, congestion inside a collective) at full scale,
  for clusters where the full replay would take too long, but not congestion between concurrent ops.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from backends.analytical import replay
from backends.astra import inputs, runner
from backends.base import Breakdown, Evaluation, RoleTiming, assemble_result
from backends.chakra.writer import MAX_RANKS, comm_groups, network_dims, trace_files
from graphgen.costs.evaluate import comm_key, cost_program
from graphgen.errors import RankflowError
from graphgen.ir import CollectiveNode, ComputeNode, Phase, RecvNode, Role, SendNode, comm_stream
from graphgen.program import Program


class AstraBackend:
    name = "astra"

    def __init__(self, binary: str | None = None, network: str | None = None, mode: str | None = None,
                 timeout_s: float | None = None) -> None:
        self.binary = binary
        self.network = network
        self.mode = mode
        self.timeout_s = timeout_s

    def _options(self, prog: Program) -> tuple[str, str, float, list[str]]:
        opts = prog.scenario.execution.astra
        network = self.network or opts.network
        notes = []
        if network == "aware" and len(network_dims(prog)) > 1:
            network = "unaware"
            notes.append("ASTRA-sim's congestion-aware build takes one-dimensional networks only; this "
                         "two-dimensional network (scale-up x scale-out) ran on the congestion-unaware build")
        return self.mode or opts.mode, network, self.timeout_s or opts.timeout_s, notes

    def run(self, prog: Program) -> Evaluation:
        if prog.mesh.world > MAX_RANKS:
            raise RankflowError(f"ASTRA-sim would replay {prog.mesh.world:,} ranks, more than {MAX_RANKS:,}",
                                field="execution_backend.model", fix="use the analytical backend at this scale")
        mode, network, timeout, notes = self._options(prog)
        binary, build = runner.find_binary(network, self.binary or prog.scenario.execution.astra.binary)
        if build != network:
            notes.append(f"the ASTRA-sim binary given ({binary.name}) is the congestion-{build} build: it ran, not the "
                         f"congestion-{network} build that this one-dimensional network would otherwise use")
            network = build
        with tempfile.TemporaryDirectory(prefix="rankflow-astra-") as tmp:
            work = Path(tmp)
            if mode == "full":
                if prog.detail != "ops":
                    raise RankflowError("a full ASTRA-sim replay needs an op-level program", field="detail",
                                        fix="build the program with detail='ops', or use astra mode 'scalable'")
                return self._full(prog, binary, network, work, timeout, notes)
            return self._scalable(prog, binary, network, work, timeout, notes)

    def _launch(self, prog: Program, binary: Path, network: str, work: Path, timeout: float, trace: bool,
                node_ranks: set[int] | None = None):
        et = work / "et"
        et.mkdir()
        for name, data in trace_files(prog, cost_program(prog), field="execution_backend.astra.mode",
                                      fix="use astra mode 'scalable' (--astra-mode scalable), which times each distinct "
                                          "collective in a small probe, or the analytical backend"):
            (et / name).write_bytes(data)
        system = json.loads(inputs.system_json(prog, runner.template("system.json")))
        if trace:
            system["trace-enabled"] = 1
        files = {"system.json": json.dumps(system, indent=2), "network.yml": inputs.network_yaml(prog, network == "aware"),
                 "memory.json": runner.template("remote_memory.json")}
        for name, text in files.items():
            (work / name).write_text(text)
        _, groups = comm_groups(prog)
        return runner.run(binary, work, str(et / "rankflow"), work / "system.json", work / "network.yml",
                          work / "memory.json", et / "rankflow.comm_groups.json" if groups else None,
                          prog.mesh.world, timeout, want_node_times=trace, node_ranks=node_ranks)

    def _full(self, prog, binary, network, work, timeout, notes) -> Evaluation:
        out = self._launch(prog, binary, network, work, timeout, trace=False)
        finish = {r: ns * 1e-9 for r, ns in out.finish_ns.items()}
        step = max(finish.values())
        critical = max(finish, key=lambda r: (finish[r], -r))
        exposed = out.exposed_comm_ns[critical] * 1e-9
        costs = cost_program(prog)
        compute = [sum(costs.durations[role.id][n.id] for n in role.nodes if type(n) is ComputeNode)
                   for role in prog.roles]
        _check_finish(prog, finish, compute, [sum(type(n) is ComputeNode for n in role.nodes) for role in prog.roles],
                      binary)
        timings = tuple(RoleTiming(role.name, max(finish[r] for r in prog.ranks_of_role(role.id)), compute[role.id],
                                   len(role.nodes)) for role in prog.roles)
        notes = [*notes, *out.notes, f"ASTRA-sim ({network} network, full replay) reports exposed time per rank without "
                 "splitting communication from pipeline waits: it is given as exposed_comm.all"]
        breakdown = Breakdown(step - exposed, {"all": exposed}, 0.0)
        role = prog.roles[prog.role_of_rank(critical)].name
        return Evaluation(assemble_result(prog, self.name, step, breakdown, role, timings, tuple(notes)), None, costs)

    def _scalable(self, prog, binary, network, work, timeout, notes) -> Evaluation:
        probe, keys = probe_program(prog)
        firsts = {prog.ranks_of_role(role.id)[0] for role in probe.roles}  # the ranks whose times are read
        out = self._launch(probe, binary, network, work, timeout, trace=True, node_ranks=firsts)
        durations: dict[tuple, float] = {}
        for role in probe.roles:
            rank = prog.ranks_of_role(role.id)[0]
            for n in role.nodes:
                key = keys[role.id].get(n.id)
                if key is not None and (rank, n.id) in out.node_times:
                    t0, t1 = out.node_times[(rank, n.id)]
                    durations[key] = (t1 - t0) * 1e-9
        missing = sum(1 for k in _distinct_keys(prog) if k not in durations)
        notes = [*notes, *out.notes, f"ASTRA-sim ({network} network, scalable mode) timed {len(durations)} distinct "
                 "communication ops at full scale; the DAG was replayed analytically with those times"]
        if missing:
            notes.append(f"{missing} distinct communication ops kept their analytical cost (no ASTRA-sim timing)")
        return replay(prog, cost_program(prog, comm_override=durations), self.name, tuple(notes))


def _check_finish(prog: Program, finish: dict[int, float], compute: list[float], nodes: list[int],
                  binary: Path) -> None:
    """A rank runs its compute nodes one after another, so a report that has it finish sooner than their
    sum is not a replay of these traces (allowed: 1 %, and half a microsecond per node, the rounding of
    the traces' duration_micros)."""
    for rank in sorted(finish):
        role = prog.role_of_rank(rank)
        need = compute[role]
        if finish[rank] < 0.99 * need - 0.5e-6 * nodes[role] - 1e-6:
            raise RankflowError(f"ASTRA-sim reported rank {rank} finishing after {finish[rank]:.6g} s, sooner than "
                                f"its own compute ({need:.6g} s) can run", file=str(binary), field=runner.OUTPUT,
                                fix=runner.FIX_OUTPUT)


def _role_comms(prog: Program, role: Role) -> dict[tuple, object]:
    """A role's distinct communication ops, in first-use order: its collective and send nodes and
    the collectives inside the templates it stamps out."""
    seen: dict[tuple, object] = {}
    for n in role.nodes:
        if type(n) is ComputeNode and n.work.template >= 0:
            for it in prog.templates[n.work.template].items[n.work.first:n.work.last + 1]:
                if it.is_comm:
                    seen.setdefault(comm_key(it), CollectiveNode(
                        id=-1, name=it.name, kind=it.kind, bytes=it.bytes, axis=it.axis, group_size=it.group_size,
                        deps=(), phase=it.phase, microbatch=0, chunk=0, layers=it.layers,
                        stream=comm_stream(it.axis)))
        k = comm_key(n)
        if k is not None:
            seen.setdefault(k, n)
    return seen


def _distinct_keys(prog: Program) -> set[tuple]:
    return {k for role in prog.roles for k in _role_comms(prog, role)}


def probe_program(prog: Program) -> tuple[Program, list[dict[int, tuple]]]:
    """Each role's distinct communication ops as a one-at-a-time chain, plus matching receives."""
    nodes: list[list] = [[] for _ in prog.roles]
    keys: list[dict[int, tuple]] = [{} for _ in prog.roles]
    recvs: list[list] = [[] for _ in prog.roles]
    tag = 0
    for role in prog.roles:
        rid = role.id
        for k, n in _role_comms(prog, role).items():
            nid = len(nodes[rid])
            deps = (nid - 1,) if nid else ()
            if isinstance(n, SendNode):
                tag += 1
                nodes[rid].append(dataclasses.replace(n, id=nid, deps=deps, tag=tag, name=f"probe_{n.name}"))
                recvs[n.peer_role].append(RecvNode(id=-1, name=f"probe_recv_{tag}", bytes=n.bytes, peer_role=rid,
                                                   tag=tag, deps=(), microbatch=0, chunk=0, phase=Phase.FORWARD))
            else:
                nodes[rid].append(dataclasses.replace(n, id=nid, deps=deps, name=f"probe_{n.name}"))
            keys[rid][nid] = k
    for rid, rs in enumerate(recvs):
        for r in rs:
            nodes[rid].append(dataclasses.replace(r, id=len(nodes[rid])))
    roles = tuple(Role(r.id, r.name, r.stage, r.chunks, r.layers, nodes[r.id]) for r in prog.roles)
    return dataclasses.replace(prog, roles=roles, detail="ops"), keys
