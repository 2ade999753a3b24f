"""Event-driven replay of a Program: each node starts when its stream is free and its inputs are done.

Streams are in-order queues (compute, TP, DP and PP communication per rank), so a node's start is
max(stream free, inputs finished). A collective's members all belong to one role (ranks of a role
run the same graph in lockstep), so it completes when the role reaches it; a receive completes
when the peer role's matching send does. Roles are advanced in turn until each is blocked on a
send not yet simulated; no progress means the schedule deadlocks, which is a builder bug.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from graphgen.costs.evaluate import Costs
from graphgen.ir import COMPUTE, CollectiveNode, ComputeNode, RecvNode, SendNode
from graphgen.parallel.layout import AXES
from graphgen.program import Program


@dataclass(frozen=True)
class Timeline:
    """Start and finish time (seconds) of every node of every role."""

    start: tuple[tuple[float, ...], ...]
    finish: tuple[tuple[float, ...], ...]

    @property
    def step_time(self) -> float:
        return max((max(f) for f in self.finish if f), default=0.0)


class DeadlockError(RuntimeError):
    pass


def _covered(streams, lo: float, hi: float) -> float:
    """Time in [lo, hi] during which at least one communication stream is busy. Each stream's
    intervals are sorted and disjoint (streams run in order)."""
    pieces = []
    for starts, ends in streams:
        i = max(bisect_right(starts, lo) - 1, 0)
        while i < len(starts) and starts[i] < hi:
            a, b = max(starts[i], lo), min(ends[i], hi)
            if b > a:
                pieces.append((a, b))
            i += 1
    pieces.sort()
    total, cur_a, cur_b = 0.0, None, None
    for a, b in pieces:
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a
    return total


def simulate(prog: Program, costs: Costs) -> Timeline:
    """Replay every role. A compute node that runs while this rank's communication kernels run is
    slowed by device.overlap_slowdown for the overlapped time (NCCL kernels take SMs and memory
    bandwidth from the GEMMs); communication scheduled before it is what it sees. A coarse node's
    inline collectives are not slowed: only its compute share of the overlap counts."""
    kappa = costs.kappa
    roles = prog.roles
    n_roles = len(roles)
    unset = -1.0
    start = [[unset] * len(r.nodes) for r in roles]
    finish = [[unset] * len(r.nodes) for r in roles]
    send_at = {(r.id, n.tag): n.id for r in roles for n in r.nodes if type(n) is SendNode}
    free = [dict() for _ in roles]
    busy = [{} for _ in roles]  # stream -> ([starts], [ends]) of communication nodes
    ptr = [0] * n_roles
    while True:
        progressed = False
        for r in range(n_roles):
            i = _advance(roles[r], r, ptr[r], start, finish, free[r], busy[r], costs, kappa, send_at)
            if i != ptr[r]:
                progressed = True
                ptr[r] = i
        if all(ptr[r] == len(roles[r].nodes) for r in range(n_roles)):
            break
        if not progressed:
            stuck = [f"{roles[r].name} at {roles[r].nodes[ptr[r]].name}" for r in range(n_roles)
                     if ptr[r] < len(roles[r].nodes)]
            raise DeadlockError("pipeline schedule deadlocks: " + "; ".join(stuck))
    return Timeline(tuple(map(tuple, start)), tuple(map(tuple, finish)))


def _advance(role, r: int, i: int, start, finish, fr: dict, busy: dict, costs: Costs, kappa: float,
             send_at: dict) -> int:
    """Replay one role from node i until it waits on a send not yet simulated; returns where it stopped."""
    nodes, fin, st = role.nodes, finish[r], start[r]
    dur, parts = costs.durations[r], costs.parts[r] if costs.parts else {}
    unset = -1.0
    while i < len(nodes):
        node = nodes[i]
        ready = 0.0
        for d in node.deps:
            if fin[d] > ready:
                ready = fin[d]
        if node.stream is None:  # a receive
            sid = send_at.get((node.peer_role, node.tag))
            if sid is None:
                raise DeadlockError(f"{role.name}: {node.name} has no matching send")
            sent = finish[node.peer_role][sid]
            if sent == unset:
                break
            st[i] = ready
            fin[i] = max(ready, sent)
        else:
            s = fr.get(node.stream, 0.0)
            if ready > s:
                s = ready
            st[i] = s
            d = dur[i]
            end = s + d
            if node.stream == COMPUTE:
                if kappa and d:
                    end = _slowed(s, d, parts.get(i), busy, kappa)
            elif d:
                a, b = busy.setdefault(node.stream, ([], []))
                a.append(s)
                b.append(end)
            fin[i] = fr[node.stream] = end
        i += 1
    return i


def _slowed(s: float, d: float, parts, busy: dict, kappa: float) -> float:
    """End of a compute node started at s: each compute item is slowed by kappa x the time other
    streams' communication overlaps its nominal interval, as an op-level node would be. A coarse
    node walks its items until no recorded communication reaches further; the rest runs unslowed."""
    if parts is None:
        return s + d + kappa * _covered(busy.values(), s, s + d)
    reach = max((ends[-1] for _, ends in busy.values() if ends), default=0.0)
    t, done = s, 0.0
    for is_compute, x in parts:
        if t >= reach:
            break
        t += x + (kappa * _covered(busy.values(), t, t + x) if is_compute and x else 0.0)
        done += x
    return t + (d - done)


def attribute(prog: Program, costs: Costs, tl: Timeline, role: int) -> tuple[float, dict[str, float], float]:
    """Split one role's step into compute, exposed communication per axis, and pipeline bubble.

    Every gap on the compute stream is charged to the input that arrived last: a collective's
    axis, or for a receive the peer's send time (pipeline communication) and the wait before it
    (bubble). A coarse node's inline collectives are exposed communication of their axes. Time
    after the role's last compute is charged to whatever finished last.
    """
    nodes = prog.roles[role].nodes
    st, fin = tl.start[role], tl.finish[role]
    inline = costs.inline[role]
    step = tl.step_time
    compute = 0.0
    exposed: dict[str, float] = {a: 0.0 for a in comm_axes(prog)}
    bubble = 0.0
    t = 0.0
    send_at = {(r.id, n.tag): n.id for r in prog.roles for n in r.nodes if type(n) is SendNode}

    def charge(node, gap: float) -> None:
        nonlocal bubble
        if gap <= 0:
            return
        if type(node) is CollectiveNode:
            exposed[node.axis] = exposed.get(node.axis, 0.0) + gap
        elif type(node) is RecvNode:
            peer = node.peer_role
            pp = min(gap, costs.durations[peer][send_at[(peer, node.tag)]])
            exposed["pp"] = exposed.get("pp", 0.0) + pp
            bubble += gap - pp
        elif type(node) is SendNode:
            exposed["pp"] = exposed.get("pp", 0.0) + gap
        else:
            bubble += gap

    def blocker(node):
        best, best_t = None, -1.0
        for d in node.deps:
            if fin[d] > best_t:
                best, best_t = nodes[d], fin[d]
        return best

    for i, node in enumerate(nodes):
        if type(node) is not ComputeNode:
            continue
        gap = st[i] - t
        if gap > 1e-15:
            charge(blocker(node), gap)
        busy = fin[i] - st[i]
        for axis, x in inline.get(i, ()):
            exposed[axis] = exposed.get(axis, 0.0) + x
            busy -= x
        compute += busy
        t = fin[i]
    tail = step - t
    if tail > 1e-15:
        last = max(range(len(nodes)), key=lambda k: fin[k]) if nodes else None
        if last is not None and fin[last] > t:
            charge(nodes[last], tail)
        else:
            bubble += tail  # other roles finish later: this role idles at the end
    return compute, exposed, bubble


def comm_axes(prog: Program) -> tuple[str, ...]:
    """Axes the breakdown reports: every mesh axis, in Megatron order (zero where unused)."""
    return AXES
