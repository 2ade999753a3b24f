"""The one entry point: build a Scenario, simulate it, ask for its memory.

    from rankflow import api
    sc = api.load_scenario(model="model_configs/llama2-7b.yaml",
                           hardware="hardware_configs/A100-SXM4-80GB.yaml",
                           overrides=["parallelism.tp=2", "parallelism.dp=4"])
    result = api.simulate(sc)                 # step time, throughput, MFU, breakdown, memory
    report = api.memory(sc)                   # per-stage memory and the fits verdict
    faster = api.simulate(sc.with_plan(tp=4, dp=2))   # a new plan; the cluster is not re-read

The CLI, the benchmarks and the validation harness call these functions; nothing else wires the
pipeline. Each argument of load_scenario takes a file path, a dict, or an already parsed object.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from backends.base import Evaluation, Result
from backends.registry import BACKENDS, get_backend
from graphgen.config import (
    AstraOptions,
    Cluster,
    ExecutionBackend,
    HardwareConfig,
    ModelConfig,
    ParallelPlan,
    PlanConfig,
    apply_overrides,
    parse,
    parse_model_config,
    parse_plan_config,
    split_overrides,
)
from graphgen.config.framework import Framework, FrameworkProfile, apply_defaults, resolve
from graphgen.config.pricing import PriceTable
from graphgen.costs.training_run import TrainingRun, training_run
from graphgen.errors import RankflowError
from graphgen.hf_import import is_hf_config, model_from_hf
from graphgen.memory import MemoryReport, scenario_memory
from graphgen.program import Program, build_program, check_detail
from graphgen.scenario import Scenario, make_scenario
from rankflow import catalog
from rankflow.files import read_mapping

__all__ = ["Evaluation", "MemoryReport", "Program", "Result", "Scenario", "build", "evaluate", "load_hardware",
           "load_model", "load_scenario", "memory", "simulate"]

Source = str | Path | dict[str, Any]


def _model_data(model: Source | ModelConfig) -> tuple[dict[str, Any], str]:
    if isinstance(model, ModelConfig):
        return model.model_dump(exclude_unset=True), "<model config>"
    if isinstance(model, dict):
        data, file = model, "<model config>"
    else:
        model = catalog.model_source(model)
        data, file = read_mapping(model, "model_config"), str(model)
    if is_hf_config(data):
        data = {"model": model_from_hf(data, file)}
    return data, file


PLAN_KEYS = ("parallelism", "execution_backend")


def _hardware(hardware: Source | Cluster, overrides: list) -> tuple[Cluster, dict[str, Any], str]:
    """The cluster (validated once; a parsed one is used as it is) and the hardware file's own plan."""
    if isinstance(hardware, Cluster):
        file = "<hardware config>"
        # Only what the file set: a framework profile fills the rest.
        plan = {k: getattr(hardware, k).model_dump(exclude_unset=True) for k in PLAN_KEYS if hasattr(hardware, k)}
        cluster = hardware.cluster if isinstance(hardware, HardwareConfig) else hardware
        if overrides:  # cluster overrides re-parse the cluster only: the parsed file's plan stays its plan
            cluster = parse(Cluster, apply_overrides(cluster.model_dump(), overrides, file), file)
        return cluster, plan, file
    if isinstance(hardware, dict):
        data, file = hardware, "<hardware config>"
    else:
        hardware = catalog.hardware_source(hardware)
        data, file = read_mapping(hardware, "hardware_config"), str(hardware)
    plan = {k: data[k] for k in PLAN_KEYS if k in data}
    cluster_data = apply_overrides({k: v for k, v in data.items() if k not in PLAN_KEYS}, overrides, file)
    return parse(Cluster, cluster_data, file), plan, file


def load_model(model: Source) -> ModelConfig:
    """A model file (Rankflow YAML or Hugging Face config.json) parsed on its own."""
    data, file = _model_data(model)
    return parse_model_config(data, file)


