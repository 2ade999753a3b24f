"""Serving through rankflow.api: a deployment's iteration costs tabulated from its own graphs
(graphgen.inference.table), then the serving simulation (graphgen.serving) over a request source, the
highest rate that meets an SLO, or the cheapest deployment for a rate.

    from rankflow import serve
    model = serve.engine_model(api.load_scenario(M, H, overrides=["workload.run_type=inference", "parallelism.tp=8"]))
    result = serve.simulate(model, rate_per_s=4, requests=1000, input_len=FixedLength(2048), output_len=FixedLength(256))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from graphgen.config.pricing import price_for
from graphgen.errors import RankflowError, clip
from graphgen.inference.table import EngineIterationModel, tabulate
from graphgen.scenario import Scenario
from graphgen.serving.capacity import Candidate, CheapestResult, Workload, cheapest, max_rate
from graphgen.serving.lengths import LENGTHS
from graphgen.serving.metrics import SLO
from graphgen.serving.schedulers import SCHEDULERS
from graphgen.serving.simulate import Deployment
from rankflow import api


def inference_scenario(model, hardware, plan=None, overrides=()) -> Scenario:
    """The deployment's scenario: run_type inference (whatever the model file says), one replica."""
    sc = api.load_scenario(model, hardware, plan, ["workload.run_type=inference", "parallelism.dp=1", *overrides])
    if sc.workload.run_type != "inference" or sc.workload.inference is None:
        raise RankflowError("serving simulates inference iterations", field="workload.run_type",
                            fix="drop the override of workload.run_type")
    return sc


def engine_model(sc: Scenario) -> EngineIterationModel:
    """One replica's iteration costs, from its analytical step times and its KV blocks."""
    if sc.plan.dp != 1:  # an override of inference_scenario's dp=1: one replica's engine never uses it
        raise RankflowError(f"dp={sc.plan.dp} would be ignored: a serving replica is tp x pp x ep GPUs",
                            field="parallelism.dp", fix="drop it and scale out with --replicas (replicas in the API)")
    blocks, pp = min(m.kv_blocks for m in api.memory(sc).roles), sc.plan.pp
    if blocks < pp:
        where = "no memory for a KV cache" if pp == 1 else f"fewer KV blocks ({blocks}) than pipeline stages' engines"
        raise RankflowError(f"{sc.model.name} leaves {where} on {sc.hardware.device.name} with tp={sc.plan.tp} "
                            f"pp={pp}", field="parallelism.tp",
                            fix="use more GPUs per replica (tp, pp), quantised weights, or a larger device")
    return tabulate(sc, lambda s: iteration_s(api.simulate(s), s.plan.pp), blocks)


def iteration_s(res, pp: int) -> float:
    """Seconds between one engine's iterations: a whole pass, or, when pp engines take turns on the
    stages, pp turns of the slowest stage if that is longer (each engine's batch waits its turn there).
    Throughput is then right at load; a lone request on an uneven pipeline is charged the same period."""
    if pp <= 1:
        return res.step_time_s
    return max(res.step_time_s, pp * max(r.compute_s for r in res.roles))


def length(text: str | int, field: str):
    """'512' (fixed), 'uniform:128:1024', 'normal:mean:std:max' or 'lognormal:median:sigma:max'."""
    parts = str(text).split(":")
    shown = clip(text, 60)
    kinds = {"fixed": ("tokens",), "uniform": ("lo", "hi"), "normal": ("mean", "std", "max_tokens"),
             "lognormal": ("median", "sigma", "max_tokens")}
    kind = parts[0] if len(parts) > 1 else "fixed"
    values = parts[1:] if len(parts) > 1 else parts
    if kind not in kinds or len(values) != len(kinds[kind]):
        raise RankflowError(f"'{shown}' is not a length", field=field,
                            fix="write 512, uniform:128:1024, normal:512:128:4096 or lognormal:512:0.8:8192")
    try:
        nums = [float(v) if k in ("mean", "std", "median", "sigma") else int(v) for k, v in zip(kinds[kind], values,
                                                                                                strict=True)]
    except ValueError:
        raise RankflowError(f"'{shown}' has a value that is not a number", field=field,
                            fix="write numbers, e.g. uniform:128:1024") from None
    try:
        return LENGTHS[kind](**dict(zip(kinds[kind], nums, strict=True)))
    except RankflowError as exc:  # the distribution names its parameter; the user wrote the flag
        raise RankflowError(f"'{shown}': {exc.message}", field=field, fix=exc.fix) from None


