"""The parallelism plan and the execution backend's options: what a search varies, kept apart from
the cluster so that a new plan never re-reads or re-validates the hardware."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from graphgen.config.base import Bool, NonNegFloat, NonNegInt, PosFloat, PosInt, Rate, Str, Strict
from graphgen.schedule import SCHEDULES


class ParallelPlan(Strict):
    """Parallelism plan, named as Megatron and RAPID-LLM users expect."""

    tp: PosInt = Field(1, description="Tensor-parallel size.")
    sp: Bool = Field(False, description="Megatron sequence parallelism (needs tp > 1 to matter).")
    sp_regather: Bool = Field(
        True, description="Under sequence parallelism a column-parallel linear keeps its input's sequence shard for "
                          "the weight gradient and all-gathers it again before its backward (Megatron-Core, Transformer Engine, "
                          "which run it beside the input-gradient GEMM; timed in line, as the backward's other "
                          "tensor-parallel collectives). false: it keeps the gathered input, tp times the "
                          "bytes, and gathers once (PyTorch DTensor sequence parallelism, torchtitan).")
    pp: PosInt = Field(1, description="Pipeline stages.")
    dp: PosInt = Field(1, description="Data-parallel replicas.")
    cp: PosInt = Field(1, description="Context-parallel size: each sequence is split over cp ranks (two chunks each, "
                                      "for causal load balance).")
    ep: PosInt = Field(1, description="Expert-parallel size: MoE layers' experts are split over ep ranks, carved from "
                                      "the tp x cp x dp ranks as in Megatron-Core (ep is not a factor of the world "
                                      "size).")
    etp: PosInt = Field(1, description="Expert tensor-parallel size: each expert's weights split over etp ranks.")
    moe_dispatcher: Literal["alltoall", "allgather", "deepep"] = Field(
        "alltoall", description="Token dispatcher: all-to-all over ep (Megatron alltoall), all-gather and "
                                "reduce-scatter (Megatron allgather), or DeepEP-style all-to-all at the link's "
                                "measured DeepEP rate (a link's collective_fits.deepep_all_to_all; without one, the link's "
                                "all-to-all) that sends a token once to each other node holding one of its experts.")
    moe_permute_fusion: Bool = Field(
        False, description="Tokens are permuted by Transformer Engine's fused kernels (Megatron --moe-permute-fusion), "
                           "at the device's measured efficiency.moe_permute where it lists one; false: PyTorch's "
                           "gather and scatter, priced at the memory-bound rate.")
    moe_overlap: Bool = Field(
        False, description="Dispatch and combine overlap other compute (Megatron's overlap of expert-parallel "
                           "communication across microbatches, DeepSeek's DualPipe); false: they are exposed.")
    tp_overlap: Bool = Field(
        False, description="Tensor-parallel collectives overlap the GEMM beside them, chunk by chunk: the all-gather "
                           "the GEMM after it (column-parallel) and the reduce-scatter or all-reduce the GEMM before "
                           "it (row-parallel) that produced its input (Transformer Engine userbuffers, "
                           "--tp-comm-overlap; torchtitan's async TP); false: they run in line.")
    cp_algorithm: Literal["ring", "allgather", "a2a"] = Field(
        "ring", description="Context-parallel attention: ring (KV chunks passed peer to peer, overlapped with "
                            "attention compute; Megatron's p2p), allgather (KV gathered before attention) or a2a "
                            "(DeepSpeed-Ulysses, Megatron's a2a: all-to-alls trade the sequence shard for a head "
                            "shard around the kernel, which then sees the whole sequence).")
    schedule: Str = Field("1f1b", description="Pipeline schedule, a name in graphgen.schedule's registry: gpipe, "
                                              "1f1b, interleaved, zb-h1, zb-v, dualpipe, dualpipev.")
    virtual_stages: PosInt = Field(1, description="Model chunks per pipeline rank (interleaved: any; zb-v and "
                                                  "dualpipev: exactly 2, the two arms of the V).")
    stage_split: Literal["even", "balanced"] = Field(
        "even", description="Layers per pipeline stage: even (Megatron), or balanced by compute with the LM "
                            "head counted (nanotron), which gives the first stages more layers.")
    first_stage_layers: NonNegInt | None = Field(
        None, description="Transformer layers on the first pipeline stage, the rest spread evenly over the "
                          "others (Megatron --decoder-first-pipeline-num-layers); with virtual stages, split "
                          "evenly over that stage's chunks.")
    last_stage_layers: NonNegInt | None = Field(
        None, description="Transformer layers on the last pipeline stage (Megatron "
                          "--decoder-last-pipeline-num-layers).")
    split_accounts_embedding: Bool = Field(
        False, description="The input embedding counts as one layer when layers are divided over the pipeline "
                           "chunks, so the first chunk holds one layer fewer (Megatron "
                           "--account-for-embedding-in-pipeline-split).")
    split_accounts_loss: Bool = Field(
        False, description="The LM head and loss count as one layer, so the last chunk holds one layer fewer "
                           "(Megatron --account-for-loss-in-pipeline-split).")
    microbatches: PosInt | None = Field(
        None, description="Microbatches per step per replica; derived from global_batch when unset.")
    zero_stage: Literal[0, 1, 2, 3] = Field(
        0, description="0 DDP; 1 distributed optimizer; 2 + sharded grads; 3 + sharded params (FSDP).")
    recompute: Literal["none", "selective", "full"] = Field("none", description="Activation recompute.")
    recompute_modules: list[Literal["core_attn", "layernorm", "mla_up_proj", "mlp", "moe_act", "shared_experts",
                                    "moe"]] = Field(
        default_factory=lambda: ["core_attn"], max_length=7,
        description="Under selective recompute, the modules whose forward is rerun in the backward "
                    "(Megatron-Core --recompute-modules): core_attn (default), layernorm, mla_up_proj, mlp, "
                    "moe_act, shared_experts, moe (the whole MoE MLP; its all-to-alls are not rerun here).")
    recompute_every: PosInt = Field(
        1, description="Under full recompute, checkpoint every k-th block only (torchtitan's layer-level "
                       "selective AC with ac_freq=2 is full recompute with k=2); inert otherwise, with a note.")
    bucket_mb: Rate = Field(40.0, description="Gradient-reduction bucket size, MiB of gradients.")
    grad_reduce_dtype: Literal["fp32", "bf16"] = Field(
        "fp32", description="Dtype of gradient reduction (Megatron keeps fp32 main grads for bf16).")
    overlap_grad_reduce: Bool = Field(True, description="Overlap DP gradient reduction with backward.")
    grad_buffer_passes: NonNegFloat = Field(
        0.0, le=16, description="HBM passes over the rank's whole gradient buffer every step outside the optimizer "
                                "kernel (Megatron-Core zeroes it and checks it for NaN: 2).")
    main_grad_copy: Bool = Field(
        False, description="Gradients a layer does not accumulate into the main-grad buffer itself (the embedding "
                           "table's dense gradient) are added into it by a hook after every backward "
                           "(Megatron-Core DDP, param.main_grad.add_(param.grad)).")
    grad_prescale: Bool = Field(
        False, description="Gradients are scaled by 1/dp in place before their reduction, one more read and "
                           "write of the buffer when dp x cp > 1 (Megatron-Core without average_in_collective).")
    shard_master_weights: Bool = Field(
        True, description="ZeRO-1 and above shard the fp32 master weights with the optimizer states "
                          "(Megatron, DeepSpeed); false keeps a full master copy on every rank (nanotron).")
    param_dtype_grads: Bool = Field(
        False, description="Gradients are also held in the parameter dtype beside the fp32 accumulation "
                           "buffer (PyTorch DDP buckets without gradient_as_bucket_view, as nanotron's "
                           "ZeRO-0 path keeps them).")
    tp_gather_buffers: NonNegInt = Field(
        0, description="Persistent full-sequence activation buffers kept for sequence-parallel all-gathers "
                       "(nanotron keeps two MemoryBuffer singletons, 'allgather' and 'allgather2'; "
                       "Megatron allocates them per use).")
    param_gather_copies: NonNegFloat = Field(
        0.0, description="Temporary full parameter copies the post-step ZeRO-1/2 all-gather allocates: "
                         "Megatron gathers in place (0); nanotron's coalesced all-gather copies into a new "
                         "output buffer and NCCL flattens it again (2).")
    overlap_param_gather: Bool = Field(True, description="Overlap ZeRO/FSDP parameter all-gathers.")
    zero3_regather_after_recompute: Bool = Field(
        False, description="ZeRO-3 gathers a recomputed layer's parameters a second time for its backward "
                           "(DeepSpeed frees them after every module forward, the recompute's too: three "
                           "gathers per layer and microbatch); FSDP keeps them from the recompute to the "
                           "backward (two).")
    zero3_grad_all_reduce: Bool = Field(
        False, description="ZeRO-3 reduces gradients with an all-reduce and keeps its own shard (DeepSpeed 0.3 "
                           "did, DeepSpeed #1173) instead of a reduce-scatter: twice the traffic.")
    zero3_gather_gbs: Rate | None = Field(
        None, description="Ceiling on the bus bandwidth (GB/s per GPU) of ZeRO-3/FSDP parameter all-gathers, "
                          "for implementations that the host, not the network, limits (DeepSpeed 0.3: 18.6 "
                          "GB/s, see framework_configs/deepspeed.yaml). Unset: the network model alone. The "
                          "ASTRA-sim backend times these collectives on its own network model, without it.")

    _known_schedule = field_validator("schedule")(lambda cls, name: SCHEDULES.check(name))

    @property
    def world(self) -> int:
        """GPUs: tp x cp x dp x pp (expert parallelism re-divides the same ranks)."""
        return self.tp * self.cp * self.dp * self.pp

    @property
    def checkpoint_every(self) -> int:
        """Every k-th block checkpointed: recompute_every under full recompute, which it belongs to; 1
        otherwise (a leftover interval is inert, and the result says so)."""
        return self.recompute_every if self.recompute == "full" else 1

    @property
    def edp(self) -> int:
        """Expert data-parallel size: the ranks of tp x cp x dp that hold the same experts (at least 1)."""
        return max(1, (self.tp * self.cp * self.dp) // (self.etp * self.ep))

    def axis_sizes(self) -> dict[str, int]:
        """Every mesh axis (graphgen.parallel.layout.AXES) with its size."""
        return {"tp": self.tp, "cp": self.cp, "ep": self.ep, "etp": self.etp, "dp": self.dp, "edp": self.edp,
                "pp": self.pp}


class AstraOptions(Strict):
    mode: Literal["full", "scalable"] = Field(
        "full", description="full: every rank and node replayed by ASTRA-sim; scalable: every distinct "
                            "communication op timed by ASTRA-sim at full scale, the DAG replayed analytically.")
    network: Literal["aware", "unaware"] = Field(
        "aware", description="Congestion-aware build (one-dimensional networks only; multi-dimensional "
                             "ones fall back to unaware, with a note) or congestion-unaware.")
    timeout_s: PosFloat = Field(600.0, le=86400.0, description="Wall-clock limit for ASTRA-sim, seconds.")
    binary: Str | None = Field(None, description="ASTRA-sim binary or bin directory (else $ASTRA_SIM_BIN).")


class ExecutionBackend(Strict):
    model: Str = Field("analytical", description="Evaluator of the DAG, a name in backends' registry: the "
                                                 "built-in analytical replay, or astra (ASTRA-sim).")
    astra: AstraOptions = AstraOptions()
