"""Reading config files safely: every problem is one RankflowError naming the file.

YAML is read with PyYAML's safe loader, tightened: duplicate keys are errors (a second
`parallelism:` block must not silently replace the first), explicit tags JSON cannot hold
(!!binary, !!set) are refused, dates stay the text that was written, nesting depth and the size
the document expands to (alias bombs) are bounded, and files over 16 MiB are refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml

from graphgen.errors import RankflowError

MAX_FILE_BYTES = 16 * 2**20
MAX_NODES = 1_000_000   # values after alias expansion
MAX_DEPTH = 64


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str | int | float | bool) or key is None:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is not a plain scalar",
                                                    key_node.start_mark)
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


def _refuse(loader: _Loader, node: yaml.Node) -> None:
    raise yaml.constructor.ConstructorError(None, None, f"tag {node.tag} is not a config value", node.start_mark)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))
for _tag in ("binary", "set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _refuse)


def _check_plain(data: Any, file: str) -> None:
    """Only JSON-representable, finite values, bounded in depth and in expanded size."""
    count = 0
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise RankflowError(f"the document expands to more than {MAX_NODES:,} values (YAML aliases?)",
                                file=file, fix="write the config without repeated anchors/aliases")
        if len(path) > MAX_DEPTH:
            raise RankflowError(f"nested deeper than {MAX_DEPTH} levels", file=file, fix="flatten the document")
        if isinstance(value, dict):
            stack.extend((v, (*path, str(k))) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, (*path, str(i))) for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise RankflowError(f"{value} is not a finite number", file=file, field=".".join(path) or None,
                                fix="give a finite value")
        elif not (value is None or isinstance(value, str | int | float | bool)):
            raise RankflowError(f"value of type {type(value).__name__} is not a config value", file=file,
                                field=".".join(path) or None, fix="use numbers, strings, booleans, lists and mappings")


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key '{k}'")
        out[k] = v
    return out


def parse_text(text: str, file: str, as_json: bool) -> Any:
    try:
        if as_json:
            return json.loads(text, object_pairs_hook=_json_pairs)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except RecursionError:
        raise RankflowError(f"nested deeper than {MAX_DEPTH} levels", file=file, fix="flatten the document") from None
    except (yaml.YAMLError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
            mark = exc.problem_mark or exc.context_mark
            first = exc.problem + (f" (line {mark.line + 1})" if mark else "")
        fix = ("write plain values: numbers, strings, booleans, lists and mappings, each key once"
               if isinstance(exc, yaml.constructor.ConstructorError) else "check the YAML/JSON syntax")
        raise RankflowError(f"cannot parse: {first}", file=file, fix=fix) from None


# Real paths of the files the running command has read, which its outputs must not replace (`--json
# M.yaml` replaced the model config it had just read). Scoped to one command (rankflow.refusal), so a
# long-lived process (the server, a test run) neither accumulates nor shares them.
_INPUTS: ContextVar[set[str] | None] = ContextVar("rankflow_inputs_read", default=None)


@contextmanager
def recording_inputs() -> Iterator[None]:
    token = _INPUTS.set(set())
    try:
        yield
    finally:
        _INPUTS.reset(token)


def was_read(path: str | Path) -> bool:
    """Whether the running command read the file at `path` (through any spelling or link of it)."""
    inputs = _INPUTS.get()
    return inputs is not None and os.path.realpath(path) in inputs


def read_text(path: str | Path, what: str, limit: int = MAX_FILE_BYTES) -> str:
    """A UTF-8 text file of at most `limit` bytes, or the one-line error that says why not."""
    p = Path(path)
    file = str(path)
    if not p.is_file():
        problem = ("is a directory, not a file" if p.is_dir() else
                   "is not a regular file (a pipe, socket or device)" if p.exists() else "file not found")
        raise RankflowError(problem, file=file, fix=f"pass an existing {what} file")
    try:
        if p.stat().st_size > limit:
            raise RankflowError(f"file is larger than {limit // 2**20} MiB", file=file, fix=f"pass a {what} file")
        text = p.read_bytes().decode("utf-8")
        inputs = _INPUTS.get()
        if inputs is not None:
            inputs.add(os.path.realpath(p))
        return text
    except UnicodeDecodeError:
        raise RankflowError("not UTF-8 text", file=file, fix=f"pass a text {what} file") from None
    except OSError as exc:
        raise RankflowError(f"cannot read: {exc.strerror}", file=file, fix="check the path and permissions") from None


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML or JSON config file."""
    return mapping_of_text(read_text(path, what), str(path), Path(path).suffix.lower() == ".json")


def mapping_of_text(text: str, file: str, as_json: bool = False) -> dict[str, Any]:
    """The top-level mapping of YAML or JSON text (a file's, or a config pasted into the web page)."""
    data = parse_text(text, file, as_json)
    if not isinstance(data, dict):
        raise RankflowError("top level must be a mapping", file=file, fix="write the config as key: value pairs")
    _check_plain(data, file)
    return data
