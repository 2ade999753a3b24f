"""`rankflow serve`: simulation, capacity and cheapest-deployment answers through the CLI, their output
files, and the one-line refusals of bad input with nothing written."""

from __future__ import annotations

import json

import pytest

from rankflow.tool import main
from tests.helpers import ROOT

LLAMA8 = str(ROOT / "model_configs" / "llama3.1-8b.yaml")
H100 = str(ROOT / "hardware_configs" / "H100-SXM5-80GB.yaml")
A100 = str(ROOT / "hardware_configs" / "A100-SXM4-80GB.yaml")
BASE = ["serve", "--model_config", LLAMA8, "--hardware_config", H100, "--requests", "200", "--output-len", "64"]


def _one_line_error(capsys, *words: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rankflow serve: error:"), err
    for w in words:
        assert w in err[0], err[0]


def test_simulate_writes_its_json_and_trace(tmp_path, capsys):
    out, trace = tmp_path / "s.json", tmp_path / "t.json"
    assert main([*BASE, "--rate", "4", "--input-len", "uniform:128:1024", "--json", str(out), "--perfetto",
                 str(trace)]) == 0
    text = capsys.readouterr().out
    assert "TTFT" in text and " ms" in text and "requests/s" in text
    doc = json.loads(out.read_text())
    assert doc["schema"] == "rankflow.serving" and doc["requests"]["completed"] == 200
    lat = doc["latency"]
    assert 0 < lat["ttft_s"]["p50"] <= lat["ttft_s"]["p99"] and lat["tpot_s"]["mean"] > 0
    assert doc["throughput"]["requests_per_s"] == pytest.approx(4, rel=0.25)
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("cat") == "iteration" for e in events) and any(e.get("cat") == "request" for e in events)


def test_faster_hardware_serves_more_within_the_slo(tmp_path):
    caps = {}
    for hw in (A100, H100):
        out = tmp_path / "c.json"
        assert main([*BASE[:4], hw, *BASE[5:], "--capacity", "--slo-ttft", "0.5", "--slo-tpot", "0.05", "--quiet",
                     "--json", str(out)]) == 0
        caps[hw] = json.loads(out.read_text())["rate_per_s"]
    assert 0 < caps[A100] < caps[H100]


