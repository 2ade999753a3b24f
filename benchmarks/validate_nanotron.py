"""Rows of rapid-llm/hf_playbook_nanotron_h100.csv -> OOM verdict, allocated memory, throughput.

The Ultra-Scale Playbook's nanotron runs on 8-GPU H100 nodes: Llama-style models (SwiGLU, RMSNorm,
RoPE, flash attention), sequence length 4096, tensor parallelism in REDUCE_SCATTER mode (sequence
parallel), 1F1B pipeline engine, ZeRO 0/1, bf16 with fp32 gradient accumulation, no recompute,
nanotron's vocab-parallel cross-entropy in fp32 (not fused). For every Success or OOM row the
harness emits `oom` (measured = status is OOM); for Success rows also `mem_alloc_gib` and
`tokens_per_s_per_gpu`.

"Mem Alloc (GB)" is torch.cuda.max_memory_allocated() / 2**30 on rank 0, logged after the step
(nanotron's log code), but in this file it does not depend on the micro-batch: every 1.34B run with
ZeRO-0, tp1, pp1 shows 25.07 whether mbs is 1 or 2 and dp 8 or 256. The peak statistic was evidently
reset before logging, so the column holds what stays allocated across steps: the model states. It is
compared with Rankflow's model states and buffers of stage 0, not with the activation peak.

The same column shows how this nanotron build keeps its model states (bytes per parameter on a rank,
identical in every 1.34B and 3.57B run at pp=1): ZeRO-1 holds 10 + 8/dp (bf16 weights 2, fp32
gradients 4, a full fp32 master copy 4, Adam states 8 sharded), ZeRO-0 holds 20 (the same plus bf16
gradient buckets 2). The rows therefore run with shard_master_weights=false and, at ZeRO-0,
param_dtype_grads=true: facts about the framework read off its own state memory, not a fitted constant.
Layers go to pipeline stages by nanotron's compute-balanced split (stage_split=balanced).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from backends.analytical import AnalyticalBackend
from benchmarks.validate import HW_DIR, Row, Skip, attempt
from graphgen.config import load_hardware_config, parse_model_config
from graphgen.memory import scenario_memory
from graphgen.program import build_program
from graphgen.scenario import make_scenario
from graphgen.units import GIB

# Per size label, what rows that omit it state elsewhere in the file (interm_dim, tied embeddings).
SIZE_DEFAULTS = {"1.34G": (8192, True), "3.57G": (8192, True), "8.86G": (14336, False), "80G": (28672, False),
                 "469G": (53248, False)}


def _num(text: str) -> int | None:
    text = (text or "").strip()
    return int(float(text)) if text else None


def row_scenario(r: dict):
    name = r["name"]
    size = name.split("_")[0]
    interm, tied = SIZE_DEFAULTS.get(size, (None, None))
    heads = _num(r["num_heads"])
    kv = _num(r["num_kv_heads"]) or (8 if "gqa8" in name else heads)
    vocab = _num(r["vocab_size"]) or (49152 if "vocab49k" in name else 131072)
    if r["tie_word_embeddings"]:
        tied = r["tie_word_embeddings"] == "True"
    model = dict(name=size, layers=_num(r["num_layers"]), hidden=_num(r["hidden_size"]), heads=heads, kv_heads=kv,
                 ffn_hidden=_num(r["interm_dim"]) or interm, vocab=vocab, activation="swiglu", norm="rmsnorm",
                 position_encoding="rope", tied_embeddings=bool(tied))
    if any(v is None for v in model.values()):
        raise Skip("architecture not stated")
    dp, tp, pp, mbs = (_num(r[k]) for k in ("dp", "tp", "pp", "mbs"))
    acc = _num(r["batch_accum"]) or int(re.search(r"acc(\d+)", name).group(1))
    zero = _num(r["zero_stage"]) or 0
    mc = parse_model_config({"model": model, "workload": {
        "seq_len": _num(r["seq_len"]) or 4096, "micro_batch": mbs, "global_batch": dp * mbs * acc,
        "precision": "bf16", "fused_cross_entropy": False}}, f"row {r['job_id']}")
    hw = load_hardware_config(HW_DIR / "H100-SXM5-80GB.yaml", [(["parallelism", k], v) for k, v in dict(
        tp=tp, pp=pp, dp=dp, sp=tp > 1, zero_stage=min(zero, 1), recompute="none", schedule="1f1b",
        grad_reduce_dtype="fp32", bucket_mb=float(r["ddp_bucket_cap_mb"] or 25),
        shard_master_weights=False, param_dtype_grads=zero == 0, stage_split="balanced").items()])
    return make_scenario(mc, hw, f"row {r['job_id']}", "H100-SXM5-80GB.yaml")


def validate(csv_path: Path, throughput: bool = True) -> list[Row]:
    rows: list[Row] = []
    cache: dict[str, object] = {}
    with csv_path.open() as fh:
        data = list(csv.DictReader(fh))
    for r in data:
        if r["status"] not in ("Success", "OOM"):
            continue
        rid = f"{r['job_id']}-{r['name']}"
        oom = r["status"] == "OOM"
        verdict = Row(f"{rid}-oom", "nanotron-h100", "oom", oom, None, None)
        extra: list[Row] = []
        if not oom:
            if r["Mem Alloc (GB)"]:
                extra.append(Row(f"{rid}-mem", "nanotron-h100", "mem_alloc_gib", float(r["Mem Alloc (GB)"]), None, None))
            if throughput and r["tok/s/gpu"]:
                extra.append(Row(f"{rid}-tps", "nanotron-h100", "tokens_per_s_per_gpu", float(r["tok/s/gpu"]),
                                 None, None))
        def run(r=r, verdict=verdict, extra=extra) -> None:
            sc = row_scenario(r)
            memory = scenario_memory(sc)
            verdict.predicted = not all(m.fits for m in memory)
            for row in extra:
                if row.metric == "mem_alloc_gib":
                    m = memory[0]  # rank 0 logs: the first pipeline stage
                    row.predicted = (m.weights + m.master_weights + m.gradients + m.optimizer_states
                                     + m.comm_buffers) / GIB
                else:
                    key = sc.model.model_dump_json() + sc.workload.model_dump_json() + sc.hardware.model_dump_json()
                    if key not in cache:
                        cache[key] = AnalyticalBackend().run(build_program(sc))[0]
                    row.predicted = cache[key].tokens_per_s_per_gpu

        attempt([verdict, *extra], run)
        rows.append(verdict)
        rows.extend(extra)
    return rows
