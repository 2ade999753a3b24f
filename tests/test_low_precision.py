"""fp8/fp4 recipes: which GEMMs run in low precision, and the cast kernels training adds around them."""

from __future__ import annotations

import pytest

from graphgen.costs.evaluate import Coster
from graphgen.model.ops import OpKind
from tests.helpers import ROOT, TINY_LLAMA, program, scenario

H100 = ROOT / "hardware_configs" / "H100-SXM5-80GB.yaml"
MODEL = dict(TINY_LLAMA, hidden=2048, heads=16, kv_heads=8, ffn_hidden=8192, vocab=32768)


def _ops(precision: str, run_type: str = "training"):
    wl = {"seq_len": 2048, "precision": precision}
    if run_type == "inference":
        wl.update(run_type="inference", inference={"phase": "prefill", "batch": 1, "input_len": 2048})
    sc = scenario(MODEL, wl, H100)
    coster = Coster(program(sc, "coarse"))
    lg = coster.prog.layer_graph
    out = {}
    for bid, block in enumerate(lg.blocks):
        for i, op in enumerate(block.ops):
            out[op.name] = (op, {d: coster.op_time(bid, i, d) for d in ("fwd", "bwd", "bwd_in", "bwd_w")})
    return coster.cm, out


def test_lm_head_and_router_stay_in_16_bits_under_fp8():
    _, bf16 = _ops("bf16")
    _, fp8 = _ops("fp8")
    op, t8 = fp8["lm_head"]
    assert op.high_precision and op.kind is OpKind.MATMUL
    # Megatron-Core's output layer is not a Transformer Engine linear and torchtitan filters 'output':
    # the head costs what it costs in bf16 (no cast kernels either).
    assert t8 == pytest.approx(bf16["lm_head"][1], rel=1e-12)
    # The layers' linears do run faster in fp8, casts included.
    assert fp8["fc1"][1]["fwd"] < bf16["fc1"][1]["fwd"]


def test_training_casts_each_linear_input_forward_and_its_gradient_backward():
    cm, ops = _ops("fp8")
    assert cm.casts
    _, infer = _ops("fp8", "inference")
    op, t = ops["fc2"]
    d_in, d_out = op.shape
    tokens = op.flops / (2 * d_in * d_out)
    hbm = cm.device.hbm_bandwidth_gbs * 1e9 * cm.device.efficiency.memory_bound
    launch = cm.device.launch_overhead_us * 1e-6
    # forward: the bf16 input read once, written as fp8 and as its fp8 transpose (2 + 1 + 1 bytes each)
    assert cm.cast_time(op, "fwd") == pytest.approx(tokens * d_in * 4 / hbm + launch, rel=1e-12)
    assert cm.cast_time(op, "bwd") == pytest.approx(tokens * d_out * 4 / hbm + launch, rel=1e-12)
    bare = type(cm)(cm.device, "fp8", cm.attention_kernel)
    assert t["fwd"] == pytest.approx(bare.op_time(op, "fwd") + cm.cast_time(op, "fwd"), rel=1e-12)
    # a split backward casts the gradient once, in its input-gradient step; the weight gradient reuses it
    assert t["bwd_in"] == pytest.approx(bare.op_time(op, "bwd_in") + cm.cast_time(op, "bwd"), rel=1e-12)
    assert t["bwd_w"] == pytest.approx(bare.op_time(op, "bwd_w"), rel=1e-12)
    # weightless GEMMs and 16-bit runs have none
    assert not _ops("bf16")[0].casts and not _ops("fp8", "inference")[0].casts
    assert infer["fc2"][0].flops > 0



def test_a_device_listing_only_an_fp8_peak_still_runs_fp8():
    from rankflow import api

    hw = api.load_hardware(H100)
    only = hw.model_copy(update={"device": hw.device.model_copy(update={"peak_tflops": {"fp8": 1979.0}})})
    sc = api.load_scenario({"model": MODEL, "workload": {"seq_len": 2048, "global_batch": 8, "precision": "fp8"}}, only,
                           overrides=[("parallelism.dp", 1)])
    cm = Coster(program(sc, "coarse")).cm
    assert cm.sixteen_bit is cm and api.simulate(sc).step_time_s > 0
    # weightless GEMMs (unfused attention) stay uncast there too
    unfused = api.load_scenario({"model": MODEL, "workload": {"seq_len": 2048, "global_batch": 8, "precision": "fp8",
                                                               "flash_attention": False}}, only,
                                overrides=[("parallelism.dp", 1)])
    assert api.simulate(unfused).step_time_s > 0


def test_a_norm_fed_linear_only_transposes_its_fp8_input():
    # qkv and fc1 follow a norm that Transformer Engine fuses with them (LayerNormLinear/LayerNormMLP)
    cm, ops = _ops("fp8")
    qkv, fc2 = ops["qkv_proj"][0], ops["fc2"][0]
    assert qkv.norm_input and ops["fc1"][0].norm_input and not fc2.norm_input
    hbm = cm.device.hbm_bandwidth_gbs * 1e9 * cm.device.efficiency.memory_bound
    launch = cm.device.launch_overhead_us * 1e-6
    tokens = qkv.flops / (2 * qkv.shape[0] * qkv.shape[1])
    assert cm.cast_time(qkv, "fwd") == pytest.approx(tokens * qkv.shape[0] * 2 / hbm + launch, rel=1e-12)
    assert cm.cast_time(qkv, "bwd") == pytest.approx(tokens * qkv.shape[1] * 4 / hbm + launch, rel=1e-12)
