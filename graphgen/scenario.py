"""Scenario = model + workload + cluster + plan, checked against each other: the builder's input.

Each impossible plan is refused here with the file, the field and the fix, so the builders below
can assume a consistent plan. The cluster is validated once, when it is parsed; `with_plan` checks
only what a new plan changes, which is what a search needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from graphgen.config import Cluster, ExecutionBackend, ModelConfig, ModelSpec, ParallelPlan, Workload, parse
from graphgen.config.framework import Framework
from graphgen.errors import RankflowError
from graphgen.inference.view import fitted_defaults, inference_view, key_len
from graphgen.model.finetune import FINETUNE_METHODS
from graphgen.parallel.pipeline import split_problem
from graphgen.schedule import SCHEDULES


@dataclass(frozen=True)
class Scenario:
    model: ModelSpec
    workload: Workload
    hardware: Cluster
    plan: ParallelPlan
    microbatches: int
    execution: ExecutionBackend = field(default_factory=ExecutionBackend)
    model_file: str = "<model config>"
    hardware_file: str = "<hardware config>"
    plan_file: str = "<plan>"
    framework: Framework | None = None  # the profile that filled defaults and sets the report's conventions

    @property
    def world(self) -> int:
        return self.plan.world

    @property
    def global_batch(self) -> int:
        return self.workload.micro_batch * self.microbatches * self.plan.dp

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.workload.seq_len

    @property
    def padded_vocab(self) -> int:
        """Megatron pads the vocabulary to a multiple of 128 x tp so each shard is aligned."""
        mult = 128 * self.plan.tp
        return -(-self.model.vocab // mult) * mult

    def with_plan(self, plan: ParallelPlan | None = None, **fields: object) -> Scenario:
        """The same model, workload and cluster under another plan (given whole, or as changed
        fields); only the plan is validated and checked."""
        if plan is None:
            plan = parse(ParallelPlan, {**self.plan.model_dump(), **fields}, self.plan_file)
        sc = make_scenario(ModelConfig(model=self.model, workload=self.workload), self.hardware, plan,
                           self.execution, model_file=self.model_file, hardware_file=self.hardware_file,
                           plan_file=self.plan_file)
        return replace(sc, framework=self.framework)

    def with_workload(self, **fields: object) -> Scenario:
        workload = parse(Workload, {**self.workload.model_dump(), **fields}, self.model_file)
        return replace(self, workload=workload).with_plan(self.plan)


class _Checker:
    def __init__(self, model_file: str, plan_file: str, hardware_file: str) -> None:
        self.model_file, self.plan_file, self.hardware_file = model_file, plan_file, hardware_file

    def plan(self, field: str, msg: str, fix: str) -> RankflowError:
        return RankflowError(msg, file=self.plan_file, field=field, fix=fix)

    def model(self, field: str, msg: str, fix: str) -> RankflowError:
        return RankflowError(msg, file=self.model_file, field=field, fix=fix)


MAX_STEPS = 2_000_000  # schedule steps (passes) over all stages: bounds the work of any answer to seconds


def _check_model(m: ModelSpec, w: Workload, p: ParallelPlan, c: _Checker) -> None:
    if m.max_position is not None and w.seq_len > m.max_position:
        what = "learned position table" if m.position_encoding == "learned" else "context length"
        raise c.model("workload.seq_len", f"seq_len={w.seq_len} exceeds the model's {what} of {m.max_position} "
                      "(model.max_position)", "lower workload.seq_len, or raise model.max_position for a model "
                                               "extended to longer contexts")
    if p.recompute_every > m.layers:
        raise c.plan("parallelism.recompute_every", f"recompute_every={p.recompute_every} exceeds the {m.layers} layers",
                     f"choose a value from 1 to {m.layers}")
    if m.attention_pattern and "gated_delta" in m.attention_pattern:
        if w.run_type == "inference":
            raise c.model("workload.run_type", "Gated DeltaNet layers are modelled for training only (their "
                          "recurrent state replaces a KV cache the serving model does not size)",
                          "simulate training, or a model without gated_delta layers")
        if p.cp > 1:
            raise c.plan("parallelism.cp", "context parallelism over Gated DeltaNet layers (their state passed "
                         "between sequence chunks) is not modelled", "use cp=1 for this model")


def _check_routing(m: ModelSpec, w: Workload, c: _Checker) -> None:
    if w.expert_load is None:
        return
    if m.moe is None:
        raise c.model("workload.expert_load", "the model has no experts to spread tokens over",
                      "remove workload.expert_load, or give the model a moe section")
    if len(w.expert_load) != m.moe.experts:
        raise c.model("workload.expert_load", f"{len(w.expert_load)} fractions for {m.moe.experts} experts",
                      f"give one fraction per expert ({m.moe.experts} values)")
    if sum(w.expert_load) <= 0:
        raise c.model("workload.expert_load", "every fraction is 0: no expert receives a token",
                      "give each expert's share of the routed tokens (they are normalised to their sum)")


def schedule_steps(p: ParallelPlan, microbatches: int) -> int:
    """Steps (passes) the schedule runs over all stages in one training step."""
    return min(3, len(SCHEDULES[p.schedule].phases)) * p.pp * p.virtual_stages * microbatches


def check_work(sc: Scenario) -> None:
    """Refuse a step too long to replay within seconds. Only what replays the schedule (building the
    program) asks: the memory answer walks a bounded part of it (graphgen.memory)."""
    steps = schedule_steps(sc.plan, sc.microbatches)
    if steps > MAX_STEPS:
        raise RankflowError(f"the step runs {steps:,} forward and backward passes over its {sc.plan.pp} stages, more "
                            f"than the {MAX_STEPS:,} this simulator replays", file=sc.model_file,
                            field="workload.global_batch",
                            fix="lower global_batch or raise micro_batch (the step time scales linearly with "
                                "microbatches once the pipeline is full); --memory-only answers at any batch")


def _check_experts(m: ModelSpec, p: ParallelPlan, c: _Checker) -> None:
    if m.moe is None:
        for axis in ("ep", "etp"):
            if getattr(p, axis) > 1:
                raise c.plan(f"parallelism.{axis}", f"{axis}={getattr(p, axis)} needs a mixture-of-experts model",
                             f"set parallelism.{axis}=1 or give the model a moe section")
        return
    moe = m.moe
    if moe.experts % p.ep:
        raise c.plan("parallelism.ep", f"ep={p.ep} does not divide the {moe.experts} experts",
                     "choose ep that divides the number of experts")
    if moe.expert_ffn_hidden % p.etp:
        raise c.plan("parallelism.etp", f"etp={p.etp} does not divide the expert width {moe.expert_ffn_hidden}",
                     "choose etp that divides model.moe.expert_ffn_hidden")
    ranks = p.tp * p.cp * p.dp
    if ranks % (p.ep * p.etp):
        raise c.plan("parallelism.ep", f"ep x etp = {p.ep * p.etp} does not divide the tp x cp x dp = {ranks} ranks "
                     "it is carved from", "choose ep and etp whose product divides tp x cp x dp")
    if p.tp > 1 and not p.sp:
        raise c.plan("parallelism.sp", "mixture-of-experts layers with tensor parallelism need sequence parallelism "
                     "(Megatron-Core asserts it: the dispatcher routes each rank's own tokens)", "set parallelism.sp=true")


def _check_context(w: Workload, p: ParallelPlan, c: _Checker) -> None:
    if p.cp > 1 and w.packed_sample_len is not None:
        raise c.plan("parallelism.cp", "context parallelism over packed samples (THD) is not modelled: its chunks "
                     "would split samples", "drop workload.packed_sample_len or use cp=1")
    if p.cp > 1 and w.run_type == "inference" and w.inference.phase == "decode":
        # A decode step's seq_len is the one new token: "divide workload.seq_len" named a field the user never set.
        raise c.plan("parallelism.cp", "a decode step has one new token per sequence, which context parallelism "
                     "cannot split", "set parallelism.cp=1 for decode (tp, pp or ep spread a decode step)")
    if p.cp > 1 and w.seq_len % (2 * p.cp):
        what = "workload.inference.input_len" if w.run_type == "inference" else "workload.seq_len"
        raise c.plan("parallelism.cp", f"context parallelism splits seq_len={w.seq_len} into 2 x cp = {2 * p.cp} "
                     "chunks (for causal load balance)", f"choose cp so that 2 x cp divides {what}")
    if p.cp > 1 and p.sp and p.tp > 1 and (w.seq_len // p.cp) % p.tp:
        raise c.plan("parallelism.sp", f"sequence parallelism needs each cp shard ({w.seq_len // p.cp} tokens) "
                     f"divisible by tp={p.tp}", "change workload.seq_len, parallelism.cp or parallelism.tp")


def _check_a2a(m: ModelSpec, p: ParallelPlan, c: _Checker) -> None:
    """All-to-all context parallelism hands each rank whole heads: the query and key/value heads of a
    tensor-parallel rank must divide by cp (latent attention: every head has its own keys and values)."""
    if p.cp == 1 or p.cp_algorithm != "a2a":
        return
    kv = m.heads if m.mla is not None else m.n_kv_heads
    for what, n in (("heads", m.heads), ("kv_heads", kv)):
        if (n // p.tp) % p.cp:
            raise c.plan("parallelism.cp_algorithm", f"a2a context parallelism splits the {n // p.tp} {what} of a "
                         f"tp rank over cp={p.cp}", "use the ring or allgather algorithm, or a cp that divides them")


def _check_axes(m: ModelSpec, w: Workload, p: ParallelPlan, c: _Checker) -> None:
    if p.tp_overlap and p.tp > 1 and not p.sp:  # Megatron-LM arguments.py @d98e8a64dd: "Tensor parallel
        # communication/GEMM overlap can happen only when sequence parallelism is enabled"
        raise c.plan("parallelism.tp_overlap", "TP communication/GEMM overlap splits the sequence-parallel "
                     "all-gathers and reduce-scatters, and this plan has no sequence parallelism",
                     "set parallelism.sp=true, or tp_overlap=false")
    _check_experts(m, p, c)
    _check_context(w, p, c)
    _check_a2a(m, p, c)
    dense_mlp = any(not m.is_moe(layer) for layer in range(m.layers))
    widths = [("heads", m.heads), ("kv_heads", m.n_kv_heads)]
    if m.linear_attention is not None:
        widths += [("linear_attention.key_heads", m.linear_attention.key_heads),
                   ("linear_attention.value_heads", m.linear_attention.value_heads)]
    widths += [("ffn_hidden", m.ffn_hidden)] if dense_mlp else []
    widths += [("moe.shared_ffn_hidden", m.moe.shared_width)] if m.moe and m.moe.shared_width else []
    for what, size in widths:
        if size % p.tp:
            label = {"heads": "the number of attention heads", "kv_heads": "the number of key/value heads",
                     "ffn_hidden": "the MLP width", "moe.shared_ffn_hidden": "the shared experts' width",
                     "linear_attention.key_heads": "the linear-attention key heads",
                     "linear_attention.value_heads": "the linear-attention value heads"}[what]
            raise c.plan("parallelism.tp", f"tp={p.tp} does not divide {what}={size}", f"choose tp that divides {label}")
    # an inference iteration's tokens (batch x query length) split over tp need not divide evenly: the
    # analytical costs take the mean share
    if p.sp and p.tp > 1 and w.seq_len % p.tp and w.run_type != "inference":
        raise c.plan("parallelism.sp", f"sequence parallelism needs seq_len={w.seq_len} divisible by tp={p.tp}",
                     "change workload.seq_len or parallelism.tp")


def _check_pipeline(m: ModelSpec, p: ParallelPlan, c: _Checker) -> None:
    sched = SCHEDULES[p.schedule]
    if sched.fixed_virtual and p.virtual_stages != sched.fixed_virtual:
        raise c.plan("parallelism.virtual_stages", f"the {p.schedule} schedule holds exactly {sched.fixed_virtual} "
                     f"chunks per stage (got virtual_stages={p.virtual_stages})",
                     f"set parallelism.virtual_stages={sched.fixed_virtual}")
    if not sched.virtual and p.virtual_stages != 1:
        raise c.plan("parallelism.virtual_stages", f"the {p.schedule} schedule holds one chunk per stage",
                     "set parallelism.schedule=interleaved (or zb-v, dualpipev with 2) or parallelism.virtual_stages=1")
    chunks = p.pp * p.virtual_stages
    if m.layers < chunks and p.stage_split != "balanced":
        raise c.plan("parallelism.pp", f"{m.layers} layers cannot fill pp x virtual_stages = {chunks} chunks",
                     "lower parallelism.pp or parallelism.virtual_stages")
    if p.stage_split == "balanced" and p.virtual_stages > 1:
        raise c.plan("parallelism.stage_split", "the balanced split is defined for one chunk per stage",
                     "use stage_split=even with the interleaved schedule")
    problem = split_problem(m.layers, p, not (sched.fixed_virtual or sched.copies > 1)) or \
        sched.check(p.pp, p.virtual_stages, None, m.layers)  # microbatches are checked once known
    if problem:
        raise c.plan(*problem)


def _microbatches(w: Workload, p: ParallelPlan, c: _Checker) -> int:
    if w.global_batch is not None:
        per_step = w.micro_batch * p.dp
        if w.global_batch % per_step:
            raise c.model("workload.global_batch",
                          f"global_batch={w.global_batch} is not a multiple of micro_batch x dp = {per_step}",
                          "make global_batch a multiple of micro_batch x dp")
        mbs = w.global_batch // per_step
        if p.microbatches is not None and p.microbatches != mbs:
            raise c.plan("parallelism.microbatches",
                         f"microbatches={p.microbatches} contradicts global_batch (which gives {mbs})",
                         "set only one of workload.global_batch and parallelism.microbatches")
        return mbs
    if p.microbatches is not None:
        return p.microbatches
    raise c.model("workload.global_batch", "the step size is not given",
                  "set workload.global_batch (or parallelism.microbatches)")


def _check_finetune(m: ModelSpec, w: Workload, p: ParallelPlan, c: _Checker) -> None:
    ft = w.finetune
    method = FINETUNE_METHODS[ft.method]
    if method.adapters:
        if ft.lora_rank > m.hidden:
            raise c.model("workload.finetune.lora_rank", f"rank {ft.lora_rank} exceeds hidden size {m.hidden}",
                          "choose a rank below the hidden size (typically 8-256)")
        if not ft.target_modules:
            raise c.model("workload.finetune.target_modules", "no adapter targets: nothing would train",
                          "list at least one of qkv_proj, out_proj, fc1, fc2")
    if method.nf4_base and p.zero_stage == 3:
        raise c.plan("parallelism.zero_stage", "QLoRA's 4-bit base weights cannot be sharded by ZeRO-3 "
                     "(bitsandbytes + DeepSpeed ZeRO-3 does not support it)", "use zero_stage 0-2 for QLoRA")
    if method.frozen_prefix and ft.frozen_layers >= m.layers:
        raise c.model("workload.finetune.frozen_layers", f"freezing {ft.frozen_layers} of {m.layers} layers leaves "
                      "no block to train", "freeze fewer layers")
    if not method.frozen_prefix and ft.frozen_layers:
        raise c.model("workload.finetune.frozen_layers", "frozen_layers applies to the freeze method only",
                      "set workload.finetune.method=freeze or frozen_layers=0")


def _check_cluster(w: Workload, hw: Cluster, p: ParallelPlan, c: _Checker) -> None:
    kernels = hw.device.efficiency.attention_kernels
    if w.attention_kernel is not None and w.attention_kernel not in kernels:
        known = ", ".join(sorted(kernels)) or "none listed"
        raise c.model("workload.attention_kernel", f"{hw.device.name} has no efficiency curve for attention kernel "
                      f"'{w.attention_kernel}'", f"use one of: {known}, or unset it")
    gpn = hw.node.gpus_per_node
    if gpn % p.tp and p.tp % gpn:
        raise c.plan("parallelism.tp", f"tp={p.tp} groups would straddle {gpn}-GPU nodes unevenly",
                     "choose tp that divides node.gpus_per_node (or a multiple of it)")
    unit = hw.node.allocation_gpus or gpn
    if p.world > unit and p.world % unit:
        raise c.plan("parallelism.dp", f"world size {p.world} is not a whole number of {unit}-GPU "
                     f"{'nodes' if unit == gpn else 'allocation units'}",
                     "make tp x cp x dp x pp a multiple of node.allocation_gpus (default gpus_per_node)")
    if w.precision not in hw.device.peak_tflops and not (w.precision == "fp32" and "tf32" in hw.device.peak_tflops):
        raise RankflowError(f"{hw.device.name} has no peak for precision {w.precision}", file=c.hardware_file,
                            field="device.peak_tflops", fix="choose a precision the device supports (workload.precision) "
                                                            "or add its peak")


def _check_inference(mc: ModelConfig, hw: Cluster, c: _Checker) -> None:
    spec, m = mc.workload.inference, mc.model
    if m.max_position is not None and key_len(spec) > m.max_position:
        raise c.model("workload.inference", f"the iteration attends over {key_len(spec)} tokens, more than the model's "
                      f"{m.max_position} (model.max_position)", "shorten input_len or context_len")
    dtype = spec.weight_dtype or mc.workload.precision
    if dtype == "fp4" and "fp4" not in hw.device.peak_tflops:
        raise c.model("workload.inference.weight_dtype", f"{hw.device.name} has no fp4 peak (fp4 weights need "
                      "Blackwell-class tensor cores)", "use fp8 or int4 weights, or a device with an fp4 peak")


def make_scenario(mc: ModelConfig, hw: Cluster, plan: ParallelPlan, execution: ExecutionBackend | None = None, *,
                  model_file: str = "<model config>", hardware_file: str = "<hardware config>",
                  plan_file: str | None = None) -> Scenario:
    """Check a model config, a cluster and a plan against each other and make the Scenario."""
    c = _Checker(model_file, plan_file or hardware_file, hardware_file)
    if mc.workload.run_type == "inference":
        mc = fitted_defaults(mc)
        _check_inference(mc, hw, c)
        mc, plan = inference_view(mc, plan)
    m, w, p = mc.model, mc.workload, plan
    _check_model(m, w, p, c)
    _check_routing(m, w, c)
    _check_axes(m, w, p, c)
    _check_pipeline(m, p, c)
    mbs = _microbatches(w, p, c)
    problem = SCHEDULES[p.schedule].check(p.pp, p.virtual_stages, mbs, m.layers)
    if problem:
        raise c.plan(*problem)
    _check_finetune(m, w, p, c)
    _check_cluster(w, hw, p, c)
    return Scenario(m, w, hw, p, mbs, execution or ExecutionBackend(), model_file, hardware_file,
                    plan_file or hardware_file)
