"""MLP blocks: the builder per MLP kind. A dense MLP is a column-parallel fc1, the activation and a
row-parallel fc2 (Megatron); MoE kinds register here too."""

from __future__ import annotations

import math
from collections.abc import Callable

from graphgen.model.common import column_input, norm, residual_add
from graphgen.model.ops import Op, OpKind
from graphgen.model.params import dense_mlp_linears, mlp_up_width
from graphgen.model.shape import BlockShape
from graphgen.parallel.layout import PARTIAL, REPLICATE, shard
from graphgen.registry import Registry

MLP_BLOCKS: Registry[Callable[[BlockShape], tuple[Op, ...]]] = Registry("MLP block")


@MLP_BLOCKS.register("dense")
def dense_mlp(sh: BlockShape) -> tuple[Op, ...]:
    m, t, e, T = sh.model, sh.tp, sh.e, sh.tokens
    fc1, fc2 = dense_mlp_linears(m, m.ffn_hidden)
    f, up, gated = m.ffn_hidden, fc1.d_out, m.activation == "swiglu"
    # Eager SwiGLU runs silu and the multiply separately (5 passes instead of 3) and keeps silu(gate).
    glu_passes, glu_kernels = (5, 2) if sh.eager_glu else (3, 1)
    return (
        norm(sh, "ln_mlp"),
        Op("fc1", OpKind.MATMUL, flops=2 * T * fc1.weights / t, bytes=e * (T * m.hidden + fc1.weights / t + T * up / t),
           in_layout=sh.replicated, out_layout=sh.hid, shards_input=sh.column_shards, out_bytes=e * T * up,
           weight_params=fc1.weights / t + (up / t if fc1.bias else 0), **column_input(sh),
           shape=(m.hidden, up / t), local_out_bytes=e * T * up / t, norm_input=True),
        Op("swiglu" if gated else m.activation, OpKind.ELEMENTWISE, flops=8 * T * f / t,
           bytes=e * T * f / t * (glu_passes if gated else 2), in_layout=sh.hid, out_layout=sh.hid,
           out_bytes=e * T * f, gemm_kernels=glu_kernels if gated else 1,
           saved_bytes=e * T * (up + (f if gated and sh.eager_glu else 0)) / t, local_out_bytes=e * T * f / t),
        Op("fc2", OpKind.MATMUL, flops=2 * T * fc2.weights / t, bytes=e * (T * f / t + fc2.weights / t + T * m.hidden),
           in_layout=sh.hid, out_layout=sh.row_out, out_bytes=e * T * m.hidden,
           weight_params=fc2.weights / t + (m.hidden if fc2.bias else 0), saved_bytes=e * T * f / t,
           shape=(f / t, m.hidden), local_out_bytes=e * T * m.hidden / t),
        residual_add(sh, "mlp_residual"),
    )


def _glu(sh: BlockShape) -> tuple[int, int]:
    """(HBM passes, kernels) of the gated activation: eager SwiGLU runs silu and the multiply apart."""
    return (5, 2) if sh.eager_glu else (3, 1)


def _shared_experts(sh: BlockShape) -> tuple[Op, ...]:
    """Shared experts: one dense MLP every token passes through, tensor-parallel like any MLP."""
    m, t, e, T = sh.model, sh.tp, sh.e, sh.tokens
    width = m.moe.shared_width
    fc1, fc2 = dense_mlp_linears(m, width, "shared_")
    up, gated = fc1.d_out, m.activation == "swiglu"
    passes, kernels = _glu(sh)
    return (
        Op("shared_fc1", OpKind.MATMUL, flops=2 * T * fc1.weights / t, bytes=e * (T * m.hidden + fc1.weights / t + T * up / t),
           in_layout=sh.replicated, out_layout=sh.hid, shards_input=sh.column_shards, out_bytes=e * T * up,
           weight_params=fc1.weights / t, **column_input(sh), shape=(m.hidden, up / t),
           local_out_bytes=e * T * up / t),
        Op("shared_act", OpKind.ELEMENTWISE, flops=8 * T * width / t,
           bytes=e * T * width / t * (passes if gated else 2), in_layout=sh.hid, out_layout=sh.hid,
           out_bytes=e * T * width, gemm_kernels=kernels if gated else 1, saved_bytes=e * T * up / t,
           local_out_bytes=e * T * width / t),
        Op("shared_fc2", OpKind.MATMUL, flops=2 * T * fc2.weights / t, bytes=e * (T * width / t + fc2.weights / t + T * m.hidden),
           in_layout=sh.hid, out_layout=sh.row_out, out_bytes=e * T * m.hidden, weight_params=fc2.weights / t,
           saved_bytes=e * T * width / t, shape=(width / t, m.hidden), local_out_bytes=e * T * m.hidden / t),
        *((_shared_gate(sh),) if m.moe.shared_gate else ()),
    )


