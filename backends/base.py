"""The Backend protocol, its registry, and the one Result every backend returns.

Result is plain data (dataclasses) so that reports can serialise it without knowing the backend.
The JSON layout is documented in README.md ("Output schema") and versioned by SCHEMA_VERSION:
bump the major part when a field changes meaning or disappears, the minor part when one is added.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

from graphgen.config import Cluster
from graphgen.costs.evaluate import Costs
from graphgen.ir import ComputeNode
from graphgen.memory import MemoryBreakdown
from graphgen.program import Program
from graphgen.stragglers import independent_hosts, straggler_factor

SCHEMA_VERSION = "3.0"

MFU_DEFINITION = (
    "MFU = model FLOPs per step / (step time x GPUs x dense peak of the workload precision); model FLOPs "
    "per token = 6 x matmul parameters (all linears and the LM head) + 12 x layers x heads x head_dim x "
    "the keys a query attends to under the causal mask ((seq_len + 1) / 2, or the sample's with packed sequences; "
    "in a sliding-window layer, up to its window), recompute not counted (PaLM, Chowdhery et al. 2022, App. B, with causal attention as "
    "Megatron-Core counts it, so MFU stays below 100 % at any length); fine-tuning counts what the method computes: "
    "frozen weights have no weight-gradient FLOPs, a frozen prefix of layers no backward, adapters 6 x their "
    "parameters")
INFERENCE_MFU_DEFINITION = (
    "MFU = model FLOPs per iteration / (iteration time x GPUs x dense peak of the weights' precision); model "
    "FLOPs per processed token = 2 x active matmul parameters (the LM head included) + 2 x layers x heads x "
    "(qk + v head widths) x the keys the token attends to (causal over the prompt in a prefill, the whole "
    "cache in a decode step)")
HFU_DEFINITION = (
    "HFU = hardware FLOPs per step / (step time x GPUs x peak); hardware FLOPs = model FLOPs + the "
    "forward FLOPs re-executed by activation recompute, counted in the same convention")


@dataclass(frozen=True)
class Breakdown:
    """Where the critical role's step time goes, seconds; the parts add up to the step time."""

    compute: float
    exposed_comm: dict[str, float]
    pipeline_bubble: float
    stragglers: float = 0.0  # the expected wait for the slowest host (graphgen.stragglers)

    @property
    def total(self) -> float:
        return self.compute + sum(self.exposed_comm.values()) + self.pipeline_bubble + self.stragglers


@dataclass(frozen=True)
class RoleTiming:
    role: str
    finish_s: float
    compute_s: float
    nodes: int


@dataclass(frozen=True)
class Result:
    backend: str
    model: str
    hardware: str
    device: str
    plan: dict[str, object]
    gpus: int
    step_time_s: float
    tokens_per_step: int
    global_batch: int
    microbatches: int
    model_flops_per_step: float
    hardware_flops_per_step: float
    peak_flops_per_gpu: float
    breakdown: Breakdown
    critical_role: str
    roles: tuple[RoleTiming, ...]
    memory: tuple[MemoryBreakdown, ...]
    layer_table: tuple[dict[str, object], ...] = field(default=())
    notes: tuple[str, ...] = field(default=())
    framework: dict[str, object] | None = None  # the profile's name, version and its reporting conventions
    training_run: dict[str, object] | None = None  # the whole run, when workload.train_tokens is given
    inference: dict[str, object] | None = None     # the iteration, for an inference scenario

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_time_s

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.tokens_per_s / self.gpus

    @property
    def model_tflops_per_gpu(self) -> float:
        return self.model_flops_per_step / self.step_time_s / self.gpus / 1e12

    @property
    def hardware_tflops_per_gpu(self) -> float:
        return self.hardware_flops_per_step / self.step_time_s / self.gpus / 1e12

    @property
    def mfu(self) -> float:
        return self.model_tflops_per_gpu * 1e12 / self.peak_flops_per_gpu

    @property
    def hfu(self) -> float:
        return self.hardware_tflops_per_gpu * 1e12 / self.peak_flops_per_gpu

    @property
    def fits(self) -> bool:
        return all(m.fits for m in self.memory)


