"""`rankflow export`: every emitted option is a documented name of the framework release cited in
tests/data/export_names/, the values follow the plan, the text parses and is deterministic, and a
plan feature without an equivalent is refused naming its field."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from graphgen.errors import RankflowError
from rankflow import api, export_cli
from rankflow.export import TARGETS, Export, export

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
NAMES = Path(__file__).parent / "data" / "export_names"
H100 = str(ROOT / "hardware_configs" / "H100-SXM5-80GB.yaml")
LLAMA70 = str(ROOT / "model_configs" / "llama3.1-70b.yaml")
QWEN_MOE = str(ROOT / "model_configs" / "qwen3-30b-a3b.yaml")
GPT3 = str(ROOT / "model_configs" / "gpt3-175b.yaml")


def load(model: str = LLAMA70, **plan: object):
    return api.load_scenario(model, H100, overrides=[f"{k}={v}" for k, v in plan.items()])


def names(target: str) -> set[str]:
    lines = (NAMES / f"{target}.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _paths(data: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, dict) and value:
            out |= _paths(value, f"{path}.")
    return out


def megatron_flags(text: str) -> dict[str, list[str]]:
    """The flags after pretrain_gpt.py, each with its values (empty for a switch)."""
    words = shlex.split(text.split("pretrain_gpt.py", 1)[1].replace("\\\n", " "), comments=True)
    flags: dict[str, list[str]] = {}
    current = None
    for word in words:
        if word.startswith("--"):
            current = word
            flags[current] = []
        elif current is not None and word != "$@":
            flags[current].append(word)
    return flags


def torchtitan_keys(text: str) -> set[str]:
    doc = tomllib.loads(text)
    keys = set()
    for section, table in doc.items():
        keys |= {f"{section}.{k}" for k in _paths(table)} if section != "quantize" else \
            {f"quantize.linear.float8.{k}" for k in table["linear"]["float8"]}
    return {k for k in keys if not k.endswith((".linear", ".float8"))}


EMITTED = {
    "megatron": lambda text: set(megatron_flags(text)),
    "torchtitan": torchtitan_keys,
    "deepspeed": lambda text: _paths(json.loads(text)),
    "llamafactory": lambda text: set(yaml.safe_load(text)),
}

# plans each target can express, covering the branches that emit options
PLANS = {
    "megatron": [(LLAMA70, {"parallelism.tp": 8, "parallelism.sp": "true", "parallelism.pp": 4, "parallelism.dp": 4,
                            "parallelism.schedule": "interleaved", "parallelism.virtual_stages": 5,
                            "parallelism.zero_stage": 1, "parallelism.recompute": "selective",
                            "parallelism.tp_overlap": "true"}),
                 (QWEN_MOE, {"parallelism.tp": 2, "parallelism.sp": "true", "parallelism.dp": 4, "parallelism.ep": 8,
                             "parallelism.cp": 2, "parallelism.zero_stage": 3, "parallelism.recompute": "full",
                             "parallelism.moe_dispatcher": "deepep", "parallelism.moe_permute_fusion": "true",
                             "workload.precision": "fp8"}),
                 (GPT3, {"parallelism.tp": 8, "parallelism.pp": 8, "parallelism.dp": 2,
                         "parallelism.recompute": "full", "parallelism.recompute_every": 2}),
                 (LLAMA70, {"parallelism.tp": 8, "parallelism.sp": "true", "parallelism.pp": 2, "parallelism.dp": 4,
                            "parallelism.split_accounts_embedding": "true", "parallelism.split_accounts_loss": "true",
                            "parallelism.moe_dispatcher": "allgather", "parallelism.grad_reduce_dtype": "bf16",
                            "workload.flash_attention": "false", "workload.optimizer": "sgd"})],
    "torchtitan": [(LLAMA70, {"parallelism.tp": 8, "parallelism.sp": "true", "parallelism.pp": 4, "parallelism.dp": 4,
                              "parallelism.schedule": "interleaved", "parallelism.virtual_stages": 2,
                              "parallelism.zero_stage": 3, "parallelism.recompute": "full",
                              "parallelism.recompute_every": 2, "parallelism.cp": 2, "workload.precision": "fp8",
                              "parallelism.tp_overlap": "true", "workload.fused_kernels": "false"}),
                   (QWEN_MOE, {"parallelism.dp": 8, "parallelism.ep": 8, "parallelism.zero_stage": 2})],
    "deepspeed": [(LLAMA70, {"parallelism.tp": 8, "parallelism.dp": 4, "parallelism.zero_stage": 2,
                             "parallelism.recompute": "full"}),
                  (LLAMA70, {"parallelism.pp": 8, "parallelism.dp": 2, "parallelism.zero_stage": 1,
                             "parallelism.recompute": "full", "workload.precision": "fp16"})],
    "llamafactory": [(LLAMA70, {"parallelism.dp": 8, "parallelism.zero_stage": 3, "parallelism.recompute": "full"}),
                     (LLAMA70, {"parallelism.dp": 8, "workload.finetune.method": "qlora",
                                "workload.finetune.target_modules": "[qkv_proj,fc2]",
                                "workload.finetune.train_embeddings": "true", "workload.precision": "fp8"}),
                     (LLAMA70, {"parallelism.dp": 8, "parallelism.zero_stage": 3, "workload.finetune.method": "dora"}),
                     (LLAMA70, {"parallelism.dp": 8, "parallelism.zero_stage": 3, "workload.finetune.method": "freeze",
                                "workload.finetune.frozen_layers": 60, "workload.optimizer": "adam8bit"})],
}
CASES = [(target, model, plan) for target, plans in PLANS.items() for model, plan in plans]


@pytest.mark.parametrize("target,model,plan", CASES)
def test_every_emitted_option_is_a_documented_name(target, model, plan):
    out = export(load(model, **plan), target)
    emitted = EMITTED[target](out.text)
    assert emitted, "nothing emitted"
    assert emitted <= names(target), f"not in tests/data/export_names/{target}.txt: {emitted - names(target)}"


@pytest.mark.parametrize("target,model,plan", CASES)
def test_output_is_deterministic_and_named(target, model, plan):
    a, b = export(load(model, **plan), target), export(load(model, **plan), target)
    assert isinstance(a, Export) and a == b and a.target == target
    assert a.filename == {"megatron": "megatron_args.sh", "torchtitan": "torchtitan.toml",
                          "deepspeed": "ds_config.json", "llamafactory": "llamafactory.yaml"}[target]


def test_targets_registry():
    assert set(TARGETS) == {"megatron", "torchtitan", "deepspeed", "llamafactory"}
    with pytest.raises(RankflowError, match="--to"):
        export(load(**{"parallelism.dp": 8}), "nemo")


def test_megatron_values_follow_the_plan():
    flags = megatron_flags(export(load(**PLANS["megatron"][0][1]), "megatron").text)
    assert flags["--tensor-model-parallel-size"] == ["8"] and flags["--pipeline-model-parallel-size"] == ["4"]
    assert flags["--num-virtual-stages-per-pipeline-rank"] == ["5"] and "--sequence-parallel" in flags
    assert flags["--num-query-groups"] == ["8"] and flags["--num-layers"] == ["80"]
    assert flags["--global-batch-size"] == ["512"] and flags["--micro-batch-size"] == ["1"]
    assert "--use-distributed-optimizer" in flags and flags["--recompute-modules"] == ["core_attn"]
    assert flags["--normalization"] == ["RMSNorm"] and "--swiglu" in flags and "--bf16" in flags
    assert "--tp-comm-overlap" in flags  # the plan's tp_overlap; absent without it (the MoE plan below)


def test_megatron_moe_fsdp_fp8_and_block_recompute():
    flags = megatron_flags(export(load(QWEN_MOE, **PLANS["megatron"][1][1]), "megatron").text)
    assert flags["--num-experts"] == ["128"] and flags["--moe-router-topk"] == ["8"]
    assert flags["--moe-ffn-hidden-size"] == ["768"] and flags["--expert-model-parallel-size"] == ["8"]
    assert flags["--context-parallel-size"] == ["2"] and flags["--cp-comm-type"] == ["p2p"]
    assert flags["--data-parallel-sharding-strategy"] == ["optim_grads_params"] and "--use-megatron-fsdp" in flags
    assert flags["--moe-token-dispatcher-type"] == ["flex"] and "--moe-enable-deepep" in flags
    assert "--moe-permute-fusion" in flags  # the plan's moe_permute_fusion
    assert flags["--moe-aux-loss-coeff"] == ["0.01"]  # the load-balancing loss Rankflow prices (moe.aux_loss)
    assert "--tp-comm-overlap" not in flags
    assert flags["--fp8-format"] == ["hybrid"] and flags["--recompute-method"] == ["uniform"]
    gpt = megatron_flags(export(load(GPT3, **PLANS["megatron"][2][1]), "megatron").text)
    assert gpt["--recompute-method"] == ["block"] and gpt["--recompute-num-layers"] == ["6"]  # 12 per stage / 2
    assert gpt["--position-embedding-type"] == ["learned_absolute"] and "--fp16" in gpt
    assert "--untie-embeddings-and-output-weights" not in gpt and gpt["--hidden-dropout"] == ["0.1"]


def test_torchtitan_values_follow_the_plan():
    doc = tomllib.loads(export(load(**PLANS["torchtitan"][0][1]), "torchtitan").text)
    par = doc["parallelism"]
    assert doc["model"] == {"name": "llama3", "flavor": "70B", "converters": ["quantize.linear.float8"]}
    assert par["tensor_parallel_degree"] == 8 and par["pipeline_parallel_degree"] == 4
    assert par["data_parallel_shard_degree"] == 4 and par["data_parallel_replicate_degree"] == 1
    assert par["fsdp_reshard_after_forward"] == "always" and par["context_parallel_degree"] == 2
    assert par["pipeline_parallel_schedule"] == "Interleaved1F1B" and par["pipeline_parallel_layers_per_stage"] == 10
    assert doc["activation_checkpoint"] == {"mode": "selective", "selective_ac_option": "2"}
    assert doc["training"]["global_batch_size"] == 512 and doc["training"]["seq_len"] == 8192
    moe = tomllib.loads(export(load(QWEN_MOE, **PLANS["torchtitan"][1][1]), "torchtitan").text)
    assert moe["model"]["flavor"] == "30B-A3B" and moe["parallelism"]["expert_parallel_degree"] == 8
    assert moe["parallelism"]["fsdp_reshard_after_forward"] == "never"
    # async TP only runs compiled: the plan's tp_overlap turns compile on even without fused kernels
    assert par["enable_async_tensor_parallel"] is True and doc["compile"]["enable"] is True
    assert "enable_async_tensor_parallel" not in moe["parallelism"] and moe["compile"]["enable"] is True


def test_deepspeed_values_follow_the_plan():
    cfg = json.loads(export(load(**PLANS["deepspeed"][0][1]), "deepspeed").text)
    assert cfg["zero_optimization"]["stage"] == 2 and cfg["tensor_parallel"] == {"autotp_size": 8}
    assert cfg["train_batch_size"] == 512 and cfg["train_micro_batch_size_per_gpu"] == 1
    assert cfg["gradient_accumulation_steps"] == 128 and cfg["bf16"] == {"enabled": True}
    assert "activation_checkpointing" in cfg
    pipe = json.loads(export(load(**PLANS["deepspeed"][1][1]), "deepspeed").text)
    assert pipe["pipeline"] == {"stages": 8, "activation_checkpoint_interval": 1} and pipe["fp16"]["enabled"]


def test_llamafactory_values_follow_the_plan():
    full = yaml.safe_load(export(load(**PLANS["llamafactory"][0][1]), "llamafactory").text)
    assert full["finetuning_type"] == "full" and full["deepspeed"] == "ds_config.json"
    assert full["cutoff_len"] == 8192 and full["gradient_accumulation_steps"] == 64
    assert full["flash_attn"] == "fa2" and full["disable_gradient_checkpointing"] is False
    qlora = yaml.safe_load(export(load(**PLANS["llamafactory"][1][1]), "llamafactory").text)
    assert qlora["finetuning_type"] == "lora" and qlora["quantization_bit"] == 4 and qlora["fp8"] is True
    assert qlora["lora_target"] == "q_proj,k_proj,v_proj,down_proj" and qlora["stage"] == "sft"
    assert qlora["additional_target"] == "embed_tokens,lm_head" and "deepspeed" not in qlora
    freeze = yaml.safe_load(export(load(**PLANS["llamafactory"][3][1]), "llamafactory").text)
    assert freeze["freeze_trainable_layers"] == 20 and freeze["optim"] == "adamw_bnb_8bit"


REFUSALS = [
    ("megatron", LLAMA70, {"parallelism.pp": 4, "parallelism.dp": 2, "parallelism.schedule": "zb-h1"},
     "parallelism.schedule"),
    ("megatron", LLAMA70, {"parallelism.dp": 8, "workload.finetune.method": "lora"}, "workload.finetune.method"),
    ("megatron", LLAMA70, {"parallelism.dp": 8, "workload.optimizer": "adafactor"}, "workload.optimizer"),
    ("megatron", LLAMA70, {"parallelism.dp": 8, "model.position_encoding": "alibi"}, "model.position_encoding"),
    ("torchtitan", LLAMA70, {"parallelism.dp": 8, "parallelism.zero_stage": 1}, "parallelism.zero_stage"),
    ("torchtitan", LLAMA70, {"parallelism.tp": 8, "parallelism.dp": 1}, "parallelism.sp"),
    ("torchtitan", LLAMA70, {"parallelism.dp": 8, "parallelism.zero_stage": 3, "parallelism.recompute": "selective"},
     "parallelism.recompute"),
    ("torchtitan", GPT3, {"parallelism.dp": 8, "parallelism.zero_stage": 3, "workload.precision": "bf16"}, "model"),
    ("torchtitan", LLAMA70, {"parallelism.tp": 2, "parallelism.sp": "true", "parallelism.dp": 4}, "parallelism.zero_stage"),
    ("torchtitan", LLAMA70, {"parallelism.pp": 4, "parallelism.dp": 2, "parallelism.zero_stage": 3,
                             "parallelism.schedule": "dualpipe"}, "parallelism.schedule"),
    ("deepspeed", LLAMA70, {"parallelism.tp": 8, "parallelism.sp": "true"}, "parallelism.sp"),
    ("deepspeed", LLAMA70, {"parallelism.tp": 8, "parallelism.zero_stage": 3}, "parallelism.zero_stage"),
    ("deepspeed", LLAMA70, {"parallelism.pp": 4, "parallelism.dp": 2, "parallelism.zero_stage": 2},
     "parallelism.zero_stage"),
    ("deepspeed", LLAMA70, {"parallelism.cp": 8}, "parallelism.cp"),
    ("deepspeed", LLAMA70, {"parallelism.dp": 8, "workload.precision": "fp8"}, "workload.precision"),
    ("deepspeed", LLAMA70, {"parallelism.dp": 8, "parallelism.recompute": "selective"}, "parallelism.recompute"),
    ("llamafactory", LLAMA70, {"parallelism.pp": 4, "parallelism.dp": 2}, "parallelism.pp"),
    ("llamafactory", LLAMA70, {"parallelism.tp": 8}, "parallelism.tp"),
    ("llamafactory", QWEN_MOE, {"parallelism.dp": 8, "parallelism.ep": 8}, "parallelism.ep"),
    ("llamafactory", LLAMA70, {"parallelism.dp": 8, "parallelism.recompute": "selective"}, "parallelism.recompute"),
]


@pytest.mark.parametrize("target,model,plan,field", REFUSALS)
def test_a_feature_without_equivalent_names_its_field(target, model, plan, field):
    with pytest.raises(RankflowError) as info:
        export(load(model, **plan), target)
    assert info.value.field == field
    assert f": {field}: " in info.value.one_line() and "has no equivalent" in info.value.one_line()


def test_every_name_list_cites_repo_path_and_commit():
    for target in TARGETS:
        header = (NAMES / f"{target}.txt").read_text().split("\n\n")[0]
        assert re.search(r"\b[0-9a-f]{40}\b", header) and "/" in header, target


# --- the CLI ---------------------------------------------------------------------------------------------

BASE = ["--model-config", LLAMA70, "--hardware-config", H100]


def test_cli_prints_to_stdout(capsys):
    assert export_cli.run(["--to", "megatron", *BASE, "--set", "parallelism.tp=4", "--set", "parallelism.dp=2"]) == 0
    out, err = capsys.readouterr()
    assert "--tensor-model-parallel-size 4" in out and err == ""


def test_cli_writes_out(tmp_path, capsys):
    path = tmp_path / "ds_config.json"
    assert export_cli.run(["--to", "deepspeed", *BASE, "--set", "parallelism.dp=8", "--out", str(path)]) == 0
    assert json.loads(path.read_text())["train_batch_size"] == 512
    assert [p.name for p in tmp_path.iterdir()] == ["ds_config.json"]  # no staged file left behind
    assert capsys.readouterr().err == ""


def _one_error(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("rankflow export: error: ")
    return err


def test_cli_bad_target(tmp_path, capsys):
    path = tmp_path / "x.toml"
    assert export_cli.run(["--to", "nemo", *BASE, "--out", str(path)]) == 2
    assert "arguments" in _one_error(capsys) and not path.exists()


def test_cli_unsupported_plan_writes_nothing(tmp_path, capsys):
    path = tmp_path / "llamafactory.yaml"
    path_args = ["--out", str(path)]
    assert export_cli.run(["--to", "llamafactory", *BASE, "--set", "parallelism.tp=8", *path_args]) == 2
    assert "parallelism.tp" in _one_error(capsys) and list(tmp_path.iterdir()) == []


def test_cli_unwritable_path(tmp_path, capsys):
    path = tmp_path / "missing" / "ds_config.json"
    assert export_cli.run(["--to", "deepspeed", *BASE, "--set", "parallelism.dp=8", "--out", str(path)]) == 2
    assert str(path.parent) in _one_error(capsys) and not path.exists()


def test_cli_plan_config_and_bad_set(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("parallelism:\n  tp: 2\n  dp: 4\n  sp: true\n  zero_stage: 3\n")
    assert export_cli.run(["--to", "torchtitan", *BASE, "--plan_config", str(plan)]) == 0
    assert tomllib.loads(capsys.readouterr().out)["parallelism"]["tensor_parallel_degree"] == 2
    assert export_cli.run(["--to", "torchtitan", *BASE, "--set", "parallelism.tp=3"]) == 2
    assert "parallelism.tp" in _one_error(capsys)


LLAMA8 = str(ROOT / "model_configs" / "llama3.1-8b.yaml")


@pytest.mark.parametrize("impl, written", [("fused", "fused"), ("foreach", "foreach"), ("per_tensor", "for-loop")])
def test_the_optimizer_implementation_is_written_as_each_target_names_it(impl, written):
    sc = load(LLAMA8, **{"workload.optimizer_impl": impl, "parallelism.dp": 8})
    assert tomllib.loads(export(sc, "torchtitan").text)["optimizer"]["implementation"] == written
    if impl == "per_tensor":
        for target in ("deepspeed", "llamafactory", "megatron"):
            with pytest.raises(RankflowError, match="optimizer_impl"):
                export(sc, target)
        return
    ds = json.loads(export(sc, "deepspeed").text)["optimizer"]["params"]
    assert ds.get("torch_adam", False) is (impl == "foreach")
    optim = yaml.safe_load(export(sc, "llamafactory").text)["optim"]
    assert optim == {"fused": "adamw_torch_fused", "foreach": "adamw_torch"}[impl]
    if impl == "foreach":
        with pytest.raises(RankflowError, match="optimizer_impl"):
            export(sc, "megatron")
