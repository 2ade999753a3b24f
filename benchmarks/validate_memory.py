"""Rows of ../shared/validation/memory.csv -> predicted per-GPU memory (used by benchmarks.validate).

- SimuMax's measured Megatron runs on B200: peak allocated memory (PyTorch max_memory_allocated,
  so without the CUDA context), max over ranks.
- ZeRO Table 1: model states per device, GB, for a 7.5B model (analytical in the source too).
- Korthikanti et al. 2022 Figure 1 (as encoded by Calculon): parameters + gradients + optimizer
  states, and first-stage activations, for GPT-22B/175B/530B/1T under Megatron (no FlashAttention).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from benchmarks.catalogue import _catalogued
from benchmarks.rows import HW_DIR, Row, Skip, attempt, row_scenario_from
from graphgen.memory import model_states
from graphgen.units import GIB
from rankflow import api

# Architectures the rows name but do not state: HF configs (SimuMax's llama3 models) and
# Korthikanti et al. 2022 Table 3 / Narayanan et al. 2021 Table 1 (the GPT models).
LLAMA3 = {"llama3-70b": dict(hidden=8192, heads=64, kv_heads=8, ffn_hidden=28672),
          "llama3-405b": dict(hidden=16384, heads=128, kv_heads=8, ffn_hidden=53248)}
GPT = {"GPT-22B": dict(layers=48, hidden=6144, heads=64), "GPT-3 175B": dict(layers=96, hidden=12288, heads=96),
       "MT-NLG 530B": dict(layers=105, hidden=20480, heads=128), "GPT-1T": dict(layers=128, hidden=25600, heads=160)}


def _plan(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(tp|pp|dp|cp|ep|vpp|b|mbs)(\d+)", text)}


def _simumax_model(r: dict) -> dict:
    """The trimmed model a SimuMax row names: llama3 shapes from HF, MoE models from the catalogue."""
    name = r["model"].split(" (")[0]
    layers = int(re.search(r"trimmed (\d+)L", r["model"]).group(1))
    known = _catalogued({"model": r["model"], "layers": str(layers)})
    if known is not None:
        return known
    if name not in LLAMA3:
        raise Skip(f"architecture of {name} not known")
    return dict(name=name, layers=layers, vocab=128256, activation="swiglu", norm="rmsnorm", position_encoding="rope",
                **LLAMA3[name])


def _simumax(r: dict) -> float:
    model = _simumax_model(r)
    plan = _plan(r["parallelism"])
    mbs, mbc = (int(x) for x in re.findall(r"\d+", r["batch"]))
    # Megatron with TE 2.11, distributed optimizer, sequence parallelism, flash attention and fused
    # cross-entropy ("cef"); the launch flags disable recompute (notes).
    workload = {"seq_len": int(r["seq_len"]), "micro_batch": mbs, "global_batch": mbs * mbc * plan["dp"],
                "precision": "bf16", "fused_cross_entropy": "cef" in r["id"]}
    tp = plan["tp"]
    sc = row_scenario_from(model, workload, HW_DIR / "B200.yaml", dict(
        tp=tp, pp=plan["pp"], dp=plan["dp"], cp=plan.get("cp", 1), ep=plan.get("ep", 1), sp=tp > 1, zero_stage=1,
        recompute="none"))
    return max(m.allocated for m in api.memory(sc).roles) / GIB


def _zero(r: dict) -> float:
    psi = float(re.match(r"([\d.]+)B", r["model"]).group(1)) * 1e9
    dp = int(r["num_gpus"])
    stage = int(r["zero_stage"][0]) if dp > 1 else 0
    s = model_states(2 * psi, psi, precision="fp16", optimizer="adamw", grad_dtype="bf16", dp=dp, zero=stage)
    return s.total / 1e9  # the table is in GB


def _korthikanti(r: dict) -> float:
    name = r["model"].replace(" (KOR22)", "")
    plan = _plan(r["parallelism"])
    model = dict(name=name, ffn_hidden=4 * GPT[name]["hidden"], vocab=51200, activation="gelu", norm="layernorm",
                 position_encoding="learned", max_position=2048, bias=True, dropout=0.1, tied_embeddings=True,
                 **GPT[name])
    selective = "selective" in r["recompute"]
    workload = {"seq_len": 2048, "micro_batch": plan["mbs"], "global_batch": plan["b"], "precision": "fp16",
                "flash_attention": False, "fused_cross_entropy": False}
    v = plan.get("vpp", 1)
    sc = row_scenario_from(model, workload, HW_DIR / "A100-SXM4-80GB.yaml", dict(
        tp=plan["tp"], pp=plan["pp"], dp=1, sp=selective, zero_stage=0, recompute="selective" if selective else "none",
        schedule="interleaved" if v > 1 else "1f1b", virtual_stages=v))
    first = api.memory(sc).roles[0]
    if r["metric"].startswith("params+grads"):
        return (first.weights + first.master_weights + first.gradients + first.optimizer_states) / GIB
    return first.activations / GIB


def validate(csv_path: Path) -> list[Row]:
    rows: list[Row] = []
    with csv_path.open() as fh:
        for r in csv.DictReader(fh):
            if r["id"].startswith("SIMU"):
                source, fn = "simumax", _simumax
            elif r["id"].startswith("ZERO"):
                source, fn = "zero-table1", _zero
            elif r["id"].startswith("KOR22"):
                source, fn = "korthikanti2022", _korthikanti
            else:
                source, fn = r["source"].split()[0], None
            row = Row(r["id"], source, "mem_gib_per_gpu" if source != "zero-table1" else "model_states_gb",
                      float(r["value_gib"]), None, None)

            def run(r=r, row=row, fn=fn) -> None:
                if fn is None:
                    raise Skip("no mapping for this source")
                row.predicted = fn(r)

            attempt([row], run)
            rows.append(row)
    return rows
