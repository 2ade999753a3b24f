"""B200's fused-permutation rates are the reduction (benchmarks.simumax_kernel_rates permute) of the SimuMax
measurement its comment quotes: editing either alone fails here."""

from __future__ import annotations

import pytest
import yaml

from benchmarks.simumax_kernel_rates import PERMUTE_CASES, permute_rates
from tests.helpers import ROOT

# MooreThreads/SimuMax configs/system/b200_bf16_ceperm.json @4dcaae5, accelerator.bandwidth
SIMUMAX_B200 = {"permute_fwd": {"efficient_factor": 0.5008136513816437, "gbps": 8000.0, "latency_us": 30},
                "permute_bwd": {"efficient_factor": 0.5108178337365621, "gbps": 8000.0, "latency_us": 30}}


def test_b200_permute_rates_are_the_reduction_of_simumax_measurement():
    device = yaml.safe_load((ROOT / "hardware_configs" / "B200.yaml").read_text())["device"]
    fwd, bwd = permute_rates({"accelerator": {"bandwidth": SIMUMAX_B200}}, device["hbm_bandwidth_gbs"],
                             device["launch_overhead_us"])
    assert device["efficiency"]["moe_permute"]["fwd"] == pytest.approx(fwd, abs=1e-3)
    assert device["efficiency"]["moe_permute"]["bwd"] == pytest.approx(bwd, abs=1e-3)


def test_the_reduction_undoes_simumax_launch_allowance_and_reexpresses_the_bytes():
    # one case, no launch cost on either side: the fraction is Rankflow's bytes over SimuMax's at its efficiency
    tokens, hidden, experts, k = PERMUTE_CASES[0]
    bw = {"efficient_factor": 0.5, "gbps": 1000.0, "latency_us": 0.0}
    fwd, bwd = permute_rates({"accelerator": {"bandwidth": {"permute_fwd": bw, "permute_bwd": bw}}},
                             1000.0 * 1024 ** 3 / 1e9, 0.0, cases=(PERMUTE_CASES[0],))
    permuted = -(-tokens * k // experts) * experts
    theirs, ours = (2 * tokens + 6 * permuted) * hidden * 2, 2 * hidden * (3 * tokens * k + tokens)
    assert fwd == pytest.approx(0.5 * ours / theirs, abs=1e-3)
    assert bwd == pytest.approx(2 * fwd, abs=2e-3)
