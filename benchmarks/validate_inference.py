"""Serving measurements -> predictions, for benchmarks.validate. What each file holds, on what hardware and
under which engine, is data (benchmarks/serving_sources.yaml); this module knows only three kinds of run:

- offline: every request queued at once, continuous batching with the engine profile's budget; predicted:
  output tokens/s of the whole system.
- batch: a batch of prompts prefilled together, then decoded one iteration per token; predicted: aggregate
  decode tokens/s, or the batch's seconds.
- closed_loop: `concurrency` users each with one request in flight; predicted: mean TTFT, mean ITL and
  output tokens/s.

Every prediction runs the deployment's own iteration model (rankflow.serve.engine_model): the same graphs
and cost tables as training, no profiling.
"""

from __future__ import annotations

import csv
import fnmatch
import functools
from collections.abc import Callable
from pathlib import Path

import yaml

from benchmarks.rows import ROOT, Row, Skip, attempt, hardware_file

SOURCES = Path(__file__).resolve().parent / "serving_sources.yaml"
OFFLINE_REQUESTS = 3000  # trtllm-bench's dataset size is not stated; throughput is flat past a few batches
FIELDS = {"file", "name", "framework", "version", "run", "model", "gpu", "tp", "precision", "batch", "input_len",
          "output_len", "concurrency", "metrics", "long", "exclude", "evidence"}


@functools.cache
def _catalogue() -> dict:
    doc = yaml.safe_load(SOURCES.read_text())
    for entry in doc["sources"]:
        unknown = set(entry) - FIELDS
        if unknown:
            raise ValueError(f"{SOURCES.name}: {entry.get('file')}: unknown fields {sorted(unknown)}")
    return doc


def source_of(path: Path) -> dict | None:
    """The serving_sources.yaml entry that describes the file at `path`, or None."""
    for entry in _catalogue()["sources"]:
        if fnmatch.fnmatch(path.name, entry["file"]):
            return entry
    return None


def _value(entry: dict, key: str, row: dict[str, str]):
    v = entry.get(key)
    if isinstance(v, dict):
        text = row.get(v["column"], "")
        if text == "":
            raise Skip(f"column {v['column']} is empty")
        return text
    if v is None:
        raise Skip(f"{SOURCES.name} states no {key} for {entry['file']}")
    return v


def _model_file(name: str) -> Path:
    low = name.lower()
    for key, fname in _catalogue()["models"]:
        if key in low:
            return ROOT / "model_configs" / fname
    raise Skip(f"no model config for '{name}'")


def _precision_sets(precision: str) -> tuple[str, ...]:
    p = precision.strip().lower()
    if p in ("fp4", "fp8"):
        # the published FP8/FP4 checkpoints (ModelOpt) quantise the KV cache to FP8 too
        return (f"workload.precision={p}", "workload.inference.kv_dtype=fp8")
    return (f"workload.precision={'fp16' if p == 'fp16' else 'bf16'}",)


@functools.cache
def _engine(model: Path, hw: Path, tp: int, sets: tuple[str, ...]):
    from rankflow import serve

    sc = serve.inference_scenario(model, hw, None, [f"parallelism.tp={tp}", *sets])
    return sc, serve.engine_model(sc)


def _deployment(entry: dict, r: dict[str, str]):
    sets = (f"workload.framework={entry['framework']}", *_precision_sets(str(_value(entry, "precision", r))))
    return _engine(_model_file(str(_value(entry, "model", r))), hardware_file(str(_value(entry, "gpu", r))),
                   int(_value(entry, "tp", r)), sets)


def _lengths(entry: dict, r: dict[str, str]) -> tuple[int, int]:
    return int(_value(entry, "input_len", r)), int(_value(entry, "output_len", r))


def _continuous(entry: dict, r: dict[str, str], inp: int, out: int):
    """The deployment under continuous batching with its engine profile's limits."""
    from graphgen.serving.schedulers import ContinuousBatching
    from graphgen.serving.simulate import Deployment

    sc, engine = _deployment(entry, r)
    spec = sc.workload.inference
    # a prompt longer than the token budget runs in an iteration of its own (vLLM 0.6 raised the budget
    # to max_model_len when chunking was off; TensorRT-LLM chunks instead: the same work, spread out);
    # a preempted request re-prefills its prompt and what it had generated
    return Deployment(engine, ContinuousBatching(max(spec.max_num_batched_tokens, inp + out), spec.max_num_seqs))


