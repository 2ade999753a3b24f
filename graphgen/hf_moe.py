"""The `moe` section of an imported Hugging Face config: experts, routing, shared experts and which layers
hold experts, as each family's HF modeling code places them."""

from __future__ import annotations

from typing import Any

from graphgen.hf_reader import Reader


def _dense_layers(r: Reader, layers: int) -> list[int]:
    value = r.data.get("mlp_only_layers") or []
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < layers
                                              for v in value):
        raise r.bad("mlp_only_layers", f"must be a list of layer indices, got {value!r}", "correct the config.json")
    return value


def moe_section(r: Reader, kind: str, layers: int) -> dict[str, Any]:
    """The moe section: Mixtral's num_local_experts (every layer, no shared expert); Qwen's experts,
    shared expert, sparse step and MLP-only layers; DeepSeek's routed and shared experts and dense prefix."""
    if kind == "mixtral":
        return {"experts": r.int("num_local_experts"), "top_k": r.int("num_experts_per_tok"),
                "expert_ffn_hidden": r.int("intermediate_size"), "aux_loss": _aux(r, "router_aux_loss_coef")}
    if kind in ("qwen2_moe", "qwen3_moe", "qwen3_next"):
        shared = r.int("shared_expert_intermediate_size", 0, minimum=0)
        step = r.int("decoder_sparse_step", 1)
        # Qwen2MoeDecoderLayer: MoE where (layer_idx + 1) % decoder_sparse_step == 0, i.e. from layer step - 1
        return {"experts": r.int("num_experts"), "top_k": r.int("num_experts_per_tok"),
                "expert_ffn_hidden": r.int("moe_intermediate_size"), "shared_experts": 1 if shared else 0,
                **({"shared_ffn_hidden": shared} if shared else {}), "first_dense_layers": step - 1, "every": step,
                # Qwen2MoeSparseMoeBlock / Qwen3NextSparseMoeBlock: shared_expert_gate = nn.Linear(hidden, 1)
                "shared_gate": bool(shared) and kind != "qwen3_moe", "aux_loss": _aux(r, "router_aux_loss_coef"),
                "dense_layers": _dense_layers(r, layers)}
    scoring = r.text("scoring_func", "softmax")
    if scoring not in ("softmax", "sigmoid"):
        raise r.bad("scoring_func", f"router score '{scoring}' is not modelled", "use softmax or sigmoid")
    # group_limited_greedy (V2) and noaux_tc (V3) pick topk_group of n_group expert groups first
    groups = r.int("n_group", 1) if r.text("topk_method", "greedy") in ("group_limited_greedy", "noaux_tc") else 1
    grouped = {"expert_groups": groups, "groups_per_token": r.int("topk_group", groups)} if groups > 1 else {}
    # DeepSeek's own modeling_deepseek.py on the Hub (trust_remote_code; vLLM and SGLang follow it): MoE where
    # layer_idx >= first_k_dense_replace and layer_idx % moe_layer_freq == 0. transformers' native DeepseekV2/V3
    # layers ignore moe_layer_freq; every released checkpoint has 1, where the two agree.
    first, freq = r.int("first_k_dense_replace", 0, minimum=0), r.int("moe_layer_freq", 1)
    return {"experts": r.int("n_routed_experts"), "top_k": r.int("num_experts_per_tok"),
            "expert_ffn_hidden": r.int("moe_intermediate_size"), "shared_experts": r.int("n_shared_experts", 0, minimum=0),
            "first_dense_layers": -(-first // freq) * freq, "every": freq, "router": scoring,
            "aux_loss": _aux(r, "aux_loss_alpha"), **grouped}


def _aux(r: Reader, key: str) -> bool:
    """Whether training adds the load-balancing loss: its coefficient is positive (HF's defaults where the
    config leaves it out: MixtralConfig and Qwen2MoeConfig router_aux_loss_coef 0.001, DeepseekV2Config
    aux_loss_alpha 0.001)."""
    if r.data.get(key) == 0:
        return False
    r.number(key, 0.001)  # refuses a negative or non-numeric coefficient
    return True
