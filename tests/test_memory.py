"""Memory: ZeRO's model-state table, schedule-driven activations, the timeline, fine-tuning."""

from __future__ import annotations

import pytest

from backends.analytical import AnalyticalBackend
from graphgen.errors import RankflowError
from graphgen.ir import ComputeNode, Phase
from graphgen.memory import model_states, role_memory, scenario_memory
from graphgen.memory_timeline import memory_timeline
from graphgen.model.finetune import nf4_bytes_per_param
from tests.helpers import TINY_LLAMA, layer_graph, scenario
from tests.helpers import program as build_program

# Rajbhandari et al. 2020 (ZeRO), Table 1: 7.5B parameters, mixed-precision Adam (2 + 2 + 12 bytes),
# model states per device in GB for stages 1 (P_os), 2 (P_os+g), 3 (P_os+g+p) by DP degree.
ZERO_TABLE_1 = {1: (120, 120, 120), 4: (52.5, 41.3, 30), 16: (35.6, 21.6, 7.5), 64: (31.4, 16.6, 1.88),
                256: (30.4, 15.4, 0.47), 1024: (30.1, 15.1, 0.12)}


@pytest.mark.parametrize("dp", sorted(ZERO_TABLE_1))
def test_zero_table_1_model_states(dp):
    psi = 7.5e9
    for stage, published in zip((1, 2, 3), ZERO_TABLE_1[dp], strict=True):
        s = model_states(2 * psi, psi, precision="fp16", optimizer="adamw", grad_dtype="bf16", dp=dp,
                         zero=stage if dp > 1 else 0)
        got = s.total / 1e9
        digits = len(str(published).split(".")[1]) if "." in str(published) else 0
        assert abs(got - published) <= 0.5 * 10**-digits + 1e-9  # exact to the table's printed digits


def test_1f1b_keeps_pp_minus_stage_microbatches_in_flight():
    prog = build_program(scenario(dict(TINY_LLAMA, layers=8), {"global_batch": 16}, pp=4))
    mem = role_memory(prog)
    per_mb_stage1 = mem[1].activations / 3  # stage 1 of 4 keeps 3 microbatches
    assert mem[2].activations == pytest.approx(2 * per_mb_stage1)
    gpipe = role_memory(build_program(scenario(dict(TINY_LLAMA, layers=8), {"global_batch": 16}, pp=4,
                                               schedule="gpipe")))
    assert gpipe[1].activations == pytest.approx(16 * per_mb_stage1)  # GPipe keeps every microbatch


@pytest.mark.parametrize("plan", [dict(pp=4), dict(pp=2, tp=2, sp=True, recompute="selective"),
                                  dict(pp=2, schedule="interleaved", virtual_stages=2)])
def test_memory_timeline_peaks_at_the_schedule_count_and_returns_to_static(plan):
    prog = build_program(scenario(dict(TINY_LLAMA, layers=8), {"global_batch": 8}, **plan))
    tl = AnalyticalBackend().run(prog).timeline
    for role, mem in enumerate(role_memory(prog)):
        series = memory_timeline(prog, tl.start[role], tl.finish[role], role)
        static = mem.weights + mem.master_weights + mem.gradients + mem.optimizer_states + mem.comm_buffers
        assert max(b for _, b in series) - static == pytest.approx(mem.activations)
        assert series[-1][1] == pytest.approx(static)
        assert [t for t, _ in series] == sorted(t for t, _ in series)


def test_memory_only_matches_the_full_program():
    sc = scenario(TINY_LLAMA, {"global_batch": 8}, pp=2, dp=2, zero_stage=1)
    assert scenario_memory(sc) == role_memory(build_program(sc))


def lora(**ft):
    return {"global_batch": 4, "finetune": {"method": "lora", "lora_rank": 8, **ft}}


