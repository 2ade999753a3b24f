"""Validation harness: predict every row of a published-measurements CSV and report the error.

    python -m benchmarks.validate ../shared/validation/training.csv [--json OUT] [--quiet]

Each row is mapped to a model config, a hardware config from hardware_configs/ and a plan, then
simulated. Metrics are compared like with like: each source's own FLOP-counting convention is
applied to the predicted step time: the convention of the framework the source ran, whose profile
(framework_configs/) benchmarks/sources.yaml names for it. Nothing here is fitted to the rows, and
nothing here knows a source except through sources.yaml.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from benchmarks.catalogue import _catalogue_entry, _catalogued, _int
from benchmarks.rows import (  # noqa: F401
    HW_DIR,
    ROOT,
    Row,
    Skip,
    attempt,
    hardware,
    hardware_file,
    predict,
    row_scenario_from,
)
from graphgen.model.flop_conventions import FLOP_CONVENTIONS
from rankflow import api

SOURCES = Path(__file__).resolve().parent / "sources.yaml"
MOE_NAMES = ("mixtral", "deepseek", "qwen3", "gpt-oss", "moe")


@functools.cache
def sources() -> tuple[dict, ...]:
    return tuple(yaml.safe_load(SOURCES.read_text()))


def _matches(entry: dict, row: dict[str, str]) -> bool:
    m = entry["match"]
    text = {k: (row.get(k) or "").lower() for k in ("source", "notes", "model")}
    if any(pat.lower() not in text[k] for k, pat in m.items() if k in text):
        return False
    return "model_regex" not in m or re.search(m["model_regex"], text["model"]) is not None


def row_source(row: dict[str, str]) -> dict:
    """What sources.yaml says about a row's runs: its publication's name, framework and version, the
    settings the source states, and its recompute vocabulary (later matching entries add to earlier)."""
    out: dict = {"name": (row["source"].split() or ["unknown"])[0].lower(), "framework": None, "version": None,
                 "flops": None, "set": {}, "recompute": {}}
    for entry in sources():
        if _matches(entry, row):
            for key in ("name", "framework", "version", "flops"):
                out[key] = entry.get(key, out[key])
            out["set"] = {**out["set"], **entry.get("set", {})}
            out["recompute"] = {**out["recompute"], **entry.get("recompute", {})}
    return out


def source_key(source: str) -> str:
    """The publication a source column names (sources.yaml `name`), for grouping."""
    return row_source({"source": source})["name"]


def _architecture(r: dict, models: dict[str, dict]) -> dict:
    name = r["model"]
    low = name.lower()
    known = _catalogued(r)
    if known is not None:
        return known
    if any(k in low for k in MOE_NAMES) or _int(r.get("ep", ""), "ep", 1) > 1:
        raise Skip("MoE model not in benchmarks/model_catalogue.yaml")
    arch = {k: r.get(k, "") for k in ("layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab")}
    if not arch["layers"]:
        ref = models.get(re.sub(r"[^a-z0-9.]", "", low))
        if ref is None:
            raise Skip("architecture not stated")
        arch = {k: ref[k] for k in arch}
    a = {k: _int(v, k) for k, v in arch.items() if k != "kv_heads"}
    a["kv_heads"] = _int(arch["kv_heads"], "kv_heads", a["heads"])
    llama_like = any(k in low for k in ("llama", "mistral", "qwen", "nemotron")) or a["ffn_hidden"] != 4 * a["hidden"]
    mpt = low.startswith("mpt")
    spec = dict(name=name, **a, activation="swiglu" if llama_like and "nemotron" not in low else "gelu",
                norm="rmsnorm" if llama_like else "layernorm", tied_embeddings=mpt or low.startswith("gpt"),
                position_encoding="rope" if llama_like else "learned",
                bias=low.startswith("gpt") or mpt)
    if spec["position_encoding"] == "learned":
        # llm-foundry's benchmark MPTs keep MPT's default learned position table (NumParams grows
        # with max_seq_len in the source), so the table has seq_len rows; GPT rows use 2048.
        spec["max_position"] = _int(r.get("seq_len", ""), "seq_len", 2048) if mpt else 2048
    if "nemotron" in low:
        spec["activation"] = "relu"  # Nemotron-4 uses squared ReLU: two matrices like GELU
    return spec


def _precision(r: dict) -> str:
    text = (r["notes"] + " " + r["source"]).lower()
    if "fp8" in text and "amp_bf16" not in text and "bf16 (pure)" not in text:
        return "fp8"
    if "float8" in r["id"].lower():  # torchtitan's Float8 runs (the notes' footnote is shared by all rows)
        return "fp8"
    if "v100" in r["gpu"].lower():
        return "fp16"
    return "bf16"


# Megatron --recompute-modules as the rows abbreviate them ("selective (norm, act, shared_expert)").
MODULE_ALIASES = {"norm": "layernorm", "act": "moe_act", "shared_expert": "shared_experts"}


def _recompute(text: str) -> tuple[str, list[str]]:
    """(recompute, recompute_modules) from the row's column: none, full, selective, or selective
    with Megatron's module list in parentheses."""
    low = (text or "none").strip().lower()
    m = re.fullmatch(r"selective\s*\((.*)\)", low)
    if m:
        return "selective", [MODULE_ALIASES.get(x.strip(), x.strip()) for x in m.group(1).split(",")]
    return (low if low in ("none", "selective", "full") else "none"), ["core_attn"]


