"""Megatron-LM launch arguments for a scenario: a torchrun line for pretrain_gpt.py.

Names are those of megatron/training/arguments.py at Megatron-Core core_v0.14.0 (commit
23e00ed0963c35382dfe8a5a94fb3cda4d21e133), the last release whose parser spells every flag out
(later ones generate most flags from the config dataclasses). tests/data/export_names/megatron.txt
lists them.
"""

from __future__ import annotations

import shlex

from graphgen.config import ModelSpec
from graphgen.scenario import Scenario
from rankflow.export_base import grad_bucket_elements, layers_per_chunk, nodes, unsupported

VERSION = "Megatron-LM core_v0.14.0"
Args = list[tuple[str, object]]  # (flag, value); value True is a bare switch

_POSITION = {"rope": "rope", "learned": "learned_absolute", "none": "none"}
_DISPATCHER = {"alltoall": "alltoall", "allgather": "allgather", "deepep": "flex"}
_CP_COMM = {"ring": "p2p", "allgather": "allgather", "a2a": "a2a"}
_OPTIMIZER = {"adamw": "adam", "sgd": "sgd"}  # Megatron's adam is decoupled-weight-decay AdamW
# Megatron-FSDP's sharding strategies are the ZeRO stages by another name
_ZERO = {2: "optim_grads", 3: "optim_grads_params"}


def _refuse(sc: Scenario, field: str, msg: str, fix: str):
    return unsupported(sc, "Megatron-LM", field, msg, fix)


def _check_model(sc: Scenario) -> None:
    m = sc.model
    if m.position_encoding == "alibi":
        raise _refuse(sc, "model.position_encoding", "--position-embedding-type takes learned_absolute, rope, "
                      "mrope, relative or none, not ALiBi", "use rope or learned, or export to another framework")
    if m.activation == "relu":
        raise _refuse(sc, "model.activation", "the GPT model has GeLU, SwiGLU or squared ReLU, not ReLU",
                      "use gelu or swiglu")
    if m.parallel_residual:
        raise _refuse(sc, "model.parallel_residual", "the GPT layer spec has no parallel attention/MLP residual",
                      "set model.parallel_residual=false")
    if m.sliding_window is not None:
        raise _refuse(sc, "model.sliding_window", "pretrain_gpt.py's arguments have no sliding-window attention",
                      "unset model.sliding_window")
    if m.attention_pattern and "gated_delta" in m.attention_pattern or m.attention_output_gate:
        raise _refuse(sc, "model.attention_pattern", "this export writes softmax-attention GPT layers only; Gated "
                      "DeltaNet layers and gated attention take flags it does not emit",
                      "export a model without gated_delta layers or attention_output_gate")


def _model(sc: Scenario) -> Args:
    # --vocab-size is "before EOD": the NullTokenizer adds the EOD token, giving model.vocab in all
    m = sc.model
    args: Args = [("--num-layers", m.layers), ("--hidden-size", m.hidden), ("--num-attention-heads", m.heads),
                  ("--ffn-hidden-size", m.ffn_hidden), ("--seq-length", sc.workload.seq_len),
                  ("--max-position-embeddings", m.max_position or sc.workload.seq_len),
                  ("--tokenizer-type", "NullTokenizer"), ("--vocab-size", m.vocab - 1),
                  ("--position-embedding-type", _POSITION[m.position_encoding]),
                  ("--normalization", "RMSNorm" if m.norm == "rmsnorm" else "LayerNorm"),
                  ("--attention-dropout", m.dropout), ("--hidden-dropout", m.dropout)]
    if m.n_kv_heads != m.heads:
        args += [("--group-query-attention", True), ("--num-query-groups", m.n_kv_heads)]
    if m.head_dim is not None and m.head_dim * m.heads != m.hidden:
        args.append(("--kv-channels", m.head_dim))
    args += [("--swiglu", True)] if m.activation == "swiglu" else []
    args += [("--untie-embeddings-and-output-weights", True)] if not m.tied_embeddings else []
    args += [("--disable-bias-linear", True)] if not m.bias else []
    args += [("--add-qkv-bias", True)] if m.qkv_bias and not m.bias else []
    if m.mla is not None:
        mla = m.mla
        args += [("--multi-latent-attention", True), ("--kv-lora-rank", mla.kv_lora_rank),
                 ("--qk-head-dim", mla.qk_nope_head_dim), ("--qk-pos-emb-head-dim", mla.qk_rope_head_dim),
                 ("--v-head-dim", mla.v_head_dim)]
        args += [("--q-lora-rank", mla.q_lora_rank)] if mla.q_lora_rank else []
    args += [("--mtp-num-layers", m.mtp_layers)] if m.mtp_layers else []
    return args + _moe(sc, m)


