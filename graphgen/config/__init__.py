"""Typed, validated configuration: the model file, the cluster, the plan, and their file layouts.

Everything a user can set is a field here, with help text. Parsing works on dicts; reading files
is rankflow.files' job, so tests, the API and the REST server build configs the same way.
"""

from graphgen.config.files import (
    CLUSTER_SECTIONS,
    HARDWARE_SECTIONS,
    MODEL_SECTIONS,
    PLAN_SECTIONS,
    HardwareConfig,
    PlanConfig,
    parse,
    parse_hardware_config,
    parse_model_config,
    parse_plan_config,
    pydantic_error,
)
from graphgen.config.hardware import (
    AttentionCurve,
    Cluster,
    CollectiveFit,
    CrossEntropyEfficiency,
    DeviceSpec,
    Efficiency,
    EfficiencyCurve,
    GemmTable,
    GroupedGemmTable,
    HeadDimCurve,
    LinkSpec,
    NodeSpec,
    PermuteEfficiency,
    Stragglers,
)
from graphgen.config.model import (
    LORA_TARGETS,
    FineTune,
    InferenceSpec,
    LinearAttentionSpec,
    MLASpec,
    ModelConfig,
    ModelSpec,
    MoESpec,
    Precision,
    Workload,
)
from graphgen.config.overrides import Override, apply_overrides, parse_override, split_overrides
from graphgen.config.plan import AstraOptions, ExecutionBackend, ParallelPlan

__all__ = [
    "CLUSTER_SECTIONS", "HARDWARE_SECTIONS", "LORA_TARGETS", "MODEL_SECTIONS", "PLAN_SECTIONS", "AstraOptions",
    "AttentionCurve", "Cluster", "CollectiveFit", "DeviceSpec", "Efficiency", "EfficiencyCurve", "ExecutionBackend", "FineTune",
    "CrossEntropyEfficiency", "GemmTable", "GroupedGemmTable", "HeadDimCurve", "HardwareConfig", "InferenceSpec", "LinearAttentionSpec", "LinkSpec", "MLASpec", "ModelConfig", "ModelSpec", "MoESpec", "NodeSpec", "Override", "ParallelPlan",
    "PermuteEfficiency",
    "PlanConfig", "Precision", "Stragglers", "Workload", "apply_overrides", "parse", "parse_hardware_config", "parse_model_config",
    "parse_override", "parse_plan_config", "pydantic_error", "split_overrides",
]
