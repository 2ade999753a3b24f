"""Rows of rapid-llm/hf_playbook_nanotron_h100.csv -> OOM verdict, allocated memory, throughput.

The Ultra-Scale Playbook's nanotron runs on 8-GPU H100 nodes: Llama-style models (SwiGLU, RMSNorm,
RoPE, flash attention), sequence length 4096, tensor parallelism in REDUCE_SCATTER mode (sequence
parallel), 1F1B pipeline engine, ZeRO 0/1, bf16 with fp32 gradient accumulation, no recompute,
nanotron's vocab-parallel cross-entropy in fp32 (not fused). For every Success or OOM row the
harness emits `oom` (measured = status is OOM); for Success rows also `mem_alloc_gib` and
`tokens_per_s_per_gpu`.

"Mem Alloc (GB)" is torch.cuda.max_memory_allocated() / 2**30 on rank 0 at iteration 3, and
nanotron's log_memory() resets the peak right after forward and backward (logging.py, trainer.py of
the playbook's bench2 branch @67c5ebb). So the column holds the model states plus the largest
temporary of the gradient sync and optimizer step, not the activation peak, and it is compared
with exactly that.

nanotron facts from its code (same commit), applied to these rows:
- ZeRO-0 with dp > 1 wraps the model in PyTorch DDP without gradient_as_bucket_view: bf16 gradient
  buckets live beside the fp32 accumulation buffer (param_dtype_grads).
- ZeRO-1 keeps the fp32 gradient buffer whole and shards master weights and Adam states; after the
  step its coalesced all-gather copies the parameters into a new buffer and NCCL flattens the
  output again (param_gather_copies = 2).
- Tensor parallelism in REDUCE_SCATTER mode keeps two persistent gathered-activation buffers
  ("allgather", "allgather2" MemoryBuffer singletons; tp_gather_buffers = 2).
- Layers go to pipeline stages by nanotron's compute-balanced split (stage_split=balanced).
- Its GLUActivation is eager act(gate) * up (fused_swiglu = false); norms (Triton) and rotary
  (flash-attn) are fused kernels.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from benchmarks.rows import HW_DIR, Row, Skip, attempt, row_scenario_from
from graphgen.units import GIB
from rankflow import api

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
    workload = {"seq_len": _num(r["seq_len"]) or 4096, "micro_batch": mbs, "global_batch": dp * mbs * acc,
                "precision": "bf16", "fused_cross_entropy": False, "fused_swiglu": False}
    return row_scenario_from(model, workload, HW_DIR / "H100-SXM5-80GB.yaml", dict(
        tp=tp, pp=pp, dp=dp, sp=tp > 1, zero_stage=min(zero, 1), recompute="none", schedule="1f1b",
        grad_reduce_dtype="fp32", bucket_mb=float(r["ddp_bucket_cap_mb"] or 25),
        param_dtype_grads=zero == 0 and dp > 1, param_gather_copies=2.0 if zero == 1 else 0.0, tp_gather_buffers=2,
        stage_split="balanced"))


def after_backward_peak(sc, m) -> float:
    """Model states plus the largest temporary of the gradient sync and optimizer step (what the
    column measures), on one stage."""
    states = m.weights + m.master_weights + m.gradients + m.optimizer_states + m.comm_buffers
    p = sc.plan
    if p.zero_stage in (1, 2) and p.param_gather_copies and p.dp > 1:
        states += m.weights * (p.param_gather_copies + 1 / p.dp)
    return states


def validate(csv_path: Path, detail: str = "coarse", throughput: bool = True) -> list[Row]:
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
            memory = api.memory(sc).roles
            verdict.predicted = not all(m.fits for m in memory)
            for row in extra:
                if row.metric == "mem_alloc_gib":
                    m = memory[0]  # rank 0 logs: the first pipeline stage
                    row.predicted = after_backward_peak(sc, m) / GIB
                else:
                    key = sc.model.model_dump_json() + sc.workload.model_dump_json() + sc.plan.model_dump_json()
                    if key not in cache:
                        cache[key] = api.simulate(sc, detail=detail)
                    row.predicted = cache[key].tokens_per_s_per_gpu

        attempt([verdict, *extra], run)
        rows.append(verdict)
        rows.extend(extra)
    return rows
