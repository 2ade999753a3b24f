"""`rankflow export`: a scenario as a framework's own launch configuration.

Each target maps the model, workload and plan onto the option names of one framework release
(cited in its module) and refuses, naming the field, whatever that framework cannot express; it
never silently drops a plan feature. Pure functions: the text is returned, written by the CLI.

- megatron: Megatron-LM core_v0.14.0 arguments for pretrain_gpt.py (rankflow.export_megatron)
- torchtitan: a torchtitan v0.2.2 job TOML (rankflow.export_torchtitan)
- deepspeed: a DeepSpeed 0.16.5 JSON config (rankflow.export_targets)
- llamafactory: a LlamaFactory training YAML (rankflow.export_targets)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from graphgen.errors import RankflowError
from graphgen.scenario import Scenario
from rankflow.export_megatron import megatron
from rankflow.export_targets import deepspeed, llamafactory
from rankflow.export_torchtitan import torchtitan


@dataclass(frozen=True)
class Export:
    target: str
    filename: str  # the name the framework's docs use for such a file; the CLI writes to --out
    text: str


TARGETS: dict[str, Callable[..., tuple[str, str]]] = {
    "megatron": megatron, "torchtitan": torchtitan, "deepspeed": deepspeed, "llamafactory": llamafactory,
}


def export(scenario: Scenario, target: str, model_id: str | None = None) -> Export:
    """The launch configuration of `scenario` for `target`, or a RankflowError naming the field the
    framework has no equivalent for. model_id: the Hugging Face id to load weights from (LlamaFactory),
    default the model's display name."""
    if target not in TARGETS:
        raise RankflowError(f"unknown export target '{target}'", field="--to", fix=f"use one of: {', '.join(TARGETS)}")
    if scenario.workload.run_type != "training":
        raise RankflowError("launch configs are exported for training runs", file=scenario.model_file,
                            field="workload.run_type", fix="set workload.run_type=training")
    fn = TARGETS[target]
    filename, text = fn(scenario, model_id) if target == "llamafactory" else fn(scenario)
    return Export(target, filename, text)