@dataclass(frozen=True)
class Evaluation:
    """What a backend returns: the Result, and when it has one, the per-node timeline and the costs
    it replayed (reports draw traces and graphs from them)."""

    result: Result
    timeline: object | None = None
    costs: Costs | None = None


class Backend(Protocol):
    name: str

    def run(self, program: Program) -> Evaluation:
        """Evaluate a Program."""
        ...


def role_timings(program: Program, costs: Costs, finishes: list[float]) -> tuple[RoleTiming, ...]:
    out = []
    for r, role in enumerate(program.roles):
        dur, inline = costs.durations[r], costs.inline[r]
        compute = sum(dur[i] for i, n in enumerate(role.nodes) if type(n) is ComputeNode)
        compute -= sum(x for parts in inline.values() for _, x in parts)
        out.append(RoleTiming(role.name, finishes[r], compute, len(role.nodes)))
    return tuple(out)


def layer_table(program: Program) -> tuple[dict[str, object], ...]:
    """Per-op times and FLOPs of each kind of layer the model has (dense and MoE, full and sliding or linear
    attention), at its first layer, for one microbatch on one GPU."""
    from graphgen.costs.evaluate import Coster
    from graphgen.model.ops import op_work

    coster = Coster(program)
    lg, selective = program.layer_graph, program.scenario.plan.recompute == "selective"
    rows: list[dict[str, object]] = []
    seen: set[int] = set()
    for layer in range(lg.layers):
        block = lg.unit_block(layer)
        if block.id in seen:
            continue
        seen.add(block.id)
        rows += [{"layer": layer, "op": op.name, "kind": op.kind.value,
                  "fwd_ms": coster.op_time(block.id, i, "fwd") * 1e3, "bwd_ms": coster.op_time(block.id, i, "bwd") * 1e3,
                  "fwd_gflop": op.flops / 1e9, "bwd_gflop": op_work(op, "bwd", selective)[0] / 1e9}
                 for i, op in enumerate(block.ops)]
    return tuple(rows)


