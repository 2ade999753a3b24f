"""Request bodies of the REST API. A body names a shipped model and hardware (or carries their YAML or a
mapping); the configs inside are checked by the same pydantic models as the files, so a bad field gets the
same one-line message as on the command line. A server never reads a path a client sends."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from graphgen.errors import RankflowError, clip
from graphgen.scenario import Scenario
from graphgen.serving.capacity import MAX_CAPACITY_REQUESTS
from graphgen.serving.schedulers import MAX_REPLICAS
from rankflow import api, catalog
from rankflow.files import mapping_of_text

MAX_TEXT = 256 * 1024  # bytes of pasted YAML per config

# The ASTRA-sim binary a run executes: a client naming one made the server run any program on its disk
# (a search job ran /bin/sh). Only the server's own ASTRA_SIM_BIN may run.
BINARY_KEYS = ("execution_backend", "execution_backend.astra", "execution_backend.astra.binary")
BINARY_REFUSAL = "a client cannot choose the program the server runs (execution_backend.astra.binary)"


# How long an ASTRA-sim run may take is the server's to say too: a client's 86,400 s would hold a compute
# slot for a day after its request was answered 504 (the thread running it cannot be stopped).
TIMEOUT_KEY = "execution_backend.astra.timeout_s"


def _no_binary(overrides: list[str]) -> list[str]:
    for o in overrides:
        key = o.split("=", 1)[0].strip()
        if key in BINARY_KEYS:
            raise ValueError(BINARY_REFUSAL)
        if key == TIMEOUT_KEY:
            raise ValueError(f"a client cannot set {TIMEOUT_KEY}: the server's own time limit bounds every run")
    return overrides


Overrides = Annotated[list[str], AfterValidator(_no_binary)]


def as_served(sc: Scenario, limit_s: float | None = None) -> Scenario:
    """A scenario from a client's mapping or YAML, refused when it names an ASTRA-sim binary, with any
    ASTRA-sim run it asks for bounded by the server's time limit for the request."""
    astra = sc.execution.astra
    if astra.binary is not None:
        raise RankflowError(BINARY_REFUSAL, field="execution_backend.astra.binary",
                            fix="drop it: the server runs the ASTRA-sim its operator configured, if any")
    if limit_s is not None and astra.timeout_s > limit_s:
        execution = sc.execution.model_copy(update={"astra": astra.model_copy(update={"timeout_s": limit_s})})
        sc = dataclasses.replace(sc, execution=execution)
    return sc


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ScenarioRequest(_Body):
    """What to simulate: model and hardware each by name (or HF id), mapping, or YAML text; a plan
    (`parallelism` fields) and `set` overrides as on the command line."""

    model: str | dict[str, Any] | None = Field(None, description="shipped name, Hugging Face id, or config mapping")
    hardware: str | dict[str, Any] | None = Field(None, description="shipped name or alias, or config mapping")
    model_yaml: str | None = Field(None, max_length=MAX_TEXT, description="a model config as YAML text")
    hardware_yaml: str | None = Field(None, max_length=MAX_TEXT, description="a hardware config as YAML text")
    parallelism: dict[str, Any] | None = Field(None, description="plan fields (tp, pp, dp, ...) over the hardware's")
    set: Overrides = Field(default_factory=list, max_length=64, description="KEY=VALUE overrides, as --set")

    @model_validator(mode="after")
    def _one_each(self) -> ScenarioRequest:
        for kind in ("model", "hardware"):
            if (getattr(self, kind) is None) == (getattr(self, f"{kind}_yaml") is None):
                raise ValueError(f"give exactly one of '{kind}' and '{kind}_yaml'")
        return self


def name_only(name: str, kind: str) -> str:
    """A client's name, refused when it looks like a path: a server reads only its shipped configs, and
    decides without touching its file system (so a name cannot probe which files exist)."""
    parts = name.replace("\\", "/").split("/")
    if name.lower().endswith(catalog.FILE_SUFFIXES) or name.startswith(("/", "~")) or "\\" in name \
            or any(p in ("", ".", "..") for p in parts) or len(parts) > 2 or "\0" in name:
        listing = "models" if kind == "model" else "hardware"
        shown = clip(name)
        raise RankflowError(f"'{shown}' is a path; the server takes names only", field=kind,
                            fix=f"give a shipped name (GET /v1/{listing}), a mapping or {kind}_yaml")
    return name


def _source(name: str | dict | None, text: str | None, kind: str) -> Any:
    if text is not None:
        return mapping_of_text(text, f"<{kind}_yaml>")
    if isinstance(name, dict):
        return name
    assert name is not None
    return shipped(name, kind)


def shipped(name: str, kind: str) -> Path:
    """A client's model or hardware name as the shipped file it names, or the one-line refusal."""
    name = name_only(name, kind)
    if kind == "model":
        return catalog.model_path(name, "model", "GET /v1/models")
    return catalog.hardware_path(name, "hardware", "GET /v1/hardware")


