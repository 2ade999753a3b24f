"""Latency and throughput of a serving run, an SLO check, and the versioned JSON-ready dict.

Definitions (per request; `first`, `finish` and `arrival` from the simulation):
- TTFT = first token - arrival (queueing included);
- TPOT = (finish - first token) / (output tokens - 1), for requests with more than one output token;
- inter-token latency (ITL) = the gap between consecutive output tokens of a request, over all tokens of
  all requests (so long requests weigh more, as in vLLM's benchmark_serving);
- end-to-end latency = finish - arrival.
Each is reported as mean, p50, p90, p99 and max. Percentiles are nearest-rank: the p-th percentile of n
sorted values is the one at rank ceil(p x n / 100) (1-based), computed exactly, so it is always one of
the values and the same on every machine.

Throughput divides by the run's span, first arrival to last finish. The SLO holds when the TTFT at its
percentile (default p90 <= 2 s) and the TPOT at its percentile (default p99 <= 0.2 s), and optionally the
end-to-end latency, are within their targets. Goodput is the rate of requests that individually meet
every per-request target (TTFT, TPOT, end-to-end), divided by the same span; DistServe (Zhong et al.
OSDI'24) defines goodput per GPU as the highest rate at which a chosen share of requests meets them,
which capacity.py finds by searching over rate. Dropped requests count as missing the targets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from graphgen.errors import RankflowError
from graphgen.serving.schedulers import model_to_dict, scheduler_to_dict
from graphgen.serving.simulate import Deployment, RequestRecord, ServingResult

SCHEMA, VERSION = "rankflow.serving", "1.1"  # 1.1: schema_version beside version, as every other document has it
PERCENTILES = (50, 90, 99)


def header(kind: str) -> dict:
    """The document's schema, its version under both keys (`version` for 1.0 readers) and its kind."""
    return {"schema": SCHEMA, "schema_version": VERSION, "version": VERSION, "kind": kind}


@dataclass(frozen=True)
class SLO:
    ttft_s: float | None = 2.0
    tpot_s: float | None = 0.2
    e2e_s: float | None = None
    ttft_percentile: float = 90.0
    tpot_percentile: float = 99.0
    e2e_percentile: float = 90.0

    def __post_init__(self) -> None:
        for name in ("ttft_s", "tpot_s", "e2e_s"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise RankflowError(f"must be a finite number of seconds > 0 or None, got {v!r}",
                                    field=f"slo.{name}", fix=f"set slo.{name} to a latency target in seconds")
        for name in ("ttft_percentile", "tpot_percentile", "e2e_percentile"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v <= 100):
                raise RankflowError(f"must be in (0, 100], got {v!r}", field=f"slo.{name}",
                                    fix=f"set slo.{name} to a percentile such as 90 or 99")


@dataclass(frozen=True)
class Stat:
    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None

    def to_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "p50": self.p50, "p90": self.p90, "p99": self.p99,
                "max": self.max}


