"""Inputs a hostile session found answered wrongly (a traceback, an impossible number, a run without
bound, an injected line in a launch script): each now ends in one line on stderr with exit 2 and no
output file, or in a bounded, finite answer."""

from __future__ import annotations

import random
import signal

import pytest

from graphgen.errors import RankflowError
from graphgen.search.space import Constraints
from graphgen.serving.lengths import FixedLength, LognormalLength
from graphgen.serving.model import Request
from graphgen.serving.sources import PoissonSource, TraceSource
from rankflow import tool
from rankflow.refusal import refusing
from tests.contract import assert_contract, cli
from tests.helpers import ROOT

H100 = ROOT / "hardware_configs" / "H100-SXM5-80GB.yaml"
MIXTRAL = ROOT / "model_configs" / "mixtral-8x7b.yaml"
LLAMA8 = ROOT / "model_configs" / "llama3.1-8b.yaml"
MOE = ["--set", "parallelism.ep=8", "--set", "workload.global_batch=16", "--set", "model.layers=4"]


@pytest.mark.parametrize("setting,field", [
    ("workload.expert_load=[0,0,0,0,0,0,0,0]", "workload.expert_load"),  # was a ZeroDivisionError
    ("workload.expert_load=[0.5,0.5]", "workload.expert_load"),            # 2 fractions for 8 experts
    ("model.moe.first_dense_layers=4", "first_dense_layers"),             # no layer left with experts
    ("model.moe.dense_layers=[9999]", "dense_layers"),
    ('model.name="x\\ntouch /tmp/rankflow-injected\\n#"', "model.name"),  # a line injected into a script
])
def test_impossible_or_unsafe_model_settings_are_refused(capsys, tmp_path, setting, field):
    out = tmp_path / "r.json"
    rc, _, err = cli(capsys, "--hardware_config", H100, "--model_config", MIXTRAL, *MOE, "--set", setting,
                     "--json", out)
    assert_contract(rc, err, [out])
    assert rc == 2 and field in err


def test_a_check_across_fields_names_the_fix_not_the_whole_section(capsys, tmp_path):
    out = tmp_path / "r.json"
    rc, _, err = cli(capsys, "--hardware_config", H100, "--model_config", MIXTRAL, *MOE, "--set", "model.moe.top_k=9",
                     "--json", out)
    assert_contract(rc, err, [out])
    assert "top_k (9) exceeds the number of experts (8)" in err and "{'experts'" not in err


def test_a_mapping_given_for_a_number_is_a_type_error_not_a_disagreement():
    from pydantic import ValidationError

    from graphgen.config import ParallelPlan, pydantic_error

    with pytest.raises(ValidationError) as exc:
        ParallelPlan.model_validate({"tp": {"a": 1}})
    text = str(pydantic_error(exc.value, "plan.yaml"))
    assert "agree" not in text and "valid integer" in text


def test_expert_load_on_a_dense_model_is_refused(capsys, tmp_path):
    rc, _, err = cli(capsys, "--hardware_config", H100, "--model_config", LLAMA8, "--set", "workload.expert_load=[1]")
    assert rc == 2 and "no experts" in err


def test_export_refuses_a_name_that_would_inject_a_shell_line(capsys, tmp_path):
    out = tmp_path / "launch.sh"
    rc = tool.main(["export", "--model_config", str(LLAMA8), "--hardware_config", str(H100), "--to", "megatron",
                    "--set", 'model.name="x\\ntouch /tmp/rankflow-injected\\n#"', "--out", str(out)])
    assert rc == 2 and not out.exists()
    assert "control character" in capsys.readouterr().err


def test_a_wide_lognormal_samples_within_bounds_without_overflow():
    dist = LognormalLength(100.0, 1000.0, 4096)
    rng = random.Random(0)
    got = [dist.sample(rng) for _ in range(2000)]
    assert min(got) >= 1 and max(got) <= 4096 and len(set(got)) > 2


def test_arrivals_beyond_what_a_double_can_time_are_refused():
    with pytest.raises(RankflowError, match="arrive over"):
        PoissonSource(1e-30, 100, FixedLength(8), FixedLength(8))
    with pytest.raises(RankflowError, match="arrival"):
        TraceSource((Request(0, 1e18, 8, 8),))


@pytest.mark.parametrize("flags,word", [
    (["--rate", "5", "--replicas", "10000000"], "replicas"),
    (["--rate", "5", "--scheduler", "disaggregated", "--prefill-replicas", "100000"], "prefill_replicas"),
    (["--rate", "0"], "above 0"),
    (["--concurrency", "0"], "at least 1"),
])
def test_serving_inputs_without_a_bound_are_refused(capsys, flags, word):
    rc = tool.main(["serve", "--model_config", str(LLAMA8), "--hardware_config", str(H100), "--requests", "50", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and word in err and "Traceback" not in err and err.count("\n") == 1


def test_search_refuses_unknown_schedules_and_unbounded_checks(capsys):
    with pytest.raises(RankflowError, match="unknown pipeline schedule 'foo'"):
        Constraints(schedules=("1f1b", "foo"))
    rc = tool.main(["search", "--model_config", str(LLAMA8), "--hardware_config", str(H100), "--gpus", "8",
                    "--check", "100000"])
    assert rc == 2 and "--check" in capsys.readouterr().err


def test_an_interrupt_or_termination_is_one_line_not_a_traceback(capsys):
    def stop() -> int:
        signal.raise_signal(signal.SIGTERM)  # unwinds as an interrupt, so cleanup runs
        return 0

    before = signal.getsignal(signal.SIGTERM)
    assert refusing("rankflow", stop) == 130
    assert capsys.readouterr().err == "rankflow: interrupted\n"
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back


def test_an_unknown_command_is_named(capsys):
    assert tool.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_an_efficiency_curve_gives_one_value_per_x(capsys, tmp_path):
    text = H100.read_text()
    assert "points: [[512, 0.16], [1024, 0.22]" in text
    hw = tmp_path / "hw.yaml"
    hw.write_text(text.replace("points: [[512, 0.16], [1024, 0.22]", "points: [[512, 0.16], [512, 0.22]", 1))
    out = tmp_path / "r.json"
    rc, _, err = cli(capsys, "--hardware_config", hw, "--model_config", LLAMA8, "--json", out)
    assert_contract(rc, err, [out])
    assert rc == 2 and "strictly increasing" in err


def test_a_swept_key_that_is_wrong_is_named_as_the_sweeps(capsys):
    rc = tool.main(["sweep", "--model_config", str(LLAMA8), "--hardware_config", str(H100), "--over", "foo.bar=1,2"])
    assert rc == 2 and "--over: unknown section 'foo'" in capsys.readouterr().err


def test_a_sweep_without_hardware_is_one_line_not_a_traceback(capsys):
    # it has no list of shipped clusters to fall back on, as recommend has
    rc = tool.main(["sweep", "--model_config", str(LLAMA8), "--gpus", "8:16"])
    err = capsys.readouterr().err
    assert rc == 2 and "--hardware_config" in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_pipe_given_as_a_config_is_named_as_such(capsys, tmp_path):
    import os

    fifo = tmp_path / "m.yaml"
    os.mkfifo(fifo)
    rc, _, err = cli(capsys, "--hardware_config", H100, "--model_config", fifo)
    assert rc == 2 and "not a regular file" in err
