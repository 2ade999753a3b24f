"""Scaling studies and cluster recommendation on top of rankflow.api and rankflow.search.

- sweep: one plan (the hardware or plan file's, data parallelism filling each GPU count) or the best
  plan found at each point, over GPU counts or any config field; per point the step, throughput,
  MFU, scaling efficiency against the first point and the dominant bottleneck.
- recommend: for a model and a token count, across GPU types and counts, the plans that meet a
  deadline or a budget, cheapest (or fastest) first.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.base import Result
from graphgen.errors import RankflowError
from graphgen.scenario import MAX_STEPS, schedule_steps
from graphgen.search.space import Constraints
from rankflow import api, search
from reports.bottleneck import Bottleneck, bottleneck


@dataclass(frozen=True)
class Point:
    label: str            # the swept value
    gpus: int
    result: Result
    efficiency: float     # tokens/s per GPU over the first point's
    limit: Bottleneck


def _plan_at(model, hardware: str, plan, gpus: int, overrides) -> tuple:
    """The given plan with data parallelism filling `gpus`."""
    sc = api.load_scenario(model, hardware, plan, overrides)
    p = sc.plan
    per = p.tp * p.cp * p.pp
    if gpus % per:
        raise RankflowError(f"{gpus} GPUs cannot hold tp x cp x pp = {per} an integer number of times",
                            field="--gpus", fix=f"sweep multiples of {per}")
    return sc.with_plan(dp=gpus // per)


SWEEP_STEPS = 4 * MAX_STEPS  # pipeline passes replayed over all points: a sweep answers in about a minute


def _check_work(plans: list) -> None:
    """Each point is bounded on its own (graphgen.scenario.check_work); so is their sum."""
    total = sum(schedule_steps(sc.plan, sc.microbatches) for sc in plans)
    if total > SWEEP_STEPS:
        raise RankflowError(f"the {len(plans)} points replay {total:,} forward and backward passes in all, more than "
                            f"{SWEEP_STEPS:,}", field="--gpus/--over",
                            fix="sweep fewer points, or points with fewer microbatches or stages")


def sweep(model, hardware: str, points: list[tuple[str, int | None, list[str]]], plan=None, best: bool = False,
          constraints: Constraints | None = None) -> list[Point]:
    """points: (label, GPU count or None to keep the plan's, extra --set overrides)."""
    out: list[Point] = []
    plans = [] if best else [_plan_at(model, hardware, plan, gpus, extra) if gpus
                             else api.load_scenario(model, hardware, plan, extra) for _, gpus, extra in points]
    _check_work(plans)
    for i, (label, gpus, extra) in enumerate(points):
        if best:
            n = gpus or api.load_scenario(model, hardware, plan, extra).world
            found = search.search(model, [hardware], [n], extra, constraints, top=1, check=0, executor="serial")
            if not found.top:
                raise RankflowError(f"no plan fits at {label}", field="--gpus", fix="sweep larger GPU counts")
            res = found.top[0].result
        else:
            res = api.simulate(plans[i])
        first = out[0].result if out else res
        eff = res.tokens_per_s_per_gpu / first.tokens_per_s_per_gpu
        out.append(Point(label, res.gpus, res, eff, bottleneck(res)))
    return out


@dataclass(frozen=True)
class Recommendation:
    entry: search.Evaluated
    result: Result


def recommend(model, hardware: list[str], gpus: list[int], overrides, deadline_days: float | None = None,
              budget_usd: float | None = None, top: int = 5, constraints: Constraints | None = None,
              executor: str = "local", workers: int | None = None) -> list[Recommendation]:
    """Plans over GPU types and counts that train workload.train_tokens within the deadline and the
    budget: cheapest first under a deadline, fastest first under a budget alone."""
    found = search.search(model, hardware, gpus, overrides, constraints, top=1, check=0, executor=executor,
                          workers=workers)
    if not found.train_tokens:
        raise RankflowError("a recommendation needs the tokens to train", field="workload.train_tokens",
                            fix="--set workload.train_tokens=1e12")
    ok = [e for e in found.evaluated if e.ok and e.run and e.run["cost_usd"] is not None]
    meet = [e for e in ok if (deadline_days is None or e.run["wall_days"] <= deadline_days)
            and (budget_usd is None or e.run["cost_usd"] <= budget_usd)]
    if not meet:
        closest = min(ok, key=lambda e: e.run["wall_days"], default=None)
        hint = (f"the fastest plan takes {closest.run['wall_days']:.1f} days for ${closest.run['cost_usd']:,.0f} "
                f"({closest.gpus} x {closest.hardware})" if closest else "no priced plan fits at all")
        raise RankflowError(f"no plan meets the deadline and budget; {hint}", field="--deadline-days/--budget-usd",
                            fix="relax the deadline or budget, or allow more GPUs or GPU types")
    by_time = budget_usd is not None and deadline_days is None
    meet.sort(key=lambda e: ((e.run["wall_days"], e.run["cost_usd"]) if by_time else (e.run["cost_usd"],
                                                                                        e.run["wall_days"]),
                             e.hardware, e.gpus, e.record.index))
    picks, seen = [], set()
    for e in meet:  # one plan per (GPU type, count): the answer is which cluster, then how to run it
        if (e.hardware, e.gpus) not in seen:
            seen.add((e.hardware, e.gpus))
            picks.append(e)
        if len(picks) == top:
            break
    return [Recommendation(e, api.simulate(found.scenario(e))) for e in picks]
