"""The README's config reference, generated from the config models (python -m rankflow.reference).

A test checks that the README holds exactly this text, so the reference cannot drift from the code.
"""

from __future__ import annotations

import sys

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from graphgen.config import (
    AstraOptions,
    AttentionCurve,
    CollectiveFit,
    CrossEntropyEfficiency,
    DeviceSpec,
    Efficiency,
    EfficiencyCurve,
    ExecutionBackend,
    FineTune,
    GemmTable,
    GroupedGemmTable,
    HeadDimCurve,
    InferenceSpec,
    LinearAttentionSpec,
    LinkSpec,
    MLASpec,
    ModelSpec,
    MoESpec,
    NodeSpec,
    ParallelPlan,
    PermuteEfficiency,
    Stragglers,
    Workload,
)

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("model", ModelSpec), ("model.moe", MoESpec), ("model.mla", MLASpec), ("model.linear_attention", LinearAttentionSpec), ("workload", Workload), ("workload.finetune", FineTune),
    ("workload.inference", InferenceSpec), ("device", DeviceSpec),
    ("device.efficiency", Efficiency),
    ("efficiency curve (matmul, matmul_fp8, matmul_grouped, message_efficiency)", EfficiencyCurve),
    ("attention curve (attention, attention_kernels.*)", AttentionCurve),
    ("attention curve .other_head_dims[]", HeadDimCurve),
    ("efficiency.matmul_shapes", GemmTable), ("efficiency.matmul_grouped_shapes", GroupedGemmTable),
    ("efficiency.cross_entropy", CrossEntropyEfficiency), ("efficiency.moe_permute", PermuteEfficiency),
    ("node", NodeSpec),
    ("node.intra and scale_out (one network dimension)", LinkSpec), ("collective_fits.<kind>", CollectiveFit),
    ("stragglers", Stragglers), ("parallelism", ParallelPlan), ("execution_backend", ExecutionBackend), ("execution_backend.astra", AstraOptions),
]

INTRO = """## Config reference

A model file has two sections, `model` and `workload`. A hardware file has `name`, `device`, `node`,
`scale_out` and `stragglers` (the cluster), and may carry a plan: `parallelism` and `execution_backend`. A plan file
(`--plan_config`) has `parallelism` and optionally `execution_backend`; it replaces the hardware file's plan.
Unknown fields are errors; numbers must be finite and of their documented type (`true` is not a number).
"""


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        return repr(value) if not isinstance(value, BaseModel) else "(defaults)"
    if isinstance(field.default, BaseModel):
        return "(defaults)"
    return repr(field.default)


def table(cls: type[BaseModel]) -> str:
    rows = ["| field | default | meaning |", "|---|---|---|"]
    for name, field in cls.model_fields.items():
        rows.append(f"| `{name}` | {_default(field)} | {(field.description or '').replace('|', '/')} |")
    return "\n".join(rows)


def reference() -> str:
    parts = [INTRO]
    for title, cls in SECTIONS:
        parts.append(f"#### `{title}`\n\n{table(cls)}\n")
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(reference())
