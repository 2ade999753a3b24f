"""Parameter counts: the one place that knows each weight's shape.

The block builders take their linear shapes from here, and FLOP conventions, the balanced pipeline
split and reports count parameters through these functions, so the three can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphgen.config.model import ModelSpec


@dataclass(frozen=True)
class Linear:
    name: str
    d_in: int
    d_out: int
    bias: bool

    @property
    def weights(self) -> int:
        return self.d_in * self.d_out


def mlp_up_width(m: ModelSpec) -> int:
    """Output width of the MLP's first linear: gate and up projections together for SwiGLU."""
    return m.ffn_hidden * (2 if m.activation == "swiglu" else 1)


def attention_linears(m: ModelSpec) -> tuple[Linear, Linear]:
    qkv = (m.heads + 2 * m.n_kv_heads) * m.d_head
    return (Linear("qkv_proj", m.hidden, qkv, m.bias), Linear("out_proj", m.heads * m.d_head, m.hidden, m.bias))


def mlp_linears(m: ModelSpec) -> tuple[Linear, Linear]:
    return (Linear("fc1", m.hidden, mlp_up_width(m), m.bias), Linear("fc2", m.ffn_hidden, m.hidden, m.bias))


def block_linears(m: ModelSpec, layer: int = 0) -> tuple[Linear, ...]:
    """The linears of one transformer block (every block of a dense model has the same)."""
    return (*attention_linears(m), *mlp_linears(m))


def norm_params(m: ModelSpec) -> int:
    return m.hidden * (2 if m.norm == "layernorm" else 1)


def block_matmul_params(m: ModelSpec, layer: int = 0) -> int:
    return sum(lin.weights for lin in block_linears(m, layer))


def block_params(m: ModelSpec, layer: int = 0) -> int:
    """All parameters of one block: linears, their biases and the two norms."""
    lins = block_linears(m, layer)
    return sum(lin.weights + (lin.d_out if lin.bias else 0) for lin in lins) + 2 * norm_params(m)


def position_params(m: ModelSpec) -> int:
    return (m.max_position or 0) * m.hidden if m.position_encoding == "learned" else 0


def matmul_params(m: ModelSpec) -> int:
    """Weights that take part in a matmul per token: every block's linears and the LM head.

    The input embedding is a lookup, not a matmul, so it is left out; a tied LM head still
    multiplies, so it is counted once.
    """
    return sum(block_matmul_params(m, layer) for layer in range(m.layers)) + m.vocab * m.hidden


def total_params(m: ModelSpec) -> int:
    """All trainable parameters (embeddings, norms and biases included)."""
    emb = m.vocab * m.hidden * (1 if m.tied_embeddings else 2)
    return sum(block_params(m, layer) for layer in range(m.layers)) + emb + position_params(m) + norm_params(m)
