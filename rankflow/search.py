"""Plan search: every valid plan for a model and workload on one or several clusters and GPU counts,
pruned by the exact memory model, timed by the fast recurrence, the best re-simulated in full, and
ranked by throughput, time to train and cost, with the Pareto front of (time to train, cost, GPUs).

    from rankflow import search
    found = search.search("model_configs/llama3.1-70b.yaml", ["hardware_configs/H100-SXM5-80GB.yaml"], [1024],
                          overrides=["workload.global_batch=1024"])
    found.top[0]          # the fastest plan, re-simulated through the DAG replay
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from backends.base import Result
from graphgen.errors import RankflowError
from graphgen.scenario import Scenario
from graphgen.search.evaluate import PlanRecord, candidate_scenario
from graphgen.search.space import Constraints, candidates
from rankflow import api
from rankflow.executors import EXECUTORS, simulate_all

BATCH = 48          # candidates per task: large enough to share lowered templates, small enough to balance
MAX_CANDIDATES = 2_000_000
MAX_WORKERS = 256   # a fork per worker, all started at once: --workers 100000 would fork-bomb the machine


@dataclass(frozen=True)
class Evaluated:
    """One candidate plan on one cluster and GPU count, with what the run would take."""

    hardware: str
    gpus: int
    record: PlanRecord
    run: dict | None = None            # training run (train_tokens given) at the fast step time
    usd_per_mtok: float | None = None  # cost per million trained tokens at the table's price

    @property
    def ok(self) -> bool:
        return self.record.status == "ok"


@dataclass(frozen=True)
class Top:
    entry: Evaluated
    result: Result                     # the full DAG replay of the plan


@dataclass(frozen=True)
class SearchResult:
    model: str
    spaces: tuple[tuple[str, int, int], ...]  # (hardware, gpus, candidates)
    evaluated: tuple[Evaluated, ...]
    top: tuple[Top, ...]                        # by throughput (shortest time to train), re-simulated
    cheapest: tuple[Evaluated, ...]             # by cost per trained token (fast-evaluated)
    pareto: tuple[Evaluated, ...]
    check: dict = field(default_factory=dict)   # fast recurrence vs the DAG replay on a sample
    train_tokens: float | None = None
    bases: dict = field(default_factory=dict, repr=False)  # (hardware, gpus) -> the scenario plans re-plan

    def scenario(self, e: Evaluated) -> Scenario:
        """The full scenario of an evaluated plan (to simulate or inspect it)."""
        return candidate_scenario(self.bases[(e.hardware, e.gpus)], e.record.plan)

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "oom": 0, "invalid": 0}
        for e in self.evaluated:
            out[e.record.status] += 1
        return out


SEARCHED = ("tp", "sp", "pp", "dp", "cp", "ep", "etp", "virtual_stages", "schedule", "zero_stage", "recompute")


def _base(model, hardware: str, gpus: int, overrides) -> Scenario:
    """The scenario every candidate re-plans: the user's model, workload and cluster, one GPU."""
    for o in overrides:
        key = str(o[0] if isinstance(o, tuple) else o).split("=", 1)[0].strip()
        if key.removeprefix("parallelism.") in SEARCHED and key.startswith("parallelism."):
            raise RankflowError(f"the search chooses {key} itself; --set would be overwritten", field="--set",
                                fix="bound it with the search's constraints instead (--tp, --pp, --max-tp, --zero, "
                                    "--recompute, --schedules)")
    one = ["parallelism.tp=1", "parallelism.pp=1", "parallelism.dp=1", "parallelism.cp=1", "parallelism.ep=1",
           "parallelism.etp=1", "parallelism.virtual_stages=1", "parallelism.schedule=1f1b"]
    return api.load_scenario(model, api.load_hardware(hardware), overrides=[*overrides, *one])


def _progress(total: int, quiet: bool, on: Callable[[int, int], None] | None = None):
    done = [0]
    show = not quiet and sys.stderr.isatty()
    if on is not None:
        on(0, total)

    def tick(n: int) -> None:
        done[0] += n
        if on is not None:  # a caller's hook (a server job's progress; it may raise to cancel)
            on(done[0], total)
        if show:
            sys.stderr.write(f"\r[search] {done[0]:,}/{total:,} plans")
            if done[0] >= total:
                sys.stderr.write("\n")
    return tick


def _economics(base: Scenario, rec: PlanRecord, gpus: int) -> tuple[dict | None, float | None]:
    if rec.status != "ok":
        return None, None
    sc = base
    tokens_per_step = rec.tokens_per_s * rec.step_time_s
    prices = api.load_prices()
    from graphgen.config.pricing import price_for

    price = price_for(prices, sc.hardware.device.name, sc.workload.price_offer)
    per_mtok = price.usd_per_gpu_hour * gpus / (rec.tokens_per_s * 3600.0) * 1e6 if price else None
    run = None
    if sc.workload.train_tokens:
        from graphgen.costs.training_run import training_run

        w, dev = sc.workload, sc.hardware.device
        run = training_run(rec.step_time_s, round(tokens_per_step), gpus, w.train_tokens, w.train_goodput, dev.name,
                           dev.board_power_w, prices, w.price_offer).as_dict()
    return run, per_mtok


