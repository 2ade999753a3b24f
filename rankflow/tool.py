"""The `rankflow` command. `rankflow simulate|memory|search|sweep|recommend|serve|export|server|models|hardware
...`; with no subcommand it is the simulator of run_perf.py (`rankflow --hardware_config H.yaml --model_config
M.yaml`), so RAPID-LLM users' command lines keep working."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rankflow.refusal import refusing

USAGE = """usage: rankflow <command> [options]   (rankflow <command> --help for its options)

  simulate   one training step or inference iteration: step time, tokens/s, MFU, breakdown, memory
  memory     per-GPU memory and the fits verdict only (simulate --memory-only)
  search     every valid plan for a model on a cluster: the fastest, the cheapest, the Pareto front
  sweep      one plan field over several values (e.g. GPU counts)
  recommend  the cluster and GPU count that train a model fastest or cheapest
  serve      serving: TTFT, TPOT, throughput, capacity at an SLO, the cheapest deployment
  export     a plan as Megatron-LM, torchtitan, DeepSpeed or LlamaFactory launch settings
  server     the REST API and web page (pip install -e '.[server]')
  models     the shipped models with their key numbers (names and Hugging Face ids work as --model)
  hardware   the shipped hardware with their key numbers (names and aliases work as --hardware)

With no command, rankflow takes run_perf.py's options (rankflow --hardware_config H.yaml --model_config M.yaml).
"""


def _simulate(args: list[str]) -> int:
    from rankflow import cli

    return cli.main(args, "rankflow simulate")


def _memory(args: list[str]) -> int:
    from rankflow import cli

    return cli.main([*args, "--memory-only"] if "--memory-only" not in args else args, "rankflow memory")


def _search_family(command: str) -> Callable[[list[str]], int]:
    def run(args: list[str]) -> int:
        from rankflow import search_cli

        return search_cli.run(command, args)
    return run


def _export(args: list[str]) -> int:
    from rankflow import export_cli

    return export_cli.run(args)


def _server(args: list[str]) -> int:
    from rankflow.server import launch

    return launch.run(args)


def _listing(kind: str) -> Callable[[list[str]], int]:
    def run(args: list[str]) -> int:
        from rankflow import listing_cli

        return listing_cli.run(kind, args)
    return run


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "simulate": _simulate, "memory": _memory, "search": _search_family("search"),
    "sweep": _search_family("sweep"), "recommend": _search_family("recommend"),
    "serve": _search_family("serve"), "export": _export, "server": _server,
    "models": _listing("models"), "hardware": _listing("hardware"),
}
OWN_ERRORS = ("simulate", "memory")  # cli.main prints its own one-line errors


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("help", "-h", "--help") and len(args) == 1:
        sys.stdout.write(USAGE)
        return 0
    if args and not args[0].startswith("-") and args[0] not in COMMANDS:
        sys.stderr.write(f"rankflow: error: command: unknown command '{args[0]}' (fix: use one of: "
                         f"{', '.join(COMMANDS)}; see rankflow --help)\n")
        return 2
    if not args or args[0] not in COMMANDS:
        from rankflow import cli

        return cli.main(args if argv is not None else None)
    command, rest = args[0], args[1:]
    if command in OWN_ERRORS:
        return COMMANDS[command](rest)
    return refusing(f"rankflow {command}", lambda: COMMANDS[command](rest))


if __name__ == "__main__":
    sys.exit(main())