def lengths(spec, input_len, output_len, fields: tuple[str, str] = ("--input-len", "--output-len")):
    """The (input, output) length distributions a user gave, or the scenario's inference lengths; errors
    name the flag or request field the user wrote (`fields`)."""
    return (length(spec.input_len if input_len is None else input_len, fields[0]),
            length(spec.output_len if output_len is None else output_len, fields[1]))


def scheduler(name: str, **params):
    if name not in SCHEDULERS:
        raise RankflowError(f"unknown scheduler '{name}'", field="--scheduler", fix=f"use one of: {', '.join(SCHEDULERS)}")
    cls = SCHEDULERS[name]
    fields = getattr(cls, "__dataclass_fields__", {})
    for k, v in params.items():  # a setting this scheduler has no use for was silently dropped
        if v is not None and k not in fields:
            flag = "--" + k.replace("_", "-")
            raise RankflowError(f"the {name} scheduler has no {k}, so {flag} would be ignored", field=flag,
                                fix=f"drop {flag} or choose a scheduler that takes it")
    return cls(**{k: v for k, v in params.items() if v is not None})


CHOSEN = ("parallelism.tp", "parallelism.pp", "parallelism.ep", "parallelism.dp")  # what options() sets itself


@dataclass(frozen=True)
class Option:
    """One way to serve for a cheapest-deployment question: hardware, tensor parallelism, its engine."""

    label: str
    model: EngineIterationModel
    gpus_per_replica: int
    usd_per_gpu_hour: float | None


def options(model, hardware: list[str], plans: list[dict[str, int]], overrides=()) -> list[Option]:
    """Every (hardware, plan) that can hold the model, with its engine and price; `plans` are
    parallelism settings such as {"tp": 4, "pp": 1, "ep": 1}."""
    for o in overrides:
        key = str(o[0] if isinstance(o, tuple) else o).split("=", 1)[0].strip()
        if key in CHOSEN:
            raise RankflowError(f"the cheapest-deployment search chooses {key} itself; --set would be overwritten",
                                field="--set", fix="give the sizes to try with --tp/--pp/--ep (replicas, not dp, "
                                                   "scale a deployment out)")
    prices, out = api.load_prices(), []
    hardware = list(dict.fromkeys(hardware))  # a repeat is the same option
    plans = list({tuple(sorted(p.items())): p for p in plans}.values())
    for hw in hardware:
        for plan in plans:
            try:
                sc = inference_scenario(model, hw, None, [*overrides, *(f"parallelism.{k}={v}" for k, v in plan.items())])
                engine = engine_model(sc)
            except RankflowError:
                continue  # a plan the model or the device cannot take is not an option
            price = price_for(prices, sc.hardware.device.name, sc.workload.price_offer)
            label = " ".join(f"{k}{v}" for k, v in plan.items() if v > 1 or k == "tp")
            out.append(Option(f"{sc.hardware.device.name} {label}", engine, sc.world,
                              price.usd_per_gpu_hour if price else None))
    if not out:
        raise RankflowError("no hardware and plan given can hold the model", field="--tp",
                            fix="try larger --tp/--pp/--ep or other hardware")
    return out


def cheapest_for(opts: list[Option], rate: float, work: Workload, slo: SLO, sched) -> CheapestResult:
    """Per option, the replicas its single-replica capacity says the rate needs; then the cheapest of them
    that meets the SLO when simulated at the rate."""
    cands = []
    for o in opts:
        try:
            one = max_rate(Deployment(o.model, sched, 1, "least_outstanding"), work, slo).rate_per_s
        except RankflowError:
            continue  # this option misses the SLO even when idle
        cands.append(Candidate(o.label, o.model, max(1, math.ceil(rate / one)), o.gpus_per_replica,
                               o.usd_per_gpu_hour, sched))
    if not cands:
        raise RankflowError("no option meets the SLO even at a trickle of requests", field="--slo-ttft/--slo-tpot",
                            fix="relax the SLO, or add faster hardware or more tensor parallelism")
    return cheapest(cands, rate, work, slo)
