"""Fused-attention rates from a SimuMax system config, as a hardware-config attention curve for one head
dimension.

    python -m benchmarks.simumax_attention_table path/to/b200_bf16_ceperm.json [qk_head_dim]

SimuMax (MooreThreads/SimuMax configs/system/*.json) times Transformer Engine's causal attention on the real
GPU and keys each row "batch, seq_len, head_num, kv_head_num, qk_head_dim, v_head_dim, qkv_contiguous"
(accelerator.op.sdp_fwd / sdp_bwd.accurate_efficient_factor). Its efficiencies divide the full (non-causal)
FLOPs, 2 x b x h x s^2 x (qk + v) forward and 2.5 x that backward (simumax/core/transformer/dense_module.py
MLACoreAttention._comp_leaf_flops_info), by the peak, so the causal kernel's fraction of peak is half of it.
Rankflow's curves are causal fractions of peak, forward + backward at 1 : 2.5 FLOPs. Only rows with at least
2,048 query blocks of 128 rows (the fill the curves assume; graphgen.costs.compute.attention_fill prices
fewer) and contiguous q/k/v are kept; rows at the same length are averaged. Prints the points and the
forward/backward rate ratios.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import defaultdict

FULL_FILL_BLOCKS = 2048
BACKWARD_FLOPS = 2.5  # backward FLOPs per forward FLOP (the FlashAttention convention SimuMax also uses)


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


def main() -> None:
    if len(sys.argv) not in (2, 3):
        print("usage: python -m benchmarks.simumax_attention_table CONFIG.json [qk_head_dim]", file=sys.stderr)
        raise SystemExit(2)
    try:
        config = json.loads(open(sys.argv[1]).read())
        points, ratios = curve(config, int(sys.argv[2]) if len(sys.argv) == 3 else 192)
    except (OSError, ValueError, KeyError) as exc:
        print(f"{sys.argv[1]}: cannot read SimuMax sdp_fwd/sdp_bwd tables ({exc}); give a SimuMax "
              "configs/system/*.json and an integer head dimension", file=sys.stderr)
        raise SystemExit(2) from None
    print("points: " + json.dumps([list(p) for p in points]))
    print("fwd_over_bwd: " + json.dumps([list(r) for r in ratios]))


if __name__ == "__main__":
    main()
