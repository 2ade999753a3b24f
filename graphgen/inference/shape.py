"""What an inference iteration adds to a block's shape: the KV cache a decode step reads, and its dtype."""

from __future__ import annotations

from graphgen.inference.view import key_len
from graphgen.scenario import Scenario
from graphgen.units import dtype_bytes


def kv_dtype(sc: Scenario) -> str:
    spec, p = sc.workload.inference, sc.workload.precision
    return spec.kv_dtype or ("bf16" if p in ("fp8", "fp4") else p)


def weight_dtype(sc: Scenario) -> str:
    return sc.workload.inference.weight_dtype or sc.workload.precision


def inference_shape(sc: Scenario) -> dict:
    """BlockShape fields for an inference scenario (none for training)."""
    spec = sc.workload.inference
    if sc.workload.run_type != "inference" or spec is None:
        return {}
    return {"kv_len": key_len(spec) if spec.phase == "decode" else 0, "kv_bytes": dtype_bytes(kv_dtype(sc)),
            "weight_bytes": dtype_bytes(weight_dtype(sc))}
