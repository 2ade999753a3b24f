"""A model config and a hardware config checked against each other: the input of the builder.

Each impossible plan is refused here with the field and the fix, so the builder below can
assume a consistent plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphgen.config import HardwareConfig, ModelConfig, ModelSpec, ParallelPlan, Workload
from graphgen.errors import RankflowError


@dataclass(frozen=True)
class Scenario:
    model: ModelSpec
    workload: Workload
    hardware: HardwareConfig
    microbatches: int
    model_file: str = "<model config>"
    hardware_file: str = "<hardware config>"

    @property
    def plan(self) -> ParallelPlan:
        return self.hardware.parallelism

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


def make_scenario(mc: ModelConfig, hw: HardwareConfig, model_file: str = "<model config>",
                  hardware_file: str = "<hardware config>") -> Scenario:
    m, w, p = mc.model, mc.workload, hw.parallelism

    def bad(field: str, msg: str, fix: str, file: str = hardware_file) -> RankflowError:
        return RankflowError(msg, file=file, field=field, fix=fix)

    if p.cp != 1:
        raise bad("parallelism.cp", "context parallelism is not supported by this version",
                  "set parallelism.cp=1")
    if p.ep != 1:
        raise bad("parallelism.ep", "expert parallelism needs an MoE model, not supported by this version",
                  "set parallelism.ep=1")
    if m.heads % p.tp:
        raise bad("parallelism.tp", f"tp={p.tp} does not divide heads={m.heads}",
                  "choose tp that divides the number of attention heads")
    if m.n_kv_heads % p.tp:
        raise bad("parallelism.tp", f"tp={p.tp} does not divide kv_heads={m.n_kv_heads}",
                  "choose tp that divides the number of key/value heads")
    if m.ffn_hidden % p.tp:
        raise bad("parallelism.tp", f"tp={p.tp} does not divide ffn_hidden={m.ffn_hidden}",
                  "choose tp that divides the MLP width")
    if p.sp and p.tp > 1 and w.seq_len % p.tp:
        raise bad("parallelism.sp", f"sequence parallelism needs seq_len={w.seq_len} divisible by tp={p.tp}",
                  "change workload.seq_len or parallelism.tp")
    if p.schedule != "interleaved" and p.virtual_stages != 1:
        raise bad("parallelism.virtual_stages", "virtual stages need the interleaved schedule",
                  "set parallelism.schedule=interleaved or parallelism.virtual_stages=1")
    chunks = p.pp * p.virtual_stages
    if m.layers < chunks and p.stage_split != "balanced":
        raise bad("parallelism.pp", f"{m.layers} layers cannot fill pp x virtual_stages = {chunks} chunks",
                  "lower parallelism.pp or parallelism.virtual_stages")
    if p.stage_split == "balanced" and p.virtual_stages > 1:
        raise bad("parallelism.stage_split", "the balanced split is defined for one chunk per stage",
                  "use stage_split=even with the interleaved schedule")
    if p.schedule == "interleaved" and m.layers % chunks:
        raise bad("parallelism.virtual_stages",
                  f"interleaved schedule needs layers={m.layers} divisible by pp x virtual_stages={chunks}",
                  "choose pp and virtual_stages whose product divides the layer count")

    if w.global_batch is not None:
        per_step = w.micro_batch * p.dp
        if w.global_batch % per_step:
            raise bad("workload.global_batch",
                      f"global_batch={w.global_batch} is not a multiple of micro_batch x dp = {per_step}",
                      "make global_batch a multiple of micro_batch x dp", model_file)
        mbs = w.global_batch // per_step
        if p.microbatches is not None and p.microbatches != mbs:
            raise bad("parallelism.microbatches",
                      f"microbatches={p.microbatches} contradicts global_batch (which gives {mbs})",
                      "set only one of workload.global_batch and parallelism.microbatches")
    elif p.microbatches is not None:
        mbs = p.microbatches
    else:
        raise bad("workload.global_batch", "the step size is not given",
                  "set workload.global_batch (or parallelism.microbatches)", model_file)
    if p.schedule == "interleaved" and p.pp > 1 and mbs % p.pp:
        raise bad("parallelism.microbatches",
                  f"interleaved schedule needs microbatches={mbs} to be a multiple of pp={p.pp}",
                  "change workload.global_batch or parallelism.pp")

    ft = w.finetune
    if ft.method in ("lora", "qlora", "dora"):
        if ft.lora_rank > m.hidden:
            raise bad("workload.finetune.lora_rank", f"rank {ft.lora_rank} exceeds hidden size {m.hidden}",
                      "choose a rank below the hidden size (typically 8-256)", model_file)
        if not ft.target_modules:
            raise bad("workload.finetune.target_modules", "no adapter targets: nothing would train",
                      "list at least one of qkv_proj, out_proj, fc1, fc2", model_file)
    if ft.method == "qlora" and p.zero_stage == 3:
        raise bad("parallelism.zero_stage", "QLoRA's 4-bit base weights cannot be sharded by ZeRO-3 "
                  "(bitsandbytes + DeepSpeed ZeRO-3 does not support it)", "use zero_stage 0-2 for QLoRA")
    if ft.method == "freeze" and ft.frozen_layers >= m.layers:
        raise bad("workload.finetune.frozen_layers", f"freezing {ft.frozen_layers} of {m.layers} layers leaves "
                  "no block to train", "freeze fewer layers", model_file)
    if ft.method != "freeze" and ft.frozen_layers:
        raise bad("workload.finetune.frozen_layers", "frozen_layers applies to the freeze method only",
                  "set workload.finetune.method=freeze or frozen_layers=0", model_file)
    kernels = hw.device.efficiency.attention_kernels
    if w.attention_kernel is not None and w.attention_kernel not in kernels:
        known = ", ".join(sorted(kernels)) or "none listed"
        raise bad("workload.attention_kernel", f"{hw.device.name} has no efficiency curve for "
                  f"attention kernel '{w.attention_kernel}'", f"use one of: {known}, or unset it", model_file)
    gpn = hw.node.gpus_per_node
    if gpn % p.tp and p.tp % gpn:
        raise bad("parallelism.tp", f"tp={p.tp} groups would straddle {gpn}-GPU nodes unevenly",
                  "choose tp that divides node.gpus_per_node (or a multiple of it)")
    if p.world > gpn and p.world % gpn:
        raise bad("parallelism.dp", f"world size {p.world} is not a whole number of {gpn}-GPU nodes",
                  "make tp x pp x dp a multiple of node.gpus_per_node")
    if w.precision not in hw.device.peak_tflops and not (
            w.precision == "fp32" and "tf32" in hw.device.peak_tflops):
        raise bad("device.peak_tflops", f"{hw.device.name} has no peak for precision {w.precision}",
                  "choose a precision the device supports or add its peak")
    return Scenario(m, w, hw, mbs, model_file, hardware_file)
