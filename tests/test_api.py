"""rankflow.api: the README's example runs, scenarios from files, dicts and objects agree, the plan is
apart from the cluster, and the coarse DAG agrees with the op-level one."""

from __future__ import annotations

import re

import pytest
import yaml

from graphgen.config import ParallelPlan
from graphgen.errors import RankflowError
from rankflow import api
from tests.helpers import A100, ROOT, TINY_LLAMA, run, scenario

MODEL = ROOT / "model_configs" / "llama2-7b.yaml"


def test_readme_python_example_runs():
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## Python API.*?```python\n(.*?)```", readme, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})  # noqa: S102


def test_files_dicts_and_objects_make_the_same_scenario():
    from_files = api.load_scenario(MODEL, A100, overrides=["parallelism.tp=2", "parallelism.dp=4"])
    model = yaml.safe_load(MODEL.read_text())
    hw = yaml.safe_load(A100.read_text())
    from_dicts = api.load_scenario(model, hw, {"parallelism": {**hw["parallelism"], "tp": 2, "dp": 4}})
    from_objects = api.load_scenario(api.load_model(MODEL), api.load_hardware(A100),
                                     from_files.plan)
    for sc in (from_dicts, from_objects):
        assert (sc.model, sc.workload, sc.hardware, sc.plan) == (
            from_files.model, from_files.workload, from_files.hardware, from_files.plan)
    assert api.simulate(from_dicts).step_time_s == api.simulate(from_files).step_time_s


def test_plan_file_replaces_the_hardware_plan_and_set_still_applies(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("parallelism:\n  tp: 4\n  dp: 2\n  zero_stage: 1\n")
    sc = api.load_scenario(MODEL, A100, plan, overrides=["parallelism.tp=2", "parallelism.dp=4"])
    assert (sc.plan.tp, sc.plan.dp, sc.plan.zero_stage) == (2, 4, 1)
    assert sc.plan_file == str(plan)
    plan.write_text("parallelism:\n  tp: 3\n")
    with pytest.raises(RankflowError) as err:
        api.load_scenario(MODEL, A100, plan)
    assert str(plan) in err.value.one_line() and "parallelism.tp" in err.value.one_line()


def test_a_new_plan_neither_rereads_nor_revalidates_the_cluster(monkeypatch):
    sc = api.load_scenario(MODEL, api.load_hardware(A100))
    import graphgen.config.files
    import rankflow.files

    def refuse(*args, **kwargs):
        raise AssertionError("the cluster was read or validated again")

    monkeypatch.setattr(rankflow.files, "read_mapping", refuse)
    monkeypatch.setattr(graphgen.config.files, "parse_hardware_config", refuse)
    other = sc.with_plan(tp=2, dp=4)
    assert other.hardware is sc.hardware and other.plan.tp == 2
    assert api.simulate(other).step_time_s != api.simulate(sc).step_time_s
    with pytest.raises(RankflowError, match="parallelism.tp"):
        sc.with_plan(tp=3)


def test_unknown_backend_is_one_line():
    with pytest.raises(RankflowError, match="execution_backend.model"):
        api.load_scenario(MODEL, A100, overrides=["execution_backend.model=magic"])


def test_memory_needs_no_program_and_matches_the_result():
    sc = scenario(TINY_LLAMA, {"global_batch": 8}, pp=2, dp=2, zero_stage=1)
    report = api.memory(sc)
    assert report.roles == run(sc).memory and report.fits
    assert report.peak.total == max(m.total for m in report.roles)


EXAMPLES = [(m, A100) for m in sorted((ROOT / "model_configs").glob("*.yaml"))] + [
    (MODEL, h) for h in sorted((ROOT / "hardware_configs").glob("*.yaml"))]


@pytest.mark.parametrize("model,hw", EXAMPLES, ids=lambda p: p.stem)
def test_coarse_and_op_level_dags_agree_on_shipped_examples(model, hw):
    """Every shipped model on the A100 file's plan, and Llama-2-7B on every shipped hardware file's
    plan, with two microbatches per replica: step time within 1 %, memory exactly."""
    cluster = api.load_hardware(hw)
    sets = [] if "bf16" in cluster.device.peak_tflops else ["workload.precision=fp16"]
    mb = api.load_model(model).workload.micro_batch
    sc = api.load_scenario(model, hw, overrides=[*sets, f"workload.global_batch={2 * cluster.parallelism.dp * mb}"])
    coarse, ops = api.simulate(sc, detail="coarse"), api.simulate(sc, detail="ops")
    assert coarse.step_time_s == pytest.approx(ops.step_time_s, rel=0.01)
    assert coarse.memory == ops.memory
    assert sum(r.nodes for r in coarse.roles) < sum(r.nodes for r in ops.roles)


def test_plan_object_round_trip():
    plan = ParallelPlan(tp=2, dp=4, zero_stage=1)
    sc = api.load_scenario(MODEL, A100, plan)
    assert sc.plan == plan
