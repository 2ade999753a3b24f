"""Command line: parse arguments, load configs, build, evaluate, report, write files.

This is the only layer that reads user files (through graphgen.config loaders) and writes
outputs. Every problem a user can cause ends as one line on stderr and exit code 2; outputs are
rendered in memory first and written atomically, so a failed run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from graphgen.errors import RankflowError


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="run_perf.py",
        description="Simulate one training step of an LLM on a cluster: step time, throughput, MFU, "
                    "time breakdown and per-GPU memory.")
    ap.add_argument("--hardware_config", "--hardware-config", required=True, metavar="H.yaml",
                    help="hardware + parallelism plan YAML (see hardware_configs/)")
    ap.add_argument("--model_config", "--model-config", required=True, metavar="M.yaml",
                    help="model + workload YAML (see model_configs/), or a Hugging Face config.json")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any field, e.g. --set parallelism.tp=8 --set workload.seq_len=4096")
    ap.add_argument("--json", metavar="OUT.json", help="write the result as JSON (schema in README)")
    ap.add_argument("--trace", metavar="OUT.json", help="write a Chrome/Perfetto trace of the simulated timeline")
    ap.add_argument("--trace-ranks", default=None, metavar="R1,R2,...",
                    help="ranks to put in the trace (default: the first rank of every pipeline stage)")
    ap.add_argument("--graph", metavar="PREFIX", help="write one rank's DAG as PREFIX.dot and PREFIX.html")
    ap.add_argument("--graph-rank", type=int, default=0, help="rank whose DAG --graph writes (default 0)")
    ap.add_argument("--graph-max-nodes", type=int, default=3000,
                    help="cap on nodes drawn by --graph (default 3000; the graph is cut, not sampled)")
    ap.add_argument("--chakra-out", metavar="DIR",
                    help="write Chakra traces (<DIR>/rankflow.<rank>.et) and the comm-group JSON for ASTRA-sim")
    ap.add_argument("--backend", choices=["analytical", "astra"], default=None,
                    help="override execution_backend.model")
    ap.add_argument("--astra-bin", metavar="PATH", help="ASTRA-sim binary or its bin directory (else $ASTRA_SIM_BIN)")
    ap.add_argument("--astra-network", choices=["aware", "unaware"], default=None,
                    help="ASTRA-sim network build (default: execution_backend.astra.network, 'aware')")
    ap.add_argument("--astra-mode", choices=["full", "scalable"], default=None,
                    help="ASTRA-sim replay mode (default: execution_backend.astra.mode, 'full')")
    ap.add_argument("--memory-only", action="store_true",
                    help="answer only the memory question (per-stage breakdown and verdict), without the timeline")
    ap.add_argument("--layers", action="store_true", help="also print the per-op table of one layer")
    ap.add_argument("--quiet", action="store_true", help="print nothing (use with --json)")
    return ap


def _write_atomic(path: str, text: str) -> None:
    target = Path(path)
    if target.parent and not target.parent.exists():
        raise RankflowError("output directory does not exist", file=str(target.parent),
                            fix="create it or choose another path")
    fd, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _ranks(text: str | None, prog) -> list[int]:
    if text is None:
        return [prog.ranks_of_role(r.id)[0] for r in prog.roles]
    try:
        ranks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RankflowError(f"'{text}' is not a comma-separated list of ranks", field="--trace-ranks",
                            fix="write e.g. --trace-ranks 0,8") from None
    bad = [r for r in ranks if not 0 <= r < prog.mesh.world]
    if bad or not ranks:
        raise RankflowError(f"rank(s) {bad or text} outside 0..{prog.mesh.world - 1}", field="--trace-ranks",
                            fix="choose ranks inside the world size")
    return ranks


def _memory_only(sc, args) -> int:
    from graphgen.memory import scenario_memory
    from reports import json_out, text

    memory = scenario_memory(sc)
    if args.json:
        _write_atomic(args.json, json_out.memory_dumps(sc, memory))
    if not args.quiet:
        p = sc.plan
        sys.stdout.write(f"Rankflow memory: {sc.model.name} on {sc.world} x {sc.hardware.device.name}, tp={p.tp} "
                         f"pp={p.pp} dp={p.dp} zero={p.zero_stage} recompute={p.recompute} "
                         f"finetune={sc.workload.finetune.method}\n" + text.memory_table(memory) + "\n")
        if args.json:
            sys.stdout.write(f"wrote {args.json}\n")
    return 0


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from backends.base import get_backend
    from graphgen.config import load_hardware_config, load_model_config, split_overrides
    from graphgen.program import build_program
    from graphgen.scenario import make_scenario
    from reports import json_out, text

    model_ov, hw_ov = split_overrides(args.set)
    mc = load_model_config(args.model_config, model_ov)
    hw = load_hardware_config(args.hardware_config, hw_ov)
    sc = make_scenario(mc, hw, args.model_config, args.hardware_config)
    if args.memory_only:
        return _memory_only(sc, args)
    prog = build_program(sc)
    backend = args.backend or hw.execution_backend.model
    options = {}
    if backend == "astra":
        options = dict(binary=args.astra_bin, network=args.astra_network, mode=args.astra_mode)
    if args.trace and backend == "astra" and (args.astra_mode or hw.execution_backend.astra.mode) == "full":
        raise RankflowError("a full ASTRA-sim replay reports finish times only, no timeline", field="--trace",
                            fix="use --astra-mode scalable or the analytical backend for a trace")
    result, timeline = get_backend(backend, **options).run(prog)

    outputs: list[tuple[str, str]] = []
    if args.json:
        outputs.append((args.json, json_out.dumps(result)))
    if args.trace:
        from reports import trace
        outputs.append((args.trace, trace.dumps(prog, timeline, _ranks(args.trace_ranks, prog))))
    if args.graph:
        from reports import graph
        if not 0 <= args.graph_rank < prog.mesh.world:
            raise RankflowError(f"rank {args.graph_rank} outside 0..{prog.mesh.world - 1}",
                                field="--graph-rank", fix="choose a rank inside the world size")
        role = prog.role_of_rank(args.graph_rank)
        prefix = args.graph.removesuffix(".dot").removesuffix(".html")
        outputs.append((prefix + ".dot", graph.to_dot(prog, role, args.graph_max_nodes)))
        if timeline is None:
            from backends.analytical.scheduler import simulate
            timeline = simulate(prog)  # the page places nodes by the analytical timeline
        outputs.append((prefix + ".html", graph.to_html(prog, timeline, role, args.graph_max_nodes)))
    for path, body in outputs:
        _write_atomic(path, body)
    written = [path for path, _ in outputs]
    if args.chakra_out:
        from backends.chakra.writer import write_traces
        prefix, groups, total = write_traces(prog, args.chakra_out)
        written.append(f"{prefix}.<0..{prog.mesh.world - 1}>.et and {groups} ({total / 2**20:.1f} MiB)")
    if not args.quiet:
        sys.stdout.write(text.summary(result, layer_table=args.layers))
        for path in written:
            sys.stdout.write(f"wrote {path}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except RankflowError as exc:
        sys.stderr.write(f"rankflow: error: {exc.one_line()}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"rankflow: error: {exc.filename or ''}: {exc.strerror} (fix: check the path and "
                         "permissions)\n")
        return 2
