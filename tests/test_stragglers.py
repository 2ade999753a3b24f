"""The slowest-host wait (graphgen.stragglers): SimuMax's straggler model, in both evaluators, the
breakdown, the JSON and the text report; none for one host, one replica or serving."""

from __future__ import annotations

import pytest

from graphgen.search.fast import FastStep, fast_step_time
from graphgen.stragglers import independent_hosts, straggler_factor
from rankflow import api
from reports.json_out import result_to_dict
from reports.text import summary
from tests.helpers import A100, TINY_LLAMA, hardware

MOE = dict(TINY_LLAMA, moe={"experts": 16, "top_k": 2, "expert_ffn_hidden": 256})


def _scenario(model=TINY_LLAMA, spread: float | None = None, global_batch: int = 128, **plan):
    overrides = [(f"parallelism.{k}", v) for k, v in {"dp": 1, "zero_stage": 0, **plan}.items()]
    if spread is not None:
        overrides.append(("stragglers.spread", spread))
    return api.load_scenario({"model": dict(model), "workload": {"seq_len": 512, "global_batch": global_batch,
                                                                 "micro_batch": 1}},
                             hardware(A100), overrides=overrides)


def test_shipped_hardware_carries_simumax_spread_with_its_source():
    st = hardware(A100).stragglers
    assert st.spread == 0.09 and "SimuMax" in st.source and "2208.11035" in st.source


@pytest.mark.parametrize("dp,hosts,factor", [
    (8, 1, 1.0),       # one DGX: its GPUs vary together
    (16, 2, 1.045),    # SimuMax: 1 + 1/2 x 0.09 x sqrt(1)
    (128, 16, 1.144),  # 1 + 4/5 x 0.09 x sqrt(4)
])
def test_factor_follows_simumax_over_hosts(dp, hosts, factor):
    sc = _scenario(dp=dp)
    assert independent_hosts(sc) == hosts
    assert straggler_factor(sc) == pytest.approx(factor, abs=1e-12)


def test_no_more_independent_hosts_than_replicas():
    # 16 GPUs over 2 hosts but one model replica (tp 4 x pp 4): the hosts cannot drift apart in steps
    sc = _scenario(global_batch=8, tp=4, pp=4)
    assert sc.world == 16 and independent_hosts(sc) == 1 and straggler_factor(sc) == 1.0
    # MoE layers: the expert-data-parallel replicas cap it too
    moe = _scenario(MOE, global_batch=16, dp=16, ep=16)
    assert moe.plan.edp == 1 and straggler_factor(moe) == 1.0


def test_step_breakdown_and_outputs_include_the_wait():
    sc, alone = _scenario(dp=128), _scenario(dp=128, spread=0.0)
    r, r0 = api.simulate(sc), api.simulate(alone)
    assert r0.breakdown.stragglers == 0.0 and not any("slowest" in n for n in r0.notes)
    assert r.step_time_s == pytest.approx(1.144 * r0.step_time_s, rel=1e-12)
    assert r.breakdown.stragglers == pytest.approx(0.144 * r0.step_time_s, rel=1e-12)
    assert r.breakdown.total == pytest.approx(r.step_time_s, rel=1e-12)
    assert r.mfu == pytest.approx(r0.mfu / 1.144, rel=1e-12)
    assert any("x 1.144" in n and "16 independently varying hosts" in n for n in r.notes)
    assert result_to_dict(r)["breakdown_s"]["stragglers"] == r.breakdown.stragglers
    assert "slowest-host wait" in summary(r) and "slowest-host wait" not in summary(r0)


def test_fast_evaluator_adds_the_same_wait():
    sc = _scenario(dp=16)
    raw = FastStep(sc, {}).step_time()
    assert fast_step_time(sc, {}) == pytest.approx(1.045 * raw, rel=1e-12)
    assert fast_step_time(sc, {}) == pytest.approx(api.simulate(sc).step_time_s, rel=1e-9)


def test_serving_replicas_wait_for_no_one():
    sc = api.load_scenario({"model": dict(TINY_LLAMA), "workload": {
        "run_type": "inference", "seq_len": 512, "global_batch": 128, "micro_batch": 1,
        "inference": {"phase": "decode", "batch": 4, "input_len": 128}}}, hardware(A100),
        overrides=[("parallelism.dp", 16)])
    assert straggler_factor(sc) == 1.0


def test_trace_shows_the_wait_after_the_hosts_own_timeline():
    from reports.trace import chrome_trace

    sc = _scenario(dp=16)
    prog, ev = api.evaluate(sc, detail="ops")
    events = chrome_trace(prog, ev.timeline, [0])["traceEvents"]
    wait = [e for e in events if e.get("cat") == "stragglers"]
    assert len(wait) == 1
    # the trace writes microseconds to three decimals: 1 ns
    assert (wait[0]["ts"] + wait[0]["dur"]) / 1e6 == pytest.approx(ev.result.step_time_s, abs=2e-9)
    assert wait[0]["dur"] / 1e6 == pytest.approx(ev.result.breakdown.stragglers, abs=1e-9)
    assert ev.result.breakdown.stragglers > 1e-6
    one = _scenario(dp=8)
    prog1, ev1 = api.evaluate(one, detail="ops")
    assert not [e for e in chrome_trace(prog1, ev1.timeline, [0])["traceEvents"] if e.get("cat") == "stragglers"]


def test_bottleneck_names_what_else_takes_a_share_of_the_step():
    # 16 hosts: the slowest-host wait is 12.6 % of the step; beside the largest part it is named with its share
    from reports.bottleneck import bottleneck

    r = api.simulate(_scenario(dp=128))
    limit = bottleneck(r)
    assert limit.kind != "stragglers"
    assert "waiting for the slowest host 13 %" in limit.evidence
    r0 = api.simulate(_scenario(dp=128, spread=0.0))
    assert "slowest host" not in bottleneck(r0).evidence
