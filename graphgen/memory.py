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

import numpy as np

from graphgen.errors import RankflowError
from graphgen.inference.kv import iteration_cache, num_blocks
from graphgen.model.layer_graph import LayerGraph
from graphgen.model.ops import OpKind
from graphgen.model.optimizers import OPTIMIZERS
from graphgen.model.shape import activation_bytes
from graphgen.scenario import MAX_STEPS, Scenario, schedule_steps
from graphgen.schedule import SCHEDULES, in_flight_counts, stage_chunks
from graphgen.units import GIB, MIB, dtype_bytes


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
    kv_cache: float = 0.0       # inference: the KV cache of the iteration's batch at its context
    kv_blocks: int = 0          # inference: KV blocks the engine can allocate (vLLM's num_gpu_blocks)

    @property
    def allocated(self) -> float:
        """What the framework's allocator holds at the peak (PyTorch's max_memory_allocated)."""
        return (self.weights + self.master_weights + self.gradients + self.optimizer_states + self.activations
                + self.transient + self.comm_buffers + self.kv_cache)

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

    def __add__(self, other: ModelStates) -> ModelStates:
        return ModelStates(self.weights + other.weights, self.master + other.master, self.grads + other.grads,
                           self.optimizer + other.optimizer)


def model_states(weight_bytes: float, trainable: float, *, precision: str, optimizer: str, grad_dtype: str,
                 dp: int, zero: int, adafactor_elems: float = 0.0, shard_master: bool = True,
                 param_dtype_grads: bool = False) -> ModelStates:
    """Bytes per GPU of weights, master weights, gradients and optimizer states.

    weight_bytes: bytes of all weights on this rank before ZeRO sharding; trainable: trainable
    parameters on this rank. ZeRO-1 shards optimizer states (with the master copy), ZeRO-2 also
    gradients, ZeRO-3 also weights.
    """
    master = 0.0 if precision == "fp32" else 4.0
    spec = OPTIMIZERS[optimizer]
    opt = adafactor_elems * spec.state_bytes if spec.factored else trainable * spec.state_bytes
    grad_bytes = dtype_bytes(grad_dtype) + (dtype_bytes("bf16") if param_dtype_grads and precision != "fp32" else 0)
    return ModelStates(
        weights=weight_bytes / (dp if zero >= 3 else 1),
        master=trainable * master / (dp if zero >= 1 and shard_master else 1),
        grads=trainable * grad_bytes / (dp if zero >= 2 else 1),
        optimizer=opt / (dp if zero >= 1 else 1),
    )


def layer_activation_bytes(ops, recompute: str, tokens_resid_bytes: float) -> float:
    """Bytes one layer (its ops) keeps for backward for one microbatch."""
    if recompute == "full":
        return tokens_resid_bytes  # only the block input is checkpointed
    saved = sum(op.saved_bytes for op in ops)
    if recompute == "selective":
        saved -= sum(op.selective_freed_bytes for op in ops)
    return saved


def _unit_weight_bytes(lg: LayerGraph, unit: int, pbytes: float, expert: bool | None = None) -> float:
    return lg.block_sum(unit, ("weight_bytes", pbytes, expert), lambda op: op.weight_params * (op.weight_bytes or pbytes)
                        if expert is None or op.expert == expert else 0.0)


def stage_states(sc: Scenario, lg: LayerGraph, units: list[int], pbytes: float) -> ModelStates:
    """Model states of a stage's units: dense weights sharded by ZeRO over dp x cp, routed experts'
    over their expert data-parallel group (Megatron's distributed optimizer keeps the two apart)."""
    p, w = sc.plan, sc.workload
    groups = [(None, p.dp * p.cp)] if sc.model.moe is None else [(False, p.dp * p.cp), (True, p.edp)]
    total = ModelStates(0.0, 0.0, 0.0, 0.0)
    for expert, dp in groups:
        weights, trainable, factored = _stage_sums(lg, tuple(units), pbytes, expert)
        total += model_states(weights, trainable, precision=w.precision, optimizer=w.optimizer,
                              grad_dtype=p.grad_reduce_dtype, dp=dp, zero=p.zero_stage,
                              adafactor_elems=factored if not expert else 0.0,
                              shard_master=p.shard_master_weights, param_dtype_grads=p.param_dtype_grads)
    return total


