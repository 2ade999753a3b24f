"""Simulated timeline -> Chrome trace JSON (chrome://tracing, ui.perfetto.dev).

One process per chosen rank, one thread per stream; times in microseconds as the format wants.
"""

from __future__ import annotations

import json

from backends.analytical.scheduler import Timeline
from graphgen.ir import CollectiveNode, ComputeNode, RecvNode, streams_of
from graphgen.memory_timeline import memory_timeline
from graphgen.program import Program
from graphgen.stragglers import straggler_factor


def lanes(prog: Program) -> list[str]:
    """One lane per stream the program uses (compute, then each axis's communication), then receives."""
    return [*streams_of(prog.roles), "recv"]


def chrome_trace(prog: Program, tl: Timeline, ranks: list[int]) -> dict:
    slowest = straggler_factor(prog.scenario)  # the step waits for its slowest host after this one's timeline
    threads = {name: i for i, name in enumerate([*lanes(prog), *(["stragglers"] if slowest > 1.0 else [])])}
    events: list[dict] = []
    for rank in ranks:
        role = prog.role_of_rank(rank)
        nodes = prog.roles[role].nodes
        st, fin = tl.start[role], tl.finish[role]
        events.append({"ph": "M", "name": "process_name", "pid": rank, "tid": 0,
                       "args": {"name": f"rank {rank} ({prog.roles[role].name})"}})
        for tname, tid in threads.items():
            events.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": tid, "args": {"name": tname}})
        for i, n in enumerate(nodes):
            thread = "recv" if isinstance(n, RecvNode) else n.stream
            args: dict = {"phase": n.phase.value, "microbatch": n.microbatch}
            if isinstance(n, ComputeNode):
                args.update(gflop=round(n.flops / 1e9, 6), ops=" ".join(n.ops))
            elif isinstance(n, CollectiveNode):
                args.update(kind=n.kind.value, mib=round(n.bytes / 2**20, 6), axis=n.axis, group=n.group_size)
            else:
                args.update(mib=round(n.bytes / 2**20, 6), peer_stage=n.peer_role)
            events.append({"ph": "X", "name": n.name, "cat": n.phase.value, "pid": rank,
                           "tid": threads[thread], "ts": round(st[i] * 1e6, 3),
                           "dur": round((fin[i] - st[i]) * 1e6, 3), "args": args})
        if slowest > 1.0:
            events.append({"ph": "X", "name": "slowest-host wait (expected)", "cat": "stragglers", "pid": rank,
                           "tid": threads["stragglers"], "ts": round(tl.step_time * 1e6, 3),
                           "dur": round((slowest - 1.0) * tl.step_time * 1e6, 3), "args": {"factor": slowest}})
        # Memory counter track: allocated bytes over the simulated step (Perfetto draws it as a graph).
        for t, b in memory_timeline(prog, st, fin, role):
            events.append({"ph": "C", "name": "memory allocated (GiB)", "pid": rank, "ts": round(t * 1e6, 3),
                           "args": {"GiB": round(b / 2**30, 6)}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def dumps(prog: Program, tl: Timeline, ranks: list[int]) -> str:
    return json.dumps(chrome_trace(prog, tl, ranks), separators=(",", ":")) + "\n"
