"""Evaluating candidate plans: check, prune by the exact memory model, then time the survivors with the
fast recurrence (graphgen.search.fast). Pure: a batch of candidates in, one record per candidate out,
in order; the executors (rankflow.executors) only decide where batches run."""

from __future__ import annotations

from dataclasses import astuple, dataclass

from graphgen.errors import RankflowError
from graphgen.memory import role_memory_of
from graphgen.model.flops import model_flops_per_token
from graphgen.model.layer_graph import build_layer_graph
from graphgen.parallel.pipeline import stage_layers
from graphgen.program import block_shape
from graphgen.scenario import Scenario
from graphgen.schedule import stage_chunks
from graphgen.search.fast import fast_step_time
from graphgen.units import GIB

PLAN_FIELDS = ("tp", "sp", "cp", "pp", "dp", "ep", "schedule", "virtual_stages", "zero_stage", "recompute",
               "micro_batch")


@dataclass(frozen=True)
class PlanRecord:
    """One candidate's outcome. status: ok (timed), oom (does not fit), invalid (the plan cannot run)."""

    index: int
    plan: dict
    status: str
    reason: str = ""
    peak_memory_gib: float | None = None
    headroom_gib: float | None = None
    step_time_s: float | None = None
    tokens_per_s: float | None = None
    mfu: float | None = None


def candidate_scenario(base: Scenario, cand: dict, bases: dict | None = None) -> Scenario:
    """A candidate's scenario over the search's base (bases: the base at each micro-batch, shared)."""
    bases = {} if bases is None else bases
    mb = cand["micro_batch"]
    sc = bases.get(mb)
    if sc is None:
        sc = bases[mb] = base if base.workload.micro_batch == mb else base.with_workload(micro_batch=mb)
    plan = {k: v for k, v in cand.items() if k != "micro_batch"}
    if plan.get("recompute", sc.plan.recompute) != "full" and sc.plan.recompute_every > 1:
        plan["recompute_every"] = 1  # a base plan's checkpoint interval stays with its full recompute
    return sc.with_plan(**plan)


def _memory(sc: Scenario, graphs: dict):
    """scenario_memory with the layer graph and split shared between plans that have them in common."""
    p = sc.plan
    sh = block_shape(sc)
    key = (id(sc.model), id(sc.workload), tuple(x for x in astuple(sh) if not hasattr(x, "model_dump")), p.pp, p.virtual_stages, p.stage_split,
           p.first_stage_layers, p.last_stage_layers, p.split_accounts_embedding, p.split_accounts_loss)
    got = graphs.get(key)
    if got is None:
        got = graphs[key] = (build_layer_graph(sh), stage_layers(sc.model, p))
    role_chunks = [stage_chunks(p.schedule, p.pp, s, p.virtual_stages) for s in range(p.pp)]
    return role_memory_of(sc, got[0], got[1], role_chunks)


def evaluate_one(base: Scenario, index: int, cand: dict, caches: dict, headroom_gib: float = 0.0) -> PlanRecord:
    try:
        sc = candidate_scenario(base, cand, caches.setdefault("bases", {}))
    except RankflowError as exc:
        return PlanRecord(index, cand, "invalid", exc.one_line())
    mem = _memory(sc, caches.setdefault("graphs", {}))
    peak = max(m.total for m in mem)
    room = min(m.capacity - m.total for m in mem) / GIB - headroom_gib
    if room < 0:
        return PlanRecord(index, cand, "oom", f"needs {peak / GIB:.1f} GiB", peak / GIB, room)
    try:
        step = fast_step_time(sc, caches.setdefault("lowered", {}))
    except RankflowError as exc:
        return PlanRecord(index, cand, "invalid", exc.one_line(), peak / GIB, room)
    tokens = sc.tokens_per_step / step
    flops = model_flops_per_token(sc.model, sc.workload.attention_len, sc.workload.finetune) * tokens
    peak_flops = sc.hardware.device.peak_tflops
    key = "tf32" if sc.workload.precision == "fp32" and "tf32" in peak_flops else sc.workload.precision
    mfu = flops / (sc.world * peak_flops[key] * 1e12)
    return PlanRecord(index, cand, "ok", "", peak / GIB, room, step, tokens, mfu)


def evaluate_batch(base: Scenario, batch: list[tuple[int, dict]], headroom_gib: float = 0.0,
                   caches: dict | None = None) -> list[PlanRecord]:
    caches = {} if caches is None else caches
    return [evaluate_one(base, i, c, caches, headroom_gib) for i, c in batch]
