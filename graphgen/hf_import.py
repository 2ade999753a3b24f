"""Hugging Face config.json -> the `model` section of a Rankflow model config. No network access.

Every key read is type-checked and named in the error when it is wrong; nothing the importer cannot
model is dropped silently: an unknown activation, mixture-of-experts keys on a dense type or a
window it cannot place is refused with the one-line error.
"""

from __future__ import annotations

from typing import Any

from graphgen.hf_moe import moe_section
from graphgen.hf_reader import Reader as _Reader

_LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3"}
_MOE = {"mixtral", "qwen2_moe", "qwen3_moe", "qwen3_next", "deepseek_v2", "deepseek_v3"}
SUPPORTED = sorted(_LLAMA_LIKE | _MOE | {"gpt_neox", "mpt", "gpt2"})
_MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size", "num_experts_per_tok")


def is_hf_config(data: dict[str, Any]) -> bool:
    return "model_type" in data or "architectures" in data


def _kind(r: _Reader) -> str:
    kind = r.data.get("model_type")
    if kind is None:
        archs = r.data.get("architectures")
        if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
            raise r.bad("architectures", f"must be a non-empty list of names, got {archs!r}",
                        "add model_type or a valid architectures list")
        arch = archs[0].lower().replace("_", "")
        kind = next((k for k in SUPPORTED if k.replace("_", "") in arch), archs[0])
    if not isinstance(kind, str) or kind not in SUPPORTED:
        raise r.bad("model_type", f"unsupported Hugging Face model_type {kind!r}",
                    f"use one of {', '.join(SUPPORTED)} or write a Rankflow model YAML")
    moe = [k for k in _MOE_KEYS if r.data.get(k)]
    if moe and kind not in _MOE:
        raise r.bad(moe[0], f"mixture-of-experts keys on model_type '{kind}', whose HF modeling code has no "
                            "experts", f"set model_type to the MoE type it is ({', '.join(sorted(_MOE))}), or "
                                       "write a Rankflow model YAML with a moe section")
    return kind


def _activation(r: _Reader, default: str, gated: bool, key: str = "hidden_act") -> str:
    """Rankflow's MLP kind: gated MLPs (three matrices, any gate activation) are 'swiglu'-shaped."""
    name = r.text(key, default) or default
    low = name.lower()
    if low in {"silu", "swish", "swiglu"} or (gated and (low.startswith("gelu") or low == "relu")):
        return "swiglu" if gated else "gelu"
    if low.startswith("gelu"):
        return "gelu"
    if low == "relu":
        return "relu"
    raise r.bad(key, f"activation '{name}' is not modelled", "use silu, gelu or relu, or write a Rankflow "
                                                                        "model YAML")


_LAYER_TYPES = {"full_attention": "full", "sliding_attention": "sliding"}


def _layer_types(r: _Reader, layers: int) -> list[str] | None:
    """HF's per-layer attention list (layer_types) as Rankflow attention kinds; None when absent."""
    value = r.data.get("layer_types")
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != layers:
        got = f"{len(value)} entries" if isinstance(value, list) else type(value).__name__
        raise r.bad("layer_types", f"must list one attention type per layer ({layers}), got {got}",
                    "correct the config.json")
    bad = [v for v in value if not isinstance(v, str) or v not in _LAYER_TYPES]
    if bad:  # chunked (Llama 4), linear (Qwen3-Next) and other kinds have no attention builder here
        raise r.bad("layer_types", f"layer type {str(bad[0])[:40]!r} is not modelled",
                    "use full_attention or sliding_attention, or write a Rankflow model YAML")
    return [_LAYER_TYPES[v] for v in value]


def _period(kinds: list[str]) -> list[str]:
    """The shortest pattern that, repeated over the layers as attention_pattern is, gives every layer's
    kind (gpt-oss: [sliding, full]): the length minus the longest border (KMP), in linear time."""
    border = [0] * len(kinds)
    for i in range(1, len(kinds)):
        k = border[i - 1]
        while k and kinds[i] != kinds[k]:
            k = border[k - 1]
        border[i] = k + (kinds[i] == kinds[k])
    return kinds[:len(kinds) - border[-1]]


def _windowed(window: int, kinds: list[str]) -> dict[str, Any]:
    pattern = _period(kinds)
    if "sliding" not in pattern:
        return {}
    return {"sliding_window": window, **({} if pattern == ["sliding"] else {"attention_pattern": pattern})}