def _pareto(entries: list[Evaluated]) -> list[Evaluated]:
    """Plans no other plan beats on time to train (or step time), cost and GPUs at once."""
    def key(e: Evaluated) -> tuple[float, float, int]:
        time = e.run["wall_days"] if e.run else e.record.step_time_s
        cost = e.run["cost_usd"] if e.run and e.run["cost_usd"] is not None else (e.usd_per_mtok or math.inf)
        return time, cost, e.gpus
    pts = sorted(entries, key=lambda e: (*key(e), e.hardware, e.record.index))
    front: list[Evaluated] = []
    for e in pts:
        k = key(e)
        if not any(all(a <= b for a, b in zip(key(f), k, strict=True)) for f in front):
            front.append(e)
    return front


def _check(pairs: list[tuple[Evaluated, float]]) -> dict:
    """The largest disagreement between the fast recurrence and the DAG replay, over the top plans
    (re-simulated anyway) and an evenly spaced sample of the rest: (plan, replayed step time) pairs."""
    worst, where = 0.0, None
    for e, exact in pairs:
        d = abs(e.record.step_time_s / exact - 1)
        if d > worst:
            worst, where = d, {"hardware": e.hardware, "gpus": e.gpus, **e.record.plan}
    return {"plans": len(pairs), "max_rel_diff": worst, "worst_plan": where}


def search(model, hardware: list[str], gpus: list[int], overrides=(), constraints: Constraints | None = None,
           top: int = 10, check: int = 8, executor: str = "local", workers: int | None = None,
           address: str | None = None, quiet: bool = True, progress: Callable[[int, int], None] | None = None,
           max_candidates: int = MAX_CANDIDATES) -> SearchResult:
    constraints = constraints or Constraints()
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise RankflowError(f"{workers} worker processes: must be from 1 to {MAX_WORKERS}", field="--workers",
                            fix="give e.g. --workers 8, or leave it out for one per core")
    bases, batches, spaces = {}, [], []
    total = 0
    hardware, gpus = list(dict.fromkeys(hardware)), list(dict.fromkeys(gpus))  # a repeat is the same space
    for hw in hardware:
        for n in gpus:
            if progress is not None:
                progress(0, 0)  # a caller may cancel between spaces, before any plan is timed
            base = _base(model, hw, n, overrides)
            key = (Path(hw).stem, n)
            bases[key] = base
            # Enumeration stops one past the limit: a huge space is refused, not listed.
            found = candidates(base.model, base.workload, n, base.hardware.node.gpus_per_node, constraints)
            items = list(enumerate(islice(found, max_candidates - total + 1)))
            spaces.append((key[0], n, len(items)))
            total += len(items)
            if total > max_candidates:
                break
            for i in range(0, len(items), BATCH):
                batches.append((key, (base, items[i:i + BATCH], constraints.headroom_gib)))
    if total == 0:
        raise RankflowError("no candidate plan: the constraints leave nothing to evaluate", field="--gpus",
                            fix="relax --tp/--pp/--cp/--ep or choose GPU counts they divide")
    if total > max_candidates:
        raise RankflowError(f"the search space holds more than {max_candidates:,} plans", field="--gpus",
                            fix="fix some dimensions (--tp, --pp) or search fewer GPU counts")
    run = EXECUTORS.get(executor)
    if run is None:
        raise RankflowError(f"unknown executor '{executor}'", field="--executor", fix="use local, serial or ray")
    extra = {"workers": workers} if executor == "local" else ({"address": address} if executor == "ray" else {})
    records = run([b for _, b in batches], _progress(total, quiet, progress), **extra)
    evaluated = []
    for (key, _), recs in zip(batches, records, strict=True):
        for rec in recs:
            run_, per_mtok = _economics(bases[key], rec, key[1])
            evaluated.append(Evaluated(key[0], key[1], rec, run_, per_mtok))
    tick = (lambda: progress(total, total)) if progress else None
    # The full re-simulations use the search's cores too (one process here for serial or Ray searches).
    n = (workers or os.cpu_count() or 1) if executor == "local" else 1
    return _finish(model, bases, spaces, evaluated, top, check, lambda scs: simulate_all(scs, n, tick))


def _finish(model, bases: dict, spaces, evaluated: list[Evaluated], top: int, check: int,
            simulate: Callable[[list[Scenario]], list[Result]]) -> SearchResult:
    """Rank, re-simulate the top plans in full and check a sample (`simulate` runs the full DAG replays
    of a list of plans, in order)."""
    ok = [e for e in evaluated if e.ok]
    ranked = sorted(ok, key=lambda e: (-e.record.tokens_per_s, e.hardware, e.gpus, e.record.index))
    rest = [e for e in ok if e not in ranked[:top]]
    step = max(1, len(rest) // max(check, 1)) if check else 0
    sample = rest[::step][:check] if check else []
    full = simulate([candidate_scenario(bases[(e.hardware, e.gpus)], e.record.plan) for e in [*ranked[:top], *sample]])
    tops = tuple(Top(e, r) for e, r in zip(ranked[:top], full, strict=False))
    name = next(iter(bases.values())).model.name if bases else str(model)
    tokens = next(iter(bases.values())).workload.train_tokens if bases else None
    priced = sorted((e for e in ok if e.usd_per_mtok is not None),
                    key=lambda e: (e.usd_per_mtok, e.hardware, e.gpus, e.record.index))
    checked = [(e, r.step_time_s) for e, r in zip([*ranked[:top], *sample], full, strict=True)]
    return SearchResult(name, tuple(spaces), tuple(evaluated), tops, tuple(priced[:top]), tuple(_pareto(ok)),
                        _check(checked), tokens, bases)