# What a row's notes may state about its run, in words any source uses: (pattern, settings).
NOTE_FACTS = (
    (r"fused ce\b|cross[- _]entropy[- _]fusion|fused cross[- ]entropy", {"workload.fused_cross_entropy": True}),
    (r"\bflash[- ]?attn\b|flash[- ]?attention", {"workload.flash_attention": True}),
    (r"torch\.compile|\bcompiled?\b", {"workload.fused_kernels": True}),
    (r"\basync[- ]?tp\b|async tensor parallel|tp[-_ ]comm[-_ ]overlap", {"parallelism.tp_overlap": True}),
    (r"\bq-?lora\b", {"workload.finetune.method": "qlora"}),
    (r"\blora\b", {"workload.finetune.method": "lora"}),
)


def note_facts(notes: str) -> dict:
    out: dict = {}
    for pattern, settings in NOTE_FACTS:
        if re.search(pattern, notes.lower()):
            out.update(settings)
    return out


def _stated(column: str) -> bool | None:
    text = (column or "").strip().lower()
    return True if text.startswith(("y", "t")) else False if text.startswith(("n", "f")) else None


def row_scenario(r: dict, models: dict[str, dict]):
    """A row's scenario: its columns, its notes' stated facts, and its source's framework profile
    (sources.yaml) for everything the row leaves unsaid."""
    arch = _architecture(r, models)
    src = row_source(r)
    low = r["model"].lower()
    seq = _int(r["seq_len"], "seq_len", 8192 if "llama 3" in low else (4096 if "llama 2" in low else None))
    n = _int(r["num_gpus"], "num_gpus")
    tp, pp = _int(r["tp"], "tp", None), _int(r["pp"], "pp", None)
    cp = _int(r["cp"], "cp", 1)
    dp = _int(r["dp"], "dp", 0) or n // (tp * pp * cp)
    if tp * pp * dp * cp != n:
        raise Skip(f"tp x pp x dp x cp = {tp * pp * dp * cp} != num_gpus {n}")
    gb = _int(r["global_batch"], "global_batch")
    mb = _int(r["micro_batch"], "micro_batch", 1)
    vpp = _int(r["vpp"], "vpp", 1)
    recompute, modules = _recompute(r["recompute"])
    plan: dict = dict(tp=tp, pp=pp, dp=dp, cp=cp, zero_stage=min(_int(r["zero_stage"], "zero_stage", 0), 3),
                      recompute=recompute, recompute_modules=modules)
    plan.update({k.split(".", 1)[1]: v for k, v in src["recompute"].get(recompute, {}).items()})
    if vpp > 1:
        plan.update(schedule="interleaved", virtual_stages=vpp)
    elif "interleaved" in r["notes"].lower() and pp > 1 and (gb // (mb * dp)) % pp == 0:
        plan.update(schedule="interleaved", virtual_stages=_chunks_per_stage(arch["layers"] // pp))
    if _stated(r["sequence_parallel"]) is not None:
        plan["sp"] = _stated(r["sequence_parallel"])
    plan.update(_expert_plan(r, arch, tp))
    plan.update((_catalogue_entry(r) or {}).get("plan", {}))
    workload = {"seq_len": seq, "global_batch": gb, "micro_batch": mb, "precision": _precision(r)}
    if src["framework"]:
        workload.update(framework=src["framework"], framework_version=src["version"])
    stated = {**src["set"], **note_facts(r["notes"])}
    return row_scenario_from(arch, workload, hardware_file(r["gpu"]), plan, list(stated.items()))


def _chunks_per_stage(layers_per_stage: int) -> int:
    """The fewest chunks above one that divide a stage's layers, as Megatron builds interleaving (NVIDIA/
    Megatron-LM @48a5e0d, 2021-04, megatron/arguments.py, megatron/model/transformer.py): 2 when it can."""
    return next((v for v in range(2, layers_per_stage + 1) if layers_per_stage % v == 0), 1)


def _expert_plan(r: dict, arch: dict, tp: int) -> dict:
    """Expert parallelism as the row states it: ep, the dispatcher, and whether expert-parallel
    communication overlapped compute (notes: A2A_OVERLAP)."""
    if "moe" not in arch:
        return {}
    notes = r["notes"]
    ep = _int(r["ep"], "ep", 1)
    etp = int(m.group(1)) if (m := re.search(r"ETP=(\d+)", notes)) else 1
    dispatcher = "deepep" if ("DeepEP" in notes or "HybridEP" in notes) else "alltoall"
    # Megatron-Core requires sequence parallelism for MoE with tensor parallelism.
    return dict(ep=ep, etp=etp, moe_dispatcher=dispatcher, moe_overlap="A2A_OVERLAP=1" in notes, sp=tp > 1)


def _load_models(csv_path: Path) -> dict[str, dict]:
    path = csv_path.parent / "models.csv"
    if not path.exists():
        return {}
    out = {}
    with path.open() as fh:
        for r in csv.DictReader(fh):
            out[re.sub(r"[^a-z0-9.]", "", r["model"].lower())] = r
    return out


def validate(csv_path: Path, detail: str = "coarse") -> list[Row]:
    models = _load_models(csv_path)
    cache: dict[tuple, tuple] = {}
    rows: list[Row] = []
    with csv_path.open() as fh:
        data = list(csv.DictReader(fh))
    for r in data:
        src = row_source(r)
        measured = float(r["value"]) if r["value"] else float("nan")
        row = Row(r["id"], src["name"], r["metric"], measured, None, None,
                  f"{src['framework']} {src['version']}" if src["framework"] else None, table=r["source"])

        def run(r=r, row=row, src=src) -> None:
            sc = row_scenario(r, models)
            row.bf16_dense = sc.workload.precision == "bf16" and sc.model.moe is None
            row.family = "MoE" if sc.model.moe is not None else ("dense context-parallel" if sc.plan.cp > 1 else None)
            ck = (sc.model.model_dump_json(), sc.workload.model_dump_json(), sc.plan.model_dump_json(),
                  sc.hardware.name)
            if ck not in cache:
                cache[ck] = api.simulate(sc, detail=detail)
            stated = float(r["params_b"]) * 1e9 if r.get("params_b") else None
            row.predicted = predict(r["metric"], cache[ck], sc, stated, src["flops"])
            row.convention = src["flops"] or (cache[ck].framework or {}).get("flop_convention", "standard")

        attempt([row], run)
        rows.append(row)
    return rows


TARGET_METRICS = ("step_time_s", "tflops_per_gpu", "mfu", "tokens_per_s_per_gpu")


def summarize(rows: list[Row]) -> dict:
    def mape(rs: list[Row]) -> dict:
        verdicts = [r.correct for r in rs if r.correct is not None]
        if verdicts and len(verdicts) == len(rs):
            return {"rows": len(verdicts), "accuracy_pct": 100.0 * sum(verdicts) / len(verdicts)}
        errs = sorted(abs(r.error_pct) for r in rs if r.error_pct is not None)
        speed = [r.speed_ratio for r in rs if r.speed_ratio is not None]
        return {"rows": len(errs), "mape_pct": sum(errs) / len(errs) if errs else None,
                "median_ape_pct": errs[len(errs) // 2] if errs else None,
                # geometric mean of predicted / measured speed, less 1, over the time and throughput rows:
                # a systematic lean (geometric: one 10x outlier must not stand for the whole source)
                "too_fast_pct": 100.0 * (math.exp(sum(math.log(x) for x in speed) / len(speed)) - 1.0)
                if speed else None}

    done = [r for r in rows if r.skipped is None and not r.is_verdict]
    verdicts = [r for r in rows if r.skipped is None and r.is_verdict]
    by_metric, by_source, by_framework = defaultdict(list), defaultdict(list), defaultdict(list)
    conventions: dict[str, str] = {}
    for r in done:
        by_metric[r.metric].append(r)
        by_source[r.source].append(r)
        by_framework[r.definition or "none"].append(r)
        if r.metric in ("tflops_per_gpu", "mfu") and r.convention:
            conventions[r.source] = r.convention
    skipped = defaultdict(int)
    for r in rows:
        if r.skipped:
            skipped[r.skipped] += 1
    target = [r for r in done if r.bf16_dense and r.metric in TARGET_METRICS]
    by_table = defaultdict(list)
    for r in target:
        if r.table:
            by_table[r.table].append(r)
    families = sorted({r.family for r in done if r.family})
    return {
        "overall": mape(done),
        "target_bf16_dense_time_metrics": mape(target),
        "target_bf16_dense_by_table": {k: mape(v) for k, v in sorted(by_table.items())},
        "by_family": {f: {"time": mape([r for r in done if r.family == f and r.metric in TARGET_METRICS]),
                          "memory": mape([r for r in done if r.family == f and r.metric == "mem_gib_per_gpu"])}
                      for f in families},
        "by_metric": {k: mape(v) for k, v in sorted(by_metric.items())},
        "verdicts": {m: mape([r for r in verdicts if r.metric == m]) for m in sorted({r.metric for r in verdicts})},
        "by_source": {k: mape(v) for k, v in sorted(by_source.items())},
        "by_framework": {k: mape(v) for k, v in sorted(by_framework.items())},
        "definitions_by_source": {k: FLOP_CONVENTIONS[conv].description for k, conv in sorted(conventions.items())},
        "skipped": {"rows": sum(skipped.values()), "reasons": dict(sorted(skipped.items(), key=lambda kv: -kv[1]))},
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.validate", description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="measurements CSV: training.csv, memory.csv, inference.csv or a rapid-llm/ file "
                                "of ../shared/validation")
    ap.add_argument("--json", metavar="OUT", help="write rows and summary as JSON")
    ap.add_argument("--quiet", action="store_true", help="print only the summary")
    ap.add_argument("--detail", choices=["coarse", "ops"], default="coarse", help="DAG granularity (default coarse)")
    args = ap.parse_args(argv)
    path = Path(args.csv)
    if not path.exists():
        sys.stderr.write(f"validate: error: {path}: file not found (fix: pass the path of a validation CSV)\n")
        return 2
    with path.open() as fh:
        header = next(csv.reader(fh), [])
    from benchmarks.validate_grid import source_of as grid_source_of
    from benchmarks.validate_grid import validate as validate_grid
    from benchmarks.validate_inference import source_of
    from benchmarks.validate_inference import validate as validate_serving

    serving, grid = source_of(path), grid_source_of(path)
    if grid:
        rows = validate_grid(path, grid)
    elif serving:
        rows = validate_serving(path, serving)
    elif "value_gib" in header:
        from benchmarks.validate_memory import validate as validate_memory
        rows = validate_memory(path)
    elif "job_id" in header and "status" in header:
        from benchmarks.validate_nanotron import validate as validate_nanotron
        rows = validate_nanotron(path, args.detail)
    elif {"metric", "value"} <= set(header):
        rows = validate(path, args.detail)
    else:
        sys.stderr.write(f"validate: error: {path}: unknown CSV layout (fix: pass training.csv, memory.csv, "
                         "inference.csv or a rapid-llm/ file from ../shared/validation, or describe a serving file in "
                         "benchmarks/serving_sources.yaml)\n")
        return 2
    summary = summarize(rows)
    _print(rows, summary, args.quiet)
    if args.json:
        doc = {"rows": [{"id": r.id, "metric": r.metric, "measured": r.measured, "predicted": r.predicted,
                         "error_pct": r.error_pct, "skipped": r.skipped, "source": r.source,
                         "framework": r.definition, "flop_convention": r.convention} for r in rows],
               "summary": summary}
        Path(args.json).write_text(json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n")
    return 0


def _print(rows: list[Row], summary: dict, quiet: bool) -> None:
    out = sys.stdout
    if not quiet:
        out.write(f"{'id':62} {'metric':22} {'measured':>10} {'predicted':>10} {'error %':>8}\n")
        for r in rows:
            if r.skipped:
                out.write(f"{r.id[:62]:62} {r.metric:22} {r.measured!s:>10} {'skipped':>10}  {r.skipped}\n")
            elif r.is_verdict:
                out.write(f"{r.id[:62]:62} {r.metric:22} {r.measured!s:>10} {r.predicted!s:>10} "
                          f"{'ok' if r.correct else 'WRONG':>8}\n")
            else:
                out.write(f"{r.id[:62]:62} {r.metric:22} {r.measured:10.4g} {r.predicted:10.4g} "
                          f"{r.error_pct:8.1f}\n")
    out.write("\nMAPE (mean absolute percentage error)\n")
    out.write(f"  overall: {_fmt(summary['overall']['mape_pct'])} % over {summary['overall']['rows']} rows\n")
    t = summary["target_bf16_dense_time_metrics"]
    if t["rows"]:
        out.write(f"  BF16 dense rows, step time / TFLOP/s / MFU / tokens/s: {_fmt(t['mape_pct'])} % over {t['rows']} rows\n")
    tables = summary.get("target_bf16_dense_by_table", {})
    if tables:
        out.write("  BF16 dense rows by publication table (source column), worst first:\n")
        for k, v in sorted(tables.items(), key=lambda kv: (-(kv[1]["mape_pct"] or 0.0), kv[0])):
            label = k if len(k) <= 100 else f"{k[:34]}...{k[-63:]}"
            out.write(f"    {_fmt(v['mape_pct']):>5} %  {v['rows']:4} rows  {label}\n")
    for fam, v in summary.get("by_family", {}).items():
        out.write(f"  {fam} rows: step time / TFLOP/s / MFU / tokens/s {_fmt(v['time']['mape_pct'])} % over "
                  f"{v['time']['rows']} rows, memory {_fmt(v['memory']['mape_pct'])} % over {v['memory']['rows']} rows\n")
    for name in ("by_metric", "by_source", "by_framework"):
        out.write(f"  {name.replace('_', ' ')}:\n")
        for k, v in summary[name].items():
            x = v.get("too_fast_pct")
            lean = "" if x is None else f", predictions {abs(x):.1f} % too {'fast' if x >= 0 else 'slow'}"
            out.write(f"    {k:28} {_fmt(v['mape_pct']):>7} %  (median {_fmt(v['median_ape_pct'])} %, {v['rows']} rows{lean})\n")
    for k, v in summary["verdicts"].items():
        out.write(f"  {k} verdict right on {_fmt(v['accuracy_pct'])} % of {v['rows']} labelled rows\n")
    out.write("  FLOP conventions applied:\n")
    for k, v in summary["definitions_by_source"].items():
        out.write(f"    {k}: {v}\n")
    out.write(f"  skipped: {summary['skipped']['rows']} rows\n")
    for reason, count in summary["skipped"]["reasons"].items():
        out.write(f"    {count:4} {reason}\n")


if __name__ == "__main__":
    sys.exit(main())
