"""The Blackwell cuDNN curves in hardware_configs/ are the reduction (benchmarks.cudnn_frontend_attention_table) of
the cudnn-frontend rows their comments quote: editing either alone fails here."""

from __future__ import annotations

import pytest
import yaml

from benchmarks.cudnn_frontend_attention_table import combined, curve, rates, reshaped, yaml_lines
from tests.helpers import ROOT

HEAD = "batch_size,q_seqlen,kv_seqlen,num_q_heads,num_kv_heads,head_dim,is_causal,backend,forward_time,backward_time," \
       "fwd_tflops_per_sec,bwd_tflops_per_sec"
# NVIDIA/cudnn-frontend benchmark/sdpa_benchmark_training/artifacts, forward and backward TFLOP/s as published.
GB200_CUDNN_FE = {512: (408, 329), 1024: (733, 527), 2048: (1069, 655), 4096: (1386, 1054), 8192: (1584, 1211),
                  16384: (1668, 1304), 32768: (1681, 1348), 65536: (1573, 1229), 131072: (1467, 1188)}  # @d48a60e
B200_PYT_CUDNN = {512: (83.991, 134.164), 4096: (855.678, 701.265), 8192: (1171.278, 942.509),
                  16384: (1332.415, 1074.776), 32768: (1419.0, 1108.688), 65536: (1382.33, 1073.059),
                  131072: (1355.418, 1047.843)}  # @bb37575


def table(rows: dict[int, tuple[float, float]], backend: str) -> str:
    body = [f"1,{s},{s},128,8,128,True,{backend},0,0,{f},{b}" for s, (f, b) in rows.items()]
    return "\n".join([HEAD, *body, "1,512,512,128,8,128,True,other,0,0,1,1"])


def cudnn_points(part: str) -> dict[int, float]:
    eff = yaml.safe_load((ROOT / "hardware_configs" / f"{part}.yaml").read_text())["device"]["efficiency"]
    return dict(map(tuple, eff["attention_kernels"]["cudnn"]["points"]))


def test_gb200_cudnn_curve_is_the_reduction_of_its_rows():
    points, ratios = curve(rates(table(GB200_CUDNN_FE, "cudnn_fe"), "cudnn_fe"), 2500)
    assert cudnn_points("GB200") == pytest.approx(points, abs=1.5e-3)
    assert ratios[2048] == pytest.approx(1069 / 655)


def test_b200_cudnn_curve_takes_gb200s_shape_below_8k():
    own = curve(rates(table(B200_PYT_CUDNN, "pyt_cudnn"), "pyt_cudnn"), 2250)
    shape = curve(rates(table(GB200_CUDNN_FE, "cudnn_fe"), "cudnn_fe"), 2500)
    points, _ = reshaped(*own, shape, 8192)
    assert cudnn_points("B200") == pytest.approx(points, abs=1.5e-3)
    assert points[512] < own[0][8192] and points[512] != pytest.approx(own[0][512], abs=1e-2)  # the dispatch-bound row is gone


def test_reduction_arithmetic_and_refusals():
    assert combined(100.0, 100.0) == pytest.approx(100.0)
    assert combined(200.0, 100.0) == pytest.approx(3.5 / (1 / 200 + 2.5 / 100))
    assert yaml_lines({1024: 0.25}, {1024: 1.5}) == ["points: [[1024, 0.250]]", "fwd_over_bwd: [[1024, 1.50]]"]
    with pytest.raises(ValueError, match="no measured rows"):
        rates(table(GB200_CUDNN_FE, "cudnn_fe"), "pyt_cudnn")
    with pytest.raises(ValueError, match="8192"):
        reshaped({4096: 0.3}, {4096: 1.2}, ({4096: 0.4}, {4096: 1.3}), 8192)


# MooreThreads/SimuMax configs/system/b200_bf16_ceperm.json @4dcaae5, sdp_fwd / sdp_bwd rows with q/k 192, v 128
# (MLA), as many kv heads as query heads, contiguous q/k/v: (seq, heads) -> (fwd, bwd) efficiency over full FLOPs.
SIMUMAX_B200_MLA = {(4096, 128): (0.8306, 0.6426), (4096, 64): (0.8853, 0.6086), (4096, 16): (0.6368, 0.5929),
                    (32768, 64): (0.8122, 0.6489), (131072, 64): (0.6839, 0.658)}


def _simumax_config(rows: dict) -> dict:
    key = "batch=1, seq_len={s}, head_num={h}, kv_head_num={h}, qk_head_dim=192, v_head_dim=128, qkv_contiguous={c}"
    tables = {"sdp_fwd": {}, "sdp_bwd": {}}
    for (s, h), (f, b) in rows.items():
        tables["sdp_fwd"][key.format(s=s, h=h, c=True)], tables["sdp_bwd"][key.format(s=s, h=h, c=True)] = f, b
        tables["sdp_fwd"][key.format(s=s, h=h, c=False)] = tables["sdp_bwd"][key.format(s=s, h=h, c=False)] = 9.0
    return {"accelerator": {"op": {k: {"accurate_efficient_factor": v} for k, v in tables.items()}}}


def test_b200_mla_head_dim_curve_is_the_reduction_of_simumax_rows():
    from benchmarks.simumax_kernel_rates import curve as simumax_curve

    points, ratios = simumax_curve(_simumax_config(SIMUMAX_B200_MLA), 192)
    # 16 heads at 4k is 512 query blocks, below full fill: dropped (attention_fill prices that); so are the
    # non-contiguous rows
    assert [s for s, _ in points] == [4096, 32768, 131072]
    f, b = (0.8306 + 0.8853) / 4, (0.6426 + 0.6086) / 4
    assert dict(points)[4096] == pytest.approx(3.5 / (1 / f + 2.5 / b), abs=1e-3)
    eff = yaml.safe_load((ROOT / "hardware_configs" / "B200.yaml").read_text())["device"]["efficiency"]
    mla = next(c for c in eff["attention_kernels"]["cudnn"]["other_head_dims"] if c["head_dim"] == 192)
    listed = dict(map(tuple, mla["points"]))
    assert {s: listed[s] for s, _ in points} == pytest.approx(dict(points), abs=1.5e-3)
    assert dict(map(tuple, mla["fwd_over_bwd"])) == pytest.approx(dict(ratios), abs=5e-3)
    # below the measured lengths: the head-dim-128 shape scaled by the 4k ratio
    ratio = listed[4096] / cudnn_points("B200")[4096]
    assert listed[2048] == pytest.approx(cudnn_points("B200")[2048] * ratio, abs=1.5e-3)


@pytest.mark.parametrize("part", ["GB200", "GB300"])
def test_grace_blackwell_mla_curves_are_their_own_curve_times_b200s_measured_ratio(part):
    def cudnn(name):
        return yaml.safe_load((ROOT / "hardware_configs" / f"{name}.yaml").read_text())["device"]["efficiency"][
            "attention_kernels"]["cudnn"]

    def mla(curve):
        return next(c for c in curve["other_head_dims"] if c["head_dim"] == 192)

    b200, own = cudnn("B200"), cudnn(part)
    b128, b192 = dict(map(tuple, b200["points"])), dict(map(tuple, mla(b200)["points"]))
    expected = {s: dict(map(tuple, own["points"]))[s] * b192[s] / b128[s] for s in b192}
    assert dict(map(tuple, mla(own)["points"])) == pytest.approx(expected, abs=1.5e-3)
    assert mla(own)["fwd_over_bwd"] == mla(b200)["fwd_over_bwd"]
