"""Gated DeltaNet layers (Qwen3-Next's linear attention): parameters, FLOPs, lowering and what is refused."""

from __future__ import annotations

import pytest

from graphgen.errors import RankflowError
from graphgen.model.flops import model_flops_per_token
from graphgen.model.params import block_params, total_params
from rankflow import api
from tests.helpers import ROOT, TINY_LLAMA, layer_graph, run, scenario

LA = {"key_heads": 4, "value_heads": 8, "key_head_dim": 32, "value_head_dim": 32, "conv_kernel": 4}
HYBRID = dict(TINY_LLAMA, attention_pattern=["gated_delta", "gated_delta", "gated_delta", "full"], linear_attention=LA)


def _spec(model):
    return api.load_scenario({"model": model, "workload": {"seq_len": 256, "global_batch": 8, "micro_batch": 1}},
                             api.load_hardware(ROOT / "hardware_configs" / "A100-SXM4-80GB.yaml")).model


def test_a_gated_delta_layer_has_its_own_projections_convolution_and_gates():
    m = _spec(HYBRID)
    h, qk, v = m.hidden, 4 * 32, 8 * 32
    linears = h * (2 * qk + 2 * v + 2 * 8) + v * h
    extra = 4 * (2 * qk + v) + 2 * 8 + 32  # convolution, decay and step per value head, gated norm
    mlp = 3 * h * m.ffn_hidden
    assert block_params(m, 0) == linears + extra + mlp + 2 * h
    assert block_params(m, 3) == (m.heads + 2 * m.n_kv_heads) * m.d_head * h + m.heads * m.d_head * h + mlp + 2 * h
    assert total_params(m) < total_params(_spec(TINY_LLAMA)) + 3 * (linears + extra)


def test_its_flops_follow_megatron_and_do_not_grow_with_the_sequence():
    m = _spec(HYBRID)
    short, long = model_flops_per_token(m, 256), model_flops_per_token(m, 4096)
    full = _spec(TINY_LLAMA)
    # only the one softmax layer in four adds attention FLOPs with the sequence
    assert long - short == pytest.approx((model_flops_per_token(full, 4096) - model_flops_per_token(full, 256)) / 4)


def test_the_layer_lowers_with_tensor_parallel_heads_and_runs():
    sc = scenario(HYBRID, {"seq_len": 256, "global_batch": 8}, dp=2, tp=2, sp=True)
    names = [op.name for op in layer_graph(sc).unit_block(0).ops]
    assert names[:6] == ["ln_attn", "gdn_in_proj", "gdn_conv", "gdn_core", "gdn_norm", "out_proj"]
    res = run(sc)
    assert res.step_time_s > 0 and res.breakdown.exposed_comm["tp"] > 0
    one = scenario(HYBRID, {"seq_len": 256, "global_batch": 8}, dp=2)
    per_rank = {op.name: op.flops for op in layer_graph(one).unit_block(0).ops}
    for op in layer_graph(sc).unit_block(0).ops[1:6]:  # heads split over tp: half the work per rank
        assert op.flops == pytest.approx(per_rank[op.name] / 2)


@pytest.mark.parametrize("workload,plan,field", [
    ({"run_type": "inference", "inference": {"batch": 1, "input_len": 64}}, {}, "workload.run_type"),
    ({}, {"cp": 2}, "parallelism.cp"),
])
def test_what_gated_delta_layers_cannot_do_yet_is_refused(workload, plan, field):
    with pytest.raises(RankflowError) as exc:
        scenario(HYBRID, {"seq_len": 256, "global_batch": 8, **workload}, **plan)
    assert exc.value.field == field


def test_gated_delta_layers_need_their_dimensions():
    with pytest.raises(RankflowError):
        _spec(dict(HYBRID, linear_attention=None))


def test_value_heads_must_group_evenly_over_key_heads():
    with pytest.raises(RankflowError) as exc:
        _spec(dict(HYBRID, linear_attention=dict(LA, value_heads=6)))
    assert "multiple of key_heads" in str(exc.value)


def test_the_shipped_qwen3_next_config_loads_with_its_published_size():
    mc = api.load_model(ROOT / "model_configs" / "qwen3-next-80b-a3b.yaml")
    m = mc.model
    assert [m.attention_kind(i) for i in range(4)] == ["gated_delta", "gated_delta", "gated_delta", "full"]
    assert 79e9 < total_params(m) < 83e9  # card: 80B, plus the MTP module


def test_the_delta_rule_core_is_a_product_of_activations():
    sc = scenario(HYBRID, {"seq_len": 256, "global_batch": 8}, dp=2, pp=2, schedule="zb-h1")
    core = next(op for op in layer_graph(sc).unit_block(0).ops if op.name == "gdn_core")
    assert core.weight_params == 0
    from graphgen.model.ops import op_work
    assert op_work(core, "bwd_w") == (0.0, 0.0) and op_work(core, "bwd_in") == op_work(core, "bwd")
    lora = scenario(HYBRID, {"seq_len": 256, "global_batch": 8, "finetune": {"method": "lora", "lora_rank": 4}})
    frozen = next(op for op in layer_graph(lora).unit_block(0).ops if op.name == "gdn_core")
    assert frozen.saved_bytes == core.saved_bytes and frozen.bwd_flops_factor == core.bwd_flops_factor


def test_exports_and_latent_attention_refuse_what_they_cannot_carry():
    from rankflow.export import export
    sc = scenario(HYBRID, {"seq_len": 256, "global_batch": 8}, dp=2)
    with pytest.raises(RankflowError) as exc:
        export(sc, "megatron")
    assert exc.value.field == "model.attention_pattern"
    with pytest.raises(RankflowError):
        _spec(dict(TINY_LLAMA, attention_output_gate=True,
                   mla={"kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32}))


def test_gates_and_partial_rotary_cost_what_they_touch():
    gated = dict(HYBRID, attention_output_gate=True, rotary_fraction=0.25,
                 moe={"experts": 4, "top_k": 2, "expert_ffn_hidden": 64, "shared_experts": 1, "shared_ffn_hidden": 64,
                      "shared_gate": True})
    plain = dict(gated, attention_output_gate=False, rotary_fraction=1.0,
                 moe=dict(gated["moe"], shared_gate=False))
    sc, base = (scenario(x, {"seq_len": 256, "global_batch": 8}, dp=2, tp=2, sp=True) for x in (gated, plain))
    ops = {op.name: op for op in layer_graph(sc).unit_block(3).ops}
    ref = {op.name: op for op in layer_graph(base).unit_block(3).ops}
    m, e, T = sc.model, 2.0, 256
    assert ops["attn_gate"].bytes == pytest.approx(3 * e * T * m.heads * m.d_head / 2)  # gate, output, result
    assert "attn_gate" not in ref and "shared_gate" not in ref
    assert ops["rope"].flops == pytest.approx(ref["rope"].flops / 4)
    assert ops["shared_gate"].weight_params == m.hidden
    # the shared-expert gate's weight, and the query projection's gate half
    assert block_params(sc.model, 3) == block_params(base.model, 3) + m.hidden + m.heads * m.d_head * m.hidden
