"""The model catalogue (benchmarks/model_catalogue.yaml): rows that name a model whose architecture their
columns cannot state become the shipped config they are, with what the run changed."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import yaml

from benchmarks.rows import HW_DIR, Skip
from rankflow import api

CATALOGUE = Path(__file__).resolve().parent / "model_catalogue.yaml"


def _int(text: str, field: str, default: int | None = None) -> int:
    text = (text or "").strip()
    m = re.match(r"\d+", text)
    if not m:
        if default is None:
            raise Skip(f"{field} not stated")
        return default
    return int(m.group())


@functools.cache
def catalogue() -> tuple[dict, ...]:
    return tuple(yaml.safe_load(CATALOGUE.read_text()))


def _catalogue_entry(r: dict) -> dict | None:
    low = r["model"].lower()
    return next((e for e in catalogue() if e["match"] in low), None)


def _catalogued(r: dict) -> dict | None:
    """The model spec of a row whose model the catalogue knows (benchmarks/model_catalogue.yaml)."""
    entry = _catalogue_entry(r)
    if entry is None:
        return None
    if "skip" in entry:
        raise Skip(entry["skip"])
    spec = api.load_model(HW_DIR.parent / "model_configs" / entry["config"]).model.model_dump(exclude_none=True)
    if entry.get("layers") == "row":
        spec["layers"] = _int(r["layers"], "layers")
    for key, value in entry.get("set", {}).items():
        node = spec
        *path, leaf = key.split(".")[1:]
        for k in path:
            node = node[k]
        node[leaf] = value
    return spec