def assemble_result(program: Program, backend: str, step_time: float, breakdown: Breakdown,
                    critical_role: str, roles: tuple[RoleTiming, ...], notes: tuple[str, ...] = (),
                    cluster: Cluster | None = None) -> Result:
    """Everything in a Result that does not depend on how the DAG was timed. `cluster` is the one the
    program was costed under (default: its scenario's): its name, peak and memory capacity are reported."""
    from graphgen.costs.compute import ComputeModel
    from graphgen.memory import role_memory
    from graphgen.model.flops import model_flops_per_token, recompute_flops_per_token

    if cluster is not None and cluster is not program.scenario.hardware:
        program = replace(program, scenario=replace(program.scenario, hardware=cluster))
    sc = program.scenario
    if sc.plan.recompute_every != sc.plan.checkpoint_every:  # an interval without the full recompute it belongs to
        notes = (*notes, f"parallelism.recompute_every={sc.plan.recompute_every} applies to full recompute only; "
                         f"ignored under recompute={sc.plan.recompute}")
    slowest = straggler_factor(sc)
    if slowest > 1.0:  # every host's timeline stretched to the slowest one's
        breakdown = replace(breakdown, stragglers=(slowest - 1.0) * step_time)
        notes = (*notes, f"step time x {slowest:.3f} for the slowest of {independent_hosts(sc)} independently "
                         f"varying hosts (stragglers.spread {sc.hardware.stragglers.spread:g} of {sc.hardware.name})")
        step_time *= slowest
    p, w, m = sc.plan, sc.workload, sc.model
    tokens = sc.tokens_per_step
    ft = w.finetune
    if w.run_type == "inference":
        from graphgen.inference.view import key_len, query_len
        from graphgen.model.flops import inference_flops_per_token

        model_flops = hw_flops = inference_flops_per_token(m, query_len(w.inference), key_len(w.inference)) * tokens
    else:
        model_flops = model_flops_per_token(m, w.attention_len, ft) * tokens
        frozen = ft.frozen_layers if ft.method == "freeze" else 0
        hw_flops = model_flops + recompute_flops_per_token(m, w.attention_len, p.recompute, w.flash_attention,
                                                           p.recompute_every, frozen) * tokens
    peak = ComputeModel(sc.hardware.device, w.precision).matmul_peak
    table = layer_table(program)
    plan = {"tp": p.tp, "sp": p.sp, "pp": p.pp, "dp": p.dp, "cp": p.cp, "ep": p.ep, "etp": p.etp,
            "schedule": p.schedule, "virtual_stages": p.virtual_stages, "zero_stage": p.zero_stage,
            "recompute": p.recompute, "micro_batch": w.micro_batch, "seq_len": w.seq_len, "precision": w.precision}
    memory = role_memory(program)
    fw = framework_report(sc, memory, step_time, peak) if sc.framework else None
    notes = (*notes, *(sc.framework.notes if sc.framework else ()))
    infer = inference_summary(sc, memory, step_time) if w.run_type == "inference" else None
    return Result(backend=backend, model=m.name, hardware=sc.hardware.name, device=sc.hardware.device.name,
                  plan=plan, gpus=sc.world, step_time_s=step_time, tokens_per_step=tokens,
                  global_batch=sc.global_batch, microbatches=sc.microbatches, model_flops_per_step=model_flops,
                  hardware_flops_per_step=hw_flops, peak_flops_per_gpu=peak, breakdown=breakdown,
                  critical_role=critical_role, roles=roles, memory=memory, layer_table=table,
                  notes=notes, framework=fw, inference=infer)


def framework_report(sc, memory, step_time: float, peak: float) -> dict[str, object]:
    """The step as the scenario's framework would log it: TFLOP/s and MFU in its FLOP convention,
    peak memory as the figure it prints (PyTorch's max allocated, or max reserved = allocated plus
    the caching allocator's slack)."""
    from graphgen.model.flop_conventions import FLOP_CONVENTIONS

    fw, w = sc.framework, sc.workload
    conv = FLOP_CONVENTIONS[fw.flops]
    per_token = conv.flops_per_token(sc.model, w.attention_len, sc.plan.recompute, None, w.finetune)
    per_gpu = per_token * sc.tokens_per_step / step_time / sc.world
    reserved = fw.memory == "reserved"
    mem = max(m.allocated + (m.fragmentation if reserved else 0.0) for m in memory)
    return {"name": fw.name, "version": fw.version, "profile": fw.file, "flop_convention": fw.flops,
            "flop_convention_definition": conv.description, "tflops_per_gpu": per_gpu / 1e12,
            "mfu": per_gpu / peak, "memory_figure": f"max_memory_{fw.memory}",
            "peak_memory_gib": mem / 2**30}


def inference_summary(sc, memory, step_time: float) -> dict[str, object]:
    """The iteration as a serving engineer reads it: its latency per sequence, and how many sequences
    at this context the engine's KV blocks hold (the tightest stage decides)."""
    from graphgen.inference.shape import kv_dtype, weight_dtype
    from graphgen.inference.view import key_len

    spec = sc.workload.inference
    blocks = min(m.kv_blocks for m in memory)
    per_seq = -(-key_len(spec) // spec.block_size)
    return {"phase": spec.phase, "batch": spec.batch, "input_len": spec.input_len,
            "context_len": key_len(spec), "weight_dtype": weight_dtype(sc), "kv_dtype": kv_dtype(sc),
            "iteration_s": step_time, "tokens_per_s_per_sequence": (sc.workload.seq_len / step_time),
            "kv_blocks": blocks, "block_size": spec.block_size,
            "max_sequences_at_context": blocks // per_seq if per_seq else 0}
