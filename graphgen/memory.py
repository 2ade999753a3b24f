"""Per-GPU memory of each role: model states, activations kept along the schedule, buffers.

Activations come from each op's saved tensors (Korthikanti et al. 2022 accounting) times the
microbatches the role's schedule keeps in flight, read off the schedule order itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphgen.model.transformer import LayerGraph, activation_bytes
from graphgen.program import EMBED, Program, _unit_params
from graphgen.schedule import stage_order
from graphgen.units import GIB, MIB, dtype_bytes


@dataclass(frozen=True)
class MemoryBreakdown:
    """Per-GPU memory of one role, bytes."""

    role: str
    weights: float
    gradients: float
    optimizer_states: float
    activations: float
    comm_buffers: float
    reserved: float
    capacity: float

    @property
    def total(self) -> float:
        return (self.weights + self.gradients + self.optimizer_states + self.activations
                + self.comm_buffers + self.reserved)

    @property
    def headroom(self) -> float:
        return self.capacity - self.total

    @property
    def fits(self) -> bool:
        return self.headroom >= 0


def layer_activation_bytes(lg: LayerGraph, recompute: str, tokens_resid_bytes: float) -> float:
    """Bytes one layer keeps for backward for one microbatch."""
    if recompute == "full":
        return tokens_resid_bytes  # only the block input is checkpointed
    saved = sum(op.saved_bytes for op in lg.layer)
    if recompute == "selective":
        saved -= sum(op.selective_freed_bytes for op in lg.layer)
    return saved


def peak_in_flight(order, chunks: list[int], weight: dict[int, float]) -> float:
    """Max over the schedule of sum(chunk weight x microbatches forwarded but not yet backwarded)."""
    live = dict.fromkeys(chunks, 0)
    peak = cur = 0.0
    for st in order:
        g = chunks[st.chunk]
        if st.phase == "F":
            live[g] += 1
            cur += weight[g]
            peak = max(peak, cur)
        else:
            live[g] -= 1
            cur -= weight[g]
    return peak


def role_memory(prog: Program) -> tuple[MemoryBreakdown, ...]:
    sc, lg = prog.scenario, prog.layer_graph
    p, w = sc.plan, sc.workload
    e = activation_bytes(w.precision)
    pbytes = dtype_bytes("fp32") if w.precision == "fp32" else e
    gbytes = dtype_bytes(p.grad_reduce_dtype)
    master = 0.0 if w.precision == "fp32" else 4.0
    opt_state = master + (8.0 if w.optimizer == "adamw" else 4.0)
    dp, zero = p.dp, p.zero_stage
    sp = p.sp and p.tp > 1
    resid = e * w.micro_batch * w.seq_len * sc.model.hidden / (p.tp if sp else 1)
    per_layer = layer_activation_bytes(lg, p.recompute, resid)
    embed_saved = sum(op.saved_bytes for op in lg.embed)
    head_saved = sum(op.saved_bytes for op in lg.head)
    G = p.pp * p.virtual_stages
    out = []
    for role in prog.roles:
        units = [u for g in role.chunks for u in
                 ([EMBED] if g == 0 else []) + list(prog.chunk_layers[g]) + ([lg.layers] if g == G - 1 else [])]
        params = sum(_unit_params(lg, u) for u in units)
        weight = {g: len(prog.chunk_layers[g]) * per_layer + (embed_saved if g == 0 else 0)
                  + (head_saved if g == G - 1 else 0) for g in role.chunks}
        order = stage_order(p.schedule, p.pp, role.stage, sc.microbatches, p.virtual_stages)
        acts = peak_in_flight(order, list(role.chunks), weight)
        if p.recompute == "full":
            acts += sum(op.saved_bytes for op in lg.layer)  # the block being recomputed
        buffers = p.bucket_mb * MIB if dp > 1 else 0.0
        if zero == 3 and dp > 1:
            buffers += 2 * lg.layer_params * pbytes  # gathered unit in use + one prefetched
        out.append(MemoryBreakdown(
            role=role.name,
            weights=params * pbytes / (dp if zero == 3 else 1),
            gradients=params * gbytes / (dp if zero >= 2 else 1),
            optimizer_states=params * opt_state / (dp if zero >= 1 else 1),
            activations=acts,
            comm_buffers=buffers,
            reserved=sc.hardware.device.memory_reserved_gib * GIB,
            capacity=sc.hardware.device.hbm_gib * GIB,
        ))
    return tuple(out)
