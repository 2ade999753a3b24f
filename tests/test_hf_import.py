"""Hugging Face import: what each key the importer reads becomes, and the keys it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from graphgen.errors import RankflowError
from graphgen.model.params import attention_linears, total_params
from rankflow.api import load_model
from tests.helpers import ROOT, TINY_GPT, TINY_LLAMA, layer_graph, run, scenario

HF = ROOT / "tests" / "data" / "hf"
LLAMA = {"model_type": "llama", "hidden_size": 256, "num_attention_heads": 8, "num_hidden_layers": 4,
         "intermediate_size": 512, "vocab_size": 1000}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def refused(tmp_path: Path, data: dict, key: str) -> str:
    """The one-line error an unrepresentable config gets: it names the file and the HF key."""
    path = write(tmp_path, data)
    with pytest.raises(RankflowError) as err:
        load_model(path)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and key in text
    return text


def test_qwen2_biases_query_key_value_but_not_the_output_projection():
    m = load_model(HF / "qwen2.json").model
    assert m.qkv_bias and not m.bias
    qkv, out = attention_linears(m)
    assert qkv.bias and not out.bias
    # 28 layers of q (3584), k and v (4 x 128 each) biases: what the HF checkpoint holds beyond the weights.
    assert total_params(m) - total_params(m.model_copy(update={"qkv_bias": False})) == 28 * (3584 + 2 * 512)
    assert load_model(HF / "qwen2_moe.json").model.qkv_bias


def test_qkv_bias_adds_parameters_to_the_qkv_projection_op_only():
    plain = layer_graph(scenario(TINY_LLAMA))
    biased = layer_graph(scenario({**TINY_LLAMA, "qkv_bias": True}))
    d_out = (8 + 2 * 4) * 32
    assert biased.unit_block(0).op("qkv_proj").weight_params - plain.unit_block(0).op("qkv_proj").weight_params == d_out
    assert biased.unit_block(0).op("out_proj").weight_params == plain.unit_block(0).op("out_proj").weight_params


def test_llama_attention_bias_with_mlp_bias_biases_every_linear(tmp_path):
    m = load_model(write(tmp_path, {**LLAMA, "attention_bias": True, "mlp_bias": True})).model
    assert m.bias and not m.qkv_bias


@pytest.mark.parametrize("data,key", [
    ({**LLAMA, "attention_bias": True}, "attention_bias"),
    ({**LLAMA, "mlp_bias": True}, "mlp_bias"),
    ({**LLAMA, "model_type": "qwen3_moe", "attention_bias": True, "num_experts": 8, "num_experts_per_tok": 2,
      "moe_intermediate_size": 128}, "attention_bias"),
    ({**LLAMA, "model_type": "gpt_neox", "attention_bias": False}, "attention_bias"),
], ids=["llama-attention-only", "llama-mlp-only", "qwen3-moe", "gpt-neox-unbiased-attention"])
def test_biases_rankflow_cannot_place_are_refused(tmp_path, data, key):
    refused(tmp_path, data, key)


def test_layer_types_set_the_attention_pattern():
    # Qwen3-8B's shape with a window on three layers of four; max_window_layers (36) alone would slide none.
    m = load_model(HF / "qwen3_layer_types.json").model
    assert m.sliding_window == 4096 and m.attention_pattern == ["sliding", "sliding", "sliding", "full"]
    assert [m.attention_kind(i) for i in range(8)] == ["sliding"] * 3 + ["full"] + ["sliding"] * 3 + ["full"]


def test_layer_types_give_every_layer_its_kind(tmp_path):
    qwen = {**LLAMA, "model_type": "qwen2", "sliding_window": 64, "use_sliding_window": True}
    for kinds in (["full", "sliding", "sliding", "full"], ["full", "sliding", "sliding", "sliding"]):
        m = load_model(write(tmp_path, {**qwen, "layer_types": [f"{k}_attention" for k in kinds]})).model
        assert [m.attention_kind(i) for i in range(4)] == kinds
    assert m.attention_pattern == ["full", "sliding", "sliding", "sliding"]  # no shorter pattern repeats
    every = {**qwen, "layer_types": ["sliding_attention"] * 4}  # one kind: no pattern needed
    m = load_model(write(tmp_path, every)).model
    assert m.attention_pattern is None and m.sliding_window == 64


def test_layer_types_without_use_sliding_window_attend_fully(tmp_path):
    # HF Qwen2Config drops the window unless use_sliding_window: sliding_attention layers then see every key.
    qwen = {**LLAMA, "model_type": "qwen2", "sliding_window": 64, "layer_types": ["sliding_attention"] * 4}
    m = load_model(write(tmp_path, qwen)).model
    assert m.sliding_window is None and m.attention_kind(0) == "full"


@pytest.mark.parametrize("data", [
    {**LLAMA, "model_type": "qwen3", "sliding_window": 64, "use_sliding_window": True,
     "layer_types": ["chunked_attention"] * 4},
    {**LLAMA, "model_type": "qwen3", "layer_types": ["full_attention"] * 3},
    {**LLAMA, "model_type": "qwen3", "layer_types": "full_attention"},
    {**LLAMA, "model_type": "mistral", "sliding_window": 64, "layer_types": ["full_attention", "sliding_attention"] * 2},
], ids=["unknown-kind", "too-short", "not-a-list", "mistral-ignores-it"])
def test_layer_types_rankflow_cannot_follow_are_refused(tmp_path, data):
    refused(tmp_path, data, "layer_types")


@given(st.lists(st.sampled_from(["full", "sliding"]), min_size=1, max_size=40))
def test_the_pattern_is_the_shortest_that_repeats_into_every_layer(kinds):
    from graphgen.hf_import import _period

    pattern = _period(kinds)
    assert all(k == pattern[i % len(pattern)] for i, k in enumerate(kinds))
    assert not any(all(k == kinds[i % p] for i, k in enumerate(kinds)) for p in range(1, len(pattern)))


def test_gpt_neox_parallel_residual_is_imported(tmp_path):
    assert load_model(HF / "gpt_neox.json").model.parallel_residual  # GPT-NeoX-20B
    neox = {**LLAMA, "model_type": "gpt_neox"}
    assert load_model(write(tmp_path, neox)).model.parallel_residual  # HF's default
    assert not load_model(write(tmp_path, {**neox, "use_parallel_residual": False})).model.parallel_residual


@pytest.mark.parametrize("tp,sp", [(1, False), (2, False), (2, True)])
def test_parallel_residual_saves_one_activation_less_with_the_same_work(tp, sp):
    base = {**TINY_GPT, "dropout": 0.0}
    seq, par = (scenario({**base, "parallel_residual": p}, tp=tp, sp=sp) for p in (False, True))
    s_ops, p_ops = (layer_graph(sc).unit_block(0).ops for sc in (seq, par))
    assert [o.name for o in p_ops][-6:] == ["out_proj", "ln_mlp", "fc1", "gelu", "fc2", "parallel_residual"]
    # ln_mlp reads the block input ln_attn already keeps: one residual-stream tensor less per layer.
    stream = 2 * 512 * TINY_GPT["hidden"] / (tp if sp else 1)
    assert sum(o.saved_bytes for o in s_ops) - sum(o.saved_bytes for o in p_ops) == stream
    assert sum(o.weight_params for o in p_ops) == sum(o.weight_params for o in s_ops)
    assert sum(o.flops for o in p_ops) == pytest.approx(sum(o.flops for o in s_ops))
    s_res, p_res = run(seq), run(par)
    assert p_res.breakdown.exposed_comm["tp"] == pytest.approx(s_res.breakdown.exposed_comm["tp"])
    assert p_res.memory[0].activations < s_res.memory[0].activations


MPT = {"model_type": "mpt", "d_model": 256, "n_heads": 8, "n_layers": 2, "vocab_size": 1000}


def test_mpt_ffn_config_sets_the_mlp_width_and_gate():
    # MPT-7B's shape with llm-foundry's gated MLP (SwiGLU) at an explicit width: expansion_ratio 4 is ignored.
    m = load_model(HF / "mpt_glu.json").model
    assert m.activation == "swiglu" and m.ffn_hidden == 10944
    plain = load_model(HF / "mpt.json").model
    assert plain.activation == "gelu" and plain.ffn_hidden == 4 * 4096


@pytest.mark.parametrize("ffn,activation,width", [
    ({"ffn_type": "mptmlp", "ffn_act_fn": {"name": "relu"}}, "relu", 1024),
    ({"ffn_type": "mptglu"}, "swiglu", 1024),  # gelu-gated: three matrices, as SwiGLU
    ({"ffn_type": "te_ln_mlp", "fc_type": "te", "ffn_hidden_size": 640}, "gelu", 640),
    ({"ffn_type": "te_ln_mlp", "activation": "swiglu"}, "swiglu", 1024),
    ({"fc_type": {"name": "torch"}}, "gelu", 1024),
])
def test_mpt_ffn_types(tmp_path, ffn, activation, width):
    m = load_model(write(tmp_path, {**MPT, "expansion_ratio": 4, "ffn_config": ffn})).model
    assert (m.activation, m.ffn_hidden) == (activation, width)


@pytest.mark.parametrize("data,key", [
    ({**MPT, "ffn_config": {"ffn_type": "mb_dmoe"}}, "ffn_config.ffn_type"),
    ({**MPT, "ffn_config": {"ffn_type": "mystery"}}, "ffn_config.ffn_type"),
    ({**MPT, "ffn_config": {"ffn_act_fn": {"name": "mish"}}}, "ffn_config.ffn_act_fn.name"),
    ({**MPT, "ffn_config": {"ffn_type": "te_ln_mlp", "ffn_act_fn": {"name": "silu"}}}, "ffn_config.ffn_act_fn"),
    ({**MPT, "ffn_config": {"ffn_type": "te_ln_mlp", "activation": "srelu"}}, "ffn_config.activation"),
    ({**MPT, "ffn_config": {"ffn_type": "te_ln_mlp", "normalization": "RMSNorm"}}, "ffn_config.normalization"),
    ({**MPT, "ffn_config": {"ffn_hidden_size": 0}}, "ffn_config.ffn_hidden_size"),
    ({**MPT, "ffn_config": [1]}, "ffn_config"),
    ({**MPT, "expansion_ratio": 2.001}, "expansion_ratio"),
], ids=["moe", "unknown", "act-unknown", "te-act-fn", "te-activation", "te-norm", "width-0", "not-a-mapping",
        "fractional-width"])
def test_mpt_ffn_configs_rankflow_cannot_follow_are_refused(tmp_path, data, key):
    refused(tmp_path, data, key)


@pytest.mark.parametrize("attn, kv", [({"attn_type": "multihead_attention", "kv_n_heads": 1}, 32),
                                      ({"attn_type": "multiquery_attention"}, 1),
                                      ({"attn_type": "grouped_query_attention", "kv_n_heads": 8}, 8)])
def test_mpt_kv_heads_follow_its_attention_class(tmp_path, attn, kv):
    """llm-foundry's multihead attention ignores kv_n_heads; multiquery has one K/V head."""
    import json

    cfg = {"model_type": "mpt", "d_model": 4096, "n_heads": 32, "n_layers": 2, "vocab_size": 50432,
           "max_seq_len": 2048, "expansion_ratio": 4, "attn_config": attn}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    assert load_model(path).model.n_kv_heads == kv


