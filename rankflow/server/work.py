"""What each API route computes: the library calls the CLI makes, on a request's inputs, returning the
CLI's own JSON documents (as rendered text where the CLI writes a file, so the bytes match)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from graphgen.errors import RankflowError
from rankflow.server.inputs import (
    CheapestRequest,
    ScenarioRequest,
    SearchRequest,
    ServeRequest,
    SimulateRequest,
    as_served,
    model_and_hardware,
    overrides_of,
    scenario_of,
    shipped,
)


def listing(kind: str) -> dict[str, Any]:
    from rankflow.listing_cli import document

    return document(kind)


def simulate(req: SimulateRequest, limit_s: float | None = None) -> str:
    """(limit_s: the server's time limit, which bounds an ASTRA-sim run too.)"""
    from rankflow import api
    from reports import json_out

    return json_out.dumps(api.simulate(scenario_of(req, limit_s), detail=req.detail))


def memory(req: ScenarioRequest) -> str:
    from rankflow import api
    from reports import json_out

    sc = scenario_of(req)
    return json_out.memory_dumps(sc, api.memory(sc).roles)


def trace(req: ScenarioRequest) -> str:
    from rankflow import api
    from reports import trace as chrome

    sc = scenario_of(req)
    passes = sc.microbatches * -(-sc.model.layers // sc.plan.pp)
    if passes > MAX_TRACE_LAYER_PASSES:
        raise RankflowError(f"a trace of {sc.microbatches:,} microbatches x {-(-sc.model.layers // sc.plan.pp)} layers "
                            f"per stage is more than the server draws ({MAX_TRACE_LAYER_PASSES:,} layer passes)",
                            field="set", fix="trace a smaller global batch here, or use run_perf.py --trace")
    prog, ev = api.evaluate(sc, "analytical", detail="ops")
    ranks = [prog.ranks_of_role(r.id)[0] for r in prog.roles]
    return chrome.dumps(prog, ev.timeline, ranks)


def serve(req: ServeRequest) -> dict[str, Any]:
    from graphgen.serving.capacity import Workload, capacity_dict, max_rate
    from graphgen.serving.metrics import SLO, to_dict
    from graphgen.serving.simulate import Deployment
    from graphgen.serving.simulate import simulate as run
    from rankflow import serve as serving

    sc = as_served(serving.inference_scenario(*model_and_hardware(req), None, overrides_of(req)))
    spec = sc.workload.inference
    lengths = serving.lengths(spec, req.input_len, req.output_len, ("input_len", "output_len"))
    work = Workload(*lengths, req.requests, req.seed)
    dep = Deployment(serving.engine_model(sc), serving.scheduler(req.scheduler), req.replicas, "least_outstanding")
    slo = SLO(ttft_s=req.slo_ttft_s, tpot_s=req.slo_tpot_s)
    if req.capacity:
        return capacity_dict(max_rate(dep, work, slo))
    assert req.rate_per_s is not None
    return to_dict(run(dep, work.source(req.rate_per_s)), slo)


def cheapest(req: CheapestRequest) -> dict[str, Any]:
    """The document `rankflow serve --cheapest --json` writes, for the request's names and plans."""
    from graphgen.serving.capacity import Workload, cheapest_dict
    from graphgen.serving.metrics import SLO
    from rankflow import serve as serving

    model, hardware = shipped(req.model, "model"), [str(shipped(h, "hardware")) for h in req.hardware]
    sc = serving.inference_scenario(model, hardware[0], None, req.set)
    spec = sc.workload.inference
    lengths = serving.lengths(spec, req.input_len, req.output_len, ("input_len", "output_len"))
    plans = [{"tp": tp, "pp": pp, "ep": ep} for tp in req.tp for pp in req.pp for ep in req.ep]
    opts = serving.options(model, hardware, plans, req.set)
    res = serving.cheapest_for(opts, req.rate_per_s, Workload(*lengths, req.requests, req.seed),
                               SLO(ttft_s=req.slo_ttft_s, tpot_s=req.slo_tpot_s), serving.scheduler(req.scheduler))
    return cheapest_dict(res)


def search_inputs(req: SearchRequest) -> tuple[Path, list[str]]:
    """The request's model and hardware as shipped files, refused (before any job starts) when unknown."""
    return shipped(req.model, "model"), [str(shipped(h, "hardware")) for h in req.hardware]


# Ranks x op nodes a trace holds: an op-level DAG of tens of thousands of layer passes per stage is
# gigabytes in memory and a trace of hundreds of MB, too much to build for a web request.
MAX_TRACE_LAYER_PASSES = 16_384


def search(req: SearchRequest, progress: Callable[[int, int], None], max_plans: int, workers: int = 1
           ) -> dict[str, Any]:
    from graphgen.search.space import Constraints
    from rankflow import search
    from reports import search_out

    model, hardware = search_inputs(req)
    found = search.search(model, hardware, req.gpus, req.set, Constraints(max_tp=req.max_tp, tp=req.tp, pp=req.pp, headroom_gib=req.headroom_gib),
                          top=req.top, check=2, executor="local" if workers > 1 else "serial",
                          workers=workers if workers > 1 else None, progress=progress,
                          max_candidates=max_plans)
    return search_out.to_dict(found)