def load_hardware(path: str | Path) -> HardwareConfig:
    """A hardware file (or shipped name) parsed once, to pass to load_scenario many times (a search, a harness)."""
    path = catalog.hardware_source(path)
    return parse(HardwareConfig, read_mapping(path, "hardware_config"), str(path))


def _plan_data(plan: Source | ParallelPlan | PlanConfig | None) -> tuple[dict[str, Any] | None, str | None]:
    if plan is None:
        return None, None
    if isinstance(plan, ParallelPlan):
        return {"parallelism": plan.model_dump()}, "<plan>"
    if isinstance(plan, PlanConfig):
        data = plan.model_dump(exclude_none=True)
        if "parallelism" not in plan.model_fields_set:  # its default plan is not a plan it gives
            del data["parallelism"]
        return data, "<plan>"
    if isinstance(plan, dict):
        return plan, "<plan>"
    return read_mapping(plan, "plan_config"), str(plan)


def load_scenario(model: Source | ModelConfig, hardware: Source | HardwareConfig | Cluster,
                  plan: Source | ParallelPlan | PlanConfig | None = None, overrides: Sequence[str] = ()) -> Scenario:
    """A checked Scenario from a model, a hardware (cluster, optionally with its plan) and an optional
    plan that replaces the hardware file's (its parallelism, when it gives one; its backend, when it
    gives one); `overrides` are `--set` strings (section.field=value)."""
    routed = split_overrides(list(overrides))
    model_data, model_file = _model_data(model)
    cluster, hw_plan, hw_file = _hardware(hardware, routed.cluster)
    plan_data, plan_file = _plan_data(plan)
    parallel_file = plan_file  # the file the parallelism comes from, for the plan checks' messages
    if plan_data is None:
        plan_data, plan_file, parallel_file = hw_plan, hw_file, hw_file
    else:
        parse_plan_config(hw_plan, hw_file)  # the hardware file's own plan must be valid too
        if "parallelism" not in plan_data and "parallelism" in hw_plan:
            # A plan file with only execution_backend changes the backend, not the parallelism.
            plan_data, parallel_file = {**plan_data, "parallelism": hw_plan["parallelism"]}, hw_file
    model_data = apply_overrides(model_data, routed.model)
    plan_data = apply_overrides(plan_data, routed.plan)
    framework = _framework(model_data, plan_data, model_file, cluster)
    mc = parse_model_config(model_data, model_file)
    pc = parse_plan_config(plan_data, plan_file)
    execution = pc.execution_backend or parse_plan_config(hw_plan, hw_file).execution_backend or ExecutionBackend()
    if execution.model not in BACKENDS:
        raise RankflowError(f"unknown backend '{execution.model}'", file=plan_file, field="execution_backend.model",
                            fix=f"use one of: {', '.join(BACKENDS)}")
    sc = make_scenario(mc, cluster, pc.parallelism, execution, model_file=model_file, hardware_file=hw_file,
                       plan_file=parallel_file)
    return replace(sc, framework=framework) if framework else sc


FRAMEWORKS_DIR = Path(__file__).resolve().parent.parent / "framework_configs"


def load_framework(name: str, version: str | None = None, file: str = "<model config>") -> Framework:
    """A framework profile (framework_configs/<name>.yaml) resolved at a version."""
    known = sorted(p.stem for p in FRAMEWORKS_DIR.glob("*.yaml"))
    if name not in known:
        raise RankflowError(f"no framework profile '{name}'", file=file, field="workload.framework",
                            fix=f"use one of: {', '.join(known)}, or unset it")
    path = FRAMEWORKS_DIR / f"{name}.yaml"
    return resolve(parse(FrameworkProfile, read_mapping(path, "framework profile"), str(path)), version, str(path))


