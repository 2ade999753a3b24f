"""Generated bad and odd inputs for run_perf.py: mutated model and hardware files, `--set` strings and
Hugging Face config.json files. Shared by the fuzz test in the suite and benchmarks/fuzz.py.

A case is (files to write: name -> text, command-line arguments). Every case must end in exit 0 with
finite numbers in its outputs, or exit 2 with one line on stderr and no output file.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE_MODEL = yaml.safe_load((ROOT / "model_configs" / "llama2-7b.yaml").read_text())
BASE_MODEL["model"]["layers"] = 2
BASE_MODEL["workload"]["global_batch"] = 8
BASE_HW = yaml.safe_load((ROOT / "hardware_configs" / "A100-SXM4-80GB.yaml").read_text())
HF_LLAMA = {"model_type": "llama", "hidden_size": 256, "num_attention_heads": 8, "num_key_value_heads": 4,
            "num_hidden_layers": 2, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 4096,
            "hidden_act": "silu", "tie_word_embeddings": False}

ODD_VALUES: list[Any] = [0, -1, 1, 2, 3, 7, 2**31, 2**63, 10**30, 0.0, -0.5, 1e-300, 1e300, float("inf"),
                         float("-inf"), float("nan"), True, False, None, "", "x", "8", "bf16", "fp8", "full",
                         [], [1, 2], {}, {"a": 1}, 0.5, 1.0, 1.5, 4096, 65536]
ODD_KEYS = ["", ".", "..", "a..b", " tp", "model.", ".layers", "parallelism.tp.x", "nosuch.field"]


def _leaves(data: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(data, dict):
        return [leaf for k, v in data.items() for leaf in _leaves(v, (*path, k))] or [path]
    if isinstance(data, list) and data and not isinstance(data[0], list | tuple):
        return [path]
    return [path]


def _set(data: Any, path: tuple, value: Any) -> None:
    for k in path[:-1]:
        data = data[k]
    data[path[-1]] = value


def _dump(data: Any, rng: random.Random) -> str:
    if rng.random() < 0.2:
        return json.dumps(data)  # YAML accepts JSON (and NaN/Infinity become strings there)
    return yaml.safe_dump(data, sort_keys=False)


def _mutated(base: dict, rng: random.Random) -> dict:
    data = json.loads(json.dumps(base))
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_leaves(data))
        roll = rng.random()
        if roll < 0.75 and path:
            _set(data, path, copy.deepcopy(rng.choice(ODD_VALUES)))
        elif roll < 0.85 and path:
            _set(data, (*path[:-1], path[-1] + "_typo"), 1)
        elif path and len(path) > 1:
            parent = data
            for k in path[:-1]:
                parent = parent[k]
            parent.pop(path[-1], None)
    return data


def _set_arg(rng: random.Random) -> str:
    paths = [".".join(map(str, p)) for p in _leaves(BASE_MODEL) + _leaves(BASE_HW) if p]
    key = rng.choice(paths + ODD_KEYS + ["parallelism.tp", "parallelism.pp", "parallelism.dp", "parallelism.zero_stage",
                                         "parallelism.schedule", "parallelism.virtual_stages", "parallelism.cp"])
    value = rng.choice(["8", "0", "-3", "true", "null", "1e400", ".nan", "[1]", "{a: 1}", "abc", "2.5", "",
                        "999999999999999999999", "interleaved", "1f1b", "selective", "2024-01-01", "!!binary aGk="])
    return f"{key}={value}"


PLAN_CHOICES: dict[str, list] = {
    "parallelism.tp": [1, 2, 3, 4, 8, 16], "parallelism.pp": [1, 2, 3, 4, 8], "parallelism.dp": [1, 2, 3, 4, 16],
    "parallelism.sp": [True, False], "parallelism.schedule": ["gpipe", "1f1b", "interleaved"],
    "parallelism.virtual_stages": [1, 2, 3], "parallelism.zero_stage": [0, 1, 2, 3],
    "parallelism.recompute": ["none", "selective", "full"], "parallelism.recompute_every": [1, 2, 3],
    "parallelism.stage_split": ["even", "balanced"], "parallelism.overlap_grad_reduce": [True, False],
    "parallelism.overlap_param_gather": [True, False], "workload.micro_batch": [1, 2, 3],
    "workload.global_batch": [1, 2, 4, 8, 24, 64], "workload.seq_len": [1, 7, 128, 4096],
    "model.layers": [1, 2, 3, 8], "workload.precision": ["bf16", "fp8", "fp32", "fp16"],
    "workload.finetune.method": ["full", "lora", "qlora", "dora", "freeze"], "workload.flash_attention": [True, False],
    "model.sliding_window": [16, 4096], "workload.optimizer": ["adamw", "sgd", "adam8bit", "adafactor"],
}


def _plan_args(rng: random.Random) -> list[str]:
    """A plan drawn from valid values of each field: the combinations are what may break."""
    args = []
    for key in rng.sample(sorted(PLAN_CHOICES), rng.randint(2, 7)):
        value = rng.choice(PLAN_CHOICES[key])
        args += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return args


def case(seed: int) -> tuple[dict[str, str], list[str]]:
    """One generated case: the files it needs and its arguments (paths relative to its directory)."""
    rng = random.Random(seed)
    kind = rng.choice(["model", "hardware", "set", "hf", "flags", "plan", "plan"])
    model = BASE_MODEL if kind != "model" else _mutated(BASE_MODEL, rng)
    hw = BASE_HW if kind != "hardware" else _mutated(BASE_HW, rng)
    files = {"m.yaml": _dump(model, rng), "h.yaml": _dump(hw, rng)}
    args = ["--hardware_config", "h.yaml", "--model_config", "m.yaml", "--json", "out/r.json"]
    if kind == "hf":
        files["config.json"] = json.dumps(_mutated(HF_LLAMA, rng))
        args[3] = "config.json"
        args += ["--set", "workload.global_batch=8"]
    if kind == "plan":
        args += _plan_args(rng)
    for _ in range(rng.randint(0 if kind != "set" else 1, 3) if kind != "plan" else 0):
        args += ["--set", _set_arg(rng)]
    if kind == "flags" or rng.random() < 0.2:
        args += rng.choice([["--trace", "out/t.json"], ["--graph", "out/g"], ["--memory-only"], ["--quiet"],
                            ["--trace", "out/t.json", "--trace-ranks", rng.choice(["0", "1,2", "x", "-1"])],
                            ["--detail", "ops"], ["--graph", "out/g", "--graph-max-nodes", rng.choice(["5", "0"])],
                            ["--layers"]])
    return files, args


def outputs_of(args: list[str]) -> list[str]:
    """The output files a case asks for (relative paths)."""
    out = []
    for flag, suffixes in (("--json", [""]), ("--trace", [""]), ("--graph", [".dot", ".html"])):
        if flag in args:
            out += [args[args.index(flag) + 1] + s for s in suffixes]
    return out
