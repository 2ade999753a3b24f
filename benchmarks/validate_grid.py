"""Training measurements with one run per row and its plan in columns -> predictions, for
benchmarks.validate. What each file holds is data (benchmarks/training_sources.yaml); this module only
reads columns, derives the global batch from the tokens a step processed, and compares each metric."""

from __future__ import annotations

import csv
import fnmatch
import functools
from pathlib import Path

import yaml

from benchmarks.rows import ROOT, Row, Skip, attempt, hardware_file, predict, row_scenario_from

SOURCES = Path(__file__).resolve().parent / "training_sources.yaml"
FIELDS = {"file", "name", "model", "gpu", "seq_len", "tokens_per_step", "plan", "microbatches", "zero_stage",
          "status", "metrics", "evidence"}


@functools.cache
def _catalogue() -> tuple[dict, ...]:
    entries = tuple(yaml.safe_load(SOURCES.read_text())["sources"])
    for entry in entries:
        unknown = set(entry) - FIELDS
        if unknown:
            raise ValueError(f"{SOURCES.name}: {entry.get('file')}: unknown fields {sorted(unknown)}")
    return entries


def source_of(path: Path) -> dict | None:
    """The training_sources.yaml entry describing the file at `path`, or None."""
    return next((e for e in _catalogue() if fnmatch.fnmatch(path.name, e["file"])), None)


def _number(r: dict[str, str], column: str) -> float:
    text = (r.get(column) or "").strip()
    if not text:
        raise Skip(f"column {column} is empty")
    return float(text)


def row_scenario(entry: dict, r: dict[str, str]):
    """A run's scenario: the model and GPU the source names, the plan from its columns, and the global
    batch from the tokens one step processed."""
    model = yaml.safe_load((ROOT / "model_configs" / entry["model"]).read_text())["model"]
    plan = {k: int(_number(r, col)) for k, col in entry["plan"].items()}
    zero = entry.get("zero_stage")
    if zero:
        variant = r.get(zero["column"], "")
        if variant not in zero["map"]:
            raise Skip(f"{zero['column']} '{variant}' has no ZeRO stage in {SOURCES.name}")
        plan["zero_stage"] = zero["map"][variant]
    seq = int(entry["seq_len"])
    a, b = entry["tokens_per_step"]
    batch = round(_number(r, a) * _number(r, b) / seq)
    micro = int(_number(r, entry["microbatches"])) if entry.get("microbatches") else 1
    per_replica = batch / plan.get("dp", 1)
    if batch < 1 or per_replica % micro:
        raise Skip(f"{batch} sequences per step do not split into {micro} microbatches per replica")
    workload = {"seq_len": seq, "global_batch": batch, "micro_batch": int(per_replica // micro)}
    return row_scenario_from(model, workload, hardware_file(entry["gpu"]), plan)


def validate(path: Path, entry: dict) -> list[Row]:
    from rankflow import api

    out: list[Row] = []
    with path.open() as fh:
        data = list(csv.DictReader(fh))
    status = entry.get("status") or {}
    for i, r in enumerate(data):
        rows = [Row(f"{entry['name']}-{i}-{metric}", entry["name"], metric,
                    float(r[col]) if (r.get(col) or "").strip() else float("nan"), None, None)
                for metric, col in entry["metrics"].items()]
        out.extend(rows)
        if status and r.get(status["column"]) != status["ok"]:
            why = (r.get(status.get("reason", "")) or r.get(status["column"]) or "").strip()
            for row in rows:
                row.skipped = f"the run did not complete: {why}"[:120]
            continue

        def run(r=r, rows=rows) -> None:
            sc = row_scenario(entry, r)
            res = api.simulate(sc)
            for row in rows:
                row.predicted = predict(row.metric, res, sc)

        attempt(rows, run)
    return out
