"""Allocated memory over one role's simulated step, for the trace's memory counter track."""

from __future__ import annotations

from graphgen.ir import ComputeNode, Phase
from graphgen.memory import role_memory
from graphgen.model.shape import activation_bytes


def memory_timeline(prog, start, finish, role: int) -> list[tuple[float, float]]:
    """(time s, bytes allocated) over one role's simulated step, from its op-level DAG and timeline.

    Static memory (model states and buffers) is there from the start; each forward compute node
    adds the activations its ops save (under full recompute, the block input), each recompute node
    adds the block's activations back, and each backward node frees what its ops had saved.
    Takes the start/finish arrays of a backend timeline, so it is pure.
    """
    lg = prog.layer_graph
    sc = prog.scenario
    p, w = sc.plan, sc.workload
    mem = role_memory(prog)[role]
    static = mem.weights + mem.master_weights + mem.gradients + mem.optimizer_states + mem.comm_buffers
    resid = activation_bytes(w.precision) * w.micro_batch * w.seq_len / p.cp * sc.model.hidden / (
        p.tp if p.sp and p.tp > 1 else 1)
    events: list[tuple[float, float]] = []
    for n in prog.roles[role].nodes:
        if type(n) is not ComputeNode or n.phase not in (Phase.FORWARD, Phase.RECOMPUTE, Phase.BACKWARD):
            continue
        unit = n.layers[0] if n.layers[0] >= 0 else None
        if unit is not None and not lg.has_backward(unit):
            continue
        delta = _delta(lg, p, n, unit, resid)
        if delta:
            # Saved tensors exist from the end of a forward; backward frees them when it completes.
            events.append((finish[n.id], delta))
    events.sort(key=lambda ev: ev[0])
    out = [(0.0, static)]
    cur = static
    for t, d in events:
        cur += d
        out.append((t, cur))
    return out


def _delta(lg, p, n: ComputeNode, unit: int | None, resid: float) -> float:
    """Bytes a compute node adds to (forward, recompute) or frees from (backward) the saved set."""
    # Nodes outside the blocks are the embedding's or the head's (their op names differ).
    block_ops = lg.unit_ops(unit) if unit is not None else lg.embed + lg.head
    ops = {op.name: op for op in block_ops}
    first_layer_op = lg.unit_ops(unit)[0].name if unit is not None else None
    full = p.recompute == "full" and unit is not None and unit % p.checkpoint_every == 0

    def kept(name: str) -> float:
        op = ops[name]
        return op.saved_bytes - op.selective_freed_bytes if p.recompute == "selective" else op.saved_bytes

    delta = 0.0
    for name in n.ops:
        if name not in ops:
            continue
        if n.phase is Phase.FORWARD:
            delta += (resid if name == first_layer_op else 0.0) if full else kept(name)
        elif n.phase is Phase.RECOMPUTE:
            delta += ops[name].saved_bytes
        else:
            delta -= ops[name].saved_bytes if full else kept(name)
            if full and name == first_layer_op:
                delta -= resid
    return delta
