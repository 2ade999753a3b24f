"""MLP blocks: the builder per MLP kind. A dense MLP is a column-parallel fc1, the activation and a
row-parallel fc2 (Megatron); MoE kinds register here too."""

from __future__ import annotations

from collections.abc import Callable

from graphgen.model.common import column_input_saved, norm, residual_add
from graphgen.model.ops import Op, OpKind
from graphgen.model.params import mlp_linears
from graphgen.model.shape import BlockShape
from graphgen.registry import Registry

MLP_BLOCKS: Registry[Callable[[BlockShape], tuple[Op, ...]]] = Registry("MLP block")


@MLP_BLOCKS.register("dense")
def dense_mlp(sh: BlockShape) -> tuple[Op, ...]:
    m, t, e, T = sh.model, sh.tp, sh.e, sh.tokens
    fc1, fc2 = mlp_linears(m)
    f, up, gated = m.ffn_hidden, fc1.d_out, m.activation == "swiglu"
    # Eager SwiGLU runs silu and the multiply separately (5 passes instead of 3) and keeps silu(gate).
    glu_passes, glu_kernels = (5, 2) if sh.eager_glu else (3, 1)
    return (
        norm(sh, "ln_mlp"),
        Op("fc1", OpKind.MATMUL, flops=2 * T * fc1.weights / t, bytes=e * (T * m.hidden + fc1.weights / t + T * up / t),
           in_layout=sh.replicated, out_layout=sh.hid, shards_input=sh.column_shards, out_bytes=e * T * up,
           weight_params=fc1.weights / t + (up / t if fc1.bias else 0), saved_bytes=column_input_saved(sh),
           shape=(m.hidden, up / t), local_out_bytes=e * T * up / t),
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
