"""The op record of the LayerGraph: one kernel (or fused kernel group) of one rank's forward pass."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from graphgen.parallel.layout import Collective, Layout


class OpKind(str, Enum):
    MATMUL = "matmul"
    ATTENTION = "attention"      # fused (flash) attention core
    ELEMENTWISE = "elementwise"  # memory-bound: activation, residual add, dropout, rope, softmax
    NORM = "norm"
    EMBEDDING = "embedding"
    LOSS = "loss"


REPLICATED = Layout()


@dataclass(frozen=True, slots=True)
class Op:
    """One forward op on one rank, for one microbatch.

    `flops` and `bytes` are what this rank executes and moves through HBM. `in_layout` and
    `out_layout` are placements on every mesh axis; `shards_input` names the axes on which the op's
    sharded weights turn a replicated input's gradient into a partial sum (a column-parallel linear
    on tp).
    """

    name: str
    kind: OpKind
    flops: float
    bytes: float
    in_layout: Layout = REPLICATED
    out_layout: Layout = REPLICATED
    shards_input: frozenset[str] = frozenset()
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
    head_dim: float = 0.0           # a fused attention kernel's head dimension (its tiles, hence its rate)
    local_out_bytes: float = 0.0    # this rank's share of the output (largest transient backward buffer)
    expert: bool = False            # routed-expert weights: sharded over ep/etp, gradients reduced over edp
    axis_bytes: tuple[tuple[str, float], ...] = ()  # bytes a collective on an axis moves, where not out_bytes
    # Collectives the op runs itself, beside its compute or around it: (axis, "fwd" | "bwd" | "wgrad",
    # kind, full buffer bytes, overlapped with the op's compute, after the op rather than before it) --
    # context parallelism's key/value exchange, sequence parallelism's backward re-gather ("wgrad":
    # only a backward that computes the weight gradient issues it).
    side_comm: tuple[tuple[str, str, Collective, float, bool, bool], ...] = ()
    # A GEMM the frameworks keep in 16 bits under an fp8/fp4 recipe: Megatron-Core's output layer is a
    # plain ColumnParallelLinear (not Transformer Engine's), torchtitan's float8 converter filters
    # fqn 'output', and the MoE router runs in PyTorch.
    high_precision: bool = False
    # The input comes straight from a norm: Transformer Engine fuses them (LayerNormLinear, LayerNormMLP),
    # the norm kernel writing its output in fp8 itself, so an fp8 recipe adds only the transpose.
    norm_input: bool = False
    # (forward, backward) bytes of it that Transformer Engine's fused token permutation moves, when the plan
    # fuses it (the rest of a dispatcher op: Megatron's local-expert sort, at the memory-bound rate)
    permute_bytes: tuple[float, float] = (0.0, 0.0)

    def comm_bytes(self, axis: str) -> float:
        """Bytes of the collective that relayouts this op's output on one axis."""
        for a, b in self.axis_bytes:
            if a == axis:
                return b
        return self.out_bytes


def computes_wgrad(op: Op) -> bool:
    """Whether the op's backward runs a weight-gradient GEMM: a trained linear, also one whose weight
    another op holds (a tied LM head, a multi-token-prediction head sharing the main one)."""
    return (op.kind is OpKind.MATMUL and op.flops > 0 and round(op.bwd_flops_factor) >= 2 and op.trainable
            and op.shape[0] > 0)  # a product without weights (attention scores) has two input gradients instead


def defers_wgrad(op: Op) -> bool:
    """Whether a split backward defers that GEMM to its weight-gradient step: only for weights the op
    holds itself (a shared weight's gradient stays with the input gradient)."""
    return computes_wgrad(op) and op.weight_params > 0


def op_work(op: Op, direction: str, selective: bool = False) -> tuple[float, float]:
    """(FLOPs, HBM bytes) of one op in one direction, derived by rule from its forward.

    fwd: the op itself. bwd: the whole backward (dgrad and, when the weight trains, wgrad), plus
    the forward again when selective recompute reruns the op. A split backward runs bwd_in (all of
    it but the weight-gradient GEMM) and bwd_w (that GEMM) as separate steps.
    """
    if direction == "fwd":
        return op.flops, op.bytes
    bf, bb = op.flops * op.bwd_flops_factor, op.bytes * op.bwd_bytes_factor
    wgrad = defers_wgrad(op)
    if direction == "bwd_w":
        return (bf / 2, bb / 2) if wgrad else (0.0, 0.0)
    if direction == "bwd_in" and wgrad:
        bf, bb = bf / 2, bb / 2
    if selective and op.recompute_selective:
        bf += op.flops
    return bf, bb
