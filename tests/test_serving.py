"""The serving simulation (graphgen.serving) against LinearIterationModel: queueing sanity, the orderings the
scheduling papers report, KV preemption, disaggregation, determinism, trace errors, bounds and capacity."""

from __future__ import annotations

import json
import random
import statistics

import pytest

import graphgen.serving.simulate as sim_mod
from graphgen.errors import RankflowError
from graphgen.serving.capacity import Candidate, Workload, capacity_dict, cheapest, cheapest_dict, max_rate
from graphgen.serving.lengths import (
    FixedLength,
    LognormalLength,
    NormalLength,
    UniformLength,
    length_from_dict,
)
from graphgen.serving.metrics import SLO, percentile, summarize, to_dict, weighted_percentile
from graphgen.serving.model import LinearIterationModel, Request
from graphgen.serving.render import chrome_trace, latency_png, trace_json
from graphgen.serving.routers import ROUTERS
from graphgen.serving.schedulers import (
    SCHEDULERS,
    ChunkedPrefill,
    ContinuousBatching,
    Disaggregated,
    StaticBatching,
    scheduler_from_dict,
)
from graphgen.serving.simulate import Deployment, simulate
from graphgen.serving.sources import ClosedLoopSource, PoissonSource, TraceSource, parse_trace
from tests.serving_reference import NaiveBudgetReplica

MODEL = LinearIterationModel()
MIXED = PoissonSource(8.0, 400, UniformLength(64, 512), UniformLength(16, 256), seed=0)
SCHEDULER_CASES = [StaticBatching(16), ContinuousBatching(), ChunkedPrefill(512),
                   Disaggregated(prefill_replicas=1, decode_replicas=2)]


def _run(scheduler, source=MIXED, model=MODEL, **kw):
    return simulate(Deployment(model, scheduler, **kw), source)


# -- queueing sanity ----------------------------------------------------------------------------------

def test_low_load_ttft_is_one_prefill_iteration():
    # At 0.2 requests/s a request (about 0.1 s of work) almost always finds the replica idle: its TTFT is
    # the one prefill iteration, its latency that plus 15 lone decode steps (Little: nothing queues).
    res = _run(ContinuousBatching(), PoissonSource(0.2, 200, FixedLength(512), FixedLength(16), seed=1))
    prefill = MODEL.iteration_time(512, 512, 0, 0)
    e2e = prefill + sum(MODEL.iteration_time(0, 0, 1, 512 + j) for j in range(1, 16))
    ttft = [r.first_token_s - r.arrival_s for r in res.records]
    assert statistics.median(ttft) == pytest.approx(prefill, rel=1e-9)
    assert statistics.fmean(ttft) == pytest.approx(prefill, rel=0.05)
    assert statistics.median(r.finish_s - r.arrival_s for r in res.records) == pytest.approx(e2e, rel=1e-9)


def test_a_pipelined_replica_keeps_a_batch_in_flight_per_stage():
    # vLLM's virtual engines: pp schedulers, each with 1/pp of the KV blocks and a whole pass per iteration.
    piped = LinearIterationModel(kv_blocks=20_000, virtual_engines=2)
    dep = Deployment(piped, ContinuousBatching(max_seqs=8), replicas=3)
    pools = dep.pools()
    assert [(p.count, p.model.kv_blocks) for p in pools] == [(6, 10_000)] and dep.replica_count() == 3
    # Saturated by an offline queue and held to small batches, two engines per replica finish the work in
    # about half the time one engine takes with the same iteration costs.
    work = PoissonSource(1e6, 400, FixedLength(256), FixedLength(64), seed=0)
    one = simulate(Deployment(LinearIterationModel(kv_blocks=20_000), ContinuousBatching(max_seqs=8)), work)
    two = simulate(Deployment(piped, ContinuousBatching(max_seqs=8)), work)
    span = [max(r.finish_s for r in res.records) for res in (one, two)]
    assert span[1] == pytest.approx(span[0] / 2, rel=0.05)
    assert len({r.replica for r in two.records}) == 2


