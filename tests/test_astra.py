"""ASTRA-sim backend: input generation and runner error paths (with a stand-in binary), and,
when ASTRA_SIM_BIN is set, the real thing."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from backends.analytical import AnalyticalBackend
from backends.astra import inputs
from backends.astra.backend import AstraBackend, probe_program
from graphgen.errors import RankflowError
from graphgen.ir import CollectiveNode, SendNode
from tests.helpers import ROOT, TINY_LLAMA, program, scenario

FAKE = str(ROOT / "tests" / "data" / "fake_astra.py")
REAL = os.environ.get("ASTRA_SIM_BIN")
needs_astra = pytest.mark.skipif(not REAL, reason="ASTRA_SIM_BIN is not set: no ASTRA-sim build to run")


def small(detail="ops", **plan):
    return program(scenario(TINY_LLAMA, {"global_batch": 8}, **plan), detail)


def test_network_yaml_units_and_dimensions():
    prog = program(scenario(dict(TINY_LLAMA, kv_heads=8), {"global_batch": 4}, tp=8, dp=2))
    net = yaml.safe_load(inputs.network_yaml(prog, congestion_aware=False))
    hw = prog.scenario.hardware
    assert net["npus_count"] == [8, 2]
    assert net["topology"] == ["Switch", "Switch"]
    link = hw.node.intra
    assert net["bandwidth"][0] == pytest.approx(link.bandwidth_gbs * 1e9 * link.efficiency / 2**30, rel=1e-6)
    assert net["latency"][1] == pytest.approx(hw.scale_out.latency_us * 1000)
    with pytest.raises(ValueError):
        inputs.network_yaml(prog, congestion_aware=True)
    # A degraded scale-out dimension reaches ASTRA-sim as the same derate the analytical backend uses.
    slow = hw.scale_out.model_copy(update={"derate": 0.5})
    prog2 = program(dataclasses.replace(prog.scenario, hardware=hw.model_copy(update={"scale_out": slow})))
    net2 = yaml.safe_load(inputs.network_yaml(prog2, congestion_aware=False))
    assert net2["bandwidth"][1] == pytest.approx(net["bandwidth"][1] / 2)
    assert net2["bandwidth"][0] == net["bandwidth"][0]


def test_full_mode_parses_finish_times_with_a_stand_in(monkeypatch):
    prog = small(tp=2, pp=2, dp=2, sp=True)
    ev = AstraBackend(binary=FAKE, network="unaware", mode="full").run(prog)
    res = ev.result
    assert ev.timeline is None
    assert res.step_time_s == pytest.approx(1 + 8000e-9)  # rank 7 finishes last at 10^9 + 8000 cycles = ns
    assert res.breakdown.exposed_comm == {"all": pytest.approx(800e-9)}
    assert res.backend == "astra"


@pytest.mark.parametrize("mode,words", [("crash", "exited with code"), ("garbage", "reported 0 of 8"),
                                        ("hang", "did not finish")])
def test_runner_failures_are_one_line_errors(monkeypatch, mode, words):
    monkeypatch.setenv("FAKE_ASTRA_MODE", mode)
    sc = scenario(TINY_LLAMA, {"global_batch": 8}, tp=2, pp=2, dp=2)
    if mode == "hang":
        astra = sc.execution.astra.model_copy(update={"timeout_s": 1.0})
        sc = dataclasses.replace(sc, execution=sc.execution.model_copy(update={"astra": astra}))
    with pytest.raises(RankflowError, match=words) as exc:
        AstraBackend(binary=FAKE, network="unaware", mode="full").run(program(sc))
    assert "\n" not in exc.value.one_line() and "fix:" in exc.value.one_line()
    if mode != "hang":  # the binary that ran is named, not one way of naming it the user may not have used
        assert exc.value.file == FAKE and not exc.value.one_line().startswith("ASTRA_SIM_BIN")


def test_a_hang_is_killed_with_everything_it_started(monkeypatch, tmp_path):
    pidfile = tmp_path / "child.pid"
    monkeypatch.setenv("FAKE_ASTRA_MODE", "hang_child")
    monkeypatch.setenv("FAKE_ASTRA_PIDFILE", str(pidfile))
    sc = scenario(TINY_LLAMA, {"global_batch": 8}, tp=2, pp=2, dp=2)
    astra = sc.execution.astra.model_copy(update={"timeout_s": 2.0})
    sc = dataclasses.replace(sc, execution=sc.execution.model_copy(update={"astra": astra}))
    with pytest.raises(RankflowError, match="did not finish"):
        AstraBackend(binary=FAKE, network="unaware", mode="full").run(program(sc))
    pid = int(pidfile.read_text())
    for _ in range(50):  # the kill is delivered at once; reaping by init may take a moment
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the binary's child outlived the timeout")


def test_crash_after_every_rank_reported_keeps_the_numbers_with_a_note(monkeypatch):
    monkeypatch.setenv("FAKE_ASTRA_MODE", "crash_at_exit")
    res = AstraBackend(binary=FAKE, network="unaware", mode="full").run(small(tp=2, pp=2, dp=2)).result
    assert res.step_time_s == pytest.approx(1 + 8000e-9)
    assert any("during shutdown" in n for n in res.notes)


def test_an_abort_mid_run_is_run_again_once(monkeypatch):
    # the prebuilt builds now and then abort on a corrupted heap; the same inputs pass on a second try
    monkeypatch.setenv("FAKE_ASTRA_MODE", "abort_once")
    res = AstraBackend(binary=FAKE, network="unaware", mode="full").run(small(tp=2, pp=2, dp=2)).result
    assert res.step_time_s == pytest.approx(1 + 8000e-9) and not any("crash" in n for n in res.notes)
    monkeypatch.setenv("FAKE_ASTRA_MODE", "abort")
    with pytest.raises(RankflowError, match="exited with code -6"):
        AstraBackend(binary=FAKE, network="unaware", mode="full").run(small(tp=2, pp=2, dp=2))


def test_missing_binary_via_cli_is_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ASTRA_SIM_BIN"}
    p = subprocess.run([sys.executable, str(ROOT / "run_perf.py"), "--hardware_config",
                        str(ROOT / "hardware_configs" / "A100-SXM4-80GB.yaml"), "--model_config",
                        str(ROOT / "model_configs" / "llama2-7b.yaml"), "--backend", "astra", "--json",
                        str(tmp_path / "r.json")], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and "ASTRA_SIM_BIN" in p.stderr and "github.com/astra-sim" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.json").exists()


def test_probe_program_times_each_distinct_op_once():
    prog = small(tp=2, pp=2, dp=2, sp=True, zero_stage=1)
    probe, keys = probe_program(prog)
    for role, pr in zip(prog.roles, probe.roles, strict=True):
        comm = {(n.kind, n.axis, round(n.bytes)) for n in role.nodes if isinstance(n, CollectiveNode)}
        assert len([n for n in pr.nodes if isinstance(n, CollectiveNode)]) == len(comm)
        assert all(d < n.id for n in pr.nodes for d in n.deps)
    sends = [n for r in probe.roles for n in r.nodes if isinstance(n, SendNode)]
    assert sends and len({n.tag for n in sends}) == len(sends)
    # A coarse program folds tensor-parallel collectives into its nodes; the probe still finds them.
    coarse, _ = probe_program(small("coarse", tp=2, pp=2, dp=2, sp=True, zero_stage=1))
    assert [len(r.nodes) for r in coarse.roles] == [len(r.nodes) for r in probe.roles]


def test_scalable_mode_replays_a_coarse_program_with_a_stand_in():
    """The stand-in times nothing, so every communication keeps its analytical cost and the step is
    the analytical one; the note says so."""
    prog = small("coarse", tp=2, pp=2, dp=2, sp=True, zero_stage=1)
    ev = AstraBackend(binary=FAKE, network="unaware", mode="scalable").run(prog)
    assert ev.result.step_time_s == pytest.approx(AnalyticalBackend().run(prog).result.step_time_s, rel=1e-12)
    assert any("kept their analytical cost" in n for n in ev.result.notes)


def test_binary_of_the_other_build_is_named_in_the_note(tmp_path):
    """ASTRA_SIM_BIN naming the unaware binary, on a network the aware build would take: the note
    says the unaware build ran (its step time is what is reported)."""
    binary = tmp_path / "AstraSim_Analytical_Congestion_Unaware"
    binary.write_text(Path(FAKE).read_text())
    binary.chmod(0o755)
    prog = program(scenario(dict(TINY_LLAMA, kv_heads=8), {"global_batch": 8}, tp=8))
    ev = AstraBackend(binary=str(binary), network="aware", mode="full").run(prog)
    assert any("is the congestion-unaware build: it ran" in n for n in ev.result.notes)
    assert not any("aware network" in n and "unaware" not in n for n in ev.result.notes)


def test_aware_binary_on_a_multi_node_network_says_what_to_point_at(tmp_path):
    binary = tmp_path / "AstraSim_Analytical_Congestion_Aware"
    binary.write_text(Path(FAKE).read_text())
    binary.chmod(0o755)
    prog = program(scenario(dict(TINY_LLAMA, kv_heads=8), {"global_batch": 8}, tp=8, dp=2))  # two nodes
    with pytest.raises(RankflowError, match="bin directory") as exc:
        AstraBackend(binary=str(binary), mode="full").run(prog)
    assert "AstraSim_Analytical_Congestion_Unaware" in exc.value.one_line()


def test_non_utf8_output_is_read(monkeypatch):
    monkeypatch.setenv("FAKE_ASTRA_MODE", "nonutf8")
    res = AstraBackend(binary=FAKE, network="unaware", mode="full").run(small(tp=2, pp=2, dp=2)).result
    assert res.step_time_s == pytest.approx(1 + 8000e-9)


@needs_astra
def test_single_all_reduce_on_8_npus_agrees_with_the_analytical_ring(tmp_path):
    """One all-reduce of 64 MiB over 8 GPUs of one node: ASTRA-sim (full replay) against Rankflow's ring."""
    from backends.astra.backend import AstraBackend as Astra
    from graphgen.ir import Phase, Role, comm_stream
    from graphgen.parallel.layout import Collective

    sc = scenario(dict(TINY_LLAMA, kv_heads=8), {"global_batch": 1}, tp=8)
    hw = sc.hardware
    ring = hw.node.intra.model_copy(update={"topology": "ring", "message_efficiency": None})
    sc = dataclasses.replace(sc, hardware=hw.model_copy(update={"node": hw.node.model_copy(update={"intra": ring})}))
    prog = program(sc)
    n = 64 * 2**20
    node = CollectiveNode(id=0, name="ar", kind=Collective.ALL_REDUCE, bytes=n, axis="tp", group_size=8,
                          deps=(), phase=Phase.FORWARD, microbatch=0, chunk=0, layers=(-1, -1),
                          stream=comm_stream("tp"))
    from graphgen.costs.network import NetworkModel
    analytical = NetworkModel(prog.scenario.hardware).collective_time(Collective.ALL_REDUCE, n, 8, 1)
    single = dataclasses.replace(prog, roles=(Role(0, "stage0", 0, (0,), (), [node]),))
    res = Astra(binary=REAL, network="aware", mode="full").run(single).result
    assert res.step_time_s == pytest.approx(analytical, rel=0.05)


