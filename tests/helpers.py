"""Small scenarios built from dicts, shared by the tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from graphgen.scenario import Scenario
from rankflow import api

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


@cache
def hardware(path: Path = A100):
    return api.load_hardware(path)


def scenario(model: dict | None = None, workload: dict | None = None, hw_file: Path = A100,
             **plan) -> Scenario:
    wl = {"seq_len": 512, "global_batch": 8, "micro_batch": 1}
    wl.update(workload or {})
    plan = {"dp": 1, "zero_stage": 0, **plan}
    return api.load_scenario({"model": dict(model or TINY_LLAMA), "workload": wl}, hardware(hw_file),
                             overrides=[(f"parallelism.{k}", v) for k, v in plan.items()])


def program(sc: Scenario, detail: str = "ops"):
    return api.build(sc, detail)


def layer_graph(sc: Scenario):
    from graphgen.model.layer_graph import build_layer_graph
    from graphgen.program import block_shape

    return build_layer_graph(block_shape(sc))


def run(sc_or_prog, detail: str = "ops"):
    """The analytical Result of a scenario or a program."""
    from backends.analytical import AnalyticalBackend

    prog = sc_or_prog if hasattr(sc_or_prog, "roles") else program(sc_or_prog, detail)
    return AnalyticalBackend().run(prog).result
