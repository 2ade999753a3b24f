"""What every validation harness shares: the row record, skipping, and scenarios through rankflow.api."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from backends.base import Result
from graphgen.errors import RankflowError
from graphgen.model.flop_conventions import FLOP_CONVENTIONS
from rankflow import api

ROOT = Path(__file__).resolve().parent.parent
HW_DIR = ROOT / "hardware_configs"
HARDWARE = [  # (substring of a measurement's GPU name, hardware config file), most specific first
    ("A100-40GB", "A100-SXM4-40GB.yaml"), ("A100-SXM4-40GB", "A100-SXM4-40GB.yaml"),
    ("A100", "A100-SXM4-80GB.yaml"), ("H200", "H200-SXM-141GB.yaml"),
    ("H100 (HBM2e", "H100-SXM5-96GB.yaml"), ("H100-96", "H100-SXM5-96GB.yaml"), ("H100-PCIe", "H100-PCIe.yaml"),
    ("H800", "H800.yaml"), ("A800", "A800-SXM4-80GB.yaml"), ("GH200", "GH200.yaml"), ("H100", "H100-SXM5-80GB.yaml"),
    ("GB200", "GB200.yaml"), ("GB300", "GB300.yaml"), ("B200", "B200.yaml"), ("V100", "V100-SXM2-32GB.yaml"),
    ("MI300X", "MI300X.yaml"),
]


SPEED_METRICS = frozenset({"tflops_per_gpu", "mfu", "tokens_per_s_per_gpu", "tokens_per_s", "requests_per_s"})
TIME_METRICS = frozenset({"step_time_s", "time_to_train_min", "latency_s", "ttft_ms", "itl_ms", "tpot_ms"})


@dataclass
class Row:
    id: str
    source: str
    metric: str
    measured: float | bool
    predicted: float | bool | None
    skipped: str | None
    definition: str | None = None    # the framework and version the row ran under
    bf16_dense: bool = False
    family: str | None = None        # "MoE" or "dense context-parallel": slices the issues set targets on
    convention: str | None = None    # the FLOP convention its TFLOP/s and MFU are compared in
    table: str | None = None         # the publication table it comes from (the issues' "source": one table)

    @property
    def is_verdict(self) -> bool:
        return isinstance(self.measured, bool)

    @property
    def error_pct(self) -> float | None:
        if self.predicted is None or self.is_verdict or self.measured == 0:
            return None
        return 100.0 * (self.predicted - self.measured) / self.measured

    @property
    def speed_ratio(self) -> float | None:
        """Predicted over measured speed (> 1: the prediction is too fast) for time and throughput
        metrics; None for memory and verdicts."""
        if self.error_pct is None or not self.predicted:
            return None
        if self.metric in SPEED_METRICS:
            return self.predicted / self.measured
        if self.metric in TIME_METRICS:
            return self.measured / self.predicted
        return None

    @property
    def correct(self) -> bool | None:
        return None if self.predicted is None or not self.is_verdict else self.predicted == self.measured


class Skip(Exception):
    pass


def attempt(rows: list[Row], predict) -> None:
    """Run predict(); if the row cannot be mapped or its plan is invalid, mark every row skipped."""
    try:
        predict()
    except Skip as exc:
        for row in rows:
            row.skipped = str(exc)
    except RankflowError as exc:
        for row in rows:
            row.skipped = f"invalid plan: {exc.one_line()}"


@functools.cache
def hardware(path: Path):
    """A hardware file parsed once per run of the harness."""
    return api.load_hardware(path)


def row_scenario_from(model: dict, workload: dict, hw_path: Path, plan: dict, extra=()):
    """A row's scenario through the API: model and workload as dicts, the plan as overrides of the
    hardware file's plan."""
    overrides = [(f"parallelism.{k}", v) for k, v in plan.items()] + list(extra)
    return api.load_scenario({"model": model, "workload": workload}, hardware(hw_path), overrides=overrides)


def hardware_file(gpu: str) -> Path:
    """The hardware config of a GPU as a publication names it."""
    for key, fname in HARDWARE:
        if key.lower() in gpu.lower():
            return HW_DIR / fname
    raise Skip(f"no hardware config for GPU '{gpu}'")


def predict(metric: str, res: Result, sc, stated_params: float | None = None, flops: str | None = None) -> float:
    """The row's metric from a Result, as the row's framework reports it (its FLOP convention, its
    memory figure), or in the convention its publication states (`flops`); rows without either use
    Rankflow's standard convention and allocated memory."""
    fw = dict(res.framework or {})
    if flops:
        fw["flop_convention"] = flops
    if metric == "step_time_s":
        return res.step_time_s
    if metric == "tokens_per_s_per_gpu":
        return res.tokens_per_s_per_gpu
    if metric == "mem_gib_per_gpu":
        return fw.get("peak_memory_gib", max(m.allocated for m in res.memory) / 2**30)
    conv = FLOP_CONVENTIONS[fw.get("flop_convention", "standard")]
    per_token = conv.flops_per_token(sc.model, sc.workload.attention_len, sc.plan.recompute, stated_params,
                                     sc.workload.finetune)
    tflops = per_token * res.tokens_per_s_per_gpu / 1e12
    if metric == "tflops_per_gpu":
        return tflops
    if metric == "mfu":
        return 100.0 * tflops / (res.peak_flops_per_gpu / 1e12)
    raise Skip(f"metric {metric} not predicted")