def _shared_gate(sh: BlockShape) -> Op:
    """Qwen2-MoE/Qwen3-Next's shared-expert gate: sigmoid(x . w) per token scales the shared experts'
    output (megatron/core/transformer/moe/shared_experts.py use_shared_expert_gate). A per-token scale
    commutes with the tensor-parallel sum, so it applies to the partial output; its backward keeps that
    output for the gate's gradient."""
    m, e, T = sh.model, sh.e, sh.tokens
    return Op("shared_gate", OpKind.ELEMENTWISE, flops=3 * T * m.hidden, bytes=3 * e * T * m.hidden,
              in_layout=sh.row_out, out_layout=sh.row_out, out_bytes=e * T * m.hidden, weight_params=m.hidden,
              saved_bytes=e * T * m.hidden, local_out_bytes=e * T * m.hidden / sh.tp)


def _with_local_sort(sh: BlockShape, nbytes: float, routed: float, local_experts: int) -> dict[str, float]:
    """A permutation's traffic plus the local-expert sort that Megatron's alltoall dispatcher runs beside it:
    after the all-to-all it sorts the received tokens by local expert ("Permutation 2") and restores their
    order before the combine, one more read and write of the routed tokens each way, once in backward too
    (megatron/core/transformer/moe/token_dispatcher.py @core_v0.14.0 dispatch_postprocess /
    combine_preprocess, sort_chunks_by_idxs when num_local_experts > 1)."""
    sort = 2 * sh.e * routed * sh.model.hidden if sh.sort_by_local_expert and local_experts > 1 else 0.0
    return {"bytes": nbytes + sort, "bwd_bytes_factor": (2 * nbytes + sort) / (nbytes + sort)}


def _router_aux(sh: BlockShape, tokens: float, experts: int) -> Op:
    """The load-balancing loss, in training: Megatron-Core recomputes the routing scores and map for it
    (megatron/core/transformer/moe/router.py compute_routing_scores_for_aux_loss), counts tokens per expert
    and reduces scores x counts (moe_utils.py switch_load_balancing_loss_func). Per token and expert,
    unfused: softmax reads and writes the fp32 scores (8 B), top-k reads them (4), the routing map is zeroed,
    scattered and summed (3), the scores summed (4): 19 B over 8 kernels; backward writes the scores'
    gradient through the sum and the softmax (16 B)."""
    pairs = tokens * experts
    return Op("router_aux", OpKind.ELEMENTWISE, flops=6 * pairs, bytes=19 * pairs, in_layout=sh.resid,
              out_layout=sh.resid, out_bytes=sh.e * tokens * sh.model.hidden, gemm_kernels=8,
              bwd_bytes_factor=16 / 19, saved_bytes=4 * pairs, local_out_bytes=4 * pairs)