@needs_astra
def test_dp2_tp2_pp2_llama_step_runs_end_to_end():
    prog = small(tp=2, pp=2, dp=2, sp=True, zero_stage=1)
    res = AstraBackend(binary=REAL, network="unaware", mode="full").run(prog).result
    ana = AnalyticalBackend().run(prog).result
    assert res.step_time_s > 0
    assert res.step_time_s == pytest.approx(ana.step_time_s, rel=0.5)
    scal = AstraBackend(binary=REAL, network="unaware", mode="scalable").run(prog)
    assert scal.timeline is not None and scal.result.step_time_s == pytest.approx(ana.step_time_s, rel=0.5)
    coarse = AstraBackend(binary=REAL, network="unaware", mode="scalable").run(small("coarse", tp=2, pp=2, dp=2,
                                                                                     sp=True, zero_stage=1))
    assert coarse.result.step_time_s == pytest.approx(scal.result.step_time_s, rel=0.01)


def test_fake_binary_is_a_stand_in_only():
    assert Path(FAKE).read_text().startswith("#!/usr/bin/env python3")


# Wide enough that compute, not per-message latency (which the two network models treat differently), dominates.
SMALL_MOE = dict(TINY_LLAMA, hidden=1024, kv_heads=8,
                 moe={"experts": 8, "top_k": 2, "expert_ffn_hidden": 1024, "shared_experts": 1})


