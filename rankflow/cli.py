"""Command line: parse arguments, call rankflow.api, render reports, write files.

This is the only layer (with rankflow.files and rankflow.outputs) that touches user files. Every
problem a user can cause ends as one line on stderr and exit code 2; outputs are rendered first
and written all together, so a failed run leaves no file behind.
"""

from __future__ import annotations

import argparse
import os
import sys

from graphgen.errors import RankflowError, clip


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are the one-line RankflowError, naming the command the user typed."""

    def error(self, message: str):  # type: ignore[override]
        raise RankflowError(message, field="arguments", fix=f"see {self.prog} --help")


def _parser(prog: str) -> argparse.ArgumentParser:
    ap = _Parser(prog=prog, description="Simulate one training step of an LLM on a cluster: step time, throughput, "
                                        "MFU, time breakdown and per-GPU memory.")
    ap.add_argument("--hardware_config", "--hardware-config", "--hardware", required=True, metavar="H.yaml|NAME",
                    help="hardware YAML or a shipped name (rankflow hardware): device, node, scale-out fabric, and optionally the plan")
    ap.add_argument("--model_config", "--model-config", "--model", required=True, metavar="M.yaml|NAME",
                    help="model + workload YAML, a Hugging Face config.json, or a shipped name or HF id (rankflow models)")
    ap.add_argument("--plan_config", "--plan-config", metavar="P.yaml",
                    help="plan YAML (a `parallelism:` section, optionally `execution_backend:`); replaces the "
                         "hardware file's plan")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any field, e.g. --set parallelism.tp=8 --set workload.seq_len=4096")
    ap.add_argument("--json", metavar="OUT.json", help="write the result as JSON (schema in README)")
    ap.add_argument("--trace", metavar="OUT.json", help="write a Chrome/Perfetto trace of the simulated timeline")
    ap.add_argument("--trace-ranks", default=None, metavar="R1,R2,...",
                    help="ranks to put in the trace (default: the first rank of every pipeline stage)")
    ap.add_argument("--graph", metavar="PREFIX", help="write one rank's DAG as PREFIX.dot and PREFIX.html")
    ap.add_argument("--graph-rank", type=int, default=None, help="rank whose DAG --graph writes (default 0)")
    ap.add_argument("--graph-max-nodes", type=int, default=None,
                    help="cap on nodes drawn by --graph (default 3000; the graph is cut, not sampled)")
    ap.add_argument("--chakra-out", metavar="DIR",
                    help="write Chakra traces (<DIR>/rankflow.<rank>.et) and the comm-group JSON for ASTRA-sim")
    ap.add_argument("--backend", default=None, help="override execution_backend.model (analytical or astra)")
    ap.add_argument("--detail", choices=["coarse", "ops"], default=None,
                    help="DAG granularity for the step time: coarse (one node per pass segment, the default) or "
                         "ops (one node per fused op; always used for --trace, --graph and --chakra-out)")
    ap.add_argument("--astra-bin", metavar="PATH", help="ASTRA-sim binary or its bin directory (else $ASTRA_SIM_BIN)")
    ap.add_argument("--astra-network", choices=["aware", "unaware"], default=None,
                    help="ASTRA-sim network build (default: execution_backend.astra.network, 'aware')")
    ap.add_argument("--astra-mode", choices=["full", "scalable"], default=None,
                    help="ASTRA-sim replay mode (default: execution_backend.astra.mode, 'full')")
    ap.add_argument("--memory-only", action="store_true",
                    help="answer only the memory question (per-stage breakdown and verdict), without the timeline")
    ap.add_argument("--layers", action="store_true", help="also print the per-op table of one layer")
    ap.add_argument("--quiet", action="store_true", help="print nothing (needs an output such as --json)")
    return ap


def _check_flags(args: argparse.Namespace) -> None:
    """Contradictory or empty flags are errors, never silently ignored."""
    def bad(flag: str, msg: str, fix: str) -> RankflowError:
        return RankflowError(msg, field=flag, fix=fix)

    for flag in ("json", "trace", "graph", "chakra_out", "plan_config", "astra_bin"):
        value = getattr(args, flag)
        if value is not None and not value.strip():
            raise bad("--" + flag.replace("_", "-"), "is empty", "give a path")
    if args.graph is not None and not os.path.basename(args.graph.removesuffix(".dot").removesuffix(".html")):
        # 'out/' or 'out/.dot' leaves an empty name: the files would be the hidden out/.dot and out/.html
        raise bad("--graph", f"'{args.graph}' ends in a directory, not a file name prefix", "give e.g. out/step")
    if args.memory_only:
        for flag in ("trace", "graph", "chakra_out", "backend", "astra_mode", "astra_network", "astra_bin", "detail"):
            if getattr(args, flag) is not None:
                name = "--" + flag.replace("_", "-")
                raise bad(name, f"{name} needs the timeline, which --memory-only does not build",
                          f"drop --memory-only or {name}")
        if args.layers:
            raise bad("--layers", "--layers prints the per-op table of the timeline, which --memory-only does not "
                      "build", "drop --memory-only or --layers")
    if args.detail == "coarse":
        for flag in ("trace", "graph", "chakra_out"):
            if getattr(args, flag) is not None:
                name = "--" + flag.replace("_", "-")
                raise bad("--detail", f"{name} always uses the op-level DAG, so --detail coarse would be ignored",
                          f"drop --detail coarse (or {name})")
    if args.quiet and args.layers:
        raise bad("--layers", "--layers prints a table, which --quiet suppresses", "drop --quiet or --layers")
    if args.trace_ranks is not None and args.trace is None:
        raise bad("--trace-ranks", "--trace-ranks without --trace", "add --trace OUT.json or drop --trace-ranks")
    for flag in ("graph_rank", "graph_max_nodes"):
        if getattr(args, flag) is not None and args.graph is None:
            name = "--" + flag.replace("_", "-")
            raise bad(name, f"{name} without --graph", f"add --graph PREFIX or drop {name}")
    if args.graph_max_nodes is not None and args.graph_max_nodes < 1:
        raise bad("--graph-max-nodes", f"{args.graph_max_nodes} is not a positive number of nodes", "give e.g. 3000")
    if args.quiet and not (args.json or args.trace or args.graph or args.chakra_out):
        raise bad("--quiet", "--quiet without an output file would produce nothing", "add --json OUT.json")


MAX_TRACE_RANKS = 64


def _ranks(text: str | None, prog) -> list[int]:
    from graphgen.program import MAX_NODES

    if text is None:
        return [prog.ranks_of_role(r.id)[0] for r in prog.roles]
    shown = clip(text, 40)
    try:
        ranks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RankflowError(f"'{shown}' is not a comma-separated list of ranks", field="--trace-ranks",
                            fix="write e.g. --trace-ranks 0,8") from None
    bad = [r for r in ranks if not 0 <= r < prog.mesh.world]
    if bad or not ranks:
        listed = ",".join(map(str, bad[:5])) + (",..." if len(bad) > 5 else "") if bad else f"'{shown}'"
        raise RankflowError(f"rank(s) {listed} outside 0..{prog.mesh.world - 1}", field="--trace-ranks",
                            fix="choose ranks inside the world size")
    ranks = sorted(set(ranks))
    if len(ranks) > MAX_TRACE_RANKS:
        # Each rank is a copy of its stage's whole timeline: the trace grows with ranks x nodes.
        raise RankflowError(f"{len(ranks):,} ranks asked for, more than the {MAX_TRACE_RANKS} a trace holds",
                            field="--trace-ranks", fix=f"choose at most {MAX_TRACE_RANKS} ranks (ranks of one "
                                                       "pipeline stage share one timeline)")
    # 64 ranks of one large stage repeat up to 64 DAGs: several GiB and minutes. One event per DAG node
    # is what the default (a rank per stage) writes at most, so more than that is refused.
    events = sum(len(prog.roles[prog.role_of_rank(r)].nodes) for r in ranks)
    if events > MAX_NODES:
        raise RankflowError(f"the trace would hold {events:,} node events, more than the {MAX_NODES:,} of the "
                            "largest DAG replayed", field="--trace-ranks",
                            fix="choose fewer ranks (one per pipeline stage by default), or lower global_batch")
    return ranks


def _memory_only(sc, args) -> int:
    from rankflow import api
    from rankflow.outputs import OutputSet
    from reports import json_out, text

    report = api.memory(sc)
    outputs = OutputSet()
    if args.json:
        outputs.add(args.json, lambda: json_out.memory_dumps(sc, report.roles))
    outputs.commit()
    if not args.quiet:
        p = sc.plan
        sys.stdout.write(f"Rankflow memory: {sc.model.name} on {sc.world} x {sc.hardware.device.name}, tp={p.tp} "
                         f"pp={p.pp} dp={p.dp} zero={p.zero_stage} recompute={p.recompute} "
                         f"finetune={sc.workload.finetune.method}\n" + text.memory_table(report.roles) + "\n")
        for path in outputs.paths():
            sys.stdout.write(f"wrote {path}\n")
    return 0


def _check_backend_flags(args, backend: str, astra: dict, plan_mode: str) -> None:
    """ASTRA-sim flags with another backend, or --detail coarse where a full replay needs the op-level
    DAG, would be silently ignored: refuse them."""
    if astra and backend != "astra":
        name = {"binary": "--astra-bin", "network": "--astra-network", "mode": "--astra-mode"}[next(iter(astra))]
        raise RankflowError(f"{name} applies to the astra backend, not the {backend} backend", field=name,
                            fix=f"add --backend astra or drop {name}")
    if backend == "astra" and args.detail == "coarse" and (astra.get("mode") or plan_mode) == "full":
        raise RankflowError("a full ASTRA-sim replay always uses the op-level DAG, so --detail coarse would be "
                            "ignored", field="--detail", fix="drop --detail coarse or use --astra-mode scalable")


def _astra_options(args) -> dict:
    return {k: v for k, v in dict(binary=args.astra_bin, network=args.astra_network, mode=args.astra_mode).items()
            if v is not None}


def _outputs(args, prog, ev, ranks: list[int] | None):
    """Render every requested file (lazily, at commit) into one OutputSet."""
    from rankflow.outputs import OutputSet
    from reports import json_out

    outputs = OutputSet()
    if args.json:
        outputs.add(args.json, lambda: json_out.dumps(ev.result))
    if args.trace:
        from reports import trace
        outputs.add(args.trace, lambda: trace.dumps(prog, ev.timeline, ranks))
    if args.graph:
        _add_graph(outputs, args, prog, ev)
    if args.chakra_out:
        from backends.chakra.writer import trace_files
        costs = ev.costs
        outputs.add_dir(args.chakra_out, lambda: trace_files(prog, costs))
    return outputs


def _add_graph(outputs, args, prog, ev) -> None:
    from reports import graph

    rank = args.graph_rank or 0
    if not 0 <= rank < prog.mesh.world:
        raise RankflowError(f"rank {rank} outside 0..{prog.mesh.world - 1}", field="--graph-rank",
                            fix="choose a rank inside the world size")
    role, cap = prog.role_of_rank(rank), args.graph_max_nodes or 3000
    timeline, costs = ev.timeline, ev.costs
    if timeline is None:  # a full ASTRA-sim replay has no per-node timeline: place nodes analytically
        from backends.analytical import replay
        timeline = replay(prog, costs).timeline
    prefix = args.graph.removesuffix(".dot").removesuffix(".html")
    outputs.add(prefix + ".dot", lambda: graph.to_dot(prog, costs.durations[role], role, cap))
    outputs.add(prefix + ".html", lambda: graph.to_html(prog, timeline, role, cap))


def run(argv: list[str], prog_name: str = "run_perf.py") -> int:
    args = _parser(prog_name).parse_args(argv)
    _check_flags(args)
    from rankflow import api
    from reports import text

    sc = api.load_scenario(args.model_config, args.hardware_config, args.plan_config, args.set)
    if args.memory_only:
        return _memory_only(sc, args)
    backend = args.backend or sc.execution.model
    astra = _astra_options(args)
    _check_backend_flags(args, backend, astra, sc.execution.astra.mode)
    mode = astra.get("mode") or sc.execution.astra.mode
    if args.trace and backend == "astra" and mode == "full":
        raise RankflowError("a full ASTRA-sim replay reports finish times only, no timeline", field="--trace",
                            fix="use --astra-mode scalable or the analytical backend for a trace")
    ops = bool(args.trace or args.graph or args.chakra_out) or args.detail == "ops"
    program = api.build(sc, "ops" if ops or (backend == "astra" and mode == "full") else "coarse")
    _dry(args).check()  # refuse bad output paths and ranks before the (possibly long) evaluation
    ranks = _ranks(args.trace_ranks, program) if args.trace else None
    _, ev = api.evaluate(sc, backend, astra=astra, program=program)
    outputs = _outputs(args, program, ev, ranks)
    outputs.commit()
    if not args.quiet:
        sys.stdout.write(text.summary(ev.result, layer_table=args.layers))
        for path in outputs.paths():
            if path == args.chakra_out:
                path = (f"{path}/rankflow.<0..{program.mesh.world - 1}>.et and {path}/rankflow.comm_groups.json "
                        "(Chakra 0.0.4)")
            sys.stdout.write(f"wrote {path}\n")
    return 0


def _dry(args):
    """The output set's paths alone, for checking them before any work."""
    from rankflow.outputs import OutputSet

    dry = OutputSet()
    for path in (args.json, args.trace):
        if path:
            dry.add(path, lambda: b"")
    if args.graph:
        prefix = args.graph.removesuffix(".dot").removesuffix(".html")
        dry.add(prefix + ".dot", lambda: b"")
        dry.add(prefix + ".html", lambda: b"")
    if args.chakra_out:
        dry.add_dir(args.chakra_out, lambda: ())
    return dry


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    prog = prog or (os.path.basename(sys.argv[0]) if argv is None else "run_perf.py")
    if prog == "__main__.py":  # `python -m rankflow`: errors said "see __main__.py --help"
        prog = "rankflow"
    from rankflow.refusal import refusing

    return refusing("rankflow", lambda: run(sys.argv[1:] if argv is None else argv, prog))
