"""Models and hardware by name: shipped stems, Hugging Face ids and aliases resolve offline; unknown names
get the one-line error with the closest names; `rankflow models|hardware` list every shipped config."""

from __future__ import annotations

import json

import pytest

from graphgen.errors import RankflowError
from rankflow import api, catalog, tool
from tests.helpers import ROOT


def test_every_shipped_config_is_in_the_catalog_and_back():
    models = {e.name for e in catalog.model_entries()}
    assert models == {p.stem for p in (ROOT / "model_configs").glob("*.yaml")}
    assert len(models) >= 40  # the floor for shipped model configs
    hardware = {e.name for e in catalog.hardware_entries()}
    assert hardware == {p.stem for p in (ROOT / "hardware_configs").glob("*.yaml")}


def test_names_are_unique_across_entries():
    for entries in (catalog.model_entries(), catalog.hardware_entries()):
        keys = [k.lower() for e in entries for k in (e.name, *e.aliases)]
        assert len(keys) == len(set(keys))


@pytest.mark.parametrize("name, stem", [
    ("llama3.1-70b", "llama3.1-70b"), ("meta-llama/Llama-3.1-70B", "llama3.1-70b"),
    ("META-LLAMA/llama-3.1-70b-instruct", "llama3.1-70b"), ("https://huggingface.co/Qwen/Qwen3-30B-A3B", "qwen3-30b-a3b"),
    ("deepseek-ai/DeepSeek-V3", "deepseek-v3"),
])
def test_model_names_and_hf_ids_resolve(name, stem):
    assert catalog.model_path(name) == ROOT / "model_configs" / f"{stem}.yaml"


@pytest.mark.parametrize("name, stem", [("h100", "H100-SXM5-80GB"), ("H200", "H200-SXM-141GB"),
                                        ("b200", "B200"), ("a100", "A100-SXM4-80GB"), ("4090", "RTX-4090")])
def test_hardware_aliases_resolve(name, stem):
    assert catalog.hardware_path(name) == ROOT / "hardware_configs" / f"{stem}.yaml"


def test_api_takes_names_like_files():
    by_name = api.load_scenario("meta-llama/Llama-3.1-8B", "h100", overrides=["parallelism.tp=8", "parallelism.dp=1"])
    by_file = api.load_scenario(ROOT / "model_configs/llama3.1-8b.yaml", ROOT / "hardware_configs/H100-SXM5-80GB.yaml",
                                overrides=["parallelism.tp=8", "parallelism.dp=1"])
    assert api.simulate(by_name).step_time_s == api.simulate(by_file).step_time_s


def test_unknown_name_names_the_closest():
    with pytest.raises(RankflowError) as exc:
        catalog.model_path("llama3-70b")
    line = exc.value.one_line()
    assert "no model named 'llama3-70b'" in line and "llama3.1-70b" in line
    with pytest.raises(RankflowError, match="h100"):
        catalog.hardware_path("h1000")


def test_a_missing_file_path_is_a_path_not_a_name(tmp_path):
    with pytest.raises(RankflowError, match="file not found"):
        api.load_model(tmp_path / "nope.yaml")


def test_cli_by_name(capsys):
    assert tool.main(["simulate", "--model", "llama2-7b", "--hardware", "a100", "--set", "parallelism.dp=8"]) == 0
    assert "Llama-2-7B on 8 x A100-SXM4-80GB" in capsys.readouterr().out
    assert tool.main(["memory", "--model", "llama2-7b", "--hardware", "a100"]) == 0
    assert "fits" in capsys.readouterr().out
    assert tool.main(["simulate", "--model", "lama2-7b", "--hardware", "a100"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "llama2-7b" in err


def test_listing_commands(capsys):
    assert tool.main(["models", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "rankflow.models" and doc["schema_version"] == doc["version"] == "1.1" and len(doc["models"]) >= 40
    row = next(r for r in doc["models"] if r["name"] == "deepseek-v3")
    assert row["family"] == "moe+mla" and 600 < row["params_b"] < 700 and row["active_params_b"] < 50
    assert "deepseek-ai/DeepSeek-V3" in row["hf"]
    families = {r["family"] for r in doc["models"]}
    assert {"dense", "moe", "moe+mla"} <= families
    assert tool.main(["hardware"]) == 0
    out = capsys.readouterr().out
    assert "H100-SXM5-80GB" in out and "989" in out and "h100" in out
    assert tool.main(["hardware", "--json"]) == 0
    hw = json.loads(capsys.readouterr().out)["hardware"]
    assert next(r for r in hw if r["name"] == "B200")["hbm_gib"] > 150


def test_usage_lists_every_command(capsys):
    assert tool.main(["help"]) == 0
    out = capsys.readouterr().out
    for command in tool.COMMANDS:
        assert f"  {command}" in out


def test_the_readme_shows_what_the_commands_do(capsys):
    readme = (ROOT / "README.md").read_text()
    shown = next(line for line in readme.splitlines() if line.startswith("rankflow: error: --model: no model named"))
    assert tool.main(["simulate", "--model", "llama3-70b", "--hardware", "h100"]) == 2
    assert capsys.readouterr().err.strip() == shown
    start = readme.index("rankflow export --to megatron --model")
    command = readme[start:readme.index("\n```", start)].replace("\\\n", " ").split()
    args = [a for a in command[1:] if not a.startswith("[") and not a.endswith("]")]
    assert tool.main(args) == 0
    assert "--tensor-model-parallel-size 8" in capsys.readouterr().out


def test_unknown_names_hint_the_listing_command():
    with pytest.raises(RankflowError, match="`rankflow hardware` lists them"):
        catalog.hardware_path("zzzzzzzzzzzzzzzz")
    with pytest.raises(RankflowError, match="no model named 'x{80}...'"):
        catalog.model_path("x" * 300)


def test_llamafactory_export_names_the_hugging_face_repository(capsys):
    assert tool.main(["export", "--to", "llamafactory", "--model", "mixtral-8x7b", "--hardware", "h100",
                      "--set", "workload.finetune.method=lora", "--set", "parallelism.dp=8"]) == 0
    assert "model_name_or_path: mistralai/Mixtral-8x7B-v0.1" in capsys.readouterr().out


def test_a_model_directory_is_named_as_one_with_its_config_json(tmp_path):
    # A Hugging Face model directory was looked up as a name: "no model named '/path/to/dir'".
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RankflowError, match="is a directory") as exc:
        catalog.model_source(str(tmp_path))
    assert exc.value.field == "--model" and str(tmp_path / "config.json") in exc.value.fix
    with pytest.raises(RankflowError, match="no model named"):  # the server never reads paths
        catalog.model_path(str(tmp_path), field="model")
