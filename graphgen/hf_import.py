"""Hugging Face config.json -> the `model` section of a Rankflow model config. No network access."""

from __future__ import annotations

from typing import Any

from graphgen.errors import RankflowError

_LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3"}
SUPPORTED = sorted(_LLAMA_LIKE | {"gpt_neox", "mpt", "gpt2"})


def is_hf_config(data: dict[str, Any]) -> bool:
    return "model_type" in data or "architectures" in data


def _get(data: dict[str, Any], key: str, file: str) -> Any:
    if key not in data:
        raise RankflowError("Hugging Face config lacks a required key", file=file, field=key,
                            fix="use a complete config.json for this model type")
    return data[key]


def _act(name: str) -> str:
    name = (name or "").lower()
    if name in {"silu", "swiglu", "swish"}:
        return "swiglu"
    if name.startswith("gelu"):
        return "gelu"
    if name == "relu":
        return "relu"
    return "gelu"


def model_from_hf(data: dict[str, Any], file: str) -> dict[str, Any]:
    kind = data.get("model_type")
    if kind is None:
        arch = (data.get("architectures") or [""])[0].lower()
        kind = next((k for k in SUPPORTED if k.replace("_", "") in arch.replace("_", "")), None)
    name = data.get("_name_or_path") or (data.get("architectures") or [kind])[0]
    if kind in _LLAMA_LIKE:
        heads = _get(data, "num_attention_heads", file)
        out = {
            "name": name, "layers": _get(data, "num_hidden_layers", file),
            "hidden": _get(data, "hidden_size", file), "heads": heads,
            "kv_heads": data.get("num_key_value_heads") or heads,
            "ffn_hidden": _get(data, "intermediate_size", file), "vocab": _get(data, "vocab_size", file),
            "activation": _act(data.get("hidden_act", "silu")), "norm": "rmsnorm",
            "tied_embeddings": bool(data.get("tie_word_embeddings", False)), "position_encoding": "rope",
        }
        if data.get("head_dim"):
            out["head_dim"] = data["head_dim"]
        return out
    if kind == "gpt_neox":
        return {
            "name": name, "layers": _get(data, "num_hidden_layers", file),
            "hidden": _get(data, "hidden_size", file), "heads": _get(data, "num_attention_heads", file),
            "ffn_hidden": _get(data, "intermediate_size", file), "vocab": _get(data, "vocab_size", file),
            "activation": _act(data.get("hidden_act", "gelu")), "norm": "layernorm",
            "tied_embeddings": bool(data.get("tie_word_embeddings", False)), "position_encoding": "rope",
            "bias": True,
        }
    if kind == "mpt":
        d = _get(data, "d_model", file)
        attn = data.get("attn_config") or {}
        return {
            "name": name, "layers": _get(data, "n_layers", file), "hidden": d,
            "heads": _get(data, "n_heads", file), "kv_heads": attn.get("kv_n_heads") or data["n_heads"],
            "ffn_hidden": int(data.get("expansion_ratio", 4) * d), "vocab": _get(data, "vocab_size", file),
            "activation": "gelu", "norm": "layernorm", "tied_embeddings": True,
            "position_encoding": "alibi" if attn.get("alibi", False) else "learned",
            "max_position": data.get("max_seq_len"), "bias": not data.get("no_bias", True),
        }
    if kind == "gpt2":
        d = _get(data, "n_embd", file)
        return {
            "name": name, "layers": _get(data, "n_layer", file), "hidden": d,
            "heads": _get(data, "n_head", file), "ffn_hidden": data.get("n_inner") or 4 * d,
            "vocab": _get(data, "vocab_size", file), "activation": "gelu", "norm": "layernorm",
            "tied_embeddings": True, "position_encoding": "learned",
            "max_position": data.get("n_positions", 1024), "bias": True,
        }
    raise RankflowError(f"unsupported Hugging Face model_type {kind!r}", file=file, field="model_type",
                        fix=f"use one of {', '.join(SUPPORTED)} or write a Rankflow model YAML")
