"""Where the time goes: one role's step split into compute, exposed communication per mesh axis,
and pipeline bubble, from a replayed timeline."""

from __future__ import annotations

from backends.analytical.scheduler import Timeline
from graphgen.costs.evaluate import Costs
from graphgen.ir import CollectiveNode, ComputeNode, RecvNode, SendNode
from graphgen.parallel.layout import AXES
from graphgen.program import Program


class _Ledger:
    """Charges each gap in a role's compute stream to what kept it waiting."""

    def __init__(self, prog: Program, costs: Costs) -> None:
        self.prog, self.costs = prog, costs
        self.exposed: dict[str, float] = dict.fromkeys(AXES, 0.0)  # every mesh axis, zero where unused
        self.bubble = 0.0
        self.send_at = {(r.id, n.tag): n.id for r in prog.roles for n in r.nodes if type(n) is SendNode}

    def charge(self, node, gap: float) -> None:
        """A collective's gap is its axis's exposed communication; a receive's is the peer's transfer
        time (pp) and, before it, the pipeline bubble; anything else is bubble."""
        if gap <= 0:
            return
        if type(node) is CollectiveNode:
            self.exposed[node.axis] = self.exposed.get(node.axis, 0.0) + gap
        elif type(node) is RecvNode:
            peer = node.peer_role
            pp = min(gap, self.costs.durations[peer][self.send_at[(peer, node.tag)]])
            self.exposed["pp"] += pp
            self.bubble += gap - pp
        elif type(node) is SendNode:
            self.exposed["pp"] += gap
        else:
            self.bubble += gap


def attribute(prog: Program, costs: Costs, tl: Timeline, role: int) -> tuple[float, dict[str, float], float]:
    """Split one role's step into compute, exposed communication per axis, and pipeline bubble.

    Every gap on the compute stream is charged to the input that arrived last (see _Ledger.charge).
    A coarse node's inline collectives are exposed communication of their axes. Time after the
    role's last compute is charged to whatever finished last.
    """
    nodes = prog.roles[role].nodes
    st, fin = tl.start[role], tl.finish[role]
    inline = costs.inline[role]
    ledger = _Ledger(prog, costs)
    compute, t = 0.0, 0.0
    for i, node in enumerate(nodes):
        if type(node) is not ComputeNode:
            continue
        gap = st[i] - t
        if gap > 1e-15:
            ledger.charge(max((nodes[d] for d in node.deps), key=lambda n: fin[n.id], default=None), gap)
        busy = fin[i] - st[i]
        waited = tl.waits[role].get(i) if tl.waits else None  # a coarse node's collective waiting for its stream
        for axis, x in (*inline.get(i, ()), *((waited,) if waited else ())):
            ledger.exposed[axis] = ledger.exposed.get(axis, 0.0) + x
            busy -= x
        compute += busy
        t = fin[i]
    tail = tl.step_time - t
    if tail > 1e-15:
        last = max(range(len(nodes)), key=lambda k: fin[k]) if nodes else None
        if last is not None and fin[last] > t:
            ledger.charge(nodes[last], tail)
        else:
            ledger.bubble += tail  # other roles finish later: this role idles at the end
    return compute, ledger.exposed, ledger.bubble
