"""Ops every block uses: normalisation and the residual add on the residual stream."""

from __future__ import annotations

from graphgen.model.ops import Op, OpKind
from graphgen.model.params import norm_params
from graphgen.model.shape import BlockShape
from graphgen.parallel.layout import Collective


def norm(sh: BlockShape, name: str) -> Op:
    """LayerNorm/RMSNorm on the residual stream. Eager PyTorch (fused_kernels=false) runs RMSNorm as
    cast, square, mean, rsqrt, scale, cast and weight multiply: about 18 activation-sized passes
    instead of 2 (LayerNorm is one native kernel)."""
    m, e, tn = sh.model, sh.e, sh.resid_tokens
    passes, kernels = (18, 7) if sh.eager and m.norm == "rmsnorm" else (2, 1)
    return Op(name, OpKind.NORM, flops=8 * tn * m.hidden, bytes=passes * e * tn * m.hidden, in_layout=sh.resid,
              out_layout=sh.resid, out_bytes=e * sh.tokens * m.hidden, weight_params=norm_params(m),
              saved_bytes=e * tn * m.hidden, gemm_kernels=kernels,
              local_out_bytes=sh.local(e * sh.tokens * m.hidden, False))


def dropout_mask_bytes(sh: BlockShape) -> float:
    """1-byte dropout masks on the residual stream (Korthikanti et al. 2022)."""
    return sh.resid_tokens * sh.model.hidden if sh.model.dropout > 0 else 0.0


def residual_add(sh: BlockShape, name: str) -> Op:
    m, e, tn = sh.model, sh.e, sh.resid_tokens
    mask = dropout_mask_bytes(sh)
    return Op(name, OpKind.ELEMENTWISE, flops=tn * m.hidden, bytes=3 * e * tn * m.hidden + mask,
              in_layout=sh.resid, out_layout=sh.resid, out_bytes=e * sh.tokens * m.hidden, saved_bytes=mask,
              local_out_bytes=sh.local(e * sh.tokens * m.hidden, False))


def column_input(sh: BlockShape) -> dict:
    """What a column-parallel linear keeps of its input for the weight gradient, and the collective that
    gets the rest back: Op fields (saved_bytes, side_comm). Under SP it keeps the shard and gathers it
    again in backward (column_regather), unless the framework keeps the gathered input."""
    return dict(saved_bytes=column_input_saved(sh), side_comm=column_regather(sh))


def _full_input(sh: BlockShape) -> float:
    return sh.e * sh.tokens * sh.model.hidden


def column_input_saved(sh: BlockShape) -> float:
    return _full_input(sh) / (sh.tp if sh.sp and sh.sp_regather else 1)


def column_regather(sh: BlockShape) -> tuple:
    """The backward all-gather of a column-parallel linear's saved input shard under SP, before its
    backward. Transformer Engine and Megatron issue it asynchronously beside the input-gradient GEMM and
    wait for it before the weight-gradient GEMM (NVIDIA/TransformerEngine
    transformer_engine/pytorch/module/linear.py and layernorm_linear.py @v1.8, _Linear/_LayerNormLinear.backward:
    gather_along_first_dim(..., async_op=True); NVIDIA/Megatron-LM megatron/core/tensor_parallel/layers.py
    LinearWithGradAccumulationAndAsyncCommunication.backward). It is timed in line here, as the input
    gradient's reduce-scatter that those backwards run beside the weight-gradient GEMM is: a coarse node
    holds collectives in line, and one beside its compute would split every backward node at each such
    linear (3x the replay's nodes; #14). Side-communication tuple (graphgen.model.ops.Op.side_comm); the
    'wgrad' pass: only a backward that computes the weight gradient issues it."""
    if not (sh.sp and sh.sp_regather):
        return ()
    return (("tp", "wgrad", Collective.ALL_GATHER, _full_input(sh), False, False),)