@needs_astra
@pytest.mark.parametrize("mode", ["full", "scalable"])
def test_moe_step_with_expert_and_context_parallelism_runs_in_astra(mode):
    """All-to-alls on ep, the K/V exchange on cp and expert gradients on edp reach ASTRA-sim as
    communicators of their own, and its step time lands near the analytical replay."""
    sc = scenario(SMALL_MOE, {"global_batch": 8, "seq_len": 4096}, dp=4, ep=4, cp=2, pp=2, schedule="zb-h1")
    prog = program(sc)
    axes = {n.axis for r in prog.roles for n in r.nodes if isinstance(n, CollectiveNode)}
    assert {"ep", "cp", "edp"} <= axes
    res = AstraBackend(binary=REAL, network="unaware", mode=mode).run(prog).result
    ana = AnalyticalBackend().run(prog).result
    assert res.step_time_s == pytest.approx(ana.step_time_s, rel=0.25)


@pytest.mark.parametrize("mode,words", [
    ("zero", "0 cycles"), ("exposed_over", "above its finish time"), ("offset", "rank ids"),
    ("early", "sooner than its own compute"),
    ("huge", "finish time of 401 digits"), ("huge_rank", "rank id of 5000 digits"), ("flood", "more than 16 MiB"),
    ("flood_line", "more than 16 MiB")])
