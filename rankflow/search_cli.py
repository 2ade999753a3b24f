"""`rankflow search`, `rankflow sweep` and `rankflow recommend`: parse, call rankflow.search /
rankflow.sweep, render, write every output together (or none)."""

from __future__ import annotations

import argparse
import sys
import time

from graphgen.errors import RankflowError
from graphgen.search.space import MICRO_BATCHES, RECOMPUTE, ZERO, Constraints
from rankflow.cli import _Parser

MAX_CHECK = 64  # plans re-simulated in full to check the fast evaluator: each is a DAG replay


def _ints(text: str, flag: str) -> list[int]:
    """'1024', '8,16,32' or a power-of-two range '8:1024'."""
    try:
        if ":" in text:
            lo, hi = (int(x) for x in text.split(":"))
            out, n = [], lo
            while 1 <= n <= hi:  # doubling from 0 or a negative count would never pass hi
                out.append(n)
                n *= 2
        else:
            out = [int(x) for x in text.split(",")]
    except ValueError:
        raise RankflowError(f"'{text}' is not a GPU count, a list or a range", field=flag,
                            fix="write 1024, 64,128,256 or 8:1024 (powers of two)") from None
    if not out or any(n < 1 or n > 1_000_000 for n in out) or len(out) > 64:
        raise RankflowError(f"'{text}' gives no GPU count between 1 and 1,000,000 (at most 64 of them)", field=flag,
                            fix="give positive GPU counts")
    return out


def _common(ap: argparse.ArgumentParser, hardware_many: bool = True) -> None:
    ap.add_argument("--model_config", "--model-config", "--model", required=True, metavar="M.yaml|NAME")
    ap.add_argument("--hardware_config", "--hardware-config", "--hardware", nargs="+" if hardware_many else None,
                    required=True, metavar="H.yaml|NAME")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override model/workload fields")
    ap.add_argument("--json", metavar="OUT.json")
    ap.add_argument("--csv", metavar="OUT.csv")
    ap.add_argument("--png", metavar="OUT.png", help="plot (needs matplotlib: pip install -e '.[plots]')")
    ap.add_argument("--quiet", action="store_true")


def _search_parser(prog: str) -> argparse.ArgumentParser:
    ap = _Parser(prog=prog, description="Find the best parallelism plans for a model on one or more clusters.")
    _common(ap)
    ap.add_argument("--gpus", required=True, help="GPU count, list (64,128) or power-of-two range (8:1024)")
    ap.add_argument("--max-tp", type=int)
    for axis in ("tp", "pp", "cp", "ep"):
        ap.add_argument(f"--{axis}", type=int, help=f"fix {axis}")
    ap.add_argument("--zero", default=",".join(map(str, ZERO)), help="ZeRO stages to try (default 0,1,2,3)")
    ap.add_argument("--recompute", default=",".join(RECOMPUTE), help="recompute modes (default none,selective,full)")
    ap.add_argument("--micro-batch", default=",".join(map(str, MICRO_BATCHES)), help="micro-batch sizes (default 1,2,4,8)")
    ap.add_argument("--schedules", default="1f1b,interleaved,zb-h1,dualpipe", help="pipeline schedules to try")
    ap.add_argument("--headroom-gib", type=float, default=0.0, help="memory each GPU keeps free")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--check", type=int, default=8, help="plans re-simulated through the DAG to check the fast path")
    ap.add_argument("--executor", default="local", help="local (processes, default), serial, or ray")
    ap.add_argument("--workers", type=int, help="local processes (default: every core)")
    ap.add_argument("--ray-address", help="join this Ray cluster (default: a local Ray instance)")
    return ap