def _window(r: _Reader, kind: str, layers: int) -> dict[str, Any]:
    """Sliding-window attention per layer. Qwen has a window only with use_sliding_window (HF sets it
    to None otherwise, so every layer attends fully whatever layer_types says), on the layers
    layer_types names sliding_attention, by default from max_window_layers on (HF Qwen2Config).
    Mistral, Mixtral and Llama read no layer_types: their window, if set, is on every layer."""
    window, kinds = r.int("sliding_window", None), _layer_types(r, layers)
    if not kind.startswith("qwen"):
        expected = "sliding" if window else "full"
        if kinds is not None and any(k != expected for k in kinds):
            raise r.bad("layer_types", f"HF's '{kind}' ignores layer_types and attends '{expected}' on every "
                        "layer; this list says otherwise", "write a Rankflow model YAML with attention_pattern")
        return {"sliding_window": window} if window else {}
    if window is None or not r.flag("use_sliding_window", False):
        return {}
    if kinds is None:
        first = r.int("max_window_layers", layers, minimum=0)
        if first >= layers:
            return {}
        if layers > 1024:
            raise r.bad("max_window_layers", "a per-layer window pattern over more than 1024 layers",
                        "write a Rankflow model YAML with attention_pattern")
        kinds = ["full"] * first + ["sliding"] * (layers - first)
    return _windowed(window, kinds)


def _biases(r: _Reader, kind: str) -> dict[str, Any]:
    """Which linears carry biases, as the HF modules build them: Qwen2's attention always biases q, k
    and v (it reads no key), Qwen2-MoE's by qkv_bias, neither biases o_proj; Llama and Qwen3 put
    attention_bias on q, k, v and o alike and Llama's mlp_bias on the MLP; Mistral/Mixtral have none."""
    if kind == "qwen2":
        return {"qkv_bias": True}
    if kind == "qwen2_moe":
        return {"qkv_bias": r.flag("qkv_bias", True)}
    if kind not in ("llama", "qwen3", "qwen3_moe"):
        return {}
    attn, mlp = r.flag("attention_bias", False), kind == "llama" and r.flag("mlp_bias", False)
    if attn != mlp:  # Rankflow's `bias` covers every linear, `qkv_bias` only q/k/v: o_proj alone has no field
        key = "attention_bias" if attn else "mlp_bias"
        raise r.bad(key, f"{key} without {'mlp_bias' if attn else 'attention_bias'} is not modelled",
                    "write a Rankflow model YAML (qkv_bias biases q/k/v only; bias biases every linear)")
    return {"bias": True} if attn else {}


def _llama_like(r: _Reader, kind: str, name: str) -> dict[str, Any]:
    return {**_llama_core(r, name), **_biases(r, kind), **_window(r, kind, r.int("num_hidden_layers"))}


def _llama_core(r: _Reader, name: str) -> dict[str, Any]:
    heads = r.int("num_attention_heads")
    layers = r.int("num_hidden_layers")
    out = {
        "name": name, "layers": layers, "hidden": r.int("hidden_size"), "heads": heads,
        "kv_heads": r.int("num_key_value_heads", heads), "ffn_hidden": r.int("intermediate_size"),
        "vocab": r.int("vocab_size"), "activation": _activation(r, "silu", gated=True), "norm": "rmsnorm",
        "tied_embeddings": r.flag("tie_word_embeddings", False), "position_encoding": "rope",
        "max_position": r.int("max_position_embeddings", None),
    }
    if r.data.get("head_dim") is not None:
        out["head_dim"] = r.int("head_dim")
    if r.data.get("partial_rotary_factor") is not None:  # Qwen3-Next, Phi, GLM rotate part of each head
        out["rotary_fraction"] = r.number("partial_rotary_factor", 1.0)
    return out


def _qwen3_next(r: _Reader, name: str) -> dict[str, Any]:
    """Qwen3-Next: Qwen3-MoE's layers with Gated DeltaNet in place of attention on all but every
    full_attention_interval-th layer (or as layer_types lists them), and gated softmax attention
    (HF Qwen3NextAttention's q_proj emits the query and its output gate)."""
    layers = r.int("num_hidden_layers")
    value = r.data.get("layer_types")
    if value is None:
        every = r.int("full_attention_interval", 4)
        value = ["full_attention" if (i + 1) % every == 0 else "linear_attention" for i in range(layers)]
    if not isinstance(value, list) or len(value) != layers or any(
            v not in ("full_attention", "linear_attention") for v in value):
        raise r.bad("layer_types", f"must list full_attention or linear_attention for each of the {layers} layers",
                    "correct the config.json")
    kinds = ["gated_delta" if v == "linear_attention" else "full" for v in value]
    linear = {"key_heads": r.int("linear_num_key_heads"), "value_heads": r.int("linear_num_value_heads"),
              "key_head_dim": r.int("linear_key_head_dim"), "value_head_dim": r.int("linear_value_head_dim"),
              "conv_kernel": r.int("linear_conv_kernel_dim", 4)}
    return {**_llama_core(r, name), "attention_pattern": _period(kinds), "linear_attention": linear,
            "attention_output_gate": True,
            "moe": moe_section(r, "qwen3_next", layers)}