def model_and_hardware(req: ScenarioRequest) -> tuple[Any, Any]:
    return _source(req.model, req.model_yaml, "model"), _source(req.hardware, req.hardware_yaml, "hardware")


def overrides_of(req: ScenarioRequest) -> list[str]:
    plan = (f"parallelism.{k}={_text(v)}" for k, v in sorted((req.parallelism or {}).items()))
    return [*plan, *req.set]


def scenario_of(req: ScenarioRequest, limit_s: float | None = None) -> Scenario:
    return as_served(api.load_scenario(*model_and_hardware(req), overrides=overrides_of(req)), limit_s)


def _text(value: Any) -> str:
    """A JSON plan value as --set text that parses back to the same JSON type (YAML reads JSON), so a
    string "2" stays a string and the plan's strict types refuse it as they would in a file."""
    return json.dumps(value)


class SimulateRequest(ScenarioRequest):
    detail: Literal["coarse", "ops"] = "coarse"


class SearchRequest(_Body):
    model: str = Field(description="shipped name or Hugging Face id")
    hardware: list[str] = Field(min_length=1, max_length=4, description="shipped names")
    gpus: list[Annotated[int, Field(ge=1, le=1_000_000)]] = Field(min_length=1, max_length=8,
                                                                   description="GPU counts")
    set: Overrides = Field(default_factory=list, max_length=64)
    max_tp: int | None = Field(None, ge=1, description="largest tensor-parallel size tried")
    tp: int | None = Field(None, ge=1, description="fixed tensor-parallel size")
    pp: int | None = Field(None, ge=1, description="fixed pipeline-parallel size")
    headroom_gib: float = Field(0.0, ge=0, lt=1e4, description="memory each GPU keeps free")
    top: int = Field(10, ge=1, le=20, description="plans re-simulated in full")


class _Traffic(_Body):
    """What a serving question is about besides the deployment: scheduler, lengths, seed and SLO."""

    scheduler: Literal["continuous", "chunked", "static", "disaggregated"] = "continuous"
    input_len: str | int | None = None
    output_len: str | int | None = None
    seed: int = Field(0, ge=0)
    slo_ttft_s: float = Field(2.0, gt=0, lt=1e6)
    slo_tpot_s: float = Field(0.2, gt=0, lt=1e6)


class ServeRequest(ScenarioRequest, _Traffic):
    rate_per_s: float | None = Field(None, gt=0, lt=1e6, description="Poisson arrivals; unset with capacity")
    requests: int = Field(1000, ge=1, le=20000)
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    capacity: bool = False

    @model_validator(mode="after")
    def _rate(self) -> ServeRequest:
        if self.capacity == (self.rate_per_s is not None):
            raise ValueError("give rate_per_s, or capacity: true (not both)")
        if self.capacity and self.requests > MAX_CAPACITY_REQUESTS:
            raise ValueError(f"a capacity search simulates its requests once per probe: at most "
                             f"{MAX_CAPACITY_REQUESTS:,} requests")
        return self


MAX_CHEAPEST_OPTIONS = 64  # hardware x plans, each a capacity search of its own
# Simulated requests over all options: a capacity search of 1,000 requests takes about 10 s on one core,
# so this keeps a request near the server's 60 s limit.
MAX_CHEAPEST_WORK = 4000


class CheapestRequest(_Traffic):
    """The cheapest deployment for a target rate: `rankflow serve --cheapest` over shipped hardware."""

    model: str = Field(description="shipped name or Hugging Face id")
    hardware: list[str] = Field(min_length=1, max_length=4, description="shipped names")
    rate_per_s: float = Field(gt=0, lt=1e6, description="the target Poisson arrival rate, requests/s")
    tp: list[Annotated[int, Field(ge=1, le=64)]] = Field([1, 2, 4, 8], min_length=1, max_length=8)
    pp: list[Annotated[int, Field(ge=1, le=64)]] = Field([1], min_length=1, max_length=8)
    ep: list[Annotated[int, Field(ge=1, le=256)]] = Field([1], min_length=1, max_length=8)
    set: Overrides = Field(default_factory=list, max_length=64)
    requests: int = Field(1000, ge=1, le=2000)

    @model_validator(mode="after")
    def _bounded(self) -> CheapestRequest:
        n = len({*self.hardware}) * len({*self.tp}) * len({*self.pp}) * len({*self.ep})
        if n > MAX_CHEAPEST_OPTIONS:
            raise ValueError(f"{n} hardware x plan options; at most {MAX_CHEAPEST_OPTIONS}")
        if n * self.requests > MAX_CHEAPEST_WORK:
            raise ValueError(f"{n} options x {self.requests} requests is more than one request may simulate "
                             f"({MAX_CHEAPEST_WORK:,}); give fewer options or requests, or use the CLI")
        return self