def constraints_of(args) -> Constraints:
    def listed(text: str, cast, flag: str) -> tuple:
        try:
            out = tuple(cast(x) for x in text.split(",") if x)
        except ValueError:
            raise RankflowError(f"'{text}' is not a list", field=flag, fix="write comma-separated values") from None
        if not out:
            raise RankflowError("empty list", field=flag, fix="give at least one value")
        return out
    zero = listed(args.zero, int, "--zero")
    rec = listed(args.recompute, str, "--recompute")
    if set(zero) - set(ZERO) or set(rec) - set(RECOMPUTE):
        raise RankflowError("unknown ZeRO stage or recompute mode", field="--zero/--recompute",
                            fix="ZeRO 0-3; recompute none, selective, full")
    # inf passed the old check and wrote -inf headroom into every CSV row; no GPU holds a million GiB.
    if not 0 <= args.headroom_gib < 1e6:
        raise RankflowError(f"headroom must be from 0 to 1e6 GiB, got {args.headroom_gib:g}", field="--headroom-gib",
                            fix="e.g. 4")
    # A size below 1 was silently taken as unset (--cp 0) or blamed on --gpus ("no candidate plan").
    micro = listed(args.micro_batch, int, "--micro-batch")
    for flag, sizes in (("--tp", [args.tp]), ("--pp", [args.pp]), ("--cp", [args.cp]), ("--ep", [args.ep]),
                        ("--max-tp", [args.max_tp]), ("--micro-batch", micro)):
        if any(v is not None and v < 1 for v in sizes):
            raise RankflowError(f"sizes must be at least 1, got {min(v for v in sizes if v is not None)}",
                                field=flag, fix=f"give {flag} 1 or more, or leave it out")
    return Constraints(max_tp=args.max_tp, tp=args.tp, pp=args.pp, cp=args.cp, ep=args.ep, zero_stage=zero,
                       recompute=rec, micro_batch=micro,
                       schedules=listed(args.schedules, str, "--schedules"), headroom_gib=args.headroom_gib)


def outputs_of(args, render: dict):
    """The requested outputs, their paths checked now (before any work), rendered at commit."""
    from rankflow.outputs import OutputSet

    outputs = OutputSet()
    for flag, fn in render.items():
        path = getattr(args, flag)
        if path:
            outputs.add(path, fn)
    outputs.check()
    return outputs


def commit(args, outputs, report: str) -> None:
    """Write the files, then the report and what was written: the files first, so that one that cannot be
    written stops the command before it prints a report, and the report first on screen, so that the
    paths are its last lines."""
    outputs.commit()
    if not args.quiet:
        sys.stdout.write(report)
        for path in outputs.paths():
            sys.stdout.write(f"wrote {path}\n")


def _png(fn):
    def render():
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise RankflowError("matplotlib is not installed", field="--png", fix="pip install -e '.[plots]'") from None
        return fn()
    return render


def run_search(argv: list[str]) -> int:
    from rankflow import search
    from reports import search_out

    args = _search_parser("rankflow search").parse_args(argv)
    if args.quiet and not (args.json or args.csv or args.png):
        raise RankflowError("--quiet with no output file would print and write nothing", field="--quiet",
                            fix="add --json, --csv or --png, or drop --quiet")
    if args.top < 1 or not 0 <= args.check <= MAX_CHECK:
        raise RankflowError(f"--top must be at least 1 and --check from 0 to {MAX_CHECK}", field="--top/--check",
                            fix="e.g. --top 10 --check 8")
    # Each executor reads only its own option: --workers 3 with --executor serial ran on one core, unsaid.
    for flag, value, owner in (("--workers", args.workers, "local"), ("--ray-address", args.ray_address, "ray")):
        if value is not None and args.executor != owner:
            raise RankflowError(f"{flag} applies to --executor {owner}, not {args.executor}", field=flag,
                                fix=f"add --executor {owner} or drop {flag}")
    got: dict = {}
    outputs = outputs_of(args, {"json": lambda: search_out.dumps(got["found"]),
                                "csv": lambda: search_out.to_csv(got["found"]),
                                "png": _png(lambda: search_out.front_png(got["found"]))})
    t0 = time.perf_counter()
    got["found"] = search.search(args.model_config, args.hardware_config, _ints(args.gpus, "--gpus"), args.set,
                                 constraints_of(args), args.top, args.check, args.executor, args.workers,
                                 args.ray_address, quiet=args.quiet)
    wall = time.perf_counter() - t0
    commit(args, outputs, "" if args.quiet else search_out.summary(got["found"], wall))
    return 0


def run(command: str, argv: list[str]) -> int:
    if command == "search":
        return run_search(argv)
    if command == "serve":
        from rankflow import serve_cli

        return serve_cli.run(argv)
    from rankflow import sweep_cli

    return sweep_cli.run(command, argv)