def _offline(entry: dict, r: dict[str, str]) -> dict[str, float]:
    from graphgen.serving.lengths import FixedLength
    from graphgen.serving.metrics import summarize
    from graphgen.serving.simulate import simulate
    from graphgen.serving.sources import PoissonSource

    inp, out = _lengths(entry, r)
    dep = _continuous(entry, r, inp, out)
    # arrivals a microsecond apart: offline, all requests queued at once
    res = summarize(simulate(dep, PoissonSource(1e6, OFFLINE_REQUESTS, FixedLength(inp), FixedLength(out)),
                             oversized="drop"))
    if not res.output_tokens_per_s:
        raise Skip("no request fits the KV cache")
    return {"tokens_per_s": res.output_tokens_per_s}


def _batch(entry: dict, r: dict[str, str]) -> dict[str, float]:
    """Prefill `batch` prompts together, then decode them to the output length (the first token comes
    out of the prefill), one iteration per token."""
    _, engine = _deployment(entry, r)
    b, (inp, out) = int(_value(entry, "batch", r)), _lengths(entry, r)
    t = engine.iteration_time(b * inp, b * inp, 0, 0, b)
    for i in range(1, out):
        t += engine.iteration_time(0, 0, b, b * (inp + i), 0)
    return {"latency_s": t, "tokens_per_s": b * out / t}


def _closed_loop(entry: dict, r: dict[str, str]) -> dict[str, float]:
    from graphgen.serving.lengths import FixedLength
    from graphgen.serving.metrics import summarize
    from graphgen.serving.simulate import simulate
    from graphgen.serving.sources import ClosedLoopSource

    c, (inp, out) = int(_value(entry, "concurrency", r)), _lengths(entry, r)
    s = summarize(simulate(_continuous(entry, r, inp, out), ClosedLoopSource(c, max(20 * c, 100), FixedLength(inp),
                                                                              FixedLength(out))))
    return {"ttft_ms": 1e3 * s.ttft_s.mean, "itl_ms": 1e3 * s.itl_s.mean, "tokens_per_s": s.output_tokens_per_s}


RUNS: dict[str, Callable[[dict, dict[str, str]], dict[str, float]]] = {
    "offline": _offline, "batch": _batch, "closed_loop": _closed_loop}


def _excluded(entry: dict, r: dict[str, str]) -> bool:
    return any(all(r.get(k) == str(v) for k, v in rule.items()) for rule in entry.get("exclude", []))


def _cases(entry: dict, r: dict[str, str]) -> list[tuple[str, float]]:
    if "long" in entry:
        metric_col, value_col = entry["long"]
        return [(r[metric_col], float(r[value_col]))]
    return [(metric, float(r[col])) for metric, col in entry["metrics"].items() if r.get(col, "") != ""]


def validate(path: Path, entry: dict) -> list[Row]:
    """Every row of a serving measurements file, predicted as its entry's kind of run."""
    with path.open(encoding="utf-8-sig") as fh:
        data = list(csv.DictReader(fh))
    run, framework = RUNS[entry["run"]], f"{entry['framework']} {entry.get('version', '')}".strip()
    rows = []
    for i, r in enumerate(data):
        if _excluded(entry, r):
            continue
        predicted = functools.cache(lambda r=r: run(entry, r))
        for metric, measured in _cases(entry, r):
            row = Row(f"{r.get('id') or f'{path.stem}-{i}'}-{metric}", entry["name"], metric, measured, None, None,
                      framework)

            def fill(row=row, metric=metric, predicted=predicted) -> None:
                got = predicted()
                if metric not in got:
                    raise Skip(f"metric {metric} is not predicted for a {entry['run']} run")
                row.predicted = got[metric]
            attempt([row], fill)
            rows.append(row)
    return rows