def _stage_sums(lg: LayerGraph, units: tuple[int, ...], pbytes: float, expert: bool | None
                ) -> tuple[float, float, float]:
    """(weight bytes, trainable parameters, Adafactor elements) of a stage's units, cached on the layer
    graph: the plans of a search that share it ask for the same stages again and again."""
    return lg.memo(("stage", units, pbytes, expert), lambda: (
        sum(_unit_weight_bytes(lg, u, pbytes, expert) for u in units),
        sum(lg.unit_trainable(u, expert) for u in units),
        sum(_adafactor_elems(lg, u) for u in units)))


def _adafactor_elems(lg: LayerGraph, unit: int) -> float:
    """Adafactor keeps a row and a column second moment per matrix, a full one per vector."""
    if not lg.unit_trainable(unit):
        return 0.0

    def elems(op) -> float:
        if not op.trainable or op.weight_params <= 0:
            return 0.0
        fin, fout = op.shape
        return fin + fout if fin and fout else op.weight_params
    return lg.block_sum(unit, ("adafactor",), elems)


def _step_temporary(sc: Scenario, weight_bytes: float, optimizer_states: float) -> float:
    """What the step allocates once the activations are gone: ZeRO-1/2's post-step parameter all-gather
    copies, or torch's foreach AdamW's sqrt(v), one fp32 value per parameter the rank updates
    (torch/optim/adamw.py _multi_tensor_adamw: exp_avg_sq_sqrt = torch._foreach_sqrt(exp_avg_sqs))."""
    p, w = sc.plan, sc.workload
    gather = weight_bytes * (p.param_gather_copies + 1 / p.dp) \
        if p.zero_stage in (1, 2) and p.param_gather_copies and p.dp > 1 else 0.0
    opt = OPTIMIZERS[w.optimizer]
    sqrt_v = optimizer_states * 4 / opt.state_bytes if w.optimizer_impl == "foreach" and w.optimizer == "adamw" else 0.0
    return max(gather, sqrt_v)


def _transient(lg: LayerGraph, sc: Scenario, e: float, last_stage: bool, layers) -> float:
    """Largest extra working set on top of the saved activations.

    In a block: one op's output gradient and input gradient alive together (twice its largest
    per-rank output), plus the recomputed block under full recompute. At the loss (last stage):
    the logits (bf16, this rank's vocabulary shard) while the loss kernel runs; an unfused fp32
    cross-entropy also holds an fp32 copy next to the fp32 softmax it saves (nanotron's and
    Megatron's vocab-parallel loss upcast the logits).
    """
    p, w = sc.plan, sc.workload
    worst = 0.0
    for bid in sorted({lg.layer_block[layer] for layer in layers}):
        ops = lg.blocks[bid].ops
        block = max((2 * op.local_out_bytes for op in ops
                     if op.kind in (OpKind.MATMUL, OpKind.ELEMENTWISE, OpKind.ATTENTION)), default=0.0)
        if p.recompute == "full":
            block += sum(op.saved_bytes for op in ops)
        worst = max(worst, block)
    if last_stage:
        tokens = w.micro_batch * w.seq_len / p.cp  # each context-parallel rank scores its own shard
        logits = e * tokens * sc.padded_vocab / p.tp
        loss = logits if w.fused_cross_entropy else logits + 4 * tokens * sc.padded_vocab / p.tp
        worst = max(worst, loss)
    return worst


def role_memory(prog) -> tuple[MemoryBreakdown, ...]:
    """Memory of every role of a Program (graphgen.program.Program)."""
    return role_memory_of(prog.scenario, prog.layer_graph, prog.chunk_layers, [r.chunks for r in prog.roles])


def scenario_memory(sc: Scenario) -> tuple[MemoryBreakdown, ...]:
    """Memory of every role without building the DAG (what --memory-only answers)."""
    from graphgen.model.layer_graph import build_layer_graph
    from graphgen.parallel.pipeline import stage_layers
    from graphgen.program import block_shape

    p = sc.plan
    role_chunks = [stage_chunks(p.schedule, p.pp, s, p.virtual_stages) for s in range(p.pp)]
    return role_memory_of(sc, build_layer_graph(block_shape(sc)), stage_layers(sc.model, p), role_chunks)


def _stage_units(lg: LayerGraph, chunk_layers, chunks) -> list[int]:
    return [u for g in chunks for u in lg.chunk_units(chunk_layers, g)]


