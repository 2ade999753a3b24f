"""`rankflow export --to megatron|torchtitan|deepspeed|llamafactory`: load the scenario, export it,
print it or write it to --out (atomically, through rankflow.outputs, so a failure leaves nothing)."""

from __future__ import annotations

import sys

from rankflow.cli import _Parser
from rankflow.refusal import refusing

PROG = "rankflow export"


def _parser() -> _Parser:
    from rankflow.export import TARGETS

    ap = _Parser(prog=PROG, description="Write a scenario's launch configuration for a training framework: "
                                        "Megatron-LM arguments, a torchtitan TOML, a DeepSpeed JSON or a "
                                        "LlamaFactory YAML. A plan feature the framework cannot express is an "
                                        "error naming the field.")
    ap.add_argument("--to", required=True, choices=list(TARGETS), help="the framework")
    ap.add_argument("--model_config", "--model-config", "--model", required=True, metavar="M.yaml|NAME",
                    help="model + workload YAML (see model_configs/), or a shipped model's name")
    ap.add_argument("--hardware_config", "--hardware-config", "--hardware", required=True, metavar="H.yaml|NAME",
                    help="hardware YAML, optionally with the plan (see hardware_configs/)")
    ap.add_argument("--plan_config", "--plan-config", metavar="P.yaml", help="plan YAML; replaces the hardware file's")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any field, e.g. --set parallelism.tp=8")
    ap.add_argument("--out", metavar="PATH", help="write here (default: print to stdout)")
    return ap


def _export(argv: list[str]) -> int:
    from rankflow import api, catalog
    from rankflow.export import export
    from rankflow.outputs import OutputSet

    args = _parser().parse_args(argv)
    outputs = OutputSet()
    if args.out is not None:
        outputs.add(args.out, lambda: result.text)
        outputs.check()  # a bad path is refused before the scenario is loaded
    sc = api.load_scenario(args.model_config, args.hardware_config, args.plan_config, args.set)
    result = export(sc, args.to, catalog.hf_id_of(sc.model_file))
    if args.out is None:
        sys.stdout.write(result.text)
    else:
        outputs.commit()
        sys.stdout.write(f"wrote {args.out}\n")
    return 0


def run(argv: list[str]) -> int:
    """Exit status 0, or 2 with one line on stderr and nothing written."""
    return refusing(PROG, lambda: _export(argv))