def test_bogus_reports_are_one_line_errors(monkeypatch, mode, words):
    """Output that parses but cannot be a report, or floods, is refused: never a ZeroDivisionError,
    KeyError, OverflowError, a negative compute time or unbounded memory."""
    monkeypatch.setenv("FAKE_ASTRA_MODE", mode)
    with pytest.raises(RankflowError, match=words) as exc:
        AstraBackend(binary=FAKE, network="unaware", mode="full").run(small(tp=2, pp=2, dp=2))
    assert "\n" not in exc.value.one_line() and "fix:" in exc.value.one_line()
    assert exc.value.file == FAKE  # the binary that printed it, however it was named


def test_a_relative_binary_path_runs_from_the_scratch_directory(monkeypatch):
    """ASTRA-sim runs in a temporary directory: a path relative to where the user stands must still
    name the binary there (it was 'No such file or directory')."""
    monkeypatch.setenv("FAKE_ASTRA_MODE", "ok")
    monkeypatch.chdir(ROOT)
    rel = str(Path(FAKE).relative_to(ROOT))
    res = AstraBackend(binary=rel, network="unaware", mode="full").run(small(tp=2, pp=2, dp=2)).result
    assert res.step_time_s == pytest.approx(1 + 8000e-9)


def test_a_bogus_event_log_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("FAKE_ASTRA_MODE", "bad_log")
    with pytest.raises(RankflowError, match="tick of 400 digits"):
        AstraBackend(binary=FAKE, network="unaware", mode="scalable").run(small("coarse", tp=2, pp=2, dp=2))


@pytest.mark.parametrize("mode", ["flood", "flood_line"])
def test_long_output_is_streamed_and_its_report_read(monkeypatch, mode):
    """Output under the bound, even one line of megabytes, is read as it streams (a line keeps only
    its end) and the report at its end is found."""
    from backends.astra import runner

    monkeypatch.setenv("FAKE_ASTRA_MODE", mode)
    monkeypatch.setenv("FAKE_ASTRA_FLOOD_MIB", "8")
    res = AstraBackend(binary=FAKE, network="unaware", mode="full").run(small(tp=2, pp=2, dp=2)).result
    assert res.step_time_s == pytest.approx(1 + 8000e-9)
    lines = runner._Lines()
    assert lines.feed(b"x" * 10 * 2**20) == [] and len(lines.rest) <= runner.LINE_BYTES


@needs_astra
@pytest.mark.parametrize("mode", ["full", "scalable"])
def test_an_inference_prefill_runs_in_astra(mode):
    """A tensor-parallel prefill iteration (forward only, no optimizer) through Chakra and ASTRA-sim."""
    sc = scenario(dict(SMALL_MOE, moe=None), {"run_type": "inference",
                                              "inference": {"phase": "prefill", "batch": 4, "input_len": 4096}},
                  tp=4, dp=1)
    prog = program(sc)
    assert not any(n.name == "optimizer_step" for r in prog.roles for n in r.nodes)
    res = AstraBackend(binary=REAL, network="unaware", mode=mode).run(prog).result
    assert res.step_time_s == pytest.approx(AnalyticalBackend().run(prog).result.step_time_s, rel=0.25)


def test_a_trace_set_too_large_for_a_full_replay_names_the_mode(monkeypatch):
    """The 2 GiB trace bound reached through a full ASTRA-sim run names the mode that asked for the
    traces (and the scalable one as the way out), not a --chakra-out the user never gave."""
    from backends.chakra import writer

    monkeypatch.setattr(writer, "MAX_BYTES", 1)
    with pytest.raises(RankflowError, match="trace set would be") as exc:
        AstraBackend(binary=FAKE, network="unaware", mode="full").run(small(tp=2, pp=2, dp=2))
    assert exc.value.field == "execution_backend.astra.mode" and "scalable" in exc.value.fix