def test_continuous_batching_beats_static_on_p90_latency():
    static = summarize(_run(StaticBatching(32)))
    continuous = summarize(_run(ContinuousBatching()))
    assert continuous.e2e_s.p90 < 0.7 * static.e2e_s.p90
    assert continuous.ttft_s.p90 < static.ttft_s.p90


def test_static_batch_returns_with_its_longest_request():
    reqs = (Request(0, 0.0, 100, 5), Request(1, 0.0, 100, 50))
    res = _run(StaticBatching(8), TraceSource(reqs))
    a, b = res.records
    assert a.finish_s == b.finish_s and a.first_token_s == b.first_token_s
    assert [it.decode_seqs for it in res.iterations] == [0] + [2] * 49  # the short one is padding


def test_chunked_prefill_lowers_p99_inter_token_latency_with_long_prompts():
    src = PoissonSource(2.0, 300, UniformLength(2000, 6000), UniformLength(64, 256), seed=0)
    whole = summarize(_run(ContinuousBatching(), src))
    chunked = summarize(_run(ChunkedPrefill(512), src))
    assert chunked.itl_s.p99 < 0.5 * whole.itl_s.p99
    assert max(it.prefill_tokens for it in _run(ChunkedPrefill(512), src).iterations) <= 512


def test_itl_counts_every_token_after_the_first():
    for sch in SCHEDULER_CASES:
        res = _run(sch)
        assert sum(c for _, c in res.itl_s) == sum(r.output_len - 1 for r in res.records), sch.kind


# -- KV cache and preemption --------------------------------------------------------------------------

@pytest.mark.parametrize("scheduler", [ContinuousBatching(), ChunkedPrefill(256),
                                       Disaggregated(decode_replicas=2)], ids=lambda s: s.kind)
def test_preemption_when_kv_blocks_are_tiny_and_every_request_finishes(scheduler):
    tiny = LinearIterationModel(kv_blocks=64)  # 1024 tokens of KV
    src = PoissonSource(20.0, 300, FixedLength(200), UniformLength(100, 300), seed=2)
    res = _run(scheduler, src, tiny)
    assert len(res.records) == 300 and not res.dropped
    assert sum(r.preemptions for r in res.records) > 0
    assert all(r.finish_s > r.first_token_s >= r.arrival_s for r in res.records)
    roomy = _run(scheduler, src)
    assert sum(r.preemptions for r in roomy.records) == 0


@pytest.mark.parametrize("scheduler", [ContinuousBatching(), ChunkedPrefill(256), ChunkedPrefill(2048, 16),
                                       Disaggregated(prefill=ChunkedPrefill(300), decode_replicas=2)],
                         ids=lambda s: s.kind)
@pytest.mark.parametrize("kv_blocks", [48, 20_000])
def test_event_driven_decoders_match_a_naive_replica(monkeypatch, scheduler, kv_blocks):
    model = LinearIterationModel(kv_blocks=kv_blocks)
    src = PoissonSource(15.0, 250, UniformLength(16, 400), UniformLength(1, 300), seed=4)
    fast = _run(scheduler, src, model)
    monkeypatch.setattr(sim_mod, "BudgetReplica", NaiveBudgetReplica)
    naive = _run(scheduler, src, model)
    assert fast.records == naive.records
    assert fast.iterations == naive.iterations
    fast_itl, naive_itl = summarize(fast).itl_s, summarize(naive).itl_s
    assert fast_itl.count == naive_itl.count
    assert fast_itl.p99 == pytest.approx(naive_itl.p99, rel=1e-9)
    assert fast_itl.mean == pytest.approx(naive_itl.mean, rel=1e-9)


