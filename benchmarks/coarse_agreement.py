"""Coarse against op-level DAG: the largest step-time disagreement over a validation file's rows and
over the shipped examples, with node counts and times of both.

    python -m benchmarks.coarse_agreement [../shared/validation/training.csv]

Prints `<set> cases=<n> max_rel_diff=<x> worst=<id> ops_nodes=<n> coarse_nodes=<n> ops_s=<s> coarse_s=<s>`.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

from benchmarks.rows import ROOT, Skip
from graphgen.errors import RankflowError
from rankflow import api


def _compare(cases) -> str:
    worst, worst_id, n = 0.0, "-", 0
    nodes, secs = {"ops": 0, "coarse": 0}, {"ops": 0.0, "coarse": 0.0}
    for cid, sc in cases:
        steps = {}
        for detail in ("ops", "coarse"):
            t0 = time.perf_counter()
            res = api.simulate(sc, detail=detail)
            secs[detail] += time.perf_counter() - t0
            nodes[detail] += sum(r.nodes for r in res.roles)
            steps[detail] = res.step_time_s
        n += 1
        diff = abs(steps["coarse"] / steps["ops"] - 1)
        if diff > worst:
            worst, worst_id = diff, cid
    return (f"cases={n} max_rel_diff={worst:.2e} worst={worst_id} ops_nodes={nodes['ops']} "
            f"coarse_nodes={nodes['coarse']} ops_s={secs['ops']:.1f} coarse_s={secs['coarse']:.1f}")


def validation_cases(path: Path):
    from benchmarks.validate import _load_models, row_scenario

    models, seen = _load_models(path), set()
    with path.open() as fh:
        for r in csv.DictReader(fh):
            try:
                sc = row_scenario(r, models)
            except (Skip, RankflowError):
                continue
            key = (sc.model.model_dump_json(), sc.workload.model_dump_json(), sc.plan.model_dump_json(), sc.hardware.name)
            if key not in seen:
                seen.add(key)
                yield r["id"], sc


def shipped_cases():
    hw = ROOT / "hardware_configs" / "A100-SXM4-80GB.yaml"
    for model in sorted((ROOT / "model_configs").glob("*.yaml")):
        yield model.stem, api.load_scenario(model, hw)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else ROOT.parent / "shared" / "validation" / "training.csv"
    print(f"shipped model configs on A100-SXM4-80GB.yaml: {_compare(shipped_cases())}", flush=True)
    if path.exists():
        print(f"{path.name} rows: {_compare(validation_cases(path))}", flush=True)
    else:
        print(f"{path}: not found, validation rows skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