def _deepseek(r: _Reader, kind: str, name: str) -> dict[str, Any]:
    layers = r.int("num_hidden_layers")
    if r.flag("attention_bias", False):  # HF biases the latent projections; MLA's have no bias field
        raise r.bad("attention_bias", "biases on latent-attention projections are not modelled",
                    "set attention_bias false or write a Rankflow model YAML")
    return {
        "name": name, "layers": layers, "hidden": r.int("hidden_size"), "heads": r.int("num_attention_heads"),
        "ffn_hidden": r.int("intermediate_size"), "vocab": r.int("vocab_size"),
        "activation": _activation(r, "silu", gated=True), "norm": "rmsnorm",
        "tied_embeddings": r.flag("tie_word_embeddings", False), "position_encoding": "rope",
        "max_position": r.int("max_position_embeddings", None), "moe": moe_section(r, kind, layers),
        "mla": {"q_lora_rank": r.int("q_lora_rank", None), "kv_lora_rank": r.int("kv_lora_rank"),
                "qk_nope_head_dim": r.int("qk_nope_head_dim"), "qk_rope_head_dim": r.int("qk_rope_head_dim"),
                "v_head_dim": r.int("v_head_dim")},
        "mtp_layers": r.int("num_nextn_predict_layers", 0, minimum=0),
    }


def _gpt_neox(r: _Reader, name: str) -> dict[str, Any]:
    # The MLP always has biases (HF GPTNeoXMLP); attention_bias switches those of qkv and dense together.
    if not r.flag("attention_bias", True):
        raise r.bad("attention_bias", "an unbiased attention beside a biased MLP is not modelled",
                    "write a Rankflow model YAML (bias covers every linear, qkv_bias only q/k/v)")
    return {
        "name": name, "layers": r.int("num_hidden_layers"), "hidden": r.int("hidden_size"),
        "heads": r.int("num_attention_heads"), "ffn_hidden": r.int("intermediate_size"), "vocab": r.int("vocab_size"),
        "activation": _activation(r, "gelu", gated=False), "norm": "layernorm",
        "tied_embeddings": r.flag("tie_word_embeddings", False), "position_encoding": "rope", "bias": True,
        "max_position": r.int("max_position_embeddings", None),
        # HF GPTNeoXConfig defaults it to true: x + attn(ln1(x)) + mlp(ln2(x)).
        "parallel_residual": r.flag("use_parallel_residual", True),
    }


_MPT_MOE_FFN = ("torch_dmoe", "mb_moe", "mb_dmoe")
# TransformerEngine LayerNormMLP activations as Rankflow MLP kinds: the *glu ones gate (three matrices).
_TE_ACTIVATIONS = {"gelu": "gelu", "qgelu": "gelu", "relu": "relu", "geglu": "swiglu", "qgeglu": "swiglu",
                   "reglu": "swiglu", "swiglu": "swiglu"}


def _mpt_width(r: _Reader, ffn: _Reader, d: int) -> int:
    """llm-foundry's resolve_ffn_hidden_size: ffn_hidden_size wins; else d_model x expansion_ratio,
    which must be a whole number."""
    if ffn.data.get("ffn_hidden_size") is not None:
        return ffn.int("ffn_hidden_size")
    width = r.number("expansion_ratio", 4) * d
    if width != int(width):
        raise r.bad("expansion_ratio", f"d_model x expansion_ratio = {width} is not a whole number",
                    "set ffn_config.ffn_hidden_size or correct expansion_ratio")
    return int(width)