def _activations(sc: Scenario, lg: LayerGraph, chunk_layers, chunks, stage: int, resid: float) -> float:
    """Saved activations at the schedule's peak: each chunk's saved bytes per microbatch times the
    microbatches the stage's own order keeps in flight."""
    p = sc.plan

    def saved(unit: int) -> float:
        if not lg.has_backward(unit):
            return 0.0  # a frozen prefix keeps nothing for a backward that never runs
        ops = lg.unit_ops(unit)
        if 0 <= unit < lg.layers:
            return layer_activation_bytes(ops, p.recompute if unit % p.checkpoint_every == 0 else "none", resid)
        return sum(op.saved_bytes for op in ops)

    def for_w(unit: int) -> float:
        # W reads the saved inputs of trainable GEMMs (recomputed ones too, held from Bi until W)
        if not lg.has_backward(unit):
            return 0.0
        return sum(op.saved_bytes for op in lg.unit_ops(unit) if op.weight_params > 0 and op.trainable)

    def sums(units: tuple[int, ...]) -> tuple[float, float]:  # the same chunks recur across a search's plans
        return lg.memo(("activations", units, p.recompute, p.checkpoint_every, resid),
                       lambda: (sum(saved(u) for u in units), sum(for_w(u) for u in units)))

    got = {g: sums(tuple(lg.chunk_units(chunk_layers, g))) for g in chunks}
    weight = {g: w for g, (w, _) in got.items()}
    kept = {g: k for g, (_, k) in got.items()}
    return stage_peak(sc, stage, list(chunks), weight, kept)


def _probe_counts(sc: Scenario) -> tuple[int, int] | None:
    """Two microbatch counts the schedule takes, well past the pipeline's fill (every registered
    schedule's in-flight peak stops changing by 2 x pp x v microbatches), or None."""
    p = sc.plan
    sched, span = SCHEDULES[p.schedule], p.pp * p.virtual_stages
    valid = [m for m in range(4 * span, 8 * span + 8) if sched.check(p.pp, p.virtual_stages, m, sc.model.layers) is None]
    firsts = [m for m in valid if m >= valid[0] + span] if valid else []
    return (valid[0], firsts[0]) if firsts else None


def stage_peak(sc: Scenario, stage: int, chunks: list[int], weight: dict[int, float],
               kept: dict[int, float]) -> float:
    """The largest saved bytes a stage's order keeps in flight (microbatches forwarded but not yet
    backwarded, chunk weight each; a split backward frees in two steps: its input-gradient half (Bi)
    all but what the deferred weight-gradient step (W) still reads, the inputs of the layers with
    weights, under full recompute the recomputed ones), without walking an order longer than a
    replay may be.
    Past the fill a schedule repeats a steady state: its peak then stays put, or grows by the same
    amount per microbatch (GPipe runs every forward first), so two shorter orders give it."""
    p = sc.plan

    def peak(m: int) -> float:
        a, k = in_flight_counts(p.schedule, p.pp, stage, m, p.virtual_stages)
        if not len(a):
            return 0.0
        w = np.array([weight[g] for g in chunks])
        kp = np.array([kept.get(g, 0.0) for g in chunks])
        return max(0.0, float((a @ w + k @ kp).max()))

    if schedule_steps(p, sc.microbatches) <= MAX_STEPS:
        return peak(sc.microbatches)  # what a replay walks anyway: exact
    probes = _probe_counts(sc)
    if probes is None or schedule_steps(p, sum(probes)) > MAX_STEPS:
        raise RankflowError(f"the memory answer walks {p.pp * p.virtual_stages:,} pipeline chunks over "
                            f"{sc.microbatches:,} microbatches, more than it can within seconds", file=sc.model_file,
                            field="workload.global_batch", fix="lower global_batch, pp or virtual_stages")
    (m1, m2), M = probes, sc.microbatches
    p1, p2 = peak(m1), peak(m2)
    if abs(p2 - p1) <= 1e-9 * max(abs(p1), 1.0):
        return max(p1, p2)
    return p1 + (p2 - p1) * (M - m1) / (m2 - m1)


def _buffers(sc: Scenario, lg: LayerGraph, layers, grads: float, pbytes: float, resid: float) -> float:
    """DP gradient bucket, ZeRO-3's gathered units (one in use, one prefetched), persistent SP buffers."""
    p = sc.plan
    buffers = p.bucket_mb * MIB if p.dp > 1 and grads > 0 else 0.0
    if p.zero_stage == 3 and p.dp > 1:
        units = layers or (0,)
        buffers += 2 * max(_unit_weight_bytes(lg, u, pbytes) for u in units)
    if p.sp and p.tp > 1 and p.tp_gather_buffers:
        buffers += p.tp_gather_buffers * resid * p.tp  # each holds a whole gathered sequence
    return buffers


