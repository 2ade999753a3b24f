"""Serving measurements -> predictions (used by benchmarks.validate for inference.csv and the rapid-llm
serving files).

- inference.csv (TensorRT-LLM trtllm-bench offline throughput): every request arrives at once; the
  deployment runs continuous batching with TensorRT-LLM's defaults (framework_configs/tensorrt-llm.yaml);
  predicted: output tokens/s of the whole system.
- koyeb (one A100 serving Llama-3.1-8B): a batch of `batch_size` prompts prefilled, then decoded to
  `decode_len` tokens; predicted: aggregate decode tokens/s.
- NeMo Llama-2 latency (batch 1, 200 in, 200 out): prefill plus 199 decode steps; predicted: seconds.
- NIM Llama-3.3-70B: a closed loop of `Concurrency` users; predicted: TTFT, ITL, throughput.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

from benchmarks.rows import HW_DIR, ROOT, Row, Skip, attempt

MODELS = {"llama 3.1 8b": "llama3.1-8b.yaml", "llama-3.1-8b": "llama3.1-8b.yaml", "llama 3.3 70b": "llama3.1-70b.yaml",
          "llama3.3_70b": "llama3.1-70b.yaml", "llama 3.1 405b": "llama3.1-405b.yaml", "llama 2-7b": "llama2-7b.yaml",
          "llama 2-13b": "llama2-13b.yaml", "llama 2-70b": "llama2-70b.yaml"}
GPUS = (("B200", "B200.yaml"), ("H200", "H200-SXM-141GB.yaml"), ("H100", "H100-SXM5-80GB.yaml"),
        ("A100", "A100-SXM4-80GB.yaml"))
OFFLINE_REQUESTS = 3000  # trtllm-bench's dataset size is not stated; throughput is flat past a few batches


def _pick(text: str, table, what: str) -> str:
    low = text.lower()
    for key, value in (table.items() if isinstance(table, dict) else table):
        if key.lower() in low:
            return value
    raise Skip(f"no {what} for '{text}'")


@functools.cache
def _engine(model: str, hw: str, tp: int, sets: tuple[str, ...]):
    from rankflow import serve

    sc = serve.inference_scenario(ROOT / "model_configs" / model, HW_DIR / hw, None,
                                  [f"parallelism.tp={tp}", *sets])
    return sc, serve.engine_model(sc)


def _precision_sets(precision: str) -> tuple[str, ...]:
    p = precision.strip().lower()
    if p == "fp4":
        return ("workload.precision=fp4", "workload.inference.kv_dtype=fp8")
    if p == "fp8":
        return ("workload.precision=fp8", "workload.inference.kv_dtype=fp8")
    return ("workload.precision=bf16",)


def _offline(r: dict) -> float:
    from graphgen.serving.lengths import FixedLength
    from graphgen.serving.metrics import summarize
    from graphgen.serving.schedulers import ContinuousBatching
    from graphgen.serving.simulate import Deployment, simulate
    from graphgen.serving.sources import PoissonSource

    sets = ("workload.framework=tensorrt-llm", *_precision_sets(r["precision"]))
    sc, engine = _engine(_pick(r["model"], MODELS, "model config"), _pick(r["gpu"], GPUS, "hardware config"),
                         int(r["tp"]), sets)
    spec = sc.workload.inference
    # a prompt longer than the token budget runs in an iteration of its own (vLLM 0.6 raised the budget
    # to max_model_len when chunking was off; TensorRT-LLM chunks instead: the same work, spread out)
    budget = max(spec.max_num_batched_tokens, int(r["input_len"]))
    dep = Deployment(engine, ContinuousBatching(budget, spec.max_num_seqs))
    # arrivals a microsecond apart: offline, all requests queued at once
    src = PoissonSource(1e6, OFFLINE_REQUESTS, FixedLength(int(r["input_len"])), FixedLength(int(r["output_len"])))
    out = summarize(simulate(dep, src, oversized="drop")).output_tokens_per_s
    if not out:
        raise Skip("no request fits the KV cache")
    return out


def validate_offline(path: Path) -> list[Row]:
    rows = []
    with path.open() as fh:
        for r in csv.DictReader(fh):
            row = Row(r["id"], "tensorrt-llm", r["metric"], float(r["value"]), None, None, "tensorrt-llm 1.0")

            def run(r=r, row=row) -> None:
                if r["metric"] != "tokens_per_s":
                    raise Skip(f"metric {r['metric']} not predicted")
                row.predicted = _offline(r)
            attempt([row], run)
            rows.append(row)
    return rows


def _decode_loop(engine, batch: int, prompt: int, new: int) -> float:
    """Seconds to prefill `batch` prompts together and decode them `new` tokens (the first comes out of
    the prefill), one iteration per token."""
    t = engine.iteration_time(batch * prompt, batch * prompt, 0, 0, batch)
    for i in range(1, new):
        t += engine.iteration_time(0, 0, batch, batch * (prompt + i), 0)
    return t


def _koyeb(r: dict) -> float:
    _, engine = _engine("llama3.1-8b.yaml", "A100-SXM4-80GB.yaml", 1, _precision_sets("bf16"))
    b, n = int(r["batch_size"]), int(r["decode_len"])
    return b * n / _decode_loop(engine, b, int(r["prefill_len"]), n)


def _nemo(r: dict, gpu: str) -> float:
    _, engine = _engine(_pick(r["model"], MODELS, "model config"), _pick(gpu, GPUS, "hardware config"), int(r["TP"]),
                        _precision_sets("bf16"))
    return _decode_loop(engine, 1, 200, 200)


def _nim(r: dict, gpus: int, gpu: str, precision: str) -> dict[str, float]:
    from graphgen.serving.lengths import FixedLength
    from graphgen.serving.metrics import summarize
    from graphgen.serving.simulate import Deployment, simulate
    from graphgen.serving.sources import ClosedLoopSource

    _, engine = _engine("llama3.1-70b.yaml", gpu, gpus, _precision_sets(precision))
    c = int(r["Concurrency"])
    src = ClosedLoopSource(c, max(20 * c, 100), FixedLength(int(r["Input Tokens"])), FixedLength(int(r["Output Tokens"])))
    s = summarize(simulate(Deployment(engine), src))
    return {"ttft_ms": 1e3 * s.ttft_s.mean, "itl_ms": 1e3 * s.itl_s.mean, "tokens_per_s": s.output_tokens_per_s}


def validate_rapid(path: Path) -> list[Row]:
    """The rapid-llm serving files, by their layout."""
    name, rows = path.name, []
    with path.open(encoding="utf-8-sig") as fh:
        data = list(csv.DictReader(fh))
    for i, r in enumerate(data):
        if "koyeb" in name:
            if r["token_shape_group"] == "large" and r["batch_size"] == "32":
                continue  # the README: that point is the PCIe card's
            cases = [("tokens_per_s", float(r["expected_agg_tokens_per_s"]), lambda r=r: _koyeb(r))]
        elif "nemo" in name:
            gpu = "H100" if "h100" in name else "A100"
            cases = [("latency_s", float(r["actual"]), lambda r=r, g=gpu: _nemo(r, g))]
        elif "nim" in name:
            gpus, gpu = (8, "A100-SXM4-80GB.yaml") if "8xa100" in name else (4, "H100-SXM5-80GB.yaml")
            prec = "bf16"
            pred = functools.cache(lambda r=r, n=gpus, g=gpu, p=prec: _nim(r, n, g, p))
            cases = [(k, float(r[c]), lambda k=k, pred=pred: pred()[k]) for k, c in
                     (("ttft_ms", "TTFT (ms)"), ("itl_ms", "ITL (ms)"), ("tokens_per_s", "Throughput (Tokens/s)"))]
        else:
            raise Skip(f"unknown serving file {name}")
        for metric, measured, fn in cases:
            row = Row(f"{path.stem}-{i}-{metric}", path.stem, metric, measured, None, None)
            attempt([row], lambda row=row, fn=fn: setattr(row, "predicted", fn()))
            rows.append(row)
    return rows
