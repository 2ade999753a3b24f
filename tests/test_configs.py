"""Every shipped config loads and runs; Hugging Face configs import offline."""

from __future__ import annotations

import pytest

from graphgen.errors import RankflowError
from graphgen.model.flops import total_params
from rankflow.api import load_hardware, load_model
from tests.helpers import ROOT, TINY_LLAMA, run, scenario

HARDWARE = sorted((ROOT / "hardware_configs").glob("*.yaml"))
MODELS = sorted((ROOT / "model_configs").glob("*.yaml"))
HF = sorted((ROOT / "tests" / "data" / "hf").glob("*.json"))


@pytest.mark.parametrize("path", HARDWARE, ids=lambda p: p.stem)
def test_hardware_config_runs(path):
    hw = load_hardware(path)
    assert hw.device.sources, "every hardware config cites its sources"
    precision = "bf16" if "bf16" in hw.device.peak_tflops else "fp16"
    gpn = hw.node.gpus_per_node
    sc = scenario(TINY_LLAMA, {"global_batch": gpn, "precision": precision}, hw_file=path, dp=gpn)
    res = run(sc)
    assert 0 < res.mfu < 1


# Published parameter counts (billions): HF model cards, Narayanan et al. 2021 Table 1, BLOOM paper.
PARAMS_B = {"llama2-7b": 6.74, "llama2-13b": 13.0, "llama2-70b": 69.0, "llama3.1-8b": 8.03,
            "llama3.1-70b": 70.6, "llama3.1-405b": 405.9, "gpt3-175b": 174.6, "gpt-1t": 1008.0,
            "gpt-530b": 529.6, "mpt-7b": 6.65, "mpt-70b": 64.86, "bloom-176b": 176.2}


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_model_config_loads_and_counts_parameters(path):
    mc = load_model(path)
    if path.stem in PARAMS_B:
        assert total_params(mc.model) / 1e9 == pytest.approx(PARAMS_B[path.stem], rel=0.02)


@pytest.mark.parametrize("path", HF, ids=lambda p: p.stem)
def test_hugging_face_config_imports(path):
    mc = load_model(path)
    assert mc.model.layers > 0 and mc.model.hidden % mc.model.heads == 0


def test_hugging_face_unknown_type_is_refused(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "t5", "d_model": 512}')
    with pytest.raises(RankflowError, match="model_type"):
        load_model(bad)


def test_readme_config_reference_is_generated_from_the_models():
    from pydantic import BaseModel

    from graphgen import config
    from rankflow.reference import SECTIONS, reference

    readme = (ROOT / "README.md").read_text()
    assert reference() in readme, "regenerate it: python -m rankflow.reference"
    documented = {cls for _, cls in SECTIONS}
    models = {cls for cls in vars(config).values() if isinstance(cls, type) and issubclass(cls, BaseModel)
              and cls.__module__.startswith(config.__name__)}
    # Every config model is documented, except the file layouts, which only combine the others.
    assert models - documented == {config.Cluster, config.HardwareConfig, config.ModelConfig, config.PlanConfig}