def test_cheapest_names_hardware_replicas_and_cost(tmp_path):
    out = tmp_path / "c.json"
    assert main([*BASE[:4], H100, A100, *BASE[5:], "--cheapest", "--rate", "30", "--tp", "1,2", "--json",
                 str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "rankflow.serving" and doc["kind"] == "cheapest"
    met = {c["label"]: c for c in doc["candidates"] if c["slo_met"]}
    best = met[doc["best"]]
    assert best["gpus"] == best["replicas"] * best["gpus_per_replica"] >= 1
    # every candidate serves the same load, so the cheapest per hour is the cheapest per token
    assert best["usd_per_hour"] == min(c["usd_per_hour"] for c in met.values())
    assert best["usd_per_million_output_tokens"] > 0
    assert {c["label"].split()[0] for c in doc["candidates"]} == {"H100-SXM5-80GB", "A100-SXM4-80GB"}


@pytest.mark.parametrize("args, words", [
    (["--trace", "missing.csv"], ("missing.csv", "not found")),
    (["--trace", "t.csv", "--seed", "3"], ("--seed", "--trace")),  # a trace fixes arrivals and lengths
    (["--trace", "t.csv", "--rate", "2"], ("--rate", "--trace")),
    (["--rate", "1", "--input-len", "200000"], ("max_context", "131072")),
    (["--rate", "1", "--input-len", "lots"], ("--input-len", "uniform")),
    (["--capacity", "--slo-ttft", "0.0001"], ("closest", "TTFT")),
    (["--rate", "-3"], ("--rate",)),
    (["--cheapest"], ("--rate",)),
    # capacity questions simulate their requests once per probe (and per option): bounded, not minutes
    (["--capacity", "--requests", "10001"], ("--requests", "10,000")),
    (["--cheapest", "--rate", "5", "--tp", "1,2,4,8", "--pp", "1,2", "--requests", "2501"], ("--requests", "8 options")),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o.json"
    base = BASE[:5] if "--trace" in args else BASE  # a trace brings its own requests and lengths
    assert main([*base, *args, "--json", str(out)]) == 2
    assert not out.exists()
    _one_line_error(capsys, *words)


def test_a_malformed_trace_names_its_line_and_field(tmp_path, capsys):
    bad = tmp_path / "t.csv"
    bad.write_text("arrival_s,input_len,output_len\n0.0,100,10\n0.5,abc,10\n")
    assert main([*BASE[:5], "--trace", str(bad), "--json", str(tmp_path / "o.json")]) == 2
    _one_line_error(capsys, "line 3", "input_len")
    good = tmp_path / "g.csv"
    good.write_text("arrival_s,input_len,output_len\n0.0,100,10\n0.5,300,20\n")
    assert main([*BASE[:5], "--trace", str(good), "--json", str(tmp_path / "o.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "o.json").read_text())["requests"]["output_tokens"] == 30
    # a request no replica can hold is named by its line, not its place after sorting by arrival
    long = tmp_path / "l.csv"
    long.write_text("arrival_s,input_len,output_len\n0.5,100,10\n0.1,200000,10\n")
    assert main([*BASE[:5], "--trace", str(long), "--json", str(tmp_path / "o2.json")]) == 2
    _one_line_error(capsys, str(long), "max_context", "line 3")


def test_latency_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install -e '.[plots]')")
    png = tmp_path / "l.png"
    assert main([*BASE, "--rate", "4", "--png", str(png), "--quiet"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_length_errors_name_the_flag_the_user_wrote():
    from graphgen.errors import RankflowError
    from rankflow import serve

    for text, words in (("0", "whole number"), ("uniform:5:1", "below lo")):
        with pytest.raises(RankflowError) as exc:
            serve.length(text, "--input-len")
        assert exc.value.field == "--input-len" and words in exc.value.one_line()


def test_an_uneven_pipeline_is_paced_by_its_slowest_stage():
    # Llama-3.2-1B on 4 stages: the last also holds the LM head. With four engines taking turns, each
    # engine's iteration comes round every 4 x that stage's time, longer than one whole pass.
    from rankflow import api, serve

    sc = serve.inference_scenario("llama3.2-1b", "h100", None, [
        "parallelism.pp=4", "workload.inference.phase=decode", "workload.inference.batch=64",
        "workload.inference.context_len=1"])
    res = api.simulate(sc)
    slowest = max(r.compute_s for r in res.roles)
    assert serve.iteration_s(res, 4) == pytest.approx(4 * slowest) and 4 * slowest > res.step_time_s * 1.1
    assert serve.iteration_s(res, 1) == res.step_time_s
    model = serve.engine_model(sc)
    assert model.virtual_engines == 4
    assert model.iteration_time(0, 0, 64, 64) >= 4 * slowest * 0.99


@pytest.mark.parametrize("flags,flag", [
    (["--batch-size", "4"], "--batch-size"),
    (["--scheduler", "static", "--max-seqs", "8"], "--max-seqs"),
    (["--prefill-replicas", "2"], "--prefill-replicas"),
])
def test_a_scheduler_setting_the_scheduler_does_not_take_is_refused(tmp_path, capsys, flags, flag):
    # --batch-size with the default continuous scheduler ran and dropped it without a word.
    out = tmp_path / "s.json"
    assert main([*BASE, "--rate", "2", "--json", str(out), *flags]) == 2
    _one_line_error(capsys, flag)
    assert not out.exists()


def test_data_parallelism_of_a_serving_replica_is_refused_not_ignored(tmp_path, capsys):
    # --set parallelism.dp=4 gave the same numbers as dp=1: one replica's engine has no dp; --replicas scales out.
    out = tmp_path / "s.json"
    assert main([*BASE, "--rate", "2", "--set", "parallelism.dp=4", "--json", str(out)]) == 2
    _one_line_error(capsys, "parallelism.dp", "--replicas")
    assert not out.exists()


@pytest.mark.parametrize("flags,flag", [
    (["--capacity", "--rate", "3"], "--rate"),
    (["--rate", "3", "--tp", "2"], "--tp"),
    (["--cheapest", "--rate", "3", "--replicas", "4"], "--replicas"),
    (["--cheapest", "--rate", "3", "--replicas", "2", "--tp", "1"], "--replicas"),
])
def test_a_flag_the_chosen_mode_never_reads_is_refused(tmp_path, capsys, flags, flag):
    # Each ran and exited 0 with the flag dropped: --tp 2 without --cheapest served at the plan's tp=1.
    out = tmp_path / "s.json"
    assert main([*BASE, *flags, "--json", str(out)]) == 2
    _one_line_error(capsys, f"error: {flag}:", "ignored")
    assert not out.exists()
