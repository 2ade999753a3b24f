"""Parameter counts: the one place that knows each weight's shape.

The block builders take their linear shapes from here, and FLOP conventions, the balanced pipeline
split and reports count parameters through these functions, so they can never disagree. A linear
may have copies (the routed experts of a MoE layer) of which each token passes through `active`
(its top-k): total counts take every copy, per-token FLOPs the active ones.
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
    copies: int = 1   # routed experts: one linear per expert
    active: int = 1   # copies a token passes through (top-k)

    @property
    def weights(self) -> int:
        """Weights of one copy."""
        return self.d_in * self.d_out

    @property
    def all_weights(self) -> int:
        return self.weights * self.copies

    @property
    def active_weights(self) -> int:
        return self.weights * self.active


def gated(m: ModelSpec) -> bool:
    return m.activation == "swiglu"


def mlp_up_width(m: ModelSpec, ffn: int | None = None) -> int:
    """Output width of an MLP's first linear: gate and up projections together for SwiGLU."""
    return (ffn or m.ffn_hidden) * (2 if gated(m) else 1)


def gated_delta_linears(m: ModelSpec) -> tuple[Linear, Linear]:
    """A Gated DeltaNet layer's input projection (queries, keys, values, the output gate z, and a decay
    and a step scalar per value head: Megatron-Core's in_proj, HF's in_proj_qkvz + in_proj_ba) and its
    output projection."""
    la = m.linear_attention
    qk, v = la.key_heads * la.key_head_dim, la.value_heads * la.value_head_dim
    return (Linear("gdn_in_proj", m.hidden, 2 * qk + 2 * v + 2 * la.value_heads, False),
            Linear("out_proj", v, m.hidden, False))


def gated_delta_extra_params(m: ModelSpec) -> int:
    """Its weights outside the linears: the depthwise convolution over queries, keys and values, the
    per-head decay (A_log) and step bias, and the gated output norm."""
    la = m.linear_attention
    return (la.conv_kernel * (2 * la.key_heads * la.key_head_dim + la.value_heads * la.value_head_dim)
            + 2 * la.value_heads + la.value_head_dim)


def attention_linears(m: ModelSpec, layer: int | None = None) -> tuple[Linear, ...]:
    """Query/key/value and output projections; for MLA the down (latent) and up projections; for a
    layer the attention pattern marks gated_delta, Gated DeltaNet's (None: a softmax-attention layer)."""
    if layer is not None and m.attention_kind(layer) == "gated_delta":
        return gated_delta_linears(m)
    if m.mla is None:
        qkv = (m.heads * (2 if m.attention_output_gate else 1) + 2 * m.n_kv_heads) * m.d_head
        # qkv_bias: Qwen2 biases q, k and v but not the output projection.
        return (Linear("qkv_proj", m.hidden, qkv, m.bias or m.qkv_bias),
                Linear("out_proj", m.heads * m.d_head, m.hidden, m.bias))
    a, mla = m.heads, m.mla
    qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
    q = ((Linear("q_down", m.hidden, mla.q_lora_rank, False), Linear("q_up", mla.q_lora_rank, a * qk, False))
         if mla.q_lora_rank else (Linear("q_proj", m.hidden, a * qk, False),))
    return (*q, Linear("kv_down", m.hidden, mla.kv_lora_rank + mla.qk_rope_head_dim, False),
            Linear("kv_up", mla.kv_lora_rank, a * (mla.qk_nope_head_dim + mla.v_head_dim), False),
            Linear("out_proj", a * mla.v_head_dim, m.hidden, m.bias))


def dense_mlp_linears(m: ModelSpec, ffn: int, prefix: str = "") -> tuple[Linear, Linear]:
    return (Linear(prefix + "fc1", m.hidden, mlp_up_width(m, ffn), m.bias),
            Linear(prefix + "fc2", ffn, m.hidden, m.bias))


