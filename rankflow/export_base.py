"""What every launch-config exporter shares: the refusal that names the plan field a framework has
no equivalent for, and small renderers that keep the text deterministic (fixed key order, no
dependence on dict hashing or the clock)."""

from __future__ import annotations

import json
import math

import yaml

from graphgen.errors import RankflowError
from graphgen.scenario import Scenario

# Rankflow's adapter targets, named as Hugging Face Llama-style checkpoints name the linears they
# stand for (LlamaFactory's lora_target and PEFT match module names, not roles).
HF_LINEARS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "out_proj": ("o_proj",),
              "fc1": ("gate_proj", "up_proj"), "fc2": ("down_proj",)}
LORA_ORDER = tuple(HF_LINEARS)


def unsupported(sc: Scenario, target: str, field: str, msg: str, fix: str) -> RankflowError:
    """The error for a plan or model feature that `target` cannot express; the file is the one the
    field came from, so the one-line message points at what to change."""
    model_side = field == "model" or field.startswith(("model.", "workload."))
    return RankflowError(f"{target} has no equivalent: {msg}", file=sc.model_file if model_side else sc.plan_file,
                         field=field, fix=fix)


def nodes(sc: Scenario) -> tuple[int, int]:
    """(processes per node, nodes) for a launcher: whole nodes, or one partial node."""
    gpn = sc.hardware.node.gpus_per_node
    per_node = min(sc.world, gpn)
    return per_node, math.ceil(sc.world / per_node)


def grad_bucket_elements(sc: Scenario) -> int:
    """The plan's bucket (MiB of gradients in the reduce dtype) as elements, the unit Megatron's
    --ddp-bucket-size and DeepSpeed's reduce_bucket_size take."""
    width = 2 if sc.plan.grad_reduce_dtype == "bf16" else 4
    return int(sc.plan.bucket_mb * 2**20 // width)


def layers_per_chunk(sc: Scenario) -> int:
    """Transformer layers on one pipeline chunk under the even split (the caller refuses others)."""
    return sc.model.layers // (sc.plan.pp * sc.plan.virtual_stages)


def to_json(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def to_yaml(data: dict, header: str) -> str:
    # sort_keys=False keeps the order the exporter chose (grouped like the framework's docs)
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(sections: dict[str, dict[str, object]], header: str) -> str:
    """A TOML document of flat tables (dotted table names for nested ones), in the order given; the
    exporters need nothing richer, so no TOML writer is added as a dependency."""
    lines = [header.rstrip("\n")]
    for name, table in sections.items():
        if not table:
            continue
        lines += ["", f"[{name}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"
