"""Tensor-parallel communication overlapped with the GEMMs beside it (TE userbuffers, torchtitan's async
TP): where the lowering puts each collective, what it saves, and that both backends see it."""

from __future__ import annotations

import os

import pytest

from graphgen.model.ops import OpKind
from rankflow import api
from tests.helpers import TINY_LLAMA, scenario

MODEL = dict(TINY_LLAMA, layers=2)
WL = {"global_batch": 4, "seq_len": 2048}


def _plan(**extra):
    return scenario(MODEL, WL, tp=4, sp=True, dp=2, **extra)


def _is_gemm(prog, item) -> bool:
    ops = [prog.layer_graph.blocks[b].ops[i] for b, i, _ in item.ops]
    return len(ops) == 1 and ops[0].kind is OpKind.MATMUL


def test_every_tp_collective_runs_beside_a_gemm_of_its_own():
    prog = api.build(_plan(tp_overlap=True), "coarse")
    seen = 0
    for tpl in prog.templates:
        for i, it in enumerate(tpl.items):
            if it.is_comm and it.axis == "tp" and it.parallel:
                assert not tpl.items[i + 1].is_comm and _is_gemm(prog, tpl.items[i + 1]), (it.name, tpl.items[i + 1])
                seen += 1
    assert seen >= 8  # two all-gathers and two reduce-scatters a layer, each way
    # without the option no TP collective runs beside anything
    plain = api.build(_plan(), "coarse")
    assert not any(it.parallel for tpl in plain.templates for it in tpl.items if it.axis == "tp")


def test_overlap_hides_tp_communication_and_never_beats_the_compute():
    a, b = api.simulate(_plan()), api.simulate(_plan(tp_overlap=True))
    assert b.step_time_s < a.step_time_s
    assert b.breakdown.exposed_comm["tp"] < a.breakdown.exposed_comm["tp"]
    assert b.step_time_s >= a.breakdown.compute  # overlap hides communication, not compute
    # coarse and op-level DAGs agree
    assert api.simulate(_plan(tp_overlap=True), detail="ops").step_time_s == pytest.approx(b.step_time_s, rel=1e-9)


def test_overlap_without_sequence_parallelism_is_refused():
    from graphgen.errors import RankflowError

    with pytest.raises(RankflowError) as exc:
        scenario(MODEL, WL, tp=4, sp=False, tp_overlap=True)
    assert exc.value.field == "parallelism.tp_overlap" and "sp=true" in exc.value.fix
    assert api.simulate(scenario(MODEL, WL, tp=1, tp_overlap=True)).step_time_s > 0  # tp 1: nothing to overlap


@pytest.mark.skipif(not os.environ.get("ASTRA_SIM_BIN"), reason="ASTRA_SIM_BIN is not set: no ASTRA-sim build to run")
def test_astra_sim_sees_the_overlap_too():
    a, b = api.simulate(_plan(), backend="astra"), api.simulate(_plan(tp_overlap=True), backend="astra")
    assert b.step_time_s < a.step_time_s