QWEN3_NEXT = {"model_type": "qwen3_next", "hidden_size": 2048, "num_attention_heads": 16, "num_key_value_heads": 2,
              "head_dim": 256, "num_hidden_layers": 48, "intermediate_size": 5120, "vocab_size": 151936,
              "num_experts": 512, "num_experts_per_tok": 10, "moe_intermediate_size": 512,
              "shared_expert_intermediate_size": 512, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
              "linear_key_head_dim": 128, "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4,
              "full_attention_interval": 4, "partial_rotary_factor": 0.25}


def test_qwen3_next_imports_its_gated_deltanet_layers_as_the_shipped_config_has_them(tmp_path):
    imported = load_model(write(tmp_path, QWEN3_NEXT)).model
    shipped = load_model(ROOT / "model_configs" / "qwen3-next-80b-a3b.yaml").model
    assert imported.attention_pattern == ["gated_delta", "gated_delta", "gated_delta", "full"]
    assert imported.linear_attention == shipped.linear_attention and imported.attention_output_gate
    assert imported.moe.shared_gate and imported.rotary_fraction == shipped.rotary_fraction == 0.25
    assert load_model(HF / "qwen2_moe.json").model.moe.shared_gate  # Qwen2MoeSparseMoeBlock.shared_expert_gate
    assert total_params(imported) == total_params(shipped.model_copy(update={"mtp_layers": 0}))
    listed = {**QWEN3_NEXT, "layer_types": ["linear_attention", "full_attention"] * 24}
    assert load_model(write(tmp_path, listed)).model.attention_pattern == ["gated_delta", "full"]
    refused(tmp_path, {**QWEN3_NEXT, "layer_types": ["sliding_attention"] * 48}, "layer_types")


