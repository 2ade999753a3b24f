"""Grouped-GEMM efficiencies from a SimuMax system config, as hardware-config YAML.

    python -m benchmarks.simumax_gemm_table path/to/b200_bf16_ceperm.json

SimuMax (MooreThreads/SimuMax configs/system/*.json) measures Transformer Engine's grouped GEMMs on
the real GPU and keys each by the forward shape: "ng=G, M=tokens per group, N=out, K=in, ...,
main_grad_dtype=..., stage=fwd|bwd_grad_act|bwd_grad_w". Rankflow's tables key every pass by the
shape the GEMM library sees (fwd (tokens, in, out), dgrad (tokens, out, in), wgrad (out, tokens, in)).
Only rows with fp32 main gradients are kept: Megatron accumulates weight gradients into fp32
main_grad by default (gradient_accumulation_fusion). Prints the entries and, for shapes not listed,
a curve by GFLOP per group: the time-weighted mean over the three passes (3 / sum(1 / eff)),
shapes of the same size averaged.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

PASS = {"fwd": "fwd", "bwd_grad_act": "dgrad", "bwd_grad_w": "wgrad"}


def rows(config: dict) -> list[tuple[int, int, int, int, str, float]]:
    table = config["accelerator"]["op"]["group_matmul"]["accurate_efficient_factor"]
    out = []
    for key, eff in table.items():
        f = dict(re.findall(r"(\w+)=(\w+)", key))
        if f.get("main_grad_dtype") != "fp32" or f.get("dtype") != "bf16":
            continue
        g, m, n, k, p = int(f["ng"]), int(f["M"]), int(f["N"]), int(f["K"]), PASS[f["stage"]]
        shape = {"fwd": (m, k, n), "dgrad": (m, n, k), "wgrad": (n, m, k)}[p]
        out.append((g, *shape, p, round(eff, 4)))
    return sorted(out)


def curve(entries) -> list[tuple[float, float]]:
    by_shape: dict[tuple, dict[str, float]] = defaultdict(dict)
    for g, m, k, n, p, eff in entries:
        fwd = {"fwd": (m, k, n), "dgrad": (m, n, k), "wgrad": (k, n, m)}[p]  # back to (tokens, in, out)
        by_shape[(g, *fwd)][p] = eff
    sizes: dict[float, list[float]] = defaultdict(list)
    for (_, t, i, o), effs in by_shape.items():
        if len(effs) == 3:
            sizes[round(2 * t * i * o / 1e9, 1)].append(3 / sum(1 / e for e in effs.values()))
    return [(x, round(sum(v) / len(v), 3)) for x, v in sorted(sizes.items())]


def main() -> None:
    config = json.loads(open(sys.argv[1]).read())
    entries = rows(config)
    print("    matmul_grouped_shapes:\n      entries:")
    for e in entries:
        print(f"        - [{e[0]}, {e[1]}, {e[2]}, {e[3]}, {e[4]}, {e[5]}]")
    print("    matmul_grouped:\n      points: " + json.dumps([list(p) for p in curve(entries)]))


if __name__ == "__main__":
    main()