def _framework(model_data: dict[str, Any], plan_data: dict[str, Any], model_file: str,
               cluster: Cluster) -> Framework | None:
    """The workload's framework profile; its defaults go into copies of the workload and parallelism
    sections, under what the files and --set give."""
    workload = model_data.get("workload")
    if not isinstance(workload, dict) or workload.get("framework") is None:
        return None
    name, version = workload["framework"], workload.get("framework_version")
    if not isinstance(name, str) or not (version is None or isinstance(version, (str, int, float))):
        return None  # the schema check names the field
    fw = load_framework(name, None if version is None else str(version), model_file)
    model_data["workload"] = dict(workload)
    parallelism = plan_data.get("parallelism")
    plan_data["parallelism"] = dict(parallelism) if isinstance(parallelism, dict) else {}
    notes = apply_defaults(fw, model_data["workload"], plan_data["parallelism"],
                           cluster.device.efficiency.attention_kernels)
    return replace(fw, notes=notes)


def build(scenario: Scenario, detail: str = "ops") -> Program:
    """The program (per-role DAGs): 'ops' for traces, graphs and Chakra; 'coarse' for speed."""
    return build_program(scenario, detail)


def evaluate(scenario: Scenario, backend: str | None = None, *, detail: str = "coarse",
             astra: dict[str, Any] | None = None, program: Program | None = None) -> tuple[Program, Evaluation]:
    """Build (unless given) and evaluate a program; returns it with the backend's Evaluation."""
    name = backend or scenario.execution.model
    options = _astra_options(astra)  # checked whatever the backend: a misspelt option is an error
    if program is None:
        check_detail(detail)  # before anything runs: a full ASTRA-sim replay would not use it
    engine = get_backend(name, **(options if name == "astra" else {}))
    prog = program or build_program(scenario, "ops" if name == "astra" and _astra_full(scenario, options) else detail)
    ev = engine.run(prog)
    if scenario.workload.train_tokens:
        ev = replace(ev, result=replace(ev.result, training_run=run_of(scenario, ev.result.step_time_s).as_dict()))
    return prog, ev


PRICES = Path(__file__).resolve().parent.parent / "pricing" / "gpu_prices.yaml"


@functools.lru_cache(maxsize=4)
def load_prices(path: str = str(PRICES)) -> PriceTable:
    """The dated GPU price table (pricing/gpu_prices.yaml), parsed once per process."""
    return parse(PriceTable, read_mapping(path, "price table"), path)


def run_of(scenario: Scenario, step_time_s: float, gpus: int | None = None) -> TrainingRun:
    """The whole training run of workload.train_tokens tokens at this step time."""
    w, dev = scenario.workload, scenario.hardware.device
    return training_run(step_time_s, scenario.tokens_per_step, gpus or scenario.world, w.train_tokens or 0.0,
                        w.train_goodput, dev.name, dev.board_power_w, load_prices(), w.price_offer)


def _astra_options(astra: object) -> dict[str, Any]:
    """The ASTRA-sim options given, checked as execution_backend.astra's fields (names, types, ranges)."""
    if astra is None:
        return {}
    if not isinstance(astra, dict):
        raise RankflowError(f"astra options must be a mapping, not {type(astra).__name__}", field="astra",
                            fix=f"pass a dict with some of: {', '.join(AstraOptions.model_fields)}")
    parsed = parse(AstraOptions, astra, "astra options")
    return {k: getattr(parsed, k) for k in astra}


def _astra_full(scenario: Scenario, options: dict[str, Any]) -> bool:
    return (options.get("mode") or scenario.execution.astra.mode) == "full"


def simulate(scenario: Scenario, backend: str | None = None, *, detail: str = "coarse",
             astra: dict[str, Any] | None = None) -> Result:
    """Step time, throughput, MFU/HFU, time breakdown and per-stage memory of one training step.

    backend: 'analytical' (default: the scenario's execution_backend.model) or 'astra'.
    detail: 'coarse' (one node per pass segment, the default: fast) or 'ops' (one node per fused op).
    """
    return evaluate(scenario, backend, detail=detail, astra=astra)[1].result


def memory(scenario: Scenario) -> MemoryReport:
    """Per-GPU memory of every pipeline stage and whether it fits, without building the DAG."""
    return MemoryReport(scenario_memory(scenario))
