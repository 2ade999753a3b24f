"""`--set a.b=c` overrides: parsed, routed to the model, hardware or plan section, and applied."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from graphgen.config.files import CLUSTER_SECTIONS, MODEL_SECTIONS, PLAN_SECTIONS
from graphgen.errors import RankflowError

Override = tuple[tuple[str, ...], Any]


_FLOAT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def parse_override(text: str) -> Override:
    """'a.b=c' -> (('a', 'b'), parsed c). Values are parsed as YAML scalars (so 8, true, 1e-3 work)."""
    if "=" not in text:
        raise RankflowError(f"override '{text}' has no '='", field="--set", fix="write --set a.b=value")
    key, raw = text.split("=", 1)
    parts = tuple(key.strip().split("."))
    if not key.strip() or any(not p.strip() or p != p.strip() for p in parts):
        raise RankflowError(f"override '{text}' has an empty or blank key segment", field="--set",
                            fix="write --set section.field=value, e.g. --set parallelism.tp=8")
    if len(raw) > 100_000:
        raise RankflowError(f"override for '{key}' is {len(raw):,} characters long", field="--set",
                            fix="put large values in the config file")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    except (RecursionError, ValueError) as exc:  # nesting too deep, an integer too long to convert
        raise RankflowError(f"override for '{key}' cannot be read ({type(exc).__name__})", field="--set",
                            fix="give a plain number, word or flat list") from None
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 15e12 (no dot) as text; a user means the number
    flat_list = isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value)
    if isinstance(value, dict) or (isinstance(value, list) and not flat_list):
        raise RankflowError(f"override '{key}' sets a mapping or nested list", field="--set",
                            fix="set one leaf field per --set (a flat list like [a,b] is fine)")
    if value is not None and not isinstance(value, (str, int, float, bool, list)):
        value = raw.strip()  # dates and timestamps stay the text the user wrote
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[Override], file: str = "--set") -> dict[str, Any]:
    """A copy of data with each dotted override set; only mappings on the override paths are copied."""
    out = dict(data)
    for parts, value in overrides:
        node = out
        for i, p in enumerate(parts[:-1]):
            child = node.get(p)
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise RankflowError(f"'{'.'.join(parts)}' goes through '{'.'.join(parts[:i + 1])}', which is not "
                                    "a mapping", file=file, field="--set", fix="override a leaf field")
            child = node[p] = dict(child)
            node = child
        node[parts[-1]] = value
    return out


@dataclass(frozen=True)
class RoutedOverrides:
    model: list[Override]
    cluster: list[Override]
    plan: list[Override]


def split_overrides(overrides: list[str | tuple[str, Any]]) -> RoutedOverrides:
    """Route each override to the model file, the cluster or the plan by its first key. An override
    is a `--set` string ('a.b=value', the value parsed as YAML) or a ('a.b', value) pair."""
    out = RoutedOverrides([], [], [])
    for item in overrides:
        if isinstance(item, tuple):
            key, value = item
            parts, text = parse_override(f"{key}=")[0], f"{key}={value!r}"
        else:
            text = item
            parts, value = parse_override(text)
        if parts[0] in MODEL_SECTIONS:
            out.model.append((parts, value))
        elif parts[0] in CLUSTER_SECTIONS:
            out.cluster.append((parts, value))
        elif parts[0] in PLAN_SECTIONS:
            out.plan.append((parts, value))
        else:
            known = ", ".join(sorted(MODEL_SECTIONS | CLUSTER_SECTIONS | PLAN_SECTIONS))
            raise RankflowError(f"unknown section '{parts[0]}' in '{text}'", field="--set",
                                fix=f"start the key with one of: {known}")
    return out