def _moe_pattern(m: ModelSpec) -> str:
    """--moe-layer-freq as the list expression Megatron evaluates (1: MoE layer, 0: dense)."""
    flags = [1 if m.is_moe(layer) else 0 for layer in range(m.layers)]
    return "1" if all(flags) else "[" + ",".join(map(str, flags)) + "]"


def _moe(sc: Scenario, m: ModelSpec) -> Args:
    if m.moe is None:
        return []
    moe, p = m.moe, sc.plan
    args: Args = [("--num-experts", moe.experts), ("--moe-router-topk", moe.top_k),
                  ("--moe-ffn-hidden-size", moe.expert_ffn_hidden), ("--moe-layer-freq", _moe_pattern(m)),
                  ("--moe-router-score-function", moe.router), ("--moe-grouped-gemm", True),
                  ("--moe-token-dispatcher-type", _DISPATCHER[p.moe_dispatcher]),
                  ("--expert-model-parallel-size", p.ep), ("--expert-tensor-parallel-size", p.etp)]
    args += [("--moe-enable-deepep", True)] if p.moe_dispatcher == "deepep" else []
    args += [("--moe-shared-expert-intermediate-size", moe.shared_width)] if moe.shared_width else []
    args += [("--moe-expert-capacity-factor", moe.capacity_factor)] if moe.capacity_factor else []
    args += [("--overlap-moe-expert-parallel-comm", True)] if p.moe_overlap else []
    args += [("--moe-permute-fusion", True)] if p.moe_permute_fusion else []
    # Megatron's default coefficient 0.0 skips the load-balancing loss Rankflow prices (moe.aux_loss):
    # give its help text's recommended starting value, or turn balancing off as the model says
    args += [("--moe-aux-loss-coeff", 1e-2)] if moe.aux_loss else [("--moe-router-load-balancing-type", "none")]
    return args


def _pipeline(sc: Scenario) -> Args:
    p = sc.plan
    if p.pp == 1:
        return []
    if p.schedule not in ("1f1b", "interleaved"):
        raise _refuse(sc, "parallelism.schedule", f"Megatron-LM runs 1F1B or interleaved 1F1B, not {p.schedule}",
                      "set parallelism.schedule=1f1b or interleaved")
    if p.stage_split == "balanced":
        raise _refuse(sc, "parallelism.stage_split", "the compute-balanced split has no flag; Megatron splits "
                      "evenly (or by --decoder-first/last-pipeline-num-layers)",
                      "use stage_split=even, with first_stage_layers/last_stage_layers")
    args: Args = [("--num-virtual-stages-per-pipeline-rank", p.virtual_stages)] if p.virtual_stages > 1 else []
    args += [("--decoder-first-pipeline-num-layers", p.first_stage_layers)] if p.first_stage_layers is not None else []
    args += [("--decoder-last-pipeline-num-layers", p.last_stage_layers)] if p.last_stage_layers is not None else []
    args += [("--account-for-embedding-in-pipeline-split", True)] if p.split_accounts_embedding else []
    args += [("--account-for-loss-in-pipeline-split", True)] if p.split_accounts_loss else []
    return args


def _parallel(sc: Scenario) -> Args:
    p = sc.plan
    args: Args = [("--tensor-model-parallel-size", p.tp), ("--pipeline-model-parallel-size", p.pp),
                  ("--context-parallel-size", p.cp)]
    args += [("--sequence-parallel", True)] if p.sp and p.tp > 1 else []
    args += [("--tp-comm-overlap", True)] if p.tp_overlap and p.tp > 1 else []  # TE userbuffers; needs SP
    args += [("--cp-comm-type", _CP_COMM[p.cp_algorithm])] if p.cp > 1 else []
    args += _pipeline(sc)
    if p.zero_stage == 1:
        args.append(("--use-distributed-optimizer", True))
    elif p.zero_stage in _ZERO:
        args += [("--use-megatron-fsdp", True), ("--data-parallel-sharding-strategy", _ZERO[p.zero_stage])]
    args += [("--overlap-grad-reduce", True)] if p.overlap_grad_reduce else []
    args += [("--overlap-param-gather", True)] if p.overlap_param_gather and p.zero_stage >= 1 else []
    args.append(("--ddp-bucket-size", grad_bucket_elements(sc)))
    args += [("--grad-reduce-in-bf16", True)] if p.grad_reduce_dtype == "bf16" else []
    return args