def test_lora_trains_only_adapters_and_skips_weight_gradients():
    full = scenario(TINY_LLAMA, {"global_batch": 4})
    adapted = scenario(TINY_LLAMA, lora())
    m = TINY_LLAMA
    h, kv_out = m["hidden"], (m["heads"] + 2 * m["kv_heads"]) * (m["hidden"] // m["heads"])
    per_layer = 8 * ((h + kv_out) + (h + h) + (h + 2 * m["ffn_hidden"]) + (m["ffn_hidden"] + h))
    (mem,) = scenario_memory(adapted)
    assert mem.trainable_params == pytest.approx(m["layers"] * per_layer)
    (mfull,) = scenario_memory(full)
    ratio = mem.trainable_params / mfull.trainable_params
    assert mem.optimizer_states == pytest.approx(mfull.optimizer_states * ratio)
    assert mem.gradients == pytest.approx(mfull.gradients * ratio) and ratio < 0.05
    # At a realistic width the skipped weight-gradient GEMMs outweigh the adapters' small kernels.
    wide = dict(TINY_LLAMA, hidden=2048, heads=16, kv_heads=8, ffn_hidden=5632)
    t_full = AnalyticalBackend().run(build_program(scenario(wide, {"global_batch": 4}))).result.breakdown.compute
    t_lora = AnalyticalBackend().run(build_program(scenario(wide, lora()))).result.breakdown.compute
    assert t_lora < 0.85 * t_full
    lg = layer_graph(adapted)
    assert {op.name for op in lg.layer if op.name.endswith(".lora")} == {
        "qkv_proj.lora", "out_proj.lora", "fc1.lora", "fc2.lora"}


def test_qlora_stores_base_linears_in_nf4():
    q = scenario(TINY_LLAMA, lora(method="qlora"))
    (mq,) = scenario_memory(q)
    (ml,) = scenario_memory(scenario(TINY_LLAMA, lora()))
    lg = layer_graph(q)
    linear = sum(op.weight_params for op in lg.layer if op.name in ("qkv_proj", "out_proj", "fc1", "fc2"))
    saved = TINY_LLAMA["layers"] * linear * (2 - nf4_bytes_per_param(q.workload.finetune))
    assert ml.weights - mq.weights == pytest.approx(saved)
    assert nf4_bytes_per_param(q.workload.finetune) == pytest.approx(0.5 + 1 / 64 + 4 / (64 * 256))


def test_qlora_quantises_every_block_linear_but_not_the_lm_head():
    hybrid = dict(TINY_LLAMA, attention_pattern=["gated_delta", "full"],
                  linear_attention={"key_heads": 4, "value_heads": 8, "key_head_dim": 32, "value_head_dim": 32},
                  moe={"experts": 4, "top_k": 2, "expert_ffn_hidden": 64, "shared_experts": 1,
                       "shared_ffn_hidden": 64})
    sc = scenario(hybrid, lora(method="qlora"))
    lg = layer_graph(sc)
    linears = {op.name: op for b in lg.blocks[2:] for op in b.ops if op.weight_params > 0 and op.kind.name == "MATMUL"
               and "." not in op.name}
    assert {"gdn_in_proj", "expert_fc1", "router", "shared_fc2", "qkv_proj"} <= set(linears)
    q = nf4_bytes_per_param(sc.workload.finetune)
    assert all(op.weight_bytes == pytest.approx(q) for op in linears.values())
    dequant = {op.name for b in lg.blocks for op in b.ops if op.name.endswith(".dequant")}
    assert dequant == {f"{n}.dequant" for n in linears}
    assert all(op.weight_bytes is None for op in lg.blocks[1].ops)  # the LM head stays in 16 bits


def test_freeze_drops_backward_and_activations_of_the_frozen_prefix():
    sc = scenario(TINY_LLAMA, {"global_batch": 4, "finetune": {"method": "freeze", "frozen_layers": 2}})
    prog = build_program(sc)
    bwd_layers = {n.layers[0] for n in prog.roles[0].nodes if isinstance(n, ComputeNode) and n.phase is Phase.BACKWARD}
    assert 0 not in bwd_layers and 1 not in bwd_layers and 2 in bwd_layers
    (mem,) = scenario_memory(sc)
    (full,) = scenario_memory(scenario(TINY_LLAMA, {"global_batch": 4}))
    assert mem.activations < full.activations and mem.trainable_params < full.trainable_params


@pytest.mark.parametrize("workload,plan,field", [
    (lora(lora_rank=100000), {}, "lora_rank"),
    (lora(method="qlora"), {"zero_stage": 3, "dp": 2}, "zero_stage"),
    ({"global_batch": 4, "finetune": {"method": "freeze", "frozen_layers": 99}}, {}, "frozen_layers"),
    (lora(target_modules=[]), {}, "target_modules"),
])
def test_invalid_fine_tuning_plans_are_refused(workload, plan, field):
    with pytest.raises(RankflowError, match=field):
        scenario(TINY_LLAMA, workload, **plan)


def test_optimizers_differ_as_documented():
    def opt(name):
        return scenario_memory(scenario(TINY_LLAMA, {"global_batch": 4, "optimizer": name}))[0].optimizer_states
    assert opt("adam8bit") == pytest.approx(opt("adamw") / 4)
    assert opt("sgd") == pytest.approx(opt("adamw") / 2)
    assert opt("adafactor") < opt("sgd") / 10


def test_framework_memory_options():
    """nanotron-style options add exactly what they name."""
    base = dict(tp=2, sp=True, dp=4, zero_stage=1)
    wl = {"global_batch": 8}
    (m0,) = scenario_memory(scenario(TINY_LLAMA, wl, **base))
    (buf,) = scenario_memory(scenario(TINY_LLAMA, wl, tp_gather_buffers=2, **base))
    tokens_h = 512 * TINY_LLAMA["hidden"] * 2  # one full bf16 sequence of hidden states
    assert buf.comm_buffers - m0.comm_buffers == pytest.approx(2 * tokens_h)
    (ddp,) = scenario_memory(scenario(TINY_LLAMA, wl, tp=2, dp=4, zero_stage=0, param_dtype_grads=True))
    (ddp0,) = scenario_memory(scenario(TINY_LLAMA, wl, tp=2, dp=4, zero_stage=0))
    assert ddp.gradients == pytest.approx(ddp0.gradients * 1.5)  # fp32 buffer + bf16 bucket
    eager = layer_graph(scenario(TINY_LLAMA, {**wl, "fused_swiglu": False}))
    fused = layer_graph(scenario(TINY_LLAMA, wl))
    glu = {op.name: op.saved_bytes for op in eager.layer}["swiglu"] / {op.name: op.saved_bytes for op in fused.layer}["swiglu"]
    assert glu == pytest.approx(1.5)  # gate and up, plus silu(gate)


def test_the_loss_holds_only_this_context_parallel_ranks_logits():
    # A big vocabulary on a short model makes the loss the largest working set of the last stage.
    model = dict(TINY_LLAMA, vocab=65536)
    wl = {"seq_len": 4096, "global_batch": 1, "fused_cross_entropy": True}
    one, four = scenario(model, wl), scenario(model, wl, cp=4)
    logits = 2 * 4096 * 65536  # bf16, the whole sequence
    assert scenario_memory(one)[0].transient == pytest.approx(logits)
    assert scenario_memory(four)[0].transient == pytest.approx(logits / 4)


def test_torch_foreach_adamw_allocates_sqrt_v_for_its_step_after_the_activations_are_gone():
    work = {"seq_len": 64, "global_batch": 8}
    fused = scenario_memory(scenario(TINY_LLAMA, work))[0]
    foreach = scenario_memory(scenario(TINY_LLAMA, {**work, "optimizer_impl": "foreach"}))[0]
    assert foreach.optimizer_states == fused.optimizer_states
    assert fused.activations + fused.transient < foreach.optimizer_states / 2  # a tiny batch: the step is the peak
    assert foreach.transient == pytest.approx(foreach.optimizer_states / 2)  # one fp32 value per parameter
    assert foreach.activations == 0.0 and foreach.allocated > fused.allocated