def _rank(p: float, n: int) -> int:
    return max(1, math.ceil(Fraction(str(p)) * n / 100))


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of ascending values (None when there are none)."""
    return sorted_values[_rank(p, len(sorted_values)) - 1] if sorted_values else None


def weighted_percentile(pairs: Sequence[tuple[float, int]], p: float) -> float | None:
    """Nearest-rank percentile of values given as ascending (value, how many) pairs."""
    n = sum(c for _, c in pairs)
    if not n:
        return None
    rank, seen = _rank(p, n), 0
    for value, count in pairs:
        seen += count
        if seen >= rank:
            return value
    return pairs[-1][0]


def stat(values: list[float]) -> Stat:
    v = sorted(values)
    if not v:
        return Stat(0, None, None, None, None, None)
    return Stat(len(v), math.fsum(v) / len(v), *(percentile(v, p) for p in PERCENTILES), v[-1])


def weighted_stat(pairs: Sequence[tuple[float, int]]) -> Stat:
    merged: dict[float, int] = {}
    for value, count in pairs:
        if count > 0:
            merged[value] = merged.get(value, 0) + count
    ordered = sorted(merged.items())
    n = sum(c for _, c in ordered)
    if not n:
        return Stat(0, None, None, None, None, None)
    mean = math.fsum(v * c for v, c in ordered) / n
    return Stat(n, mean, *(weighted_percentile(ordered, p) for p in PERCENTILES), ordered[-1][0])


def tpot_of(r: RequestRecord) -> float | None:
    return (r.finish_s - r.first_token_s) / (r.output_len - 1) if r.output_len > 1 else None


def meets_targets(r: RequestRecord, slo: SLO) -> bool:
    """Whether one request meets every per-request target of the SLO (the goodput test)."""
    if slo.ttft_s is not None and r.first_token_s - r.arrival_s > slo.ttft_s:
        return False
    tpot = tpot_of(r)
    if slo.tpot_s is not None and tpot is not None and tpot > slo.tpot_s:
        return False
    return slo.e2e_s is None or r.finish_s - r.arrival_s <= slo.e2e_s


@dataclass(frozen=True)
class Summary:
    requests: int
    dropped: int
    preemptions: int
    duration_s: float
    ttft_s: Stat
    tpot_s: Stat
    itl_s: Stat
    e2e_s: Stat
    requests_per_s: float | None
    output_tokens_per_s: float | None
    total_tokens_per_s: float | None
    slo: SLO
    ttft_at_percentile_s: float | None
    tpot_at_percentile_s: float | None
    e2e_at_percentile_s: float | None
    slo_met: bool
    slo_attainment: float | None
    goodput_requests_per_s: float | None


def _rate(count: float, span_s: float) -> float | None:
    return count / span_s if span_s > 0 else None


def _within(value: float | None, target: float | None) -> bool:
    return target is None or value is None or value <= target


DEFAULT_SLO = SLO()


def summarize(result: ServingResult, slo: SLO = DEFAULT_SLO) -> Summary:
    recs = result.records
    ttft = sorted(r.first_token_s - r.arrival_s for r in recs)
    tpot = sorted(t for t in map(tpot_of, recs) if t is not None)
    e2e = sorted(r.finish_s - r.arrival_s for r in recs)
    span = (max(r.finish_s for r in recs) - min(r.arrival_s for r in recs)) if recs else 0.0
    out_tokens = sum(r.output_len for r in recs)
    p_ttft, p_tpot = percentile(ttft, slo.ttft_percentile), percentile(tpot, slo.tpot_percentile)
    p_e2e = percentile(e2e, slo.e2e_percentile)
    met = bool(recs) and all(_within(v, t) for v, t in ((p_ttft, slo.ttft_s), (p_tpot, slo.tpot_s), (p_e2e, slo.e2e_s)))
    good = sum(1 for r in recs if meets_targets(r, slo))
    offered = len(recs) + len(result.dropped)
    return Summary(
        requests=len(recs), dropped=len(result.dropped), preemptions=sum(r.preemptions for r in recs),
        duration_s=span, ttft_s=stat(ttft), tpot_s=stat(tpot), itl_s=weighted_stat(result.itl_s), e2e_s=stat(e2e),
        requests_per_s=_rate(len(recs), span), output_tokens_per_s=_rate(out_tokens, span),
        total_tokens_per_s=_rate(out_tokens + sum(r.input_len for r in recs), span), slo=slo,
        ttft_at_percentile_s=p_ttft, tpot_at_percentile_s=p_tpot, e2e_at_percentile_s=p_e2e, slo_met=met,
        slo_attainment=good / offered if offered else None, goodput_requests_per_s=_rate(good, span))


def _busy_s(result: ServingResult) -> list[float]:
    busy = [0.0] * len(result.replica_roles)
    for it in result.iterations:
        busy[it.replica] += it.duration_s
    return busy


def _record_dict(r: RequestRecord) -> dict:
    return {"id": r.id, "arrival_s": r.arrival_s, "input_len": r.input_len, "output_len": r.output_len,
            "scheduled_s": r.scheduled_s, "prefill_done_s": r.prefill_done_s, "first_token_s": r.first_token_s, "finish_s": r.finish_s,
            "preemptions": r.preemptions, "replica": r.replica, "decode_replica": r.decode_replica,
            "kv_ready_s": r.kv_ready_s}


def summary_dict(s: Summary) -> dict:
    """A Summary as JSON-ready blocks (the body of to_dict, and of each probe in a capacity search)."""
    slo = s.slo
    return {
        "requests": {"completed": s.requests, "dropped": s.dropped, "preemptions": s.preemptions},
        "duration_s": s.duration_s,
        "percentile_method": "nearest-rank",
        "latency": {"ttft_s": s.ttft_s.to_dict(), "tpot_s": s.tpot_s.to_dict(), "itl_s": s.itl_s.to_dict(),
                    "e2e_s": s.e2e_s.to_dict()},
        "throughput": {"requests_per_s": s.requests_per_s, "output_tokens_per_s": s.output_tokens_per_s,
                       "total_tokens_per_s": s.total_tokens_per_s},
        "slo": {"ttft_s": slo.ttft_s, "ttft_percentile": slo.ttft_percentile, "tpot_s": slo.tpot_s,
                "tpot_percentile": slo.tpot_percentile, "e2e_s": slo.e2e_s, "e2e_percentile": slo.e2e_percentile,
                "ttft_at_percentile_s": s.ttft_at_percentile_s, "tpot_at_percentile_s": s.tpot_at_percentile_s,
                "e2e_at_percentile_s": s.e2e_at_percentile_s, "met": s.slo_met, "attainment": s.slo_attainment,
                "goodput_requests_per_s": s.goodput_requests_per_s},
    }


def deployment_dict(dep: Deployment) -> dict:
    return {"scheduler": scheduler_to_dict(dep.scheduler), "replicas": dep.replicas, "router": dep.router,
            "model": model_to_dict(dep.model)}


def to_dict(result: ServingResult, slo: SLO = DEFAULT_SLO, *, include_requests: bool = False) -> dict:
    """The run as a JSON-ready dict (schema rankflow.serving, VERSION): units in keys, null for what is
    undefined (e.g. TPOT when every request has one output token), never NaN or Infinity."""
    body = summary_dict(summarize(result, slo))
    body["requests"]["input_tokens"] = sum(r.input_len for r in result.records)
    body["requests"]["output_tokens"] = sum(r.output_len for r in result.records)
    out = {**header("simulation"),
           "deployment": {**deployment_dict(result.deployment), "replica_roles": list(result.replica_roles)},
           **body,
           "iterations": {"count": len(result.iterations), "busy_s": _busy_s(result)}}
    if include_requests:
        out["request_records"] = [_record_dict(r) for r in result.records]
    return out
