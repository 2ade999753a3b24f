"""Framework profiles (framework_configs/): every profile loads at every version and sets only real
fields; a profile fills what the user leaves unset and never overrides what they set; the report
adds the step as the framework would log it."""

from __future__ import annotations

import pytest

from graphgen.errors import RankflowError
from rankflow import api
from tests.helpers import ROOT, run

H100 = ROOT / "hardware_configs" / "H100-SXM5-80GB.yaml"
LLAMA = ROOT / "model_configs" / "llama3.1-8b.yaml"
BASE = ["parallelism.tp=2", "parallelism.dp=4", "workload.global_batch=32", "workload.seq_len=4096"]
PROFILES = sorted(p.stem for p in (ROOT / "framework_configs").glob("*.yaml"))


def load(*sets: str, hw=H100):
    return api.load_scenario(LLAMA, hw, overrides=[*BASE, *sets])


def test_the_eight_frameworks_are_shipped():
    assert {"megatron-lm", "megatron-bridge", "nemo", "torchtitan", "deepspeed", "composer", "nanotron",
            "hf-trainer"} <= set(PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_every_version_of_every_profile_builds_a_scenario(name):
    import yaml

    versions = list(yaml.safe_load((ROOT / "framework_configs" / f"{name}.yaml").read_text())["versions"])
    in_file = {f"workload.{k}" for k in yaml.safe_load(LLAMA.read_text())["workload"]}  # the file wins
    for version in versions:
        fw = api.load_framework(name, version)
        assert fw.version == version and fw.settings
        assert all(fw.file and v for v in (fw.flops, fw.memory))
        sc = load(f"workload.framework={name}", f"workload.framework_version='{version}'")
        assert sc.framework.name == name
        for key, value in fw.settings.items():
            section, field = key.split(".", 1)
            got = sc.workload if section == "workload" else sc.plan
            for part in field.split("."):
                got = getattr(got, part)
            if key in in_file or key in ("parallelism.tp", "parallelism.dp"):
                continue  # the file's and the test's own settings win
            if key == "workload.attention_kernel" and value not in sc.hardware.device.efficiency.attention_kernels:
                continue
            assert got == value, (name, version, key)


def test_a_profile_fills_only_what_the_user_left_unset():
    plain = load()
    titan = load("workload.framework=torchtitan", "workload.framework_version='2024.08'")
    assert plain.framework is None and plain.workload.fused_kernels is True
    assert titan.workload.fused_kernels is False and titan.plan.sp is True  # torchtitan 2024.08: eager, TP shards seq
    mine = load("workload.framework=torchtitan", "parallelism.sp=false", "workload.fused_kernels=true")
    assert mine.plan.sp is False and mine.workload.fused_kernels is True
    # A later version inherits the earlier ones' settings.
    assert api.load_framework("composer", "0.17.2").settings["workload.attention_kernel"] == "triton"
    assert api.load_framework("composer", "0.17.2").settings["parallelism.grad_reduce_dtype"] == "fp32"
    assert api.load_framework("composer", "0.15").version == "0.14"  # newest at or before it


@pytest.mark.parametrize("sets, field", [
    (["workload.framework=pytorch-lightning"], "workload.framework"),
    (["workload.framework=composer", "workload.framework_version='0.1'"], "workload.framework_version"),
    (["workload.framework=7"], "workload.framework"),
])
def test_unknown_frameworks_and_versions_are_one_line_errors(sets, field):
    with pytest.raises(RankflowError) as err:
        load(*sets)
    assert field in str(err.value)


def test_the_report_adds_the_step_as_the_framework_logs_it():
    sc = load("workload.framework=torchtitan", "workload.framework_version='2024.08'")
    res = run(sc, "coarse")
    fw = res.framework
    assert fw["name"] == "torchtitan" and fw["flop_convention"] == "torchtitan"
    # torchtitan logs max reserved memory: allocated plus the caching allocator's slack.
    peak = max(m.allocated + m.fragmentation for m in res.memory) / 2**30
    assert fw["peak_memory_gib"] == pytest.approx(peak) and peak > max(m.allocated for m in res.memory) / 2**30
    # Its convention counts the masked half of attention that Rankflow's standard leaves out.
    assert fw["tflops_per_gpu"] > res.model_tflops_per_gpu
    megatron = run(load("workload.framework=megatron-lm", "workload.framework_version='2025.05'"), "coarse")
    assert megatron.framework["flop_convention"] == "megatron_core"
    assert megatron.framework["mfu"] == pytest.approx(megatron.mfu)  # both count causal attention
    older = run(load("workload.framework=megatron-lm", "workload.framework_version='2024.08'"), "coarse")
    assert older.framework["flop_convention"] == "palm" and older.framework["mfu"] > older.mfu
    from reports.json_out import result_to_dict

    assert result_to_dict(res)["framework"]["memory_figure"] == "max_memory_reserved"
    assert result_to_dict(run(load(), "coarse"))["framework"] is None


def test_a_kernel_the_device_has_no_curve_for_keeps_the_default_with_a_note():
    b200 = ROOT / "hardware_configs" / "B200.yaml"
    sc = load("workload.framework=composer", hw=b200)
    if "triton" in sc.hardware.device.efficiency.attention_kernels:
        pytest.skip("B200 lists a triton curve")
    assert sc.workload.attention_kernel is None
    assert any("triton" in n for n in run(sc, "coarse").notes)


@pytest.mark.parametrize("name", ["nemo"])
def test_recipe_profiles_run_an_moe_model_with_tensor_parallelism(name):
    """Megatron-Core requires sequence parallelism for MoE layers under TP. NeMo's recipes turn it on with TP
    (its 8B recipe leaves it off at TP 1, where it does nothing); a profile reading only that one would
    refuse every such plan. (Megatron-LM's own default is off: its profile refuses, as Megatron asserts.)"""
    import yaml

    qwen = ROOT / "model_configs" / "qwen3-30b-a3b.yaml"
    for version in yaml.safe_load((ROOT / "framework_configs" / f"{name}.yaml").read_text())["versions"]:
        sc = api.load_scenario(qwen, ROOT / "hardware_configs" / "H100-SXM5-80GB.yaml", overrides=[
            f"workload.framework={name}", f"workload.framework_version='{version}'", "parallelism.tp=2",
            "parallelism.dp=4", "parallelism.ep=4", "workload.global_batch=32", "workload.seq_len=4096"])
        assert sc.plan.sp, (name, version)


SM90_AND_LATER = ["H100-SXM5-80GB", "H100-SXM5-96GB", "H100-PCIe", "H200-SXM-141GB", "H800", "H20", "GH200", "B200",
                  "GB200", "GB300"]


@pytest.mark.parametrize("part", SM90_AND_LATER)
def test_every_hopper_and_blackwell_part_runs_the_cudnn_kernel_te_selects(part):
    """Transformer Engine prefers its cuDNN FusedAttention on sm90 and later, and the 2025 profiles select it: a part
    without a cuDNN curve would quietly fall back to FlashAttention-2's rate, 1.5-3x slower there."""
    sc = load("workload.framework=megatron-lm", "workload.framework_version='2025.05'",
              hw=ROOT / "hardware_configs" / f"{part}.yaml")
    assert sc.workload.attention_kernel == "cudnn"
    eff = sc.hardware.device.efficiency
    assert eff.attention_kernels["cudnn"].points[-1][1] > eff.attention.points[-1][1]
    assert not any("cudnn" in n for n in run(sc, "coarse").notes)


@pytest.mark.parametrize("name, left_out", [
    ("mixtral-8x7b", lambda m: m.layers * m.hidden * m.moe.experts),  # the router
    ("qwen3-next-80b-a3b", lambda m: sum(m.hidden * (m.moe.experts + 1) for _ in range(m.layers))  # router, shared gate
     + sum(m.hidden * m.heads * m.d_head for i in range(m.layers) if m.attention_kind(i) != "gated_delta")),
])
def test_megatron_core_counts_what_its_formula_has_terms_for(name, left_out):
    # megatron/training/training.py num_floating_point_operations (core_v0.12.0 .. 2025-10) has no term for the
    # router GEMM, the shared-expert gate or the attention output gate's half of the query projection
    from graphgen.model.flop_conventions import FLOP_CONVENTIONS
    from rankflow.api import load_model

    m = load_model(ROOT / "model_configs" / f"{name}.yaml").model
    causal, core = (FLOP_CONVENTIONS[c].flops_per_token(m, 4096, "none", None) for c in ("causal", "megatron_core"))
    assert causal - core == pytest.approx(6.0 * left_out(m))