def test_oversized_requests_are_refused_or_dropped():
    model = LinearIterationModel(kv_blocks=10, max_context=1000)
    reqs = (Request(0, 0.0, 50, 50), Request(1, 0.1, 150, 20), Request(2, 0.2, 900, 200))
    with pytest.raises(RankflowError) as e:
        _run(ContinuousBatching(), TraceSource(reqs), model)
    assert e.value.field == "kv_blocks" and "request 1" in str(e.value)
    res = simulate(Deployment(model, ContinuousBatching()), TraceSource(reqs), oversized="drop")
    assert [r.id for r in res.records] == [0] and [r.id for r in res.dropped] == [1, 2]
    with pytest.raises(RankflowError) as e:
        _run(ContinuousBatching(max_batched_tokens=64, max_seqs=8), TraceSource(reqs[:1]))
    assert e.value.field == "max_batched_tokens" and "chunked" in str(e.value)
    assert _run(ChunkedPrefill(64, 8), TraceSource(reqs[:1])).records[0].output_len == 50


# -- disaggregation -----------------------------------------------------------------------------------

def test_disaggregation_adds_the_kv_transfer_to_ttft():
    model = LinearIterationModel(transfer_per_token=1e-4)
    src = PoissonSource(0.2, 100, FixedLength(1000), FixedLength(20), seed=3)
    transfer = model.kv_transfer_time(1000)

    def median_ttft(sch):
        return statistics.median(r.first_token_s - r.arrival_s for r in _run(sch, src, model).records)
    colocated = median_ttft(ContinuousBatching())
    assert median_ttft(Disaggregated()) == pytest.approx(colocated + transfer, rel=1e-9)
    assert median_ttft(Disaggregated(first_token_at="prefill")) == pytest.approx(colocated, rel=1e-9)
    res = _run(Disaggregated(prefill_replicas=2, decode_replicas=3), src, model)
    assert res.replica_roles == ("prefill", "prefill", "decode", "decode", "decode")
    assert all(r.decode_replica in (2, 3, 4) and r.kv_ready_s == r.first_token_s for r in res.records)
    assert all(r.kv_ready_s - r.prefill_done_s == pytest.approx(transfer) for r in res.records)


def test_disaggregated_pools_are_sized_by_the_scheduler():
    with pytest.raises(RankflowError) as e:
        _run(Disaggregated(), replicas=2)
    assert e.value.field == "replicas"


# -- determinism and output ---------------------------------------------------------------------------

@pytest.mark.parametrize("scheduler", SCHEDULER_CASES, ids=lambda s: s.kind)
def test_same_seed_gives_identical_json(scheduler):
    def dump(seed):
        src = PoissonSource(8.0, 300, LognormalLength(200, 0.8, 2000), NormalLength(100, 40, 400), seed=seed)
        return json.dumps(to_dict(_run(scheduler, src, replicas=1), include_requests=True), allow_nan=False)
    assert dump(7) == dump(7)
    assert dump(7) != dump(8)


def test_json_has_schema_units_and_no_nan():
    res = _run(ContinuousBatching(), PoissonSource(4.0, 50, FixedLength(64), FixedLength(1), seed=0))
    d = to_dict(res)
    assert (d["schema"], d["schema_version"], d["version"]) == ("rankflow.serving", "1.1", "1.1")
    assert d["latency"]["tpot_s"]["p99"] is None  # one output token each: no TPOT, and null, not NaN
    assert set(d["latency"]) == {"ttft_s", "tpot_s", "itl_s", "e2e_s"}
    assert set(d["throughput"]) == {"requests_per_s", "output_tokens_per_s", "total_tokens_per_s"}
    json.dumps(d, allow_nan=False)


