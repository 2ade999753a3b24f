"""What every validation harness shares: the row record, skipping, and scenarios through rankflow.api."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from graphgen.errors import RankflowError
from rankflow import api

ROOT = Path(__file__).resolve().parent.parent
HW_DIR = ROOT / "hardware_configs"


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
    convention: str | None = None    # the FLOP convention its TFLOP/s and MFU are compared in

    @property
    def is_verdict(self) -> bool:
        return isinstance(self.measured, bool)

    @property
    def error_pct(self) -> float | None:
        if self.predicted is None or self.is_verdict or self.measured == 0:
            return None
        return 100.0 * (self.predicted - self.measured) / self.measured

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
