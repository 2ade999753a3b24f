"""One transformer layer's ops: its attention block then its MLP block, joined by the residual
structure the model names (sequential, or GPT-NeoX's parallel residual)."""

from __future__ import annotations

from dataclasses import replace

from graphgen.model.attention import ATTENTION_BLOCKS
from graphgen.model.common import dropout_mask_bytes
from graphgen.model.mlp import MLP_BLOCKS
from graphgen.model.ops import Op
from graphgen.model.shape import BlockShape


def layer_ops(sh: BlockShape, kind: tuple[str, str]) -> tuple[Op, ...]:
    """Forward ops of a layer of `kind` (attention kind, MLP kind), as graphgen.model.kinds names it."""
    ops = ATTENTION_BLOCKS[kind[0]](sh) + MLP_BLOCKS[kind[1]](sh)
    return parallel_residual(sh, ops) if sh.model.parallel_residual else ops


def parallel_residual(sh: BlockShape, ops: tuple[Op, ...]) -> tuple[Op, ...]:
    """x + attn(ln1(x)) + mlp(ln2(x)): the attention's residual add goes, the MLP's norm reads the
    block input that the attention's norm already saved (so it saves nothing more), and one add of
    three tensors closes the layer. The branches still run one after the other, as HF's GPTNeoXLayer
    runs them; the attention output's tp reduction moves to where the MLP's norm begins."""
    m, e, tn = sh.model, sh.e, sh.resid_tokens
    out: list[Op] = []
    for op in ops:
        if op.name == "attn_residual":
            continue
        if op.name == "ln_mlp":
            op = replace(op, saved_bytes=0.0)
        elif op.name == "mlp_residual":
            # Reads the input and both branch outputs, writes one; each branch keeps its dropout mask.
            mask = 2 * dropout_mask_bytes(sh)
            op = replace(op, name="parallel_residual", flops=2 * tn * m.hidden, bytes=4 * e * tn * m.hidden + mask,
                         saved_bytes=mask)
        out.append(op)
    return tuple(out)