def test_goodput_counts_requests_meeting_every_target():
    res = _run(ContinuousBatching())
    target = summarize(res).ttft_s.p50  # about half the requests meet it
    slo = SLO(ttft_s=target, tpot_s=0.2)
    s = summarize(res, slo)
    good = [r for r in res.records if r.first_token_s - r.arrival_s <= target]
    assert 0 < len(good) < len(res.records)
    assert s.goodput_requests_per_s == pytest.approx(len(good) / s.duration_s)
    assert s.slo_attainment == pytest.approx(len(good) / len(res.records))


def test_nearest_rank_percentiles():
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (1, 50, 90, 99, 100)] == [1, 50, 90, 99, 100]
    assert percentile([3.0], 99) == 3.0 and percentile([], 50) is None
    assert percentile(list(range(1, 11)), 7) == 1  # rank ceil(0.7) = 1, exactly (no float drift to 2)
    assert weighted_percentile([(1.0, 98), (5.0, 2)], 99) == 5.0
    assert weighted_percentile([(1.0, 98), (5.0, 2)], 98) == 1.0


def test_trace_and_plot_renderers():
    res = _run(Disaggregated(decode_replicas=2))
    trace = chrome_trace(res, sample_requests=5)
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M"}
    assert {"replica 0 (prefill)", "replica 1 (decode)", "replica 2 (decode)"} <= names
    assert sum(1 for n in names if n.startswith("request ")) == 5
    kinds = {e["name"] for e in trace["traceEvents"] if e["ph"] == "X"}
    assert {"prefill", "decode", "kv transfer", "queued"} <= kinds
    assert json.loads(trace_json(res, 5)) == trace
    pytest.importorskip("matplotlib")
    png = latency_png(res)
    assert png.startswith(b"\x89PNG") and png == latency_png(res)


# -- sources ------------------------------------------------------------------------------------------

def test_trace_csv_and_jsonl_parse_alike():
    csv_text = "arrival_s,input_len,output_len\n0.5,128,16\n0.1,64,8\n\n"
    jsonl = '{"arrival_s": 0.5, "input_len": 128, "output_len": 16}\n{"arrival_s": 0.1, "input_len": 64, "output_len": 8.0}\n'
    expect = (Request(0, 0.1, 64, 8), Request(1, 0.5, 128, 16))
    assert parse_trace(csv_text).requests == expect
    assert parse_trace(jsonl).requests == expect


@pytest.mark.parametrize("text, line, field", [
    ("arrival_s,input_len,output_len\n0.1,64,8\n0.2,abc,8\n", 3, "input_len"),
    ("arrival_s,input_len,output_len\n0.1,64,0\n", 2, "output_len"),
    ("arrival_s,input_len,output_len\nnan,64,8\n", 2, "arrival_s"),
    ("arrival_s,input_len,output_len\n0.1,64\n", 2, "output_len"),
    ("arrival_s,input_len\n0.1,64\n", 1, "output_len"),
    ('{"arrival_s": 0, "input_len": 4, "output_len": 4}\n{"arrival_s": 1, "input_len": 4\n', 2, "line"),
    ('{"arrival_s": 0, "input_len": 4, "output_len": 4}\n\n{"arrival_s": -1, "input_len": 4, "output_len": 4}\n',
     3, "arrival_s"),
    ('{"arrival_s": 0, "input_len": 4.5, "output_len": 4}\n', 1, "input_len"),
])
def test_trace_errors_name_the_line_and_field(text, line, field):
    with pytest.raises(RankflowError) as e:
        parse_trace(text, name="t.csv")
    assert e.value.field == field and e.value.file == "t.csv"
    assert f"line {line}:" in e.value.one_line() and e.value.fix


def test_closed_loop_keeps_the_user_count_in_flight():
    src = ClosedLoopSource(users=6, requests=120, input_len=UniformLength(32, 256), output_len=FixedLength(20))
    res = _run(ContinuousBatching(), src)
    assert len(res.records) == 120
    events = sorted([(r.arrival_s, 1) for r in res.records] + [(r.finish_s, -1) for r in res.records],
                    key=lambda e: (e[0], e[1]))  # a finish before the arrival it triggers
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak == 6
    assert sorted(r.arrival_s for r in res.records)[:6] == [0.0] * 6


