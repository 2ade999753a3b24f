"""Models and hardware by name: `--model llama3.1-70b`, `--model meta-llama/Llama-3.1-70B` (a Hugging Face
id, resolved offline through catalog/models.yaml), `--hardware h100` (catalog/hardware.yaml's aliases).

A string that names an existing file, or ends in .yaml/.yml/.json, is a path and is read as one; anything
else is a name. An unknown name is refused with the closest names, so a typo costs one line, not a search.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphgen.errors import RankflowError, clip
from rankflow.files import read_mapping

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "model_configs"
HARDWARE_DIR = ROOT / "hardware_configs"
CATALOG_DIR = ROOT / "catalog"
FILE_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Entry:
    name: str                  # the file stem: the name `rankflow models` / `rankflow hardware` prints
    path: Path
    aliases: tuple[str, ...]   # Hugging Face ids (models) or short names (hardware)


def is_name(source: str | Path) -> bool:
    """Whether a CLI/API string is a catalog name rather than a file path."""
    text = str(source)
    if text.lower().endswith(FILE_SUFFIXES):
        return False
    try:
        return not Path(text).is_file()
    except (OSError, ValueError):  # too long or a NUL byte: no file has that name
        return True


def _is_dir(text: str) -> bool:
    try:
        return Path(text).is_dir()
    except (OSError, ValueError):  # too long or a NUL byte
        return False


def _strings(value: Any, file: str, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RankflowError("expected a list of names", file=file, field=field, fix="write [name, ...] or []")
    return tuple(value)


def model_entries() -> list[Entry]:
    """Every shipped model config with the Hugging Face ids whose config.json it came from."""
    file = str(CATALOG_DIR / "models.yaml")
    data = read_mapping(file, "model catalog")
    out = []
    for stem, spec in sorted(data.items()):
        if not isinstance(spec, dict) or set(spec) != {"hf"}:
            raise RankflowError("each model needs exactly {hf: [...]}", file=file, field=stem, fix="write {hf: []}")
        out.append(Entry(stem, MODELS_DIR / f"{stem}.yaml", _strings(spec["hf"], file, f"{stem}.hf")))
    return out


def hardware_entries() -> list[Entry]:
    """Every shipped hardware config with its short aliases."""
    file = str(CATALOG_DIR / "hardware.yaml")
    data = read_mapping(file, "hardware catalog")
    return [Entry(stem, HARDWARE_DIR / f"{stem}.yaml", _strings(aliases, file, stem))
            for stem, aliases in sorted(data.items())]


def _resolve(name: str, entries: list[Entry], kind: str, field: str, listing: str | None = None) -> Path:
    index: dict[str, Path] = {}
    for e in entries:
        for key in (e.name, *e.aliases):
            index[key.lower()] = e.path
    key = name.strip().lower()
    key = key.removeprefix("https://huggingface.co/").rstrip("/")
    if key in index:
        return index[key]
    if field.startswith("--") and _is_dir(name):  # a Hugging Face model directory is a common thing to pass
        inner = Path(name) / "config.json"
        raise RankflowError("is a directory, not a config file", file=clip(name), field=field,
                            fix=f"give {inner}" if kind == "model" and inner.is_file() else "give a config file in it")
    close = difflib.get_close_matches(key, list(index), n=4, cutoff=0.5)
    listing = listing or f"`rankflow {'models' if kind == 'model' else kind}`"
    hint = f"closest: {', '.join(close)}" if close else f"{listing} lists them"
    shown = clip(name)
    where = "a file path or a shipped name" if field.startswith("--") else "a shipped name"
    raise RankflowError(f"no {kind} named '{shown}'", field=field, fix=f"give {where} ({hint})")


def model_path(name: str, field: str = "--model", listing: str | None = None) -> Path:
    return _resolve(name, model_entries(), "model", field, listing)


def hardware_path(name: str, field: str = "--hardware", listing: str | None = None) -> Path:
    return _resolve(name, hardware_entries(), "hardware", field, listing)


def hf_id_of(path: str | Path) -> str | None:
    """The Hugging Face id a shipped model file came from (None: not shipped, or no HF release)."""
    p = Path(path)
    for e in model_entries():
        if e.path == p.resolve() and e.aliases:
            return e.aliases[0]
    return None


def model_source(source: Any) -> Any:
    """A model argument with a name replaced by its shipped file; anything else as given."""
    return model_path(str(source)) if isinstance(source, (str, Path)) and is_name(source) else source


def hardware_source(source: Any) -> Any:
    return hardware_path(str(source)) if isinstance(source, (str, Path)) and is_name(source) else source
