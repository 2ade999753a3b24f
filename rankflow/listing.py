"""What `rankflow models`, `rankflow hardware`, GET /v1/models and GET /v1/hardware show: each shipped config
with its key numbers, every number with its unit in the key's name."""

from __future__ import annotations

from typing import Any

from graphgen.model.params import active_params, total_params
from rankflow import api, catalog


def _family(m) -> str:
    if m.moe and m.mla:
        return "moe+mla"
    return "moe" if m.moe else ("mla" if m.mla else "dense")


def model_rows() -> list[dict[str, Any]]:
    rows = []
    for e in catalog.model_entries():
        mc = api.load_model(e.path)
        m = mc.model
        rows.append({
            "name": e.name, "display_name": m.name, "family": _family(m),
            "params_b": round(total_params(m) / 1e9, 3), "active_params_b": round(active_params(m) / 1e9, 3),
            "layers": m.layers, "hidden": m.hidden, "heads": m.heads, "kv_heads": m.kv_heads or m.heads,
            "experts": m.moe.experts if m.moe else None, "top_k": m.moe.top_k if m.moe else None,
            "vocab": m.vocab, "seq_len_tokens": mc.workload.seq_len, "max_position_tokens": m.max_position,
            "hf": list(e.aliases), "file": f"model_configs/{e.path.name}",
        })
    return rows


def hardware_rows() -> list[dict[str, Any]]:
    rows = []
    for e in catalog.hardware_entries():
        c = api.load_hardware(e.path).cluster
        d = c.device
        rows.append({
            "name": e.name, "system": c.name, "device": d.name, "aliases": list(e.aliases),
            "bf16_tflops": d.peak_tflops.get("bf16"), "fp8_tflops": d.peak_tflops.get("fp8"),
            "fp4_tflops": d.peak_tflops.get("fp4"), "hbm_gib": d.hbm_gib, "hbm_bandwidth_gbs": d.hbm_bandwidth_gbs,
            "gpus_per_node": c.node.gpus_per_node, "scale_up_gbs": c.node.intra.bandwidth_gbs,
            "scale_out_gbs": c.scale_out.bandwidth_gbs, "board_power_w": d.board_power_w,
            "file": f"hardware_configs/{e.path.name}",
        })
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A fixed-width text table of the given (key, heading) columns."""
    cells = [[h for _, h in columns]] + [[_fmt(r[k]) for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in cells)


MODEL_COLUMNS = [("name", "name"), ("family", "family"), ("params_b", "params (B)"),
                 ("active_params_b", "active (B)"), ("layers", "layers"), ("hidden", "hidden"), ("heads", "heads"),
                 ("kv_heads", "kv heads"), ("experts", "experts"), ("top_k", "top-k"),
                 ("seq_len_tokens", "seq (tokens)"), ("hf", "Hugging Face id")]
HARDWARE_COLUMNS = [("name", "name"), ("device", "device"), ("bf16_tflops", "BF16 (TFLOP/s)"),
                    ("fp8_tflops", "FP8 (TFLOP/s)"), ("hbm_gib", "HBM (GiB)"), ("hbm_bandwidth_gbs", "HBM (GB/s)"),
                    ("gpus_per_node", "GPUs/node"), ("scale_up_gbs", "scale-up (GB/s)"),
                    ("scale_out_gbs", "scale-out (GB/s)"), ("aliases", "aliases")]


def models_text() -> str:
    rows = [{**r, "hf": ", ".join(r["hf"][:1]) or "(no HF release)"} for r in model_rows()]
    return table(rows, MODEL_COLUMNS)


def hardware_text() -> str:
    rows = [{**r, "aliases": ", ".join(r["aliases"])} for r in hardware_rows()]
    return table(rows, HARDWARE_COLUMNS)