def test_lengths_are_seeded_and_bounded():
    rng_a, rng_b = random.Random(1), random.Random(1)
    dist = LognormalLength(300, 1.5, 1000)
    a = [dist.sample(rng_a) for _ in range(500)]
    assert a == [dist.sample(rng_b) for _ in range(500)] and min(a) >= 1 and max(a) == 1000
    assert length_from_dict({"kind": "uniform", "lo": 3, "hi": 5}) == UniformLength(3, 5)
    with pytest.raises(RankflowError):
        UniformLength(5, 3)
    with pytest.raises(RankflowError) as e:
        length_from_dict({"kind": "zipf"})
    assert "uniform" in str(e.value)
    first = PoissonSource(1.0, 50, UniformLength(1, 9), FixedLength(4), seed=5).start().initial()
    double = PoissonSource(2.0, 50, UniformLength(1, 9), FixedLength(4), seed=5).start().initial()
    assert [r.input_len for r in first] == [r.input_len for r in double]
    assert double[-1].arrival_s == pytest.approx(first[-1].arrival_s / 2)


# -- bounds, registries -------------------------------------------------------------------------------

def test_work_is_bounded():
    with pytest.raises(RankflowError) as e:
        PoissonSource(1.0, 1_000_001, FixedLength(1), FixedLength(1))
    assert e.value.field == "requests" and e.value.fix
    with pytest.raises(RankflowError) as e:
        simulate(Deployment(MODEL), MIXED, max_iterations=100)
    assert e.value.field == "max_iterations" and "rate" in e.value.fix


def test_bad_models_and_requests_are_refused():
    with pytest.raises(RankflowError) as e:
        _run(ContinuousBatching(), model=LinearIterationModel(kv_blocks=0))
    assert e.value.field == "kv_blocks"
    with pytest.raises(RankflowError) as e:
        TraceSource((Request(0, 0.0, 8, 8), Request(1, 1.0, 0, 8)))
    assert e.value.field == "requests[1].input_len"
    with pytest.raises(RankflowError) as e:
        _run(ContinuousBatching(), model=LinearIterationModel(a=float("nan")))
    assert e.value.field == "iteration_time"


def test_registries_and_routers():
    assert list(SCHEDULERS) == ["static", "continuous", "chunked", "disaggregated"]
    assert scheduler_from_dict({"kind": "chunked", "max_batched_tokens": 512}) == ChunkedPrefill(512)
    d = scheduler_from_dict({"kind": "disaggregated", "prefill": {"kind": "chunked"}, "decode_replicas": 3})
    assert d.prefill == ChunkedPrefill() and d.decode_replicas == 3
    with pytest.raises(RankflowError) as e:
        scheduler_from_dict({"kind": "continuous", "batch_size": 4})
    assert e.value.field == "scheduler.batch_size"
    with pytest.raises(RankflowError):
        ContinuousBatching(max_batched_tokens=16, max_seqs=32)
    assert set(ROUTERS) == {"round_robin", "least_outstanding"}
    rr = _run(ContinuousBatching(), replicas=3)
    assert [r.replica for r in rr.records[:6]] == [0, 1, 2, 0, 1, 2]
    # One long request pins replica 0; least-outstanding sends the short ones elsewhere meanwhile.
    reqs = (Request(0, 0.0, 100, 2000),) + tuple(Request(i, 0.2 * i, 100, 10) for i in range(1, 7))
    lo = _run(ContinuousBatching(), TraceSource(reqs), replicas=2, router="least_outstanding")
    assert all(r.replica == 1 for r in lo.records[1:])
    with pytest.raises(RankflowError) as e:
        _run(ContinuousBatching(), router="random")
    assert e.value.field == "router"


# -- capacity -----------------------------------------------------------------------------------------

