"""Grouped (MoE expert) GEMM efficiencies and the SimuMax table conversion that feeds the B200 file."""

from __future__ import annotations

import dataclasses

import pytest

from backends.base import layer_table
from graphgen.config import EfficiencyCurve, GroupedGemmTable
from graphgen.model.ops import Op
from tests.helpers import TINY_LLAMA, layer_graph, scenario
from tests.helpers import program as build_program

TINY_MOE = dict(TINY_LLAMA, layers=4, kv_heads=8,
                moe={"experts": 8, "top_k": 2, "expert_ffn_hidden": 256, "shared_experts": 1})


def _with_efficiency(sc, **update):
    eff = sc.hardware.device.efficiency.model_copy(update=update)
    device = sc.hardware.device.model_copy(update={"efficiency": eff})
    return dataclasses.replace(sc, hardware=sc.hardware.model_copy(update={"device": device}))


def _costs(sc) -> dict[str, dict]:
    return {c["op"]: c for c in layer_table(build_program(sc))}


def _moe_layer_op(sc, name):
    lg = layer_graph(sc)
    return next(op for b in (lg.unit_block(u) for u in range(1, lg.layers + 1)) for op in b.ops if op.name == name)


def test_a_listed_grouped_shape_sets_that_pass_of_the_expert_gemm_only():
    sc = scenario(TINY_MOE, {"seq_len": 512, "global_batch": 2}, dp=2, ep=2)
    fc1 = _moe_layer_op(sc, "expert_fc1")
    groups = fc1.gemm_kernels
    d_in, d_out = fc1.shape
    tokens = round(fc1.flops / (2 * d_in * d_out * groups))
    table = GroupedGemmTable(entries=[(groups, tokens, round(d_in), round(d_out), "fwd", 0.01)])
    slow = _with_efficiency(sc, matmul_grouped_shapes=table)
    from graphgen.costs.compute import ComputeModel

    peak = sc.hardware.device.peak_tflops["bf16"] * 1e12
    plain, listed = ComputeModel(sc.hardware.device, "bf16"), ComputeModel(slow.hardware.device, "bf16")
    assert listed.op_time(fc1, "fwd") >= fc1.flops / (peak * 0.01)
    assert listed.op_time(fc1, "bwd") == pytest.approx(plain.op_time(fc1, "bwd"), rel=1e-12)
    base, measured = _costs(sc), _costs(slow)
    assert measured["expert_fc1"]["fwd_ms"] > 5 * base["expert_fc1"]["fwd_ms"]
    assert {k: v for k, v in measured.items() if k != "expert_fc1"} == \
        {k: v for k, v in base.items() if k != "expert_fc1"}


def test_the_grouped_curve_prices_expert_gemms_but_not_dense_ones():
    from graphgen.costs.compute import ComputeModel

    sc = scenario(TINY_MOE, {"seq_len": 512, "global_batch": 2}, dp=2, ep=2)
    slow = _with_efficiency(sc, matmul_grouped=EfficiencyCurve(points=[(0.001, 0.02), (1e6, 0.02)]))
    plain, grouped = ComputeModel(sc.hardware.device, "bf16"), ComputeModel(slow.hardware.device, "bf16")
    fc1, shared = _moe_layer_op(sc, "expert_fc1"), _moe_layer_op(sc, "shared_fc1")
    peak = sc.hardware.device.peak_tflops["bf16"] * 1e12
    assert grouped.op_time(fc1, "fwd") >= fc1.flops / (peak * 0.02) > 2 * plain.op_time(fc1, "fwd")
    assert grouped.op_time(shared, "fwd") == plain.op_time(shared, "fwd")
    # fp16 GEMMs use them too; fp32 (TF32) GEMMs keep the plain curve
    assert ComputeModel(slow.hardware.device, "fp16").op_time(fc1, "fwd") > 2 * plain.op_time(fc1, "fwd")
    assert ComputeModel(slow.hardware.device, "fp32").op_time(fc1, "fwd") == \
        ComputeModel(sc.hardware.device, "fp32").op_time(fc1, "fwd")