def _mpt_ffn(r: _Reader, d: int) -> dict[str, Any]:
    """MPT's MLP from ffn_config (llm-foundry's build_ffn): mptmlp (two matrices) or mptglu (gated,
    three), activation from ffn_act_fn (default gelu); te_ln_mlp is TransformerEngine's LayerNormMLP,
    the block's second norm and MLP fused (the same work), its activation named by `activation`.
    fc_type picks the linear's implementation (torch or te), not its shape, so it is not read."""
    ffn = r.nested("ffn_config")
    kind = ffn.text("ffn_type", "mptmlp")
    if kind in _MPT_MOE_FFN:
        raise ffn.bad("ffn_type", f"MPT mixture-of-experts ('{kind}') is not imported",
                      "write a Rankflow model YAML with a moe section")
    if kind in ("mptmlp", "mptglu"):
        act = _activation(ffn.nested("ffn_act_fn"), "gelu", gated=kind == "mptglu", key="name")
    elif kind == "te_ln_mlp":
        if ffn.data.get("ffn_act_fn") is not None:  # llm-foundry refuses it too
            raise ffn.bad("ffn_act_fn", "te_ln_mlp takes no ffn_act_fn", "name the activation in ffn_config.activation")
        if (ffn.text("normalization", "LayerNorm") or "LayerNorm") != "LayerNorm":  # its norm is the block's
            raise ffn.bad("normalization", "te_ln_mlp's norm differs from the block's LayerNorm",
                          "write a Rankflow model YAML")
        name = ffn.text("activation", "gelu") or "gelu"
        if name not in _TE_ACTIVATIONS:
            raise ffn.bad("activation", f"TransformerEngine activation {name[:40]!r} is not modelled",
                          f"use one of {', '.join(_TE_ACTIVATIONS)}")
        act = _TE_ACTIVATIONS[name]
    else:
        raise ffn.bad("ffn_type", f"unknown MPT ffn_type {str(kind)[:40]!r}", "use mptmlp, mptglu or te_ln_mlp")
    return {"ffn_hidden": _mpt_width(r, ffn, d), "activation": act}


def _mpt_kv_heads(attn: _Reader, heads: int) -> int:
    """llm-foundry's attention classes: multihead ignores kv_n_heads, multiquery has one K/V head, and
    grouped-query reads it (llmfoundry/layers/attention.py)."""
    kind = attn.text("attn_type", "multihead_attention") or "multihead_attention"
    if kind == "multihead_attention":
        return heads
    if kind == "multiquery_attention":
        return 1
    if kind == "grouped_query_attention":
        return attn.int("kv_n_heads", heads)
    raise attn.bad("attn_type", f"unknown MPT attn_type {kind[:40]!r}",
                   "use multihead_attention, multiquery_attention or grouped_query_attention")


def _mpt(r: _Reader, name: str) -> dict[str, Any]:
    d, heads = r.int("d_model"), r.int("n_heads")
    attn = r.nested("attn_config")
    return {
        "name": name, "layers": r.int("n_layers"), "hidden": d, "heads": heads,
        "kv_heads": _mpt_kv_heads(attn, heads), **_mpt_ffn(r, d),
        "vocab": r.int("vocab_size"), "norm": "layernorm", "tied_embeddings": True,
        "position_encoding": "alibi" if attn.flag("alibi", False) else "learned",
        "max_position": r.int("max_seq_len", None), "bias": not r.flag("no_bias", True),
    }


def _gpt2(r: _Reader, name: str) -> dict[str, Any]:
    d = r.int("n_embd")
    return {
        "name": name, "layers": r.int("n_layer"), "hidden": d, "heads": r.int("n_head"),
        "ffn_hidden": r.int("n_inner", None) or 4 * d, "vocab": r.int("vocab_size"), "activation": "gelu",
        "norm": "layernorm", "tied_embeddings": True, "position_encoding": "learned",
        "max_position": r.int("n_positions", 1024), "bias": True,
    }


def model_from_hf(data: dict[str, Any], file: str) -> dict[str, Any]:
    r = _Reader(data, file)
    kind = _kind(r)
    archs = data.get("architectures")
    name = r.text("_name_or_path", None) or (archs[0] if isinstance(archs, list) and archs and
                                             isinstance(archs[0], str) else kind)
    if kind in _LLAMA_LIKE:
        out = _llama_like(r, kind, name)
    elif kind in ("deepseek_v2", "deepseek_v3"):
        out = _deepseek(r, kind, name)
    elif kind == "qwen3_next":
        out = _qwen3_next(r, name)
    elif kind in _MOE:
        out = {**_llama_like(r, kind, name), "moe": moe_section(r, kind, r.int("num_hidden_layers"))}
    elif kind == "gpt_neox":
        out = _gpt_neox(r, name)
    elif kind == "mpt":
        out = _mpt(r, name)
    else:
        out = _gpt2(r, name)
    return {k: v for k, v in out.items() if v is not None}
