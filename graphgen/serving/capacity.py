"""Capacity questions asked of the serving simulation: the highest Poisson rate a deployment serves within
an SLO, and the cheapest of several candidate deployments that serves a target rate within it.

The rate search doubles from a small rate until the SLO is missed, then bisects. Every probe simulates the
same requests (one seed, one count; arrivals are unit-rate draws scaled by the rate, see sources.py), so
probes differ only in load and the SLO test is, in practice, monotone in the rate; the search assumes so.
DistServe (Zhong et al. OSDI'24) calls the result, per GPU, the deployment's goodput.

A finite run overstates capacity: past saturation the queue grows by (rate - capacity) requests per
second, so with N requests a TTFT target T is missed only once (rate - capacity) / rate x N / capacity
exceeds about T. With the default 1000 requests, a 2 s target and a capacity near 40 requests/s the
found rate is within about 10 %; more requests tighten it (the cost is linear in the count)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from graphgen.errors import RankflowError
from graphgen.serving.lengths import LengthDist
from graphgen.serving.metrics import DEFAULT_SLO, SLO, Summary, header, summarize, summary_dict
from graphgen.serving.model import IterationModel
from graphgen.serving.schedulers import ContinuousBatching, SchedulerConfig
from graphgen.serving.simulate import Deployment, simulate
from graphgen.serving.sources import PoissonSource

# Requests simulated per capacity question, so it answers in about a minute on one core (a search of
# 1,000 requests takes ~5 s, 5,000 ~26 s, each probe a whole simulation): per probe of a capacity
# search, and over all options of a cheapest-deployment search.
MAX_CAPACITY_REQUESTS = 10_000
MAX_CHEAPEST_REQUESTS = 20_000


@dataclass(frozen=True)
class Workload:
    """The requests a capacity question offers: `requests` Poisson arrivals with these lengths."""

    input_len: LengthDist
    output_len: LengthDist
    requests: int = 1000
    seed: int = 0

    def source(self, rate_per_s: float) -> PoissonSource:
        return PoissonSource(rate_per_s, self.requests, self.input_len, self.output_len, self.seed)


@dataclass(frozen=True)
class RateProbe:
    rate_per_s: float
    summary: Summary


@dataclass(frozen=True)
class CapacityResult:
    rate_per_s: float                 # the highest rate found that meets the SLO
    summary: Summary                  # its metrics
    next_rate_per_s: float | None     # the lowest rate found that misses it (None: none up to the cap)
    next_summary: Summary | None
    probes: tuple[RateProbe, ...]     # every rate simulated, in order


def _probe(dep: Deployment, work: Workload, slo: SLO, rate: float) -> RateProbe:
    return RateProbe(rate, summarize(simulate(dep, work.source(rate)), slo))


def _miss_text(s: Summary) -> str:
    slo, parts = s.slo, []
    for name, value, target, pct in (("TTFT", s.ttft_at_percentile_s, slo.ttft_s, slo.ttft_percentile),
                                     ("TPOT", s.tpot_at_percentile_s, slo.tpot_s, slo.tpot_percentile),
                                     ("end-to-end", s.e2e_at_percentile_s, slo.e2e_s, slo.e2e_percentile)):
        if target is not None and value is not None:
            parts.append(f"p{pct:g} {name} {value:.4g} s (target {target:g} s)")
    return ", ".join(parts)


def max_rate(deployment: Deployment, workload: Workload, slo: SLO = DEFAULT_SLO, *,
             min_rate_per_s: float = 0.01, max_rate_per_s: float = 1e6, rel_tol: float = 0.01,
             max_probes: int = 80) -> CapacityResult:
    """The highest Poisson rate (requests/s) at which `deployment` meets `slo`, to within `rel_tol`:
    the returned rate meets it and `next_rate_per_s`, at most (1 + rel_tol) x that, does not."""
    if not (0 < min_rate_per_s < max_rate_per_s) or not (0 < rel_tol < 1):
        raise RankflowError("need 0 < min_rate_per_s < max_rate_per_s and 0 < rel_tol < 1", field="rate",
                            fix="pass a small positive min_rate_per_s and a tolerance such as 0.01")
    probes = [_probe(deployment, workload, slo, min_rate_per_s)]
    if not probes[0].summary.slo_met:
        raise RankflowError(f"even {min_rate_per_s:g} requests/s misses the SLO; the closest found: "
                            f"{_miss_text(probes[0].summary)}", field="slo",
                            fix="relax the SLO, shorten the requests, or serve with faster replicas")
    lo, hi = probes[0], None
    while hi is None and len(probes) < max_probes and lo.rate_per_s < max_rate_per_s:
        p = _probe(deployment, workload, slo, min(lo.rate_per_s * 2, max_rate_per_s))
        probes.append(p)
        lo, hi = (p, None) if p.summary.slo_met else (lo, p)
    while hi is not None and hi.rate_per_s > lo.rate_per_s * (1 + rel_tol) and len(probes) < max_probes:
        p = _probe(deployment, workload, slo, (lo.rate_per_s + hi.rate_per_s) / 2)
        probes.append(p)
        lo, hi = (p, hi) if p.summary.slo_met else (lo, p)
    return CapacityResult(lo.rate_per_s, lo.summary, hi.rate_per_s if hi else None,
                          hi.summary if hi else None, tuple(probes))


@dataclass(frozen=True)
class Candidate:
    """One way to deploy: `replicas` replicas of `gpus_per_replica` GPUs each, costed by `model`."""

    label: str
    model: IterationModel
    replicas: int = 1
    gpus_per_replica: int = 1
    usd_per_gpu_hour: float | None = None
    scheduler: SchedulerConfig = field(default_factory=ContinuousBatching)
    router: str = "least_outstanding"

    def deployment(self) -> Deployment:
        return Deployment(self.model, self.scheduler, self.replicas, self.router)

    def gpus(self) -> int:
        return self.gpus_per_replica * self.deployment().replica_count()


@dataclass(frozen=True)
class CandidateResult:
    candidate: Candidate
    gpus: int
    summary: Summary
    usd_per_hour: float | None
    usd_per_million_output_tokens: float | None  # at the throughput simulated for the target rate


@dataclass(frozen=True)
class CheapestResult:
    rate_per_s: float
    best: CandidateResult
    evaluated: tuple[CandidateResult, ...]  # in the order given


def _evaluate(c: Candidate, work: Workload, slo: SLO, rate: float) -> CandidateResult:
    summary = summarize(simulate(c.deployment(), work.source(rate)), slo)
    gpus = c.gpus()
    per_hour = None if c.usd_per_gpu_hour is None else gpus * c.usd_per_gpu_hour
    per_mtok = None
    if per_hour is not None and summary.output_tokens_per_s:
        per_mtok = per_hour / 3600.0 / summary.output_tokens_per_s * 1e6
    return CandidateResult(c, gpus, summary, per_hour, per_mtok)


def _shortfall(s: Summary) -> float:
    """How far a run is from its SLO: the largest ratio of a percentile to its target."""
    slo, worst = s.slo, 0.0
    for value, target in ((s.ttft_at_percentile_s, slo.ttft_s), (s.tpot_at_percentile_s, slo.tpot_s),
                          (s.e2e_at_percentile_s, slo.e2e_s)):
        if value is not None and target is not None:
            worst = max(worst, value / target)
    return worst


def cheapest(candidates: Sequence[Candidate], rate_per_s: float, workload: Workload,
             slo: SLO = DEFAULT_SLO) -> CheapestResult:
    """The candidate that meets `slo` at `rate_per_s` for the lowest price per hour (equivalently per
    output token, since every candidate serves the same load); candidates without a price rank after
    priced ones, by GPU count; ties keep the given order."""
    if not candidates:
        raise RankflowError("no candidate deployments", field="candidates", fix="give at least one candidate")
    rows = tuple(_evaluate(c, workload, slo, rate_per_s) for c in candidates)
    ok = [(i, r) for i, r in enumerate(rows) if r.summary.slo_met]
    if not ok:
        close = min(rows, key=lambda r: _shortfall(r.summary))
        raise RankflowError(f"no candidate meets the SLO at {rate_per_s:g} requests/s; the closest is "
                            f"{close.candidate.label!r}: {_miss_text(close.summary)}", field="candidates",
                            fix="add replicas or faster candidates, lower the rate, or relax the SLO")
    _, best = min(ok, key=lambda ir: (ir[1].usd_per_hour is None, ir[1].usd_per_hour or 0.0, ir[1].gpus, ir[0]))
    return CheapestResult(rate_per_s, best, rows)


def capacity_dict(result: CapacityResult) -> dict:
    return {**header("capacity"),
            "rate_per_s": result.rate_per_s, "metrics": summary_dict(result.summary),
            "next_rate_per_s": result.next_rate_per_s,
            "next_metrics": summary_dict(result.next_summary) if result.next_summary else None,
            "probes": [{"rate_per_s": p.rate_per_s, "slo_met": p.summary.slo_met} for p in result.probes]}


def cheapest_dict(result: CheapestResult) -> dict:
    def row(r: CandidateResult) -> dict:
        c = r.candidate
        return {"label": c.label, "replicas": c.replicas, "gpus_per_replica": c.gpus_per_replica, "gpus": r.gpus,
                "usd_per_gpu_hour": c.usd_per_gpu_hour, "usd_per_hour": r.usd_per_hour,
                "usd_per_million_output_tokens": r.usd_per_million_output_tokens,
                "slo_met": r.summary.slo_met, "metrics": summary_dict(r.summary)}
    return {**header("cheapest"), "rate_per_s": result.rate_per_s,
            "best": result.best.candidate.label, "candidates": [row(r) for r in result.evaluated]}
