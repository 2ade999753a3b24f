"""run_perf.py end to end: outputs, determinism, and one-line errors with exit code 2."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends.base import SCHEMA_VERSION
from tests.helpers import ROOT

HW = str(ROOT / "hardware_configs" / "A100-SXM4-80GB.yaml")
MODEL = str(ROOT / "model_configs" / "llama2-7b.yaml")
SMALL = ["--set", "model.layers=4", "--set", "workload.global_batch=16"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_perf.py"), *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=120)


def test_summary_json_trace_and_graph(tmp_path):
    out = tmp_path / "r.json"
    trace = tmp_path / "t.json"
    graph = tmp_path / "g"
    p = run("--hardware_config", HW, "--model_config", MODEL, *SMALL, "--set", "parallelism.tp=2",
            "--set", "parallelism.dp=4", "--json", str(out), "--trace", str(trace), "--graph", str(graph))
    assert p.returncode == 0, p.stderr
    for word in ("Step time", "tokens/s", "MFU", "HFU", "exposed tp comm", "pipeline bubble", "Memory per GPU"):
        assert word in p.stdout
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == SCHEMA_VERSION and doc["gpus"] == 8
    parts = doc["breakdown_s"]
    assert parts["compute"] + sum(parts["exposed_comm"].values()) + parts["pipeline_bubble"] == pytest.approx(
        doc["step_time_s"])
    assert 0 < doc["flops"]["mfu"] <= doc["flops"]["hfu"] < 1
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e["ph"] == "X" and e["dur"] > 0 for e in events)
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert "<svg" in (tmp_path / "g.html").read_text()


def test_outputs_are_byte_identical_across_runs(tmp_path):
    digests = []
    for i in range(2):
        out = tmp_path / f"r{i}.json"
        trace = tmp_path / f"t{i}.json"
        p = run("--hardware_config", HW, "--model_config", MODEL, *SMALL, "--set", "parallelism.pp=2",
                "--set", "parallelism.dp=4", "--json", str(out), "--trace", str(trace), "--quiet")
        assert p.returncode == 0, p.stderr
        digests.append(hashlib.sha256(out.read_bytes() + trace.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


BAD_INPUTS = [
    (["--set", "parallelism.tp=3"], "parallelism.tp"),              # tp does not divide heads
    (["--set", "parallelism.tpp=2"], "parallelism.tpp"),            # unknown field
    (["--set", "parallelism.tp=eight"], "parallelism.tp"),          # wrong type
    (["--set", "workload.global_batch=63"], "workload.global_batch"),
    (["--set", "nosuch.key=1"], "--set"),
    (["--set", "parallelism.schedule=zigzag"], "parallelism.schedule"),
]


@pytest.mark.parametrize("extra,field", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2(tmp_path, extra, field):
    out = tmp_path / "r.json"
    p = run("--hardware_config", HW, "--model_config", MODEL, *extra, "--json", str(out))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert field in lines[0] and "fix:" in lines[0]
    assert not out.exists() and not list(tmp_path.iterdir())


def test_missing_file_and_unknown_yaml_field(tmp_path):
    p = run("--hardware_config", str(tmp_path / "nope.yaml"), "--model_config", MODEL)
    assert p.returncode == 2 and "nope.yaml" in p.stderr and "not found" in p.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(MODEL).read_text().replace("vocab: 32000", "vocab: 32000\n  vocabulary: 1"))
    p = run("--hardware_config", HW, "--model_config", str(bad))
    assert p.returncode == 2 and "bad.yaml" in p.stderr and "model.vocabulary" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_unwritable_output_leaves_nothing(tmp_path):
    p = run("--hardware_config", HW, "--model_config", MODEL, *SMALL, "--json", str(tmp_path / "no" / "r.json"))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("suffix", ["", ".dot", ".html"])
def test_a_graph_prefix_that_ends_in_a_directory_is_refused(capsys, tmp_path, suffix):
    from rankflow.cli import main

    # --graph out/ wrote the hidden files out/.dot and out/.html and exited 0.
    rc = main(["--hardware_config", HW, "--model_config", MODEL, *SMALL, "--graph", f"{tmp_path}/{suffix}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--graph" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_trace_ranks_that_would_repeat_the_dag_past_its_node_limit_are_refused(monkeypatch):
    import graphgen.program
    from graphgen.errors import RankflowError
    from rankflow import api
    from rankflow.cli import _ranks

    # 64 ranks of one stage at the DAG limit wrote 64 copies of a 1.5M-node timeline (GiB, minutes).
    sc = api.load_scenario(MODEL, HW, None, ["model.layers=4", "workload.global_batch=16"])
    prog = api.build(sc, "ops")
    per_rank = len(prog.roles[0].nodes)
    monkeypatch.setattr(graphgen.program, "MAX_NODES", 2 * per_rank)
    assert _ranks(None, prog) == [0] and _ranks("0,1", prog) == [0, 1]
    with pytest.raises(RankflowError, match="node events") as exc:
        _ranks("0,1,2", prog)
    assert exc.value.field == "--trace-ranks"


def test_python_m_rankflow_names_itself_in_its_errors(monkeypatch, capsys):
    from rankflow.cli import main

    # Run as `python -m rankflow`, argv[0] is .../rankflow/__main__.py: the fix read "see __main__.py --help".
    monkeypatch.setattr(sys, "argv", [str(ROOT / "rankflow" / "__main__.py")])
    assert main() == 2
    err = capsys.readouterr().err
    assert "see rankflow --help" in err and "__main__" not in err
