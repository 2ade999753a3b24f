"""Hostile input: every case ends in an answer with finite numbers, or one line on stderr with exit 2,
no traceback and no output file; identical inputs give identical bytes.

The CLI runs in process here (rankflow.cli.main), so a traceback is a test error."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankflow.cli import main
from tests.contract import assert_contract, cli, finite, write
from tests.helpers import ROOT, TINY_LLAMA, run, scenario

HW = ROOT / "hardware_configs" / "A100-SXM4-80GB.yaml"
MODEL = ROOT / "model_configs" / "llama2-7b.yaml"
SMALL = ["--set", "model.layers=2", "--set", "workload.global_batch=8"]


MODEL_TEXT = MODEL.read_text()

BAD_MODEL_FILES = {
    "binary": MODEL_TEXT.replace("name: Llama-2-7B", "name: !!binary aGVsbG8="),
    "set": MODEL_TEXT.replace("name: Llama-2-7B", "name: !!set {a, b}"),
    "timestamp": MODEL_TEXT.replace("layers: 32", "layers: 2024-01-01T10:00:00"),
    "deep": "model: " + "[" * 3000 + "]" * 3000,
    "duplicate": MODEL_TEXT + "workload:\n  seq_len: 8\n",
    "bool as number": MODEL_TEXT.replace("heads: 32", "heads: true"),
    "infinite": MODEL_TEXT.replace("hidden: 4096", "hidden: .inf"),
    "not a mapping": "- 1\n- 2\n",
    "bad syntax": "model: [\n",
}


@pytest.mark.parametrize("case", sorted(BAD_MODEL_FILES))
def test_bad_model_files_are_one_line(capsys, tmp_path, case):
    path = write(tmp_path, "m.yaml", BAD_MODEL_FILES[case])
    out = tmp_path / "r.json"
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", path, "--json", out)
    assert rc == 2
    assert_contract(rc, err, [out])
    assert "m.yaml" in err


def test_alias_bomb_is_refused_quickly(capsys, tmp_path):
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 12):
        text += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
    path = write(tmp_path, "bomb.yaml", text + "model: *a11\n")
    t0 = time.perf_counter()
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", path)
    assert rc == 2 and "expands" in err and time.perf_counter() - t0 < 10


def test_a_date_as_a_name_is_kept_as_written(capsys, tmp_path):
    path = write(tmp_path, "m.yaml", MODEL_TEXT.replace("name: Llama-2-7B", "name: 2024-01-01"))
    out = tmp_path / "r.json"
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", path, *SMALL, "--json", out, "--quiet")
    assert rc == 0, err
    assert json.loads(out.read_text())["model"] == "2024-01-01"


BAD_SETS = [
    ("node.intra.latency_us=.inf", "node.intra.latency_us"), ("device.peak_tflops.bf16=.inf", "peak_tflops"),
    ("device.hbm_gib=.inf", "device.hbm_gib"), ("device.hbm_bandwidth_gbs=.nan", "hbm_bandwidth_gbs"),
    ("device.launch_overhead_us=.inf", "launch_overhead_us"), ("parallelism.bucket_mb=.inf", "bucket_mb"),
    ("execution_backend.astra.timeout_s=.inf", "timeout_s"), ("parallelism.tp=true", "parallelism.tp"),
    ("model.layers=100000000000000000000000", "model.layers"), ("model..layers=4", "--set"),
    ("parallelism.recompute_every=40", "recompute_every"), ("workload.seq_len=8192", "workload.seq_len"),
    ("device.peak_tflops.bf16=1e-300", "peak_tflops"), ("node.intra.bandwidth_gbs=0", "bandwidth_gbs"),
    ("node.intra.efficiency=1e-300", "efficiency"), ("parallelism.tp=-2", "parallelism.tp"),
    ("parallelism=3", "parallelism"), ("workload.global_batch=1000000000", "workload.global_batch"),
    ("parallelism.schedule=[1]", "parallelism.schedule"), ("parallelism.schedule=[[1]]", "--set"),
    ("stragglers.spread=2", "stragglers.spread"), ("stragglers.spread=.nan", "stragglers.spread"),
]


@pytest.mark.parametrize("setting,field", BAD_SETS)
def test_values_that_must_be_refused(capsys, tmp_path, setting, field):
    out = tmp_path / "r.json"
    text = MODEL_TEXT if "max_position: 4096" in MODEL_TEXT else \
        MODEL_TEXT.replace("position_encoding: rope", "position_encoding: rope\n  max_position: 4096")
    model = write(tmp_path, "m.yaml", text)
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", model, "--set", setting, "--json", out)
    assert_contract(rc, err, [out])
    assert rc == 2 and field in err


BAD_FLAGS = [
    (["--memory-only", "--trace", "t.json"], "--trace"), (["--memory-only", "--chakra-out", "et"], "--chakra-out"),
    (["--json", ""], "--json"), (["--trace-ranks", "0"], "--trace-ranks"),
    (["--graph", "g", "--graph-max-nodes", "-5"], "--graph-max-nodes"), (["--quiet"], "--quiet"),
    (["--bogus"], "arguments"), (["--trace", "t.json", "--trace-ranks", "99"], "--trace-ranks"),
    (["--json", "r.json", "--trace", "r.json"], "same path"), (["--backend", "magic"], "backend"),
]


@pytest.mark.parametrize("flags,word", BAD_FLAGS)
def test_contradictory_or_empty_flags(capsys, tmp_path, flags, word):
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *SMALL, *flags, cwd=tmp_path)
    assert_contract(rc, err, [tmp_path / f for f in ("t.json", "r.json", "g.dot", "et")])
    assert rc == 2 and word in err
    assert list(tmp_path.iterdir()) == []


def test_usage_errors_name_the_command_typed(capsys):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, str(ROOT / "run_perf.py"), "--model_config", str(MODEL)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "run_perf.py --help" in p.stderr and "--hardware_config" in p.stderr


HF_CASES = {
    "architectures null": ({"architectures": [None], "hidden_size": 64}, "architectures"),
    "model_type list": ({"model_type": ["llama"]}, "model_type"),
    "hidden_act number": ({"model_type": "llama", "hidden_act": 5}, "hidden_act"),
    "hidden_act unknown": ({"model_type": "llama", "hidden_act": "xielu"}, "hidden_act"),
    "expansion_ratio text": ({"model_type": "mpt", "expansion_ratio": "4"}, "expansion_ratio"),
    "attn_config list": ({"model_type": "mpt", "attn_config": [1]}, "attn_config"),
    "no kv heads": ({"model_type": "mistral", "num_key_value_heads": 0}, "num_key_value_heads"),
    "moe keys on dense": ({"model_type": "mistral", "num_local_experts": 8}, "num_local_experts"),
    "layers bool": ({"model_type": "llama", "num_hidden_layers": True}, "num_hidden_layers"),
    "nan": ({"model_type": "llama", "hidden_size": "NaN"}, "hidden_size"),
}
LLAMA_HF = {"hidden_size": 256, "num_attention_heads": 8, "num_hidden_layers": 2, "intermediate_size": 512,
            "vocab_size": 1000, "max_position_embeddings": 4096}
MPT_HF = {"d_model": 256, "n_heads": 8, "n_layers": 2, "vocab_size": 1000}


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_malformed_hugging_face_configs(capsys, tmp_path, case):
    data, field = HF_CASES[case]
    base = MPT_HF if data.get("model_type") == "mpt" else LLAMA_HF
    text = json.dumps({**base, **data}).replace('"NaN"', "NaN")
    path = write(tmp_path, "config.json", text)
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", path, "--set", "workload.global_batch=8")
    assert_contract(rc, err, [])
    assert rc == 2 and field in err


def test_hugging_face_sliding_window_is_modelled(tmp_path):
    from rankflow import api

    path = write(tmp_path, "config.json", json.dumps({**LLAMA_HF, "model_type": "mistral", "sliding_window": 128}))
    mc = api.load_model(path)
    assert mc.model.sliding_window == 128 and mc.model.attention_kind(0) == "sliding"
    qwen = write(tmp_path, "q.json", json.dumps({**LLAMA_HF, "model_type": "qwen2", "sliding_window": 128,
                                                 "use_sliding_window": True, "max_window_layers": 1}))
    assert api.load_model(qwen).model.attention_pattern == ["full", "sliding"]
    off = write(tmp_path, "o.json", json.dumps({**LLAMA_HF, "model_type": "qwen2", "sliding_window": 128}))
    assert api.load_model(off).model.sliding_window is None


METHODS = st.sampled_from([{}, {"method": "lora"}, {"method": "qlora"}, {"method": "dora"},
                           {"method": "freeze", "frozen_layers": 3}, {"method": "lora", "train_embeddings": True}])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ft=METHODS, recompute=st.sampled_from(["none", "selective", "full"]), tp=st.sampled_from([1, 2]),
       pp=st.sampled_from([1, 2]), flash=st.booleans(), seq=st.sampled_from([256, 512, 32768, 262144]),
       window=st.sampled_from([None, 128, 4096]))
def test_utilisation_stays_within_its_bounds(ft, recompute, tp, pp, flash, seq, window):
    """0 < MFU <= HFU <= 1 whatever trains and however long the sequence: frozen weights run no
    weight-gradient GEMMs, and causal attention computes only the unmasked half, so the FLOPs MFU
    counts follow what is computed."""
    model = dict(TINY_LLAMA, sliding_window=window) if window else TINY_LLAMA
    sc = scenario(model, {"global_batch": 4, "seq_len": seq, "finetune": ft, "flash_attention": flash or seq > 4096},
                  tp=tp, pp=pp, recompute=recompute, zero_stage=0 if ft.get("method") == "qlora" else 1)
    res = run(sc)
    assert 0 < res.mfu <= res.hfu + 1e-12 <= 1


def test_lora_and_freeze_report_possible_utilisation(capsys, tmp_path):
    for sets in (["workload.finetune.method=lora"],
                 ["workload.finetune.method=freeze", "workload.finetune.frozen_layers=31"]):
        rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL,
                         *[a for s in sets for a in ("--set", s)], "--json", "r.json", "--quiet", cwd=tmp_path)
        assert rc == 0, err
        flops = json.loads((tmp_path / "r.json").read_text())["flops"]
        assert 0 < flops["mfu"] <= flops["hfu"] <= 1
        assert "frozen weights" in flops["mfu_definition"]


def test_huge_plans_answer_or_refuse_within_seconds(capsys, tmp_path):
    for sets in (["parallelism.dp=1000000000", "workload.global_batch=1000000000"], ["workload.global_batch=1000000"],
                 ["model.layers=1000000"]):
        t0 = time.perf_counter()
        rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL,
                         *[a for s in sets for a in ("--set", s)], "--json", "r.json", "--quiet", cwd=tmp_path)
        assert_contract(rc, err, [tmp_path / "r.json"])
        assert time.perf_counter() - t0 < 15
        (tmp_path / "r.json").unlink(missing_ok=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32))
def test_fuzzed_inputs_keep_the_contract(seed):
    """Mutated files, --set strings, HF configs and flags (benchmarks/fuzz_cases.py); the larger
    campaign with subprocesses and timeouts is `python -m benchmarks.fuzz`."""
    import contextlib
    import io
    import tempfile

    from benchmarks.fuzz_cases import case, outputs_of

    files, args = case(seed)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "out").mkdir()
        for name, text in files.items():
            (d / name).write_text(text)
        err = io.StringIO()
        old = os.getcwd()
        os.chdir(d)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = main(args)
        finally:
            os.chdir(old)
        outs = [d / p for p in outputs_of(args)]
        assert_contract(rc, err.getvalue(), outs)
        if rc == 0 and "--memory-only" not in args:
            assert all(p.exists() for p in outs), args


def test_parsed_hardware_keeps_its_plan_under_cluster_overrides():
    """A parsed hardware file passed with cluster overrides (a search re-using it) keeps its own plan."""
    from rankflow import api

    hw = api.load_hardware(HW)
    hw = hw.model_copy(update={"parallelism": hw.parallelism.model_copy(update={"tp": 2, "dp": 4})})
    model = {"model": TINY_LLAMA, "workload": {"seq_len": 512, "global_batch": 8}}
    sc = api.load_scenario(model, hw, overrides=["name=renamed", "node.intra.latency_us=3"])
    assert (sc.plan.tp, sc.plan.dp) == (2, 4)
    assert sc.hardware.name == "renamed" and sc.hardware.node.intra.latency_us == 3


@pytest.mark.parametrize("schedule,pp,v", [("interleaved", 1, 2), ("interleaved", 1, 4), ("zb-v", 2, 2),
                                           ("dualpipev", 2, 2), ("zb-v", 1, 2)])
def test_no_rank_sends_activations_to_itself(schedule, pp, v):
    """Neighbouring chunks on one stage hand over in memory: no send/recv to itself, but the consuming
    pass still waits for the producing one."""
    from graphgen.ir import ComputeNode, Phase, RecvNode, SendNode
    from tests.helpers import program

    sc = scenario(TINY_LLAMA, {"global_batch": 8}, pp=pp, virtual_stages=v, schedule=schedule)
    prog = program(sc)
    for role in prog.roles:
        assert not [n for n in role.nodes if isinstance(n, SendNode) and n.peer_role == role.id]
        assert not [n for n in role.nodes if isinstance(n, RecvNode) and n.peer_role == role.id]
    if pp == 1:  # chunk 1's first forward node depends on chunk 0's last forward node of the same microbatch
        nodes = prog.roles[0].nodes
        fwd = [n for n in nodes if isinstance(n, ComputeNode) and n.phase is Phase.FORWARD]
        first_c1 = next(n for n in fwd if n.chunk == 1 and n.microbatch == 0)
        last_c0 = max(n.id for n in fwd if n.chunk == 0 and n.microbatch == 0)
        assert last_c0 in first_c1.deps


def test_interleaving_one_stage_costs_what_one_chunk_does():
    one = run(scenario(TINY_LLAMA, {"global_batch": 8}, pp=1))
    two = run(scenario(TINY_LLAMA, {"global_batch": 8}, pp=1, virtual_stages=2, schedule="interleaved"))
    assert two.breakdown.exposed_comm["pp"] == 0
    assert two.step_time_s == pytest.approx(one.step_time_s, rel=1e-9)


def test_recosting_under_another_cluster_reports_that_cluster():
    """cost_program(prog, cluster): the Result names, peaks and sizes memory by the cluster costed."""
    from backends.analytical import replay
    from graphgen.costs.evaluate import cost_program
    from tests.helpers import hardware, program

    prog = program(scenario(TINY_LLAMA, {"global_batch": 8}, tp=2, dp=2), "coarse")
    h200 = hardware(ROOT / "hardware_configs" / "H200-SXM-141GB.yaml").cluster
    own = replay(prog, cost_program(prog)).result
    res = replay(prog, cost_program(prog, h200)).result
    assert own.hardware == prog.scenario.hardware.name
    assert res.hardware == h200.name and res.device == h200.device.name
    assert res.peak_flops_per_gpu == pytest.approx(h200.device.peak_tflops["bf16"] * 1e12)
    assert res.memory[0].capacity == pytest.approx(h200.device.hbm_gib * 2**30)
    assert res.peak_flops_per_gpu != own.peak_flops_per_gpu


def test_a_plan_file_with_only_a_backend_keeps_the_hardware_parallelism(capsys, tmp_path):
    from graphgen.config import ExecutionBackend, PlanConfig
    from rankflow import api

    plan = write(tmp_path, "p.yaml", "execution_backend:\n  model: analytical\n")
    rc, out, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, "--plan_config", plan,
                       "--memory-only")
    assert rc == 0, err
    assert "8 x A100" in out and "dp=8 zero=1" in out  # the hardware file's plan: dp 8, ZeRO-1
    sc = api.load_scenario(MODEL, HW, PlanConfig(execution_backend=ExecutionBackend()))
    assert (sc.plan.dp, sc.plan.zero_stage) == (8, 1)
    given = write(tmp_path, "q.yaml", "parallelism:\n  tp: 2\n")
    assert api.load_scenario(MODEL, HW, given).plan.dp == 1  # a plan file's parallelism still replaces it


@pytest.mark.parametrize("kwargs,field", [
    ({"detail": "fine"}, "detail"), ({"detail": None}, "detail"),
    ({"backend": "astra", "astra": {"bogus": 1}}, "bogus"), ({"astra": {"bogus": 1}}, "bogus"),
    ({"backend": "astra", "astra": {"mode": "weird"}}, "mode"),
    ({"backend": "astra", "astra": {"timeout_s": -1}}, "timeout_s"), ({"backend": "astra", "astra": "x"}, "astra"),
])
def test_api_options_are_checked(kwargs, field):
    """Bad evaluate/simulate options are RankflowErrors naming the option, never ValueError/TypeError."""
    from graphgen.errors import RankflowError
    from rankflow import api

    sc = scenario(TINY_LLAMA, {"global_batch": 8})
    with pytest.raises(RankflowError, match=field) as exc:
        api.evaluate(sc, **kwargs)
    assert "fix:" in exc.value.one_line()
    with pytest.raises(RankflowError, match="detail"):
        api.build(sc, "fine")


IGNORED_FLAGS = [
    (["--memory-only", "--layers"], "--layers"), (["--quiet", "--layers", "--json", "r.json"], "--layers"),
    (["--astra-bin", "/nowhere"], "--astra-bin"), (["--astra-mode", "scalable"], "--astra-mode"),
    (["--backend", "analytical", "--astra-network", "aware"], "--astra-network"),
    (["--detail", "coarse", "--trace", "t.json"], "--detail"), (["--detail", "coarse", "--graph", "g"], "--detail"),
    (["--detail", "coarse", "--chakra-out", "et"], "--detail"),
    (["--backend", "astra", "--astra-mode", "full", "--detail", "coarse"], "--detail"),
]


@pytest.mark.parametrize("flags,word", IGNORED_FLAGS)
def test_flags_that_would_be_ignored_are_refused(capsys, tmp_path, flags, word):
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *SMALL, *flags, cwd=tmp_path)
    assert_contract(rc, err, [tmp_path / f for f in ("t.json", "r.json", "g.dot", "et")])
    assert rc == 2 and word in err and "ASTRA_SIM_BIN" not in err
    assert list(tmp_path.iterdir()) == []


def test_trace_ranks_are_bounded(capsys, tmp_path):
    big = ["--set", "model.layers=2", "--set", "parallelism.dp=128", "--set", "workload.global_batch=128"]
    many = ",".join(map(str, range(100)))
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *big, "--trace", "t.json",
                     "--trace-ranks", many, cwd=tmp_path)
    assert_contract(rc, err, [tmp_path / "t.json"])
    assert rc == 2 and "--trace-ranks" in err and "at most 64" in err
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *big, "--trace", "t.json",
                     "--trace-ranks", "x" * 100_000, cwd=tmp_path)
    assert rc == 2 and len(err) < 400
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *big, "--trace", "t.json", "--quiet",
                     "--trace-ranks", ",".join(map(str, range(0, 128, 2))), cwd=tmp_path)
    assert rc == 0, err


TINY_MOE = dict(TINY_LLAMA, layers=8, kv_heads=8,
                moe={"experts": 8, "top_k": 2, "expert_ffn_hidden": 256, "shared_experts": 1})


@pytest.mark.parametrize("model,plan", [
    (dict(TINY_LLAMA, layers=8), dict(dp=2, zero_stage=3)),
    (dict(TINY_LLAMA, layers=8), dict(dp=4, pp=2, zero_stage=3, recompute="full", zero3_regather_after_recompute=True)),
    (dict(TINY_LLAMA, layers=8), dict(dp=2, pp=2, zero_stage=3, schedule="zb-h1", tp=2, sp=True)),
    (dict(TINY_LLAMA, layers=8), dict(dp=2, pp=2, zero_stage=3, schedule="interleaved", virtual_stages=2)),
    (TINY_MOE, dict(dp=2, zero_stage=3, recompute="full", zero3_regather_after_recompute=True, tp=2, sp=True)),
    (TINY_MOE, dict(dp=4, ep=2, pp=2, zero_stage=3, schedule="dualpipe")),
    (dict(TINY_LLAMA, layers=8), dict(dp=2, pp=2, zero_stage=1, overlap_param_gather=True)),
    (dict(TINY_LLAMA, layers=8), dict(dp=2, zero_stage=2, bucket_mb=0.01)),
])
@pytest.mark.parametrize("detail", ["coarse", "ops"])
def test_node_estimate_is_an_upper_bound(model, plan, detail):
    """The MAX_NODES guard must never let a program through on an undercount (ZeRO-3 coarse DAGs
    were undercounted about 1.6x)."""
    from graphgen.model.layer_graph import build_layer_graph
    from graphgen.parallel.pipeline import stage_layers
    from graphgen.program import block_shape, build_program, estimate_nodes, pass_templates

    sc = scenario(model, {"global_batch": 32}, **plan)
    lg = build_layer_graph(block_shape(sc))
    chunk_layers = stage_layers(sc.model, sc.plan)
    templates, ids = pass_templates(sc, lg, chunk_layers)
    estimate = estimate_nodes(sc, lg, chunk_layers, templates, ids, detail)
    actual = sum(len(r.nodes) for r in build_program(sc, detail).roles)
    assert actual <= estimate <= 2 * actual


def test_memory_only_answers_past_the_replay_bound(capsys, tmp_path):
    """--memory-only never replays the schedule, so a step too long to replay still gets its memory
    answer (within seconds); the replay itself is still refused, pointing at --memory-only."""
    big = ["--set", "parallelism.pp=4", "--set", "parallelism.dp=2", "--set", "workload.global_batch=80000000"]
    t0 = time.perf_counter()
    rc, out, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *big, "--memory-only",
                       "--json", "m.json", cwd=tmp_path)
    assert rc == 0, err
    assert time.perf_counter() - t0 < 10 and "stage3" in out
    doc = json.loads((tmp_path / "m.json").read_text())
    assert finite(doc)
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *big, "--json", "r.json", cwd=tmp_path)
    assert_contract(rc, err, [tmp_path / "r.json"])
    assert rc == 2 and "workload.global_batch" in err and "--memory-only" in err


@pytest.mark.parametrize("plan", [dict(pp=4), dict(pp=4, schedule="gpipe"), dict(pp=2, schedule="interleaved",
                                  virtual_stages=2), dict(pp=2, schedule="zb-h1"), dict(pp=2, schedule="zb-v",
                                  virtual_stages=2), dict(pp=2, schedule="dualpipe"), dict(pp=2, schedule="dualpipev",
                                  virtual_stages=2)])
def test_bounded_in_flight_walk_matches_the_full_walk(monkeypatch, plan):
    """Past the replay bound the in-flight peak comes from two short orders; it is the full walk's."""
    from graphgen import memory

    sc = scenario(dict(TINY_LLAMA, layers=8), {"global_batch": 96}, recompute="full", **plan)
    exact = memory.scenario_memory(sc)
    monkeypatch.setattr(memory, "MAX_STEPS", memory.schedule_steps(sc.plan, sum(memory._probe_counts(sc))))
    assert memory.schedule_steps(sc.plan, sc.microbatches) > memory.MAX_STEPS  # the bounded walk runs
    bounded = memory.scenario_memory(sc)
    for a, b in zip(exact, bounded, strict=True):
        assert b.activations == pytest.approx(a.activations, rel=1e-9)
    monkeypatch.setattr(memory, "MAX_STEPS", 10)
    from graphgen.errors import RankflowError
    with pytest.raises(RankflowError, match="global_batch"):
        memory.scenario_memory(sc)


@pytest.mark.parametrize("setting,word", [
    (["--set", "workload.packed_sample_len=9000"], "longer than seq_len"),
    (["--set", "workload.seq_len=4096", "--set", "workload.packed_sample_len=512", "--set", "parallelism.cp=2",
      "--set", "parallelism.dp=4"], "packed samples"),
])
def test_packing_that_cannot_be_is_refused(capsys, tmp_path, setting, word):
    out = tmp_path / "r.json"
    rc, _, err = cli(capsys, "--hardware_config", HW, "--model_config", MODEL, *SMALL, *setting, "--json", out)
    assert_contract(rc, err, [out])
    assert rc == 2 and word in err