def mlp_linears(m: ModelSpec, layer: int = 0) -> tuple[Linear, ...]:
    """A layer's MLP: dense (fc1, fc2), or MoE (router, routed experts, shared experts)."""
    if not m.is_moe(layer):
        return dense_mlp_linears(m, m.ffn_hidden)
    moe = m.moe
    e, k, f = moe.experts, moe.top_k, moe.expert_ffn_hidden
    out = [Linear("router", m.hidden, e, False),
           Linear("expert_fc1", m.hidden, mlp_up_width(m, f), m.bias, e, k),
           Linear("expert_fc2", f, m.hidden, m.bias, e, k)]
    if moe.shared_width:
        out += dense_mlp_linears(m, moe.shared_width, "shared_")
        if moe.shared_gate:
            out.append(Linear("shared_gate", m.hidden, 1, False))
    return tuple(out)


def block_linears(m: ModelSpec, layer: int = 0) -> tuple[Linear, ...]:
    return (*attention_linears(m, layer), *mlp_linears(m, layer))


def norm_params(m: ModelSpec) -> int:
    return m.hidden * (2 if m.norm == "layernorm" else 1)


def latent_norm_params(m: ModelSpec) -> int:
    """MLA normalises its query and key/value latents (RMSNorm weights)."""
    if m.mla is None:
        return 0
    return (m.mla.q_lora_rank or 0) + m.mla.kv_lora_rank


def block_matmul_params(m: ModelSpec, layer: int = 0, active: bool = False) -> int:
    return sum(lin.active_weights if active else lin.all_weights for lin in block_linears(m, layer))


def block_params(m: ModelSpec, layer: int = 0) -> int:
    """All parameters of one block: linears (every expert), their biases and the norms."""
    lins = block_linears(m, layer)
    extra = gated_delta_extra_params(m) if m.attention_kind(layer) == "gated_delta" else 0
    return (sum(lin.all_weights + (lin.d_out * lin.copies if lin.bias else 0) for lin in lins)
            + 2 * norm_params(m) + latent_norm_params(m) + extra)


def position_params(m: ModelSpec) -> int:
    return (m.max_position or 0) * m.hidden if m.position_encoding == "learned" else 0


def mtp_layer(m: ModelSpec) -> int:
    """The layer whose architecture a multi-token-prediction module repeats: the last one."""
    return m.layers - 1


def mtp_params(m: ModelSpec, active: bool = False) -> int:
    """Per MTP module (DeepSeek-V3 Section 2.2): a 2h -> h projection, two input norms, one block and a
    final norm; the embedding and output head are the main model's."""
    block = block_matmul_params(m, mtp_layer(m), active) if active else block_params(m, mtp_layer(m))
    return 2 * m.hidden * m.hidden + (0 if active else 3 * norm_params(m)) + block


def matmul_params(m: ModelSpec) -> int:
    """Weights a token multiplies with: every block's linears (the active experts only), the LM head,
    and each MTP module with its own pass through the head.

    The input embedding is a lookup, not a matmul, so it is left out; a tied LM head still
    multiplies, so it is counted once.
    """
    blocks = sum(block_matmul_params(m, layer, active=True) for layer in range(m.layers))
    return blocks + m.vocab * m.hidden + m.mtp_layers * (mtp_params(m, active=True) + m.vocab * m.hidden)


def total_params(m: ModelSpec) -> int:
    """All trainable parameters (embeddings, norms and biases included, every expert counted)."""
    emb = m.vocab * m.hidden * (1 if m.tied_embeddings else 2)
    return (sum(block_params(m, layer) for layer in range(m.layers)) + emb + position_params(m) + norm_params(m)
            + m.mtp_layers * mtp_params(m))


def active_params(m: ModelSpec) -> int:
    """Parameters a token uses: every weight but the routed experts it is not sent to."""
    layers = [*range(m.layers), *[mtp_layer(m)] * m.mtp_layers]  # an MTP module routes like its block
    inactive = sum(lin.all_weights - lin.active_weights for layer in layers for lin in block_linears(m, layer))
    return total_params(m) - inactive
