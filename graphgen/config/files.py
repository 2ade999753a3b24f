"""The three file layouts: model file, hardware file (a cluster, optionally with a plan, as RAPID-LLM
users write it) and plan file. Parsing from dicts only; rankflow.files reads the files."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from graphgen.config.base import Strict
from graphgen.config.hardware import Cluster
from graphgen.config.model import ModelConfig
from graphgen.config.plan import ExecutionBackend, ParallelPlan
from graphgen.errors import RankflowError


class HardwareConfig(Cluster):
    """A hardware file: the cluster, and optionally the plan and the backend to run it with."""

    parallelism: ParallelPlan = ParallelPlan()
    execution_backend: ExecutionBackend = ExecutionBackend()

    @property
    def cluster(self) -> Cluster:
        return Cluster(name=self.name, device=self.device, node=self.node, scale_out=self.scale_out,
                       stragglers=self.stragglers)


class PlanConfig(Strict):
    """A plan file (--plan_config): the plan and, optionally, the backend."""

    parallelism: ParallelPlan = ParallelPlan()
    execution_backend: ExecutionBackend | None = None


MODEL_SECTIONS = frozenset(ModelConfig.model_fields)
CLUSTER_SECTIONS = frozenset(Cluster.model_fields)
PLAN_SECTIONS = frozenset(PlanConfig.model_fields)
HARDWARE_SECTIONS = CLUSTER_SECTIONS | PLAN_SECTIONS


def pydantic_error(exc: ValidationError, file: str) -> RankflowError:
    """The first validation error as one line naming the file, the field and the fix."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return RankflowError("unknown field", file=file, field=loc,
                             fix="remove it or correct its spelling (see README config reference)")
    if kind == "missing":
        return RankflowError("required field is missing", file=file, field=loc, fix="add it")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "value_error" and isinstance(err.get("input"), dict):  # a check across the section's fields
        return RankflowError(msg, file=file, field=loc, fix="change the fields it names so that they agree "
                                                            "(see README config reference)")
    shown = repr(err.get("input"))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return RankflowError(msg, file=file, field=loc, fix=f"got {shown}; give a value of the documented type/range")


def parse(cls: type[BaseModel], data: Any, file: str):
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise pydantic_error(exc, file) from None


def parse_model_config(data: dict[str, Any], file: str = "<model config>") -> ModelConfig:
    return parse(ModelConfig, data, file)


def parse_hardware_config(data: dict[str, Any], file: str = "<hardware config>") -> HardwareConfig:
    return parse(HardwareConfig, data, file)


def parse_plan_config(data: dict[str, Any], file: str = "<plan config>") -> PlanConfig:
    return parse(PlanConfig, data, file)
