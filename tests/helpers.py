"""Small scenarios built from dicts, shared by the tests."""

from __future__ import annotations

from pathlib import Path

from graphgen.config import load_hardware_config, parse_model_config
from graphgen.scenario import Scenario, make_scenario

ROOT = Path(__file__).resolve().parent.parent
A100 = ROOT / "hardware_configs" / "A100-SXM4-80GB.yaml"

TINY_GPT = {
    "name": "tiny-gpt", "layers": 4, "hidden": 256, "heads": 8, "ffn_hidden": 1024, "vocab": 1024,
    "activation": "gelu", "norm": "layernorm", "tied_embeddings": True, "position_encoding": "learned",
    "max_position": 512, "bias": True, "dropout": 0.1,
}
TINY_LLAMA = {
    "name": "tiny-llama", "layers": 4, "hidden": 256, "heads": 8, "kv_heads": 4, "ffn_hidden": 768,
    "vocab": 1024, "activation": "swiglu", "norm": "rmsnorm", "position_encoding": "rope",
}


def scenario(model: dict | None = None, workload: dict | None = None, hw_file: Path = A100,
             **plan) -> Scenario:
    wl = {"seq_len": 512, "global_batch": 8, "micro_batch": 1}
    wl.update(workload or {})
    plan = {"dp": 1, "zero_stage": 0, **plan}
    mc = parse_model_config({"model": dict(model or TINY_LLAMA), "workload": wl})
    hw = load_hardware_config(hw_file, [(["parallelism", k], v) for k, v in plan.items()])
    return make_scenario(mc, hw)