def _inference_roles(sc: Scenario, lg: LayerGraph, chunk_layers, role_chunks) -> tuple[MemoryBreakdown, ...]:
    """Per stage: stored weights, the KV cache of the iteration, its largest working set, the runtime's
    reserve; and the KV blocks the engine could allocate within gpu_memory_utilization after weights, a
    max_num_batched_tokens forward's activations and the reserve."""
    spec, w, dev = sc.workload.inference, sc.workload, sc.hardware.device
    e = activation_bytes(w.precision)
    out = []
    for stage, chunks in enumerate(role_chunks):
        units = _stage_units(lg, chunk_layers, chunks)
        layers = [u for u in units if 0 <= u < lg.layers]
        weights = sum(_unit_weight_bytes(lg, u, e) for u in units)
        last = any(g % len(chunk_layers) == len(chunk_layers) - 1 for g in chunks)
        work = _transient(lg, sc, e, last, tuple(layers) or (0,))
        profile = work * spec.max_num_batched_tokens / max(w.micro_batch * w.seq_len, 1)
        reserved, capacity = dev.memory_reserved_gib * GIB, dev.hbm_gib * GIB
        if spec.kv_cache_free_fraction is not None:
            free = spec.kv_cache_free_fraction * (capacity - weights - max(work, profile) - reserved)
        else:
            free = spec.gpu_memory_utilization * capacity - weights - max(work, profile) - reserved
        out.append(MemoryBreakdown(
            role=f"stage{stage}", weights=weights, master_weights=0.0, gradients=0.0, optimizer_states=0.0,
            activations=0.0, transient=work, comm_buffers=0.0, reserved=reserved, capacity=capacity,
            kv_cache=iteration_cache(sc, layers), kv_blocks=num_blocks(free, sc, layers)))
    return tuple(out)


def role_memory_of(sc: Scenario, lg: LayerGraph, chunk_layers, role_chunks) -> tuple[MemoryBreakdown, ...]:
    if sc.workload.run_type == "inference":
        return _inference_roles(sc, lg, chunk_layers, role_chunks)
    p, w = sc.plan, sc.workload
    e = activation_bytes(w.precision)
    pbytes = dtype_bytes("fp32") if w.precision == "fp32" else e
    resid = e * w.micro_batch * w.seq_len / p.cp * sc.model.hidden / (p.tp if p.sp and p.tp > 1 else 1)
    dev = sc.hardware.device
    out = []
    for stage, chunks in enumerate(role_chunks):
        units = _stage_units(lg, chunk_layers, chunks)
        layers = tuple(u for u in units if 0 <= u < lg.layers)
        weight_bytes, trainable, _ = _stage_sums(lg, tuple(units), pbytes, None)
        states = stage_states(sc, lg, units, pbytes)
        acts = _activations(sc, lg, chunk_layers, chunks, stage, resid)
        transient = _transient(lg, sc, e, any(g % len(chunk_layers) == len(chunk_layers) - 1 for g in chunks), layers or (0,))
        # The post-step parameter all-gather runs when activations are gone: it competes with the
        # activation peak rather than adding to it.
        step = _step_temporary(sc, weight_bytes, states.optimizer)
        if step > acts + transient:
            acts, transient = 0.0, step
        buffers = _buffers(sc, lg, layers, states.grads, pbytes, resid)
        allocated = states.total + acts + transient + buffers
        out.append(MemoryBreakdown(
            role=f"stage{stage}", weights=states.weights, master_weights=states.master, gradients=states.grads,
            optimizer_states=states.optimizer, activations=acts, transient=transient, comm_buffers=buffers,
            reserved=dev.memory_reserved_gib * GIB, capacity=dev.hbm_gib * GIB, trainable_params=trainable,
            fragmentation=allocated * dev.allocator_fragmentation))
    return tuple(out)


@dataclass(frozen=True)
class MemoryReport:
    """Per-GPU memory of every pipeline stage of a scenario."""

    roles: tuple[MemoryBreakdown, ...]

    @property
    def fits(self) -> bool:
        return all(m.fits for m in self.roles)

    @property
    def peak(self) -> MemoryBreakdown:
        return max(self.roles, key=lambda m: m.total)
