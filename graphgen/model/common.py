"""Ops every block uses: normalisation and the residual add on the residual stream."""

from __future__ import annotations

from graphgen.model.ops import Op, OpKind
from graphgen.model.params import norm_params
from graphgen.model.shape import BlockShape


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


def column_input_saved(sh: BlockShape) -> float:
    """Input a column-parallel linear keeps for its weight gradient: SP saves the shard and
    re-gathers it in backward."""
    return sh.e * sh.tokens * sh.model.hidden / (sh.tp if sh.sp else 1)
