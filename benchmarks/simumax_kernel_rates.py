"""Kernel rates from a SimuMax system config, in the form Rankflow's hardware configs list them.

    python -m benchmarks.simumax_kernel_rates attention path/to/b200_bf16_ceperm.json [qk_head_dim]
    python -m benchmarks.simumax_kernel_rates permute path/to/b200_bf16_ceperm.json

SimuMax (MooreThreads/SimuMax configs/system/*.json) measures Transformer Engine's kernels on the real GPU.

attention: its causal attention rows "batch, seq_len, head_num, kv_head_num, qk_head_dim, v_head_dim,
qkv_contiguous" (accelerator.op.sdp_fwd / sdp_bwd.accurate_efficient_factor). Their efficiencies divide the full
(non-causal) FLOPs, 2 x b x h x s^2 x (qk + v) forward and 2.5 x that backward (simumax/core/transformer/
dense_module.py MLACoreAttention._comp_leaf_flops_info), by the peak, so the causal kernel's fraction of peak is
half of it. Rankflow's curves are causal fractions of peak, forward + backward at 1 : 2.5 FLOPs. Only rows with
at least 2,048 query blocks of 128 rows (the fill the curves assume; graphgen.costs.compute.attention_fill prices
fewer) and contiguous q/k/v are kept; rows at the same length are averaged.

permute: Transformer Engine's fused token permutation, timed as one moe_permute_with_probs + moe_unpermute round
trip per direction on its DeepSeek-V2 and -V3 shapes (simu_tools/efficency_test/test_ce_permute_efficiency.py:
4,096 tokens, capacity factor 1). SimuMax stores a bandwidth efficiency net of an assumed 30 us per launch (4
launches) over its own byte count ((2 x tokens + 6 x permuted tokens) x hidden x 2 B); this undoes that to the
measured time and re-expresses it over the bytes Rankflow counts for permutation 1 and unpermutation 1
(graphgen.model.mlp: 2 x e x routed x h and e x (routed + tokens) x h forward, twice that backward), net of
Rankflow's own launch cost (2 kernels of the device's launch_overhead_us), both shapes pooled.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
FULL_FILL_BLOCKS = 2048
BACKWARD_FLOPS = 2.5  # backward FLOPs per forward FLOP (the FlashAttention convention SimuMax also uses)
GIB = 1024 ** 3
# simu_tools/efficency_test/test_ce_permute_efficiency.py @4dcaae5 permute_cases: (tokens, hidden, experts, top-k)
PERMUTE_CASES = ((4096, 5120, 160, 6), (4096, 7168, 256, 8))
SIMUMAX_LAUNCHES = 4    # weighted_efficiency(..., launches=4) for permute_fwd / permute_bwd
RANKFLOW_LAUNCHES = 2   # the permute and unpermute ops, one kernel each


def _rows(config: dict, stage: str) -> dict[tuple[int, ...], float]:
    table = config["accelerator"]["op"][stage]["accurate_efficient_factor"]
    out = {}
    for key, eff in table.items():
        f = dict(re.findall(r"(\w+)=(\w+)", key))
        if f.get("qkv_contiguous") != "True":
            continue
        out[tuple(int(f[k]) for k in ("batch", "seq_len", "head_num", "kv_head_num", "qk_head_dim",
                                      "v_head_dim"))] = eff
    return out


def curve(config: dict, qk_head_dim: int) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """([seq, causal fwd+bwd fraction of peak], [seq, forward rate / backward rate]) for one qk head dim."""
    fwd, bwd = _rows(config, "sdp_fwd"), _rows(config, "sdp_bwd")
    by_seq: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for key, f in fwd.items():
        b, s, h, _, qk, _ = key
        if qk != qk_head_dim or key not in bwd or b * h * math.ceil(s / 128) < FULL_FILL_BLOCKS:
            continue
        by_seq[s].append((f / 2, bwd[key] / 2))
    points, ratios = [], []
    for s, rates in sorted(by_seq.items()):
        rf = sum(r[0] for r in rates) / len(rates)
        rb = sum(r[1] for r in rates) / len(rates)
        points.append((s, round((1 + BACKWARD_FLOPS) / (1 / rf + BACKWARD_FLOPS / rb), 3)))
        ratios.append((s, round(rf / rb, 2)))
    return points, ratios


def permute_rates(config: dict, hbm_gbs: float, launch_us: float,
                  cases: tuple[tuple[int, int, int, int], ...] = PERMUTE_CASES) -> tuple[float, float]:
    """(forward, backward) fraction of hbm_gbs the fused permutation reaches over Rankflow's byte count, pooled
    over the measured (tokens, hidden, experts, top-k) cases."""
    got = []
    for stage, factor in (("permute_fwd", 1), ("permute_bwd", 2)):
        bw = config["accelerator"]["bandwidth"][stage]
        seconds = ours = 0.0
        for tokens, hidden, experts, k in cases:
            permuted = math.ceil(tokens * k / experts) * experts
            theirs = (2 * tokens + 6 * permuted) * hidden * 2
            seconds += theirs / (bw["gbps"] * GIB * bw["efficient_factor"]) + SIMUMAX_LAUNCHES * bw["latency_us"] * 1e-6
            seconds -= RANKFLOW_LAUNCHES * launch_us * 1e-6
            ours += factor * 2 * hidden * (3 * tokens * k + tokens)
        got.append(round(ours / (seconds * hbm_gbs * 1e9), 3))
    return got[0], got[1]


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 2 or args[0] not in ("attention", "permute") or len(args) > (3 if args[0] == "attention" else 2):
        print("usage: python -m benchmarks.simumax_kernel_rates attention CONFIG.json [qk_head_dim] | "
              "permute CONFIG.json", file=sys.stderr)
        raise SystemExit(2)
    try:
        config = json.loads(open(args[1]).read())
        if args[0] == "attention":
            points, ratios = curve(config, int(args[2]) if len(args) == 3 else 192)
            if not points:
                raise ValueError(f"no sdp rows at qk_head_dim {args[2] if len(args) == 3 else 192} with full fill")
            print("points: " + json.dumps([list(p) for p in points]))
            print("fwd_over_bwd: " + json.dumps([list(r) for r in ratios]))
        else:  # over the HBM bandwidth and launch cost the device's own file lists
            device = yaml.safe_load((ROOT / "hardware_configs" / "B200.yaml").read_text())["device"]
            fwd, bwd = permute_rates(config, device["hbm_bandwidth_gbs"], device["launch_overhead_us"])
            print(f"moe_permute: {{fwd: {fwd}, bwd: {bwd}}}")
    except (OSError, ValueError, KeyError, ZeroDivisionError, yaml.YAMLError) as exc:
        print(f"{args[1]}: cannot read SimuMax's {args[0]} tables ({exc}); give a SimuMax configs/system/*.json "
              "(and an integer head dimension)", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