def _recompute(sc: Scenario) -> Args:
    p = sc.plan
    if p.recompute == "selective":
        return [("--recompute-granularity", "selective"), ("--recompute-modules", " ".join(p.recompute_modules))]
    if p.recompute == "none":
        return []
    if p.recompute_every == 1:
        return [("--recompute-granularity", "full"), ("--recompute-method", "uniform"), ("--recompute-num-layers", 1)]
    # every k-th block checkpointed: the block method recomputes the same count of layers per chunk
    chunk = layers_per_chunk(sc)
    uneven = p.first_stage_layers is not None or p.last_stage_layers is not None or \
        p.split_accounts_embedding or p.split_accounts_loss
    if uneven or chunk % p.recompute_every:
        raise _refuse(sc, "parallelism.recompute_every", "Megatron recomputes the first N layers of each chunk "
                      f"(--recompute-method block), which matches every {p.recompute_every}-th block only when it "
                      "divides the layers of every (evenly split) chunk",
                      "choose recompute_every dividing the layers per chunk, with an even split")
    return [("--recompute-granularity", "full"), ("--recompute-method", "block"),
            ("--recompute-num-layers", chunk // p.recompute_every)]


def _training(sc: Scenario) -> Args:
    w = sc.workload
    if w.optimizer not in _OPTIMIZER:
        raise _refuse(sc, "workload.optimizer", f"--optimizer takes adam or sgd, not {w.optimizer}",
                      "set workload.optimizer=adamw or sgd")
    if w.optimizer_impl != "fused":
        raise _refuse(sc, "workload.optimizer_impl", f"Megatron-LM's Adam and SGD are fused kernels (apex or "
                      f"Transformer Engine), not {w.optimizer_impl}", "set workload.optimizer_impl=fused")
    if w.finetune.method != "full":
        raise _refuse(sc, "workload.finetune.method", f"pretrain_gpt.py trains every weight; {w.finetune.method} "
                      "has no argument", "set workload.finetune.method=full, or export to llamafactory")
    args: Args = [("--micro-batch-size", w.micro_batch), ("--global-batch-size", sc.global_batch),
                  ("--optimizer", _OPTIMIZER[w.optimizer])]
    precision = {"bf16": [("--bf16", True)], "fp16": [("--fp16", True)],
                 "fp8": [("--bf16", True), ("--fp8-format", "hybrid")]}
    args += precision.get(w.precision, [])
    args.append(("--attention-backend", "flash" if w.flash_attention else "unfused"))
    return args + _recompute(sc)


def megatron_args(sc: Scenario) -> Args:
    """The ordered arguments; every refusal is raised before any text is made."""
    _check_model(sc)
    return _model(sc) + _parallel(sc) + _training(sc)


def _render(flag: str, value: object) -> str:
    if value is True:
        return flag
    if flag == "--recompute-modules":  # nargs='*': one word per module
        return f"{flag} " + " ".join(shlex.quote(v) for v in str(value).split())
    return f"{flag} {shlex.quote(str(value))}"


def megatron(sc: Scenario) -> tuple[str, str]:
    args = megatron_args(sc)
    per_node, n_nodes = nodes(sc)
    lines = ["#!/bin/bash",
             f"# {VERSION} arguments for {sc.model.name} on {sc.world} GPUs, written by `rankflow export`.",
             "# Add your data, tokenizer, checkpoint and learning-rate arguments (or pass them after the script).",
             "# Set MASTER_ADDR, MASTER_PORT and NODE_RANK on each node for a multi-node run.",
             "set -euo pipefail",
             f"torchrun --nproc-per-node {per_node} --nnodes {n_nodes} --node-rank \"${{NODE_RANK:-0}}\" \\",
             "    --master-addr \"${MASTER_ADDR:-localhost}\" --master-port \"${MASTER_PORT:-6000}\" \\",
             "    pretrain_gpt.py \\"]
    lines += [f"    {_render(flag, value)} \\" for flag, value in args]
    lines.append('    "$@"')
    return "megatron_args.sh", "\n".join(lines) + "\n"
