"""Fused attention curves: the forward and backward rates apart (AttentionCurve.fwd_over_bwd), which keeps a
step without recompute on the published fwd+bwd curve and makes the forward that full recompute reruns
cheaper than the combined rate would; and the kernel's rate at other head dimensions (other_head_dims)."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from graphgen.config import AttentionCurve
from graphgen.costs.compute import ComputeModel, interpolate_points
from rankflow import api
from tests.helpers import A100, TINY_LLAMA, layer_graph, scenario

MODEL = dict(TINY_LLAMA, hidden=1024, heads=8, kv_heads=8, ffn_hidden=2048)
WORKLOAD = {"seq_len": 4096, "global_batch": 4, "micro_batch": 1}


def _without_split(sc):
    eff = sc.hardware.device.efficiency
    curve = eff.attention.model_copy(update={"fwd_over_bwd": None, "fwd_over_bwd_source": ""})
    device = sc.hardware.device.model_copy(update={"efficiency": eff.model_copy(update={"attention": curve})})
    return dataclasses.replace(sc, hardware=sc.hardware.model_copy(update={"device": device}))


def _attention_op(sc):
    lg = layer_graph(sc)
    return next(op for op in lg.unit_block(1).ops if op.name == "flash_attention")


def test_the_shipped_a100_file_splits_its_fused_attention_curve():
    sc = scenario(MODEL, WORKLOAD, hw_file=A100)
    assert sc.hardware.device.efficiency.attention.fwd_over_bwd
    assert "FlashAttention-3" in sc.hardware.device.efficiency.attention.fwd_over_bwd_source


def test_forward_runs_faster_and_backward_slower_with_the_pair_on_the_combined_curve():
    sc = scenario(MODEL, WORKLOAD, hw_file=A100)
    op = _attention_op(sc)
    split = ComputeModel(sc.hardware.device, "bf16")
    whole = ComputeModel(_without_split(sc).hardware.device, "bf16")
    fwd, bwd = split.op_time(op, "fwd"), split.op_time(op, "bwd")
    fwd0, bwd0 = whole.op_time(op, "fwd"), whole.op_time(op, "bwd")
    assert fwd < 0.95 * fwd0
    assert bwd > 1.02 * bwd0
    assert fwd + bwd == pytest.approx(fwd0 + bwd0, rel=1e-9)


def test_full_recompute_gets_cheaper_while_a_step_without_it_stays_put():
    plain = scenario(MODEL, WORKLOAD, hw_file=A100)
    full = scenario(MODEL, WORKLOAD, hw_file=A100, recompute="full")
    t = {name: api.simulate(sc).step_time_s for name, sc in
         (("plain", plain), ("plain0", _without_split(plain)), ("full", full), ("full0", _without_split(full)))}
    assert t["plain"] == pytest.approx(t["plain0"], rel=1e-9)
    assert t["full"] < t["full0"] * (1 - 1e-3)


@pytest.mark.parametrize("ratio, source, message", [
    ([(2048, 1.2), (1024, 1.3)], "x", "strictly increasing"),
    ([(1024, 1.3)], "", "fwd_over_bwd_source"),
    ([(1024, 9.0)], "x", "less than or equal"),
])
def test_a_bad_split_is_refused(ratio, source, message):
    with pytest.raises(ValidationError, match=message):
        AttentionCurve(points=[(512, 0.3)], fwd_over_bwd=ratio, fwd_over_bwd_source=source)


def test_the_head_dimension_picks_its_measured_curve_and_interpolates_between_them():
    sc = scenario(MODEL, WORKLOAD, hw_file=A100)
    cm = ComputeModel(sc.hardware.device, "bf16")
    curve = sc.hardware.device.efficiency.attention
    hd64 = next(c for c in curve.other_head_dims if c.head_dim == 64).points
    at64, at128 = interpolate_points(hd64, 2048), interpolate_points(curve.points, 2048)
    assert at64 < at128  # FlashAttention-2 on A100: 140 vs 155 TFLOP/s at 2k tokens
    assert cm.attention_efficiency(2048, 64) == at64
    assert cm.attention_efficiency(2048, 32) == at64
    assert cm.attention_efficiency(2048, 128) == at128
    assert cm.attention_efficiency(2048, 256) == at128
    assert cm.attention_efficiency(2048, 0) == at128
    assert cm.attention_efficiency(2048, 96) == pytest.approx(at64 + 0.585 * (at128 - at64), rel=1e-3)


def test_an_attention_op_carries_its_head_dimension_into_its_time():
    small = scenario(dict(MODEL, hidden=512), WORKLOAD, hw_file=A100)  # 8 heads of 64
    op = _attention_op(small)
    assert op.head_dim == 64
    cm = ComputeModel(small.hardware.device, "bf16")
    as128 = dataclasses.replace(op, head_dim=128)
    assert cm.op_time(op, "fwd") > cm.op_time(as128, "fwd") * 1.05
    assert cm.op_time(op, "bwd") > cm.op_time(as128, "bwd") * 1.05


def test_a_head_dimension_measured_apart_splits_forward_and_backward_by_its_own_ratio():
    from graphgen.costs.compute import direction_shares

    curve = AttentionCurve(points=[(512, 0.3), (8192, 0.4)], fwd_over_bwd=[(512, 1.5)], fwd_over_bwd_source="x",
                           other_head_dims=[{"head_dim": 192, "points": [(512, 0.3)], "source": "x",
                                             "fwd_over_bwd": [(512, 1.0)], "fwd_over_bwd_source": "x"},
                                            {"head_dim": 64, "points": [(512, 0.3)], "source": "x"}])
    sc = scenario(MODEL, WORKLOAD, hw_file=A100)
    eff = sc.hardware.device.efficiency.model_copy(update={"attention": curve})
    cm = ComputeModel(sc.hardware.device.model_copy(update={"efficiency": eff}), "bf16")
    kernel, own = direction_shares(1.5), direction_shares(1.0)
    assert cm.attention_direction(4096, False, 128) == kernel[0]
    assert cm.attention_direction(4096, True, 176) == own[1]  # nearest measured: 192, with its own ratio
    assert cm.attention_direction(4096, False, 64) == kernel[0]  # measured without a ratio: the kernel's
    assert own[0] != kernel[0]


def test_repeated_head_dimensions_are_refused():
    with pytest.raises(ValidationError, match="head dimensions must differ"):
        AttentionCurve(points=[(512, 0.3)], other_head_dims=[{"head_dim": 128, "points": [(512, 0.2)], "source": "x"}])


def test_a_split_that_would_run_a_direction_above_peak_is_refused():
    with pytest.raises(ValidationError, match="x peak"):
        AttentionCurve(points=[(512, 0.5), (16384, 0.6)], fwd_over_bwd=[(512, 4.0)], fwd_over_bwd_source="x")
    with pytest.raises(ValidationError, match="come together"):
        AttentionCurve(points=[(512, 0.5)], fwd_over_bwd_source="x")


@pytest.mark.parametrize("algorithm, keys", [("ring", 4096 / 4), ("a2a", 4096), ("allgather", 4096)])
def test_ring_context_parallelism_times_each_kernel_call_over_its_own_chunk_of_keys(algorithm, keys):
    sc = scenario(MODEL, WORKLOAD, hw_file=A100, cp=4, cp_algorithm=algorithm)
    assert _attention_op(sc).seq_len == keys