@MLP_BLOCKS.register("moe")
def moe_mlp(sh: BlockShape) -> tuple[Op, ...]:
    """Router, dispatch, routed experts (grouped GEMMs over this rank's experts), combine, then the
    shared experts. The dispatcher's collectives come from the layout table: tokens go from Shard on
    ep (each rank's own) to Shard by expert (all-to-all) and, under expert tensor parallelism, are
    gathered on etp; the combine reverses both. The busiest expert-parallel rank (sh.imbalance)
    sets the expert GEMMs' work and the dispatch's bytes."""
    m, e, etp = sh.model, sh.e, sh.etp
    moe = m.moe
    h, f, E, k = m.hidden, moe.expert_ffn_hidden, moe.experts, moe.top_k
    up = mlp_up_width(m, f)
    local_experts = max(1, E // sh.ep)
    Tl = sh.resid_tokens                   # tokens this rank routes
    # Grouped GEMMs read only the experts that received tokens: with N tokens over the ep group each
    # picking k of E, an expert stays idle with probability (1 - k/E)^N. Training batches touch every
    # expert; a small decode batch touches few (vLLM's fused_moe skips empty experts, and a per-expert
    # GEMM loop launches nothing for an empty one).
    touched = local_experts * (1.0 - (1.0 - k / E) ** (Tl * sh.ep))
    launches = max(1, min(local_experts, math.ceil(touched - 1e-9)))
    routed = Tl * k * sh.imbalance         # token copies the busiest rank's experts receive
    G = routed * etp                       # rows of its expert GEMMs once gathered over etp
    passes, kernels = _glu(sh)
    gated = m.activation == "swiglu"
    # The allgather dispatcher gathers every token of the ep group and reduce-scatters the outputs;
    # all-to-all moves only the routed copies.
    ag = sh.gather_dispatch and sh.ep > 1
    ep_in, ep_out = (REPLICATE, PARTIAL) if ag else (None, None)
    ep_bytes = e * Tl * h * sh.ep if ag else e * routed * h
    expert_in = sh.experts(REPLICATE if etp > 1 else None, ep_in)
    hidden = sh.experts(shard("hidden"), ep_in)
    ops: list[Op] = [
        norm(sh, "ln_mlp"),
        Op("router", OpKind.MATMUL, flops=2 * Tl * h * E, bytes=e * (Tl * h + h * E + Tl * E), in_layout=sh.resid,
           out_layout=sh.resid, weight_params=h * E, saved_bytes=e * Tl * h + 4 * Tl * E, shape=(h, E),
           out_bytes=e * Tl * h, high_precision=True),
        *((_router_aux(sh, Tl, E),) if moe.aux_loss and sh.workload.run_type == "training" else ()),
        Op("permute", OpKind.ELEMENTWISE, flops=0.0, **_with_local_sort(sh, 2 * e * Tl * k * h, G, local_experts),
           permute_bytes=(2 * e * Tl * k * h, 4 * e * Tl * k * h), in_layout=sh.resid, out_layout=sh.resid,
           out_bytes=e * routed * h, axis_bytes=(("etp", e * G * h), ("ep", ep_bytes)), local_out_bytes=e * routed * h),
        Op("expert_fc1", OpKind.MATMUL, flops=2 * G * h * up / etp, bytes=e * (G * h + touched * h * up / etp + G * up / etp),
           in_layout=expert_in, out_layout=hidden, shards_input=frozenset({"etp"}) if etp > 1 else frozenset(),
           out_bytes=e * G * up, weight_params=local_experts * h * up / etp, saved_bytes=e * G * h,
           gemm_kernels=launches, shape=(h, up / etp), expert=True, local_out_bytes=e * G * up / etp),
        Op("expert_act", OpKind.ELEMENTWISE, flops=8 * G * f / etp, bytes=e * G * f / etp * (passes if gated else 2),
           in_layout=hidden, out_layout=hidden, out_bytes=e * G * f,
           gemm_kernels=kernels if gated else 1, saved_bytes=e * G * up / etp, local_out_bytes=e * G * f / etp),
        Op("expert_fc2", OpKind.MATMUL, flops=2 * G * f * h / etp, bytes=e * (G * f / etp + touched * f * h / etp + G * h),
           in_layout=hidden, out_layout=sh.experts(PARTIAL if etp > 1 else None, ep_out) if etp > 1 or ag else expert_in,
           out_bytes=e * G * h, axis_bytes=(("ep", ep_bytes),), weight_params=local_experts * f * h / etp,
           saved_bytes=e * G * f / etp, gemm_kernels=launches, shape=(f / etp, h), expert=True,
           local_out_bytes=e * G * h),
        Op("unpermute", OpKind.ELEMENTWISE, flops=Tl * k * h,
           **_with_local_sort(sh, e * (Tl * k * h + Tl * h), G, local_experts), in_layout=sh.resid,
           permute_bytes=(e * (Tl * k * h + Tl * h), 2 * e * (Tl * k * h + Tl * h)),
           out_layout=sh.resid, out_bytes=e * sh.tokens * h, saved_bytes=4 * Tl * k, local_out_bytes=e * Tl * h),
    ]
    if moe.shared_width:
        ops.extend(_shared_experts(sh))
    ops.append(residual_add(sh, "mlp_residual"))
    return tuple(ops)
