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
from graphgen.ir import COMPUTE, SendNode, comm_stream
from graphgen.program import Program


@dataclass(frozen=True)
class Timeline:
    """Start and finish time (seconds) of every node of every role."""

    start: tuple[tuple[float, ...], ...]
    finish: tuple[tuple[float, ...], ...]
    waits: tuple[dict[int, tuple[str, float]], ...] = ()  # coarse node -> (axis, seconds its inline collectives waited)

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
    waits: list[dict[int, tuple[str, float]]] = [{} for _ in roles]
    ptr = [0] * n_roles
    while True:
        progressed = False
        for r in range(n_roles):
            i = _advance(roles[r], r, ptr[r], start, finish, (free[r], busy[r], waits[r]), costs, kappa, send_at)
            if i != ptr[r]:
                progressed = True
                ptr[r] = i
        if all(ptr[r] == len(roles[r].nodes) for r in range(n_roles)):
            break
        if not progressed:
            stuck = [f"{roles[r].name} at {roles[r].nodes[ptr[r]].name}" for r in range(n_roles)
                     if ptr[r] < len(roles[r].nodes)]
            raise DeadlockError("pipeline schedule deadlocks: " + "; ".join(stuck))
    return Timeline(tuple(map(tuple, start)), tuple(map(tuple, finish)), tuple(waits))


def _advance(role, r: int, i: int, start, finish, streams, costs: Costs, kappa: float, send_at: dict) -> int:
    """Replay one role from node i until it waits on a send not yet simulated; returns where it stopped.
    streams: this role's (stream -> free time, stream -> busy intervals, coarse node -> inline wait)."""
    fr, busy, waits = streams
    nodes, fin, st = role.nodes, finish[r], start[r]
    dur, segments = costs.durations[r], costs.segments[r] if costs.segments else {}
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
            if node.stream == COMPUTE:
                seg = segments.get(i)
                if seg is None:
                    end = _op(s, d, busy, kappa)
                else:
                    end, wait = _segment(s, d, seg, busy, fr, kappa)
                    if wait:
                        waits[i] = wait
            else:
                end = s + d
                if d:
                    a, b = busy.setdefault(node.stream, ([], []))
                    a.append(s)
                    b.append(end)
            fin[i] = fr[node.stream] = end
        i += 1
    return i


def _reach(busy: dict) -> float:
    """When the last recorded communication ends (each stream's intervals are in order)."""
    return max((ends[-1] for _, ends in busy.values() if ends), default=0.0)


def _op(s: float, d: float, busy: dict, kappa: float) -> float:
    """End of a one-item compute node started at s: slowed by kappa x the time communication on
    other streams overlaps its nominal interval."""
    if not kappa or not d or _reach(busy) <= s:
        return s + d
    return s + d + kappa * _covered(busy.values(), s, s + d)


def _segment(s: float, d: float, seg, busy: dict, fr: dict, kappa: float) -> tuple[float, tuple[str, float] | None]:
    """(end, (axis, wait)) of a coarse node started at s, run as its op-level items would run: each
    compute item slowed by overlapping communication, each inline collective waiting for its stream.
    Items are walked only while something can still interact with them; the rest runs at nominal
    speed. The inline collectives' streams are busy until the last of them ends."""
    reach = _reach(busy) if kappa else 0.0
    waits = any(fr.get(c, 0.0) > s for c in seg.comm_streams)
    t, done, last, waited = s, 0.0, None, None
    if waits or reach > s:
        for axis, x in seg.parts:
            if not waits and t >= reach:
                break
            if axis:
                begin = max(t, fr.get(comm_stream(axis), 0.0))
                if begin > t:
                    waited = (axis, begin - t)
                t = begin + x
                waits, last = False, t  # later collectives of this node find the stream free
            else:
                t += x + (kappa * _covered(busy.values(), t, t + x) if kappa and x and t < reach else 0.0)
            done += x
    end = t + (d - done)
    if seg.comm_streams:
        if seg.last_comm_end > done or last is None:
            last = t + (seg.last_comm_end - done)
        for c in seg.comm_streams:
            fr[c] = max(fr.get(c, 0.0), last)
    return end, waited
