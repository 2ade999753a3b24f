"""The ASTRA-sim backend: the Program's traces replayed by an external ASTRA-sim analytical build.

Modes (execution_backend.astra.mode):
- full: every rank's whole trace is replayed by ASTRA-sim; it reports each rank's finish time and
  its exposed (non-compute) time. Compute nodes carry Rankflow's own durations (roofline off), so
  a difference from the analytical backend is the network's.
- scalable: every distinct communication op of each role (kind, axis, size, peer) is replayed once
  by ASTRA-sim on all ranks, in a short probe trace, with per-node timing; those durations replace
  the analytical network costs and the full DAG is replayed by the analytical scheduler. This keeps
  ASTRA-sim's network model (topology, chunking, congestion inside a collective) at full scale, for
  clusters where the full replay would take too long, but not congestion between concurrent ops.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from backends.analytical.scheduler import Timeline, attribute, simulate
from backends.astra import inputs, runner
from backends.base import Breakdown, Result, RoleTiming, assemble_result
from backends.chakra.writer import comm_groups, network_dims, write_traces
from graphgen.ir import CollectiveNode, ComputeNode, Phase, RecvNode, Role, SendNode
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
        opts = prog.scenario.hardware.execution_backend.astra
        network = self.network or opts.network
        notes = []
        if network == "aware" and len(network_dims(prog)) > 1:
            network = "unaware"
            notes.append("ASTRA-sim's congestion-aware build takes one-dimensional networks only; this "
                         "two-dimensional network (scale-up x scale-out) ran on the congestion-unaware build")
        return self.mode or opts.mode, network, self.timeout_s or opts.timeout_s, notes

    def run(self, prog: Program) -> tuple[Result, Timeline | None]:
        mode, network, timeout, notes = self._options(prog)
        binary = runner.find_binary(network, self.binary or prog.scenario.hardware.execution_backend.astra.binary)
        with tempfile.TemporaryDirectory(prefix="rankflow-astra-") as tmp:
            work = Path(tmp)
            if mode == "full":
                return self._full(prog, binary, network, work, timeout, notes)
            return self._scalable(prog, binary, network, work, timeout, notes)

    def _inputs(self, prog: Program, work: Path, network: str, trace: bool) -> tuple[Path, Path, Path]:
        system = json.loads(inputs.system_json(prog))
        if trace:
            system["trace-enabled"] = 1
        (work / "system.json").write_text(json.dumps(system, indent=2))
        (work / "network.yml").write_text(inputs.network_yaml(prog, network == "aware"))
        (work / "memory.json").write_text(inputs.remote_memory_json())
        return work / "system.json", work / "network.yml", work / "memory.json"

    def _launch(self, prog: Program, binary: Path, network: str, work: Path, timeout: float, trace: bool):
        prefix, groups_file, _ = write_traces(prog, work / "et")
        system, net, memory = self._inputs(prog, work, network, trace)
        _, groups = comm_groups(prog)
        return runner.run(binary, work, str(prefix), system, net, memory, groups_file if groups else None,
                          prog.mesh.world, timeout, want_node_times=trace)

    def _full(self, prog, binary, network, work, timeout, notes) -> tuple[Result, None]:
        out = self._launch(prog, binary, network, work, timeout, trace=False)
        finish = {r: ns * 1e-9 for r, ns in out.finish_ns.items()}
        step = max(finish.values())
        critical = max(finish, key=lambda r: (finish[r], -r))
        exposed = out.exposed_comm_ns[critical] * 1e-9
        timings = tuple(
            RoleTiming(role.name, max(finish[r] for r in prog.ranks_of_role(role.id)),
                       sum(n.duration for n in role.nodes if type(n) is ComputeNode), len(role.nodes))
            for role in prog.roles)
        notes = [*notes, *out.notes, f"ASTRA-sim ({network} network, full replay) reports exposed time per rank without "
                 "splitting communication from pipeline waits: it is given as exposed_comm.all"]
        breakdown = Breakdown(step - exposed, {"all": exposed}, 0.0)
        role = prog.roles[prog.role_of_rank(critical)].name
        return assemble_result(prog, self.name, step, breakdown, role, timings, tuple(notes)), None

    def _scalable(self, prog, binary, network, work, timeout, notes) -> tuple[Result, Timeline]:
        probe, keys = probe_program(prog)
        out = self._launch(probe, binary, network, work, timeout, trace=True)
        durations: dict[tuple, float] = {}
        for role in probe.roles:
            rank = prog.ranks_of_role(role.id)[0]
            for n in role.nodes:
                if (rank, n.id) not in out.node_times:
                    continue
                t0, t1 = out.node_times[(rank, n.id)]
                key = keys[role.id].get(n.id)
                if key is not None:
                    durations[key] = (t1 - t0) * 1e-9
        timed = retime(prog, durations)
        tl = simulate(timed)
        finishes = [max(f) if f else 0.0 for f in tl.finish]
        critical = max(range(len(finishes)), key=lambda r: (finishes[r], -r))
        compute, exposed, bubble = attribute(timed, tl, critical)
        timings = tuple(RoleTiming(r.name, finishes[i], sum(n.duration for n in r.nodes if type(n) is ComputeNode),
                                   len(r.nodes)) for i, r in enumerate(timed.roles))
        missing = sum(1 for role in prog.roles for n in role.nodes if _key(n) is not None and _key(n) not in durations)
        notes = [*notes, *out.notes, f"ASTRA-sim ({network} network, scalable mode) timed {len(durations)} distinct "
                 "communication ops at full scale; the DAG was replayed analytically with those times"]
        if missing:
            notes.append(f"{missing} communication nodes kept their analytical cost (no ASTRA-sim timing)")
        result = assemble_result(timed, self.name, tl.step_time, Breakdown(compute, exposed, bubble),
                                 timed.roles[critical].name, timings, tuple(notes))
        return result, tl


def _key(n) -> tuple | None:
    if isinstance(n, CollectiveNode):
        return ("coll", n.kind, n.axis, round(n.bytes), n.group_size)
    if isinstance(n, SendNode):
        return ("send", n.peer_role, round(n.bytes))
    return None


def probe_program(prog: Program) -> tuple[Program, list[dict[int, tuple]]]:
    """Each role's distinct communication ops as a one-at-a-time chain, plus matching receives."""
    distinct: list[list] = []
    for role in prog.roles:
        seen: dict[tuple, object] = {}
        for n in role.nodes:
            k = _key(n)
            if k is not None and k not in seen:
                seen[k] = n
        distinct.append(list(seen.items()))
    nodes: list[list] = [[] for _ in prog.roles]
    keys: list[dict[int, tuple]] = [{} for _ in prog.roles]
    recvs: list[list] = [[] for _ in prog.roles]
    tag = 0
    for rid, items in enumerate(distinct):
        for k, n in items:
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
    return dataclasses.replace(prog, roles=roles), keys


def retime(prog: Program, durations: dict[tuple, float]) -> Program:
    """The program with every communication node's duration replaced by ASTRA-sim's, where known."""
    roles = []
    for role in prog.roles:
        new = [dataclasses.replace(n, duration=durations[_key(n)]) if _key(n) in durations else n
               for n in role.nodes]
        roles.append(Role(role.id, role.name, role.stage, role.chunks, role.layers, new))
    return dataclasses.replace(prog, roles=tuple(roles))
