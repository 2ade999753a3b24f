"""The shipped model configs added from Hugging Face config.json files: each counts the parameters its model
card publishes, and each is listed in catalog/models.yaml with the Hugging Face ids it came from."""

from __future__ import annotations

import pytest

from graphgen.model.params import active_params, total_params
from rankflow import catalog
from rankflow.api import load_model
from tests.helpers import ROOT

# Published parameter counts (billions) from the model cards (Mistral-7B: its announcement; Qwen1.5-MoE: total
# and activated). Qwen2.5-32B's card (32.5B) is 0.8 % below what its config.json gives (32.76B).
CARD_B = {"llama3-8b": 8.03, "llama3.2-1b": 1.23, "llama3.2-3b": 3.21, "mistral-7b": 7.3, "mistral-nemo-12b": 12.0,
          "qwen2.5-3b": 3.09, "qwen2.5-7b": 7.61, "qwen2.5-14b": 14.7, "qwen2.5-32b": 32.5, "qwen2.5-72b": 72.7,
          "qwen3-8b": 8.2, "qwen3-14b": 14.8, "qwen3-32b": 32.8, "qwen1.5-moe-a2.7b": 14.3}
ACTIVE_B = {"qwen1.5-moe-a2.7b": 2.7}


@pytest.mark.parametrize("stem", sorted(CARD_B))
def test_config_counts_the_card_parameters(stem):
    m = load_model(ROOT / "model_configs" / f"{stem}.yaml").model
    assert total_params(m) / 1e9 == pytest.approx(CARD_B[stem], rel=0.025)
    if stem in ACTIVE_B:
        assert active_params(m) / 1e9 == pytest.approx(ACTIVE_B[stem], rel=0.025)


@pytest.mark.parametrize("stem", sorted(CARD_B))
def test_config_is_catalogued_under_its_hugging_face_ids(stem):
    entry = next(e for e in catalog.model_entries() if e.name == stem)
    assert entry.aliases, "a config taken from Hugging Face lists the repositories it came from"
    for hf_id in entry.aliases:
        assert catalog.model_path(hf_id) == ROOT / "model_configs" / f"{stem}.yaml"

