"""Search speed: plans per second of `rankflow.search.search` (both cores), with the size of the space and
how many plans the exact memory model pruned, and the fast evaluator's largest disagreement with the DAG
replay on the checked sample.

    python -m benchmarks.search_speed [--quick]

Prints one line per case: `<case> plans_per_s=<n> space=<n> pruned_by_memory=<n> invalid=<n> timed=<n>
wall_s=<s> max_rel_diff=<x>`. Targets (2 cores): >= 1,000 plans/s for Llama-3.1-70B on 1,024 H100; the
whole space for Llama-3.1-405B on 16,384 H100 in under 5 minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = [
    ("llama3.1-70b-1024xH100", "llama3.1-70b.yaml", "H100-SXM5-80GB.yaml", 1024,
     ["workload.global_batch=1024", "workload.seq_len=8192"]),
    ("llama3.1-405b-16384xH100", "llama3.1-405b.yaml", "H100-SXM5-80GB.yaml", 16384,
     ["workload.global_batch=2048", "workload.seq_len=8192"]),
]
QUICK = [("llama3.1-8b-64xH100", "llama3.1-8b.yaml", "H100-SXM5-80GB.yaml", 64,
          ["workload.global_batch=512", "workload.seq_len=8192"])]


def main() -> None:
    from rankflow import search

    ap = argparse.ArgumentParser(prog="python -m benchmarks.search_speed")
    ap.add_argument("--quick", action="store_true", help="only a small case")
    args = ap.parse_args()
    for name, model, hw, gpus, sets in (QUICK if args.quick else CASES):
        t0 = time.perf_counter()
        found = search.search(ROOT / "model_configs" / model, [str(ROOT / "hardware_configs" / hw)], [gpus], sets,
                              top=5, check=8)
        wall = time.perf_counter() - t0
        c = found.counts()
        total = sum(c.values())
        print(f"{name} plans_per_s={total / wall:.0f} space={total} pruned_by_memory={c['oom']} invalid={c['invalid']} "
              f"timed={c['ok']} wall_s={wall:.1f} max_rel_diff={found.check['max_rel_diff']:.2e}", flush=True)


if __name__ == "__main__":
    main()