def test_simumax_grouped_rows_convert_to_the_library_view_of_each_pass():
    from benchmarks.simumax_gemm_table import curve, rows

    key = "ng={g}, M=100, N=300, K=200, dtype=bf16, out_dtype=bf16, main_grad_dtype={mg}, stage={st}, grad=False"
    table = {key.format(g=4, mg="fp32", st="fwd"): 0.5, key.format(g=4, mg="fp32", st="bwd_grad_act"): 0.4,
             key.format(g=4, mg="fp32", st="bwd_grad_w"): 0.2, key.format(g=4, mg="bf16", st="fwd"): 0.9}
    got = rows({"accelerator": {"op": {"group_matmul": {"accurate_efficient_factor": table}}}})
    assert sorted(got) == sorted([(4, 100, 200, 300, "fwd", 0.5), (4, 100, 300, 200, "dgrad", 0.4),
                                  (4, 300, 100, 200, "wgrad", 0.2)])  # the bf16-main-grad row is dropped
    (x, y), = curve(got)
    assert x == pytest.approx(2 * 100 * 200 * 300 / 1e9, abs=0.05)
    assert y == pytest.approx(3 / (1 / 0.5 + 1 / 0.4 + 1 / 0.2), abs=1e-3)


def _listed_time(direction: str, entry) -> tuple[float, float, Op, float]:
    """(time of expert_fc1 in one direction with a one-entry grouped table made by `entry(groups, tokens, d_in,
    d_out)`, the same without any table, the op, its tokens per group) on a tiny MoE model."""
    from graphgen.costs.compute import ComputeModel

    sc = scenario(TINY_MOE, {"seq_len": 512, "global_batch": 2}, dp=2, ep=2)
    fc1 = _moe_layer_op(sc, "expert_fc1")
    groups, (d_in, d_out) = fc1.gemm_kernels, fc1.shape
    tokens = fc1.flops / (2 * d_in * d_out * groups)
    table = GroupedGemmTable(entries=[entry(groups, tokens, round(d_in), round(d_out))])
    listed = ComputeModel(_with_efficiency(sc, matmul_grouped_shapes=table).hardware.device, "bf16")
    return listed.op_time(fc1, direction), ComputeModel(sc.hardware.device, "bf16").op_time(fc1, direction), fc1, tokens


def test_a_grouped_shape_matches_within_two_percent_of_its_rows_per_group():
    def fwd_time(scale):
        return _listed_time("fwd", lambda g, t, i, o: (g, round(t * scale), i, o, "fwd", 0.01))[0]
    listed, near, far = fwd_time(1.0), fwd_time(1.015), fwd_time(1.05)
    assert near == listed
    assert far < listed / 5  # 5 % more rows is another shape: the curve prices it


def test_a_measured_grouped_call_pays_one_launch_not_one_per_group():
    from graphgen.costs.compute import ComputeModel

    sc = scenario(TINY_MOE, {"seq_len": 512, "global_batch": 2}, dp=2, ep=2)
    fc1 = _moe_layer_op(sc, "expert_fc1")
    groups, (d_in, d_out) = fc1.gemm_kernels, fc1.shape
    assert groups > 1
    tokens = round(fc1.flops / (2 * d_in * d_out * groups))
    table = GroupedGemmTable(entries=[(groups, tokens, round(d_in), round(d_out), "fwd", 0.5)])
    device = _with_efficiency(sc, matmul_grouped_shapes=table).hardware.device
    peak = device.peak_tflops["bf16"] * 1e12
    launch = device.launch_overhead_us * 1e-6
    assert ComputeModel(device, "bf16").op_time(fc1, "fwd") == pytest.approx(fc1.flops / (peak * 0.5) + launch)


def test_a_weight_gradient_shape_matches_on_its_tokens_which_cublas_sees_as_the_inner_dimension():
    # wgrad is (out, tokens, in) as cuBLAS sees it: routing moves the inner dimension, so that one is
    # matched within the tolerance (an exact match left every routed wgrad on the curve).
    def bwd_time(scale):
        return _listed_time("bwd", lambda g, t, i, o: (g, o, round(t * scale), i, "wgrad", 0.01))
    near, plain, _, _ = bwd_time(1.01)
    far = bwd_time(1.05)[0]
    assert near > 3 * plain  # the listed 1 % wgrad efficiency prices the weight-gradient half
    assert far == plain  # 5 % more tokens is another shape: the curve prices it