def test_deepseek_group_limited_routing_imports_its_groups():
    v3 = load_model(HF / "deepseek_v3.json").model.moe  # topk_method noaux_tc, n_group 8, topk_group 4
    assert (v3.expert_groups, v3.groups_per_token) == (8, 4)
    v2 = load_model(HF / "deepseek_v2.json").model.moe  # topk_method greedy: groups do not limit routing
    assert (v2.expert_groups, v2.groups_per_token) == (1, None)


@pytest.mark.parametrize("name, key, step, layers, expected", [
    # Qwen2MoeDecoderLayer: MoE where (layer_idx + 1) % decoder_sparse_step == 0 (and not in mlp_only_layers)
    ("qwen2_moe.json", "decoder_sparse_step", 2, 25, [i for i in range(25) if (i + 1) % 2 == 0]),
    ("qwen2_moe.json", "decoder_sparse_step", 3, 12, [2, 5, 8, 11]),
    # DeepSeek's Hub modeling_deepseek.py: MoE where layer_idx >= first_k_dense_replace and layer_idx % moe_layer_freq == 0
    ("deepseek_v2.json", "moe_layer_freq", 2, 28, [i for i in range(28) if i >= 1 and i % 2 == 0]),
    ("deepseek_v2.json", "moe_layer_freq", 3, 12, [3, 6, 9]),
])
def test_moe_layers_sit_where_each_family_modeling_code_puts_them(tmp_path, name, key, step, layers, expected):
    data = {**json.loads((HF / name).read_text()), key: step, "num_hidden_layers": layers}
    data.pop("mlp_only_layers", None)
    model = load_model(write(tmp_path, data)).model
    assert [i for i in range(layers) if model.is_moe(i)] == expected


@pytest.mark.parametrize("name, key", [("mixtral.json", "router_aux_loss_coef"), ("qwen2_moe.json", "router_aux_loss_coef"),
                                       ("deepseek_v2.json", "aux_loss_alpha")])
def test_a_zero_load_balancing_coefficient_drops_the_aux_loss_from_training(tmp_path, name, key):
    data = {**json.loads((HF / name).read_text()), "num_hidden_layers": 4}
    with_aux = load_model(write(tmp_path, data)).model
    (tmp_path / "z").mkdir()
    without = load_model(write(tmp_path / "z", {**data, key: 0})).model
    assert with_aux.moe.aux_loss and not without.moe.aux_loss
    step = [run(scenario(m.model_dump(), {"global_batch": 8, "seq_len": 512}, dp=8)).step_time_s
            for m in (with_aux, without)]
    assert step[0] > step[1]
