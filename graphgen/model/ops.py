"""The op record of the LayerGraph: one kernel (or fused kernel group) of one rank's forward pass."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from graphgen.parallel.layout import REPLICATE, Placement


class OpKind(str, Enum):
    MATMUL = "matmul"
    ATTENTION = "attention"      # fused (flash) attention core
    ELEMENTWISE = "elementwise"  # memory-bound: activation, residual add, dropout, rope, softmax
    NORM = "norm"
    EMBEDDING = "embedding"
    LOSS = "loss"


@dataclass(frozen=True, slots=True)
class Op:
    """One forward op on one tensor-parallel rank, for one microbatch.

    `flops` and `bytes` are what this rank executes and moves through HBM. `in_layout` and
    `out_layout` are placements on the tensor-parallel axis; `shards_input` marks ops whose
    sharded weights turn a replicated input's grad into a partial sum.
    """

    name: str
    kind: OpKind
    flops: float
    bytes: float
    in_layout: Placement = REPLICATE
    out_layout: Placement = REPLICATE
    shards_input: bool = False
    out_bytes: float = 0.0          # size of the full (unsharded) output tensor, for collectives
    weight_params: float = 0.0      # parameters held by this rank
    saved_bytes: float = 0.0        # activation bytes kept for backward (no recompute)
    bwd_flops_factor: float = 2.0   # backward FLOPs / forward FLOPs (dgrad + wgrad for a GEMM)
    bwd_bytes_factor: float = 2.0   # backward HBM traffic / forward traffic
    recompute_selective: bool = False  # recomputed under selective recompute (attention core)
    selective_freed_bytes: float = 0.0  # part of saved_bytes not kept under selective recompute
    gemm_kernels: int = 1           # kernels launched in forward (GEMMs or element-wise passes)
    trainable: bool = True          # its weights get gradients and optimizer states
    shape: tuple[float, float] = (0.0, 0.0)  # (in, out) features of a linear on this rank
    weight_bytes: float | None = None  # bytes per weight when not the compute dtype (NF4 base weights)
    seq_len: float = 0.0            # key/value length a fused attention kernel walks (sets its efficiency)
    attention_blocks: float = 0.0   # 128-row query blocks a fused attention call runs in parallel
