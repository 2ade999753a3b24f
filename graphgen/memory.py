"""Per-GPU memory of each role (pipeline stage): model states, activations along the schedule,
transient buffers, communication buffers and the runtime's reserve.

- Model states follow ZeRO's accounting (Rajbhandari et al. 2020, Table 1): weights in the compute
  dtype (NF4 for QLoRA base weights), fp32 master weights, gradients in their accumulation dtype and
  the optimizer's states, sharded by TP and PP through the ops themselves and by ZeRO's stage over
  data parallelism. Frozen weights have no master copy, gradient or optimizer state.
- Activations are each op's saved tensors (Korthikanti et al. 2022 accounting, extended to GQA,
  SwiGLU, flash attention, the loss and adapters) times the microbatches the role's own schedule keeps
  in flight, read off the schedule order, so 1F1B, interleaved and GPipe differ as they do.
- Transient: the largest working set of one op's backward (its output gradient and input gradient
  alive at once, or the recomputed block under full recompute) on top of the saved activations.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphgen.model.ops import OpKind
from graphgen.model.transformer import LayerGraph, activation_bytes
from graphgen.scenario import Scenario
from graphgen.schedule import stage_order
from graphgen.units import GIB, MIB, dtype_bytes

EMBED = -1

# Optimizer state bytes per trainable parameter (beyond the fp32 master copy).
OPTIMIZER_BYTES = {
    "adamw": 8.0,      # m and v in fp32
    "adam8bit": 2.0,   # m and v in 8 bits (Dettmers et al. 2022), block scales neglected (<1 %)
    "sgd": 4.0,        # momentum in fp32
}


@dataclass(frozen=True)
class MemoryBreakdown:
    """Per-GPU memory of one role, bytes."""

    role: str
    weights: float
    master_weights: float
    gradients: float
    optimizer_states: float
    activations: float
    transient: float
    comm_buffers: float
    reserved: float
    capacity: float
    trainable_params: float = 0.0
    fragmentation: float = 0.0  # allocator slack (a fraction of allocated, from the hardware config)

    @property
    def allocated(self) -> float:
        """What the framework's allocator holds at the peak (PyTorch's max_memory_allocated)."""
        return (self.weights + self.master_weights + self.gradients + self.optimizer_states + self.activations
                + self.transient + self.comm_buffers)

    @property
    def total(self) -> float:
        """What the device must hold: allocated memory, allocator slack, runtime reserve."""
        return self.allocated + self.fragmentation + self.reserved

    @property
    def headroom(self) -> float:
        return self.capacity - self.total

    @property
    def fits(self) -> bool:
        return self.headroom >= 0


@dataclass(frozen=True)
class ModelStates:
    weights: float
    master: float
    grads: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.weights + self.master + self.grads + self.optimizer


def model_states(weight_bytes: float, trainable: float, *, precision: str, optimizer: str, grad_dtype: str,
                 dp: int, zero: int, adafactor_elems: float = 0.0, shard_master: bool = True,
                 param_dtype_grads: bool = False) -> ModelStates:
    """Bytes per GPU of weights, master weights, gradients and optimizer states.

    weight_bytes: bytes of all weights on this rank before ZeRO sharding; trainable: trainable
    parameters on this rank. ZeRO-1 shards optimizer states (with the master copy), ZeRO-2 also
    gradients, ZeRO-3 also weights.
    """
    master = 0.0 if precision == "fp32" else 4.0
    if optimizer == "adafactor":
        opt = adafactor_elems * 4.0
    else:
        opt = trainable * OPTIMIZER_BYTES[optimizer]
    grad_bytes = dtype_bytes(grad_dtype) + (dtype_bytes("bf16") if param_dtype_grads and precision != "fp32" else 0)
    return ModelStates(
        weights=weight_bytes / (dp if zero >= 3 else 1),
        master=trainable * master / (dp if zero >= 1 and shard_master else 1),
        grads=trainable * grad_bytes / (dp if zero >= 2 else 1),
        optimizer=opt / (dp if zero >= 1 else 1),
    )


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
    peak = cur = 0.0
    for st in order:
        g = chunks[st.chunk]
        if st.phase == "F":
            cur += weight[g]
            peak = max(peak, cur)
        else:
            cur -= weight[g]
    return peak


def _unit_weight_bytes(lg: LayerGraph, unit: int, pbytes: float) -> float:
    return sum(op.weight_params * (op.weight_bytes or pbytes) for op in lg.unit_ops(unit))


def _adafactor_elems(lg: LayerGraph, unit: int) -> float:
    """Adafactor keeps a row and a column second moment per matrix, a full one per vector."""
    if not lg.unit_trainable(unit):
        return 0.0
    total = 0.0
    for op in lg.unit_ops(unit):
        if not op.trainable or op.weight_params <= 0:
            continue
        fin, fout = op.shape
        total += fin + fout if fin and fout else op.weight_params
    return total


def _transient(lg: LayerGraph, sc: Scenario, e: float, last_stage: bool) -> float:
    """Largest extra working set on top of the saved activations.

    In a block: one op's output gradient and input gradient alive together (twice its largest
    per-rank output), plus the recomputed block under full recompute. At the loss (last stage):
    the logits (bf16, this rank's vocabulary shard) while the loss kernel runs; an unfused fp32
    cross-entropy also holds an fp32 copy next to the fp32 softmax it saves (nanotron's and
    Megatron's vocab-parallel loss upcast the logits).
    """
    p, w = sc.plan, sc.workload
    t = p.tp
    sharded = {"qkv_proj", "rope", "flash_attention", "out_proj", "fc1", "swiglu", "gelu", "relu", "fc2"}
    worst = 0.0
    for op in lg.layer:
        if op.kind in (OpKind.MATMUL, OpKind.ELEMENTWISE, OpKind.ATTENTION):
            local = op.out_bytes / (t if (op.name in sharded or p.sp) and t > 1 else 1)
            worst = max(worst, 2 * local)
    if p.recompute == "full":
        worst += sum(op.saved_bytes for op in lg.layer)
    if last_stage:
        tokens = w.micro_batch * w.seq_len
        logits = e * tokens * sc.padded_vocab / t
        loss = logits if w.fused_cross_entropy else logits + 4 * tokens * sc.padded_vocab / t
        worst = max(worst, loss)
    return worst


def role_memory(prog) -> tuple[MemoryBreakdown, ...]:
    """Memory of every role of a Program (graphgen.program.Program)."""
    return role_memory_of(prog.scenario, prog.layer_graph, prog.chunk_layers, [r.chunks for r in prog.roles])


def scenario_memory(sc: Scenario) -> tuple[MemoryBreakdown, ...]:
    """Memory of every role without building the DAG (what --memory-only answers)."""
    from graphgen.model.transformer import build_layer_graph
    from graphgen.program import stage_layers

    p = sc.plan
    chunk_layers = stage_layers(sc)
    role_chunks = [tuple(c * p.pp + s for c in range(p.virtual_stages)) for s in range(p.pp)]
    return role_memory_of(sc, build_layer_graph(sc), chunk_layers, role_chunks)


def role_memory_of(sc: Scenario, lg: LayerGraph, chunk_layers, role_chunks) -> tuple[MemoryBreakdown, ...]:
    p, w = sc.plan, sc.workload
    e = activation_bytes(w.precision)
    pbytes = dtype_bytes("fp32") if w.precision == "fp32" else e
    dp, zero = p.dp, p.zero_stage
    sp = p.sp and p.tp > 1
    resid = e * w.micro_batch * w.seq_len * sc.model.hidden / (p.tp if sp else 1)
    per_layer = layer_activation_bytes(lg, p.recompute, resid)
    plain_layer = layer_activation_bytes(lg, "none", resid)  # blocks full recompute skips (recompute_every)
    G = len(chunk_layers)
    out = []
    for stage, chunks in enumerate(role_chunks):
        units = [u for g in chunks for u in
                 ([EMBED] if g == 0 else []) + list(chunk_layers[g]) + ([lg.layers] if g == G - 1 else [])]
        states = model_states(
            sum(_unit_weight_bytes(lg, u, pbytes) for u in units), sum(lg.unit_trainable(u) for u in units),
            precision=w.precision, optimizer=w.optimizer, grad_dtype=p.grad_reduce_dtype, dp=dp, zero=zero,
            adafactor_elems=sum(_adafactor_elems(lg, u) for u in units), shard_master=p.shard_master_weights,
            param_dtype_grads=p.param_dtype_grads)

        def saved(unit: int) -> float:
            if not lg.has_backward(unit):
                return 0.0  # a frozen prefix keeps nothing for a backward that never runs
            if 0 <= unit < lg.layers:
                return per_layer if unit % p.recompute_every == 0 else plain_layer
            return sum(op.saved_bytes for op in lg.unit_ops(unit))

        weight = {g: sum(saved(u) for u in ([EMBED] if g == 0 else []) + list(chunk_layers[g])
                         + ([lg.layers] if g == G - 1 else [])) for g in chunks}
        order = stage_order(p.schedule, p.pp, stage, sc.microbatches, p.virtual_stages)
        acts = peak_in_flight(order, list(chunks), weight)
        buffers = p.bucket_mb * MIB if dp > 1 and states.grads > 0 else 0.0
        if zero == 3 and dp > 1:
            buffers += 2 * _unit_weight_bytes(lg, 0, pbytes)  # gathered unit in use + one prefetched
        if sp and p.tp_gather_buffers:
            buffers += p.tp_gather_buffers * resid * p.tp  # each holds a whole gathered sequence
        transient = _transient(lg, sc, e, (G - 1) in chunks)
        # The post-step parameter all-gather runs when activations are gone: it competes with the
        # activation peak rather than adding to it.
        step = 0.0
        if zero in (1, 2) and p.param_gather_copies and dp > 1:
            weight_bytes = sum(_unit_weight_bytes(lg, u, pbytes) for u in units)
            step = weight_bytes * (p.param_gather_copies + 1 / dp)
        if step > acts + transient:
            acts, transient = 0.0, step
        allocated = states.total + acts + transient + buffers
        dev = sc.hardware.device
        out.append(MemoryBreakdown(
            role=f"stage{stage}", weights=states.weights, master_weights=states.master, gradients=states.grads,
            optimizer_states=states.optimizer, activations=acts, transient=transient, comm_buffers=buffers,
            reserved=dev.memory_reserved_gib * GIB, capacity=dev.hbm_gib * GIB,
            trainable_params=sum(lg.unit_trainable(u) for u in units),
            fragmentation=allocated * dev.allocator_fragmentation))
    return tuple(out)


def memory_timeline(prog, start, finish, role: int) -> list[tuple[float, float]]:
    """(time s, bytes allocated) over one role's simulated step, from its DAG and timeline.

    Static memory (model states and buffers) is there from the start; each forward compute node
    adds the activations its ops save (under full recompute, the block input), each recompute node
    adds the block's activations back, and each backward node frees what its ops had saved.
    Takes the start/finish arrays of a backend timeline, so it is pure.
    """
    from graphgen.ir import ComputeNode, Phase

    lg = prog.layer_graph
    p = prog.scenario.plan
    mem = role_memory(prog)[role]
    static = mem.weights + mem.master_weights + mem.gradients + mem.optimizer_states + mem.comm_buffers
    ops = {op.name: op for op in (*lg.embed, *lg.layer, *lg.head)}
    first_layer_op = lg.layer[0].name
    e = activation_bytes(prog.scenario.workload.precision)
    sp = p.sp and p.tp > 1
    resid = e * prog.scenario.workload.micro_batch * prog.scenario.workload.seq_len * prog.scenario.model.hidden / (
        p.tp if sp else 1)

    def kept(name: str) -> float:
        op = ops[name]
        if p.recompute == "selective":
            return op.saved_bytes - op.selective_freed_bytes
        return op.saved_bytes

    events: list[tuple[float, float]] = []
    nodes = prog.roles[role].nodes
    for n in nodes:
        if type(n) is not ComputeNode or n.phase not in (Phase.FORWARD, Phase.RECOMPUTE, Phase.BACKWARD):
            continue
        unit = n.layers[0] if n.layers[0] >= 0 else None
        if unit is not None and not lg.has_backward(unit):
            continue
        in_block = unit is not None
        delta = 0.0
        for name in n.ops:
            if name not in ops:
                continue
            full = p.recompute == "full" and in_block and n.layers[0] % p.recompute_every == 0
            if n.phase is Phase.FORWARD:
                delta += (resid if name == first_layer_op else 0.0) if full else kept(name)
            elif n.phase is Phase.RECOMPUTE:
                delta += ops[name].saved_bytes
            else:
                delta -= ops[name].saved_bytes if full else kept(name)
                if full and name == first_layer_op:
                    delta -= resid
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
