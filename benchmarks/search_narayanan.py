"""The search against published plans: for each model of Narayanan et al. 2021 Table 1 (GPT 1.7B to 1T on
32 to 3,072 A100, full recompute, interleaved 1F1B), search the same GPUs, batch and hardware, and print how the
published plan ranks under Rankflow's own model and how much faster the best plan found is.

    python -m benchmarks.search_narayanan [--max-gpus N]

Prints one line per model: `<model> gpus=<n> published_s=<s> best_s=<s> speedup=<x> published_rank=<r>/<timed>
best=<plan>`. The search space is the same as `rankflow search` with ZeRO 0-1 (Megatron 2021 had no ZeRO).
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (model config, GPUs, t, p) from the paper's Table 1; batch sizes are in the model configs.
TABLE1 = [("gpt-1.7b", 32, 1, 1), ("gpt-3.6b", 64, 2, 1), ("gpt-7.5b", 128, 4, 1), ("gpt-18b", 256, 8, 1),
          ("gpt-39b", 512, 8, 2), ("gpt-76b", 1024, 8, 4), ("gpt-145b", 1536, 8, 8), ("gpt-310b", 1920, 8, 16),
          ("gpt-530b", 2520, 8, 35), ("gpt-1t", 3072, 8, 64)]


def main() -> None:
    from graphgen.errors import RankflowError
    from graphgen.search.evaluate import candidate_scenario
    from graphgen.search.fast import fast_step_time
    from graphgen.search.space import Constraints
    from rankflow import api, search

    ap = argparse.ArgumentParser(prog="python -m benchmarks.search_narayanan")
    ap.add_argument("--max-gpus", type=int, default=4096)
    args = ap.parse_args()
    hw = str(ROOT / "hardware_configs" / "A100-SXM4-80GB.yaml")
    cons = Constraints(zero_stage=(0, 1), micro_batch=(1, 2, 4))
    for name, gpus, t, p in TABLE1:
        if gpus > args.max_gpus:
            continue
        model = ROOT / "model_configs" / f"{name}.yaml"
        found = search.search(model, [hw], [gpus], [], cons, top=1, check=0)
        base = found.bases[(Path(hw).stem, gpus)]
        published = []
        for sched, v in (("interleaved", 2), ("1f1b", 1)):
            try:
                sc = candidate_scenario(base, dict(tp=t, sp=False, cp=1, pp=p, dp=gpus // (t * p), ep=1,
                                                   schedule=sched, virtual_stages=v, zero_stage=0,
                                                   recompute="full", micro_batch=1))
            except RankflowError:
                continue
            published.append((api.simulate(sc).step_time_s, fast_step_time(sc, {})))
        best = found.top[0]
        if not published:
            print(f"{name} gpus={gpus} published plan invalid under Rankflow's checks; best_s={best.result.step_time_s:.3f}")
            continue
        exact, fast = min(published)
        timed = sorted(e.record.step_time_s for e in found.evaluated if e.ok)
        rank = sum(1 for x in timed if x < fast * (1 - 1e-9)) + 1
        plan = search_plan_text(best.entry.record.plan)
        print(f"{name} gpus={gpus} published_s={exact:.3f} best_s={best.result.step_time_s:.3f} "
              f"speedup={exact / best.result.step_time_s:.2f} published_rank={rank}/{len(timed)} best={plan}", flush=True)


def search_plan_text(p: dict) -> str:
    from reports.search_out import _plan_text

    return _plan_text(p).replace(" ", "_")


if __name__ == "__main__":
    main()