WORK = Workload(UniformLength(128, 1024), UniformLength(16, 256), requests=300, seed=0)


def test_capacity_search_finds_the_edge_of_the_slo():
    slo = SLO(ttft_s=0.25, tpot_s=None)
    cap = max_rate(Deployment(MODEL), WORK, slo, rel_tol=0.02)
    assert cap.summary.ttft_s.p90 <= 0.25 < cap.next_summary.ttft_s.p90
    assert cap.rate_per_s < cap.next_rate_per_s <= cap.rate_per_s * 1.02
    assert capacity_dict(cap)["metrics"]["slo"]["met"] is True
    two = max_rate(Deployment(MODEL, replicas=2, router="least_outstanding"), WORK, slo, rel_tol=0.02)
    assert two.rate_per_s > 1.5 * cap.rate_per_s


def test_capacity_search_says_when_no_rate_meets_the_slo():
    with pytest.raises(RankflowError) as e:
        max_rate(Deployment(MODEL), WORK, SLO(ttft_s=0.001, tpot_s=None))
    assert e.value.field == "slo" and "p90 TTFT" in str(e.value) and "target 0.001 s" in str(e.value)


def test_cheapest_candidate_meeting_the_slo():
    fast = LinearIterationModel(a=2.5e-3, b=1e-5, d=1e-5)
    slo = SLO(ttft_s=0.3, tpot_s=0.05)
    cands = [Candidate("1 slow", MODEL, 1, 1, 2.0), Candidate("3 slow", MODEL, 3, 1, 2.0),
             Candidate("2 fast", fast, 2, 1, 2.5), Candidate("disagg", MODEL, 1, 1, 2.0, Disaggregated())]
    out = cheapest(cands, 90.0, WORK, slo)
    met = {r.candidate.label: r.summary.slo_met for r in out.evaluated}
    assert met == {"1 slow": False, "3 slow": True, "2 fast": True, "disagg": False}
    assert out.best.candidate.label == "2 fast" and out.best.gpus == 2  # $5/h beats 3 x $2/h
    priced = [r for r in out.evaluated if r.summary.slo_met]
    assert out.best.usd_per_hour == min(r.usd_per_hour for r in priced)
    assert out.best.usd_per_million_output_tokens == pytest.approx(
        out.best.usd_per_hour / 3600 / out.best.summary.output_tokens_per_s * 1e6)
    assert cheapest_dict(out)["best"] == out.best.candidate.label
    with pytest.raises(RankflowError) as e:
        cheapest(cands[:1], 90.0, WORK, slo)
    assert "'1 slow'" in str(e.value)


def test_a_wide_normal_length_clips_an_infinite_draw_instead_of_crashing():
    # std 1e308 makes mean + std * z overflow to +-inf for |z| > 1.8; round(inf) raised OverflowError.
    dist = NormalLength(100.0, 1e308, 1000)
    rng = random.Random(0)
    got = {dist.sample(rng) for _ in range(200)}
    assert got <= {1, 1000} and got == {1, 1000}


@pytest.mark.parametrize("text", ["\ufeffarrival_s,input_len,output_len\r\n0,8,4\r\n",
                                  " arrival_s , input_len , output_len\n0, 8, 4\n",
                                  '\ufeff{"arrival_s": 0, "input_len": 8, "output_len": 4}\n'])
def test_a_trace_with_a_bom_or_spaced_header_is_read(text):
    # Each was refused with "the CSV header lacks arrival_s", a name the header visibly has.
    assert [(r.input_len, r.output_len) for r in parse_trace(text, "t.csv").requests] == [(8, 4)]


def test_a_json_array_trace_is_refused_as_json_not_as_a_csv_header():
    with pytest.raises(RankflowError, match="expected a JSON object"):
        parse_trace('[{"arrival_s": 0, "input_len": 8, "output_len": 4}]', "t.json")
