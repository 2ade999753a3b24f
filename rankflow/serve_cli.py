"""`rankflow serve`: simulate a deployment serving requests, find the highest rate that meets an SLO
(--capacity), or the cheapest deployment for a rate (--cheapest)."""

from __future__ import annotations

import json

from graphgen.errors import RankflowError
from rankflow.cli import _Parser
from rankflow.search_cli import _png, commit, outputs_of


def _parser() -> _Parser:
    ap = _Parser(prog="rankflow serve", description="Simulate serving: TTFT, TPOT, throughput, capacity at an SLO.")
    ap.add_argument("--model_config", "--model-config", "--model", required=True, metavar="M.yaml|NAME")
    ap.add_argument("--hardware_config", "--hardware-config", "--hardware", nargs="+", required=True, metavar="H.yaml|NAME")
    ap.add_argument("--plan_config", "--plan-config", metavar="P.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="e.g. --set parallelism.tp=8 --set workload.precision=fp8")
    ap.add_argument("--scheduler", default="continuous", help="continuous (default), chunked, static, disaggregated")
    ap.add_argument("--max-batched-tokens", type=int, help="token budget per iteration")
    ap.add_argument("--max-seqs", type=int, help="sequences per iteration")
    ap.add_argument("--batch-size", type=int, help="static batching's batch")
    ap.add_argument("--prefill-replicas", type=int)
    ap.add_argument("--decode-replicas", type=int)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--router", default="least_outstanding", help="round_robin or least_outstanding")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--rate", type=float, help="Poisson arrivals, requests/s")
    src.add_argument("--concurrency", type=int, help="closed loop: users each with one request in flight")
    src.add_argument("--trace", metavar="FILE", help="CSV (arrival_s,input_len,output_len) or JSON lines")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--input-len", help="512, uniform:128:1024, normal:m:s:max, lognormal:median:sigma:max "
                                        "(default workload.inference.input_len)")
    ap.add_argument("--output-len", help="as --input-len (default workload.inference.output_len)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slo-ttft", type=float, default=2.0, help="seconds, at p90")
    ap.add_argument("--slo-tpot", type=float, default=0.2, help="seconds, at p99")
    ap.add_argument("--capacity", action="store_true", help="find the highest Poisson rate that meets the SLO")
    ap.add_argument("--cheapest", action="store_true",
                    help="cheapest hardware and plan (every --tp x --pp x --ep) for --rate")
    ap.add_argument("--tp", default="1,2,4,8", help="tensor-parallel sizes --cheapest tries (default 1,2,4,8)")
    ap.add_argument("--pp", default="1", help="pipeline-parallel sizes --cheapest tries (default 1)")
    ap.add_argument("--ep", default="1", help="expert-parallel sizes --cheapest tries, MoE models (default 1)")
    ap.add_argument("--json", metavar="OUT.json")
    ap.add_argument("--png", metavar="OUT.png", help="latency plot (pip install -e '.[plots]')")
    ap.add_argument("--perfetto", metavar="OUT.json", help="trace of a sample of requests and iterations")
    ap.add_argument("--quiet", action="store_true")
    return ap


def _check(args) -> None:
    for flag in ("rate", "slo_ttft", "slo_tpot"):
        v = getattr(args, flag)
        if v is not None and not (0 < v < 1e9):
            raise RankflowError(f"must be above 0 and below 1e9, got {v:g}",
                                field=f"--{flag.replace('_', '-')}", fix="e.g. 2")
    if args.concurrency is not None and args.concurrency < 1:
        raise RankflowError(f"must be at least 1, got {args.concurrency}", field="--concurrency",
                            fix="give the number of users, e.g. 8")
    if args.cheapest and (args.capacity or not args.rate):
        raise RankflowError("--cheapest needs a target --rate and no --capacity", field="--cheapest",
                            fix="e.g. --cheapest --rate 10")
    if (args.capacity or args.cheapest) and (args.concurrency or args.trace):
        raise RankflowError("capacity questions use Poisson arrivals", field="--capacity",
                            fix="drop --concurrency/--trace")
    if args.rate is None and args.concurrency is None and not (args.trace or args.capacity):
        raise RankflowError("no request source", field="--rate", fix="give --rate, --concurrency, --trace or --capacity")
    if args.quiet and not (args.json or args.png or args.perfetto):
        raise RankflowError("--quiet with no output file", field="--quiet", fix="add --json or drop --quiet")
    _check_work(args)
    if len(args.hardware_config) > 1 and not args.cheapest:
        raise RankflowError("several hardware files are for --cheapest", field="--hardware_config",
                            fix="give one hardware file, or add --cheapest --rate R")
    _check_ignored(args)


def _check_work(args) -> None:
    """A capacity question simulates its requests once per probe (and per option for --cheapest)."""
    from graphgen.serving.capacity import MAX_CAPACITY_REQUESTS, MAX_CHEAPEST_REQUESTS

    if args.capacity and args.requests > MAX_CAPACITY_REQUESTS:
        raise RankflowError(f"--capacity simulates --requests once per probe; {args.requests:,} is more than "
                            f"{MAX_CAPACITY_REQUESTS:,}", field="--requests",
                            fix=f"use at most {MAX_CAPACITY_REQUESTS:,} requests (1,000 is the default)")
    if args.cheapest:
        n = len(args.hardware_config) * len(_plans(args))
        if n * args.requests > MAX_CHEAPEST_REQUESTS:
            raise RankflowError(f"{n} options x {args.requests:,} requests is more than {MAX_CHEAPEST_REQUESTS:,} "
                                "simulated requests", field="--requests",
                                fix="give fewer --tp/--pp/--ep sizes or hardware files, or fewer --requests")


def _check_ignored(args) -> None:
    """Flags the chosen mode never reads ran without a word (--tp 2 without --cheapest kept the plan's tp)."""
    d = _parser().parse_args(["--model", "m", "--hardware", "h"])
    traced = "the --trace file gives every request's arrival and lengths"
    ignored = [("--rate", args.capacity and args.rate is not None, "--capacity finds the rate itself"),
               *((f"--{k.replace('_', '-')}", bool(args.trace) and getattr(args, k) != getattr(d, k), traced)
                 for k in ("rate", "concurrency", "requests", "seed", "input_len", "output_len")),
               ("--replicas", args.cheapest and args.replicas != d.replicas, "--cheapest sizes the replicas itself"),
               *((f"--{k}", not args.cheapest and getattr(args, k) != getattr(d, k), "it sets the sizes --cheapest "
                  "tries; set one deployment's plan with --set parallelism.tp=...") for k in ("tp", "pp", "ep"))]
    for flag, unused, why in ignored:
        if unused:
            raise RankflowError(f"{flag} would be ignored: {why}", field=flag, fix=f"drop {flag}")


def _sizes(text: str, flag: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise RankflowError(f"'{text}' is not a list of sizes", field=flag, fix=f"e.g. {flag} 1,2,4")
    return sizes


def _plans(args) -> list[dict[str, int]]:
    return [{"tp": tp, "pp": pp, "ep": ep} for tp in _sizes(args.tp, "--tp") for pp in _sizes(args.pp, "--pp")
            for ep in _sizes(args.ep, "--ep")]


def _source(args, spec, lengths):
    from graphgen.serving.sources import ClosedLoopSource, PoissonSource, parse_trace
    from rankflow.files import read_text

    inp, out = lengths
    if args.trace:
        return parse_trace(read_text(args.trace, "--trace"), args.trace)
    if args.concurrency:
        return ClosedLoopSource(args.concurrency, args.requests, inp, out, args.seed)
    return PoissonSource(args.rate, args.requests, inp, out, args.seed)


def run(argv: list[str]) -> int:
    from graphgen.serving.capacity import Workload, capacity_dict, cheapest_dict, max_rate
    from graphgen.serving.metrics import SLO, to_dict
    from graphgen.serving.render import latency_png, trace_json
    from graphgen.serving.simulate import Deployment, simulate
    from rankflow import serve

    args = _parser().parse_args(argv)
    _check(args)
    sc = serve.inference_scenario(args.model_config, args.hardware_config[0], args.plan_config, args.set)
    spec = sc.workload.inference
    lengths = serve.lengths(spec, args.input_len, args.output_len)
    sched = serve.scheduler(args.scheduler, max_batched_tokens=args.max_batched_tokens, max_seqs=args.max_seqs,
                            batch_size=args.batch_size, prefill_replicas=args.prefill_replicas,
                            decode_replicas=args.decode_replicas)
    slo = SLO(ttft_s=args.slo_ttft, tpot_s=args.slo_tpot)
    work = Workload(*lengths, args.requests, args.seed)
    got: dict = {}
    outputs = outputs_of(args, {"json": lambda: json.dumps(got["doc"], indent=2, allow_nan=False) + "\n",
                                "png": _png(lambda: latency_png(got["result"], slo)),
                                "perfetto": lambda: trace_json(got["result"])})
    if args.cheapest:
        opts = serve.options(args.model_config, args.hardware_config, _plans(args), args.set)
        res = serve.cheapest_for(opts, args.rate, work, slo, sched)
        got["doc"] = cheapest_dict(res)
        text = _cheapest_text(res)
    else:
        dep = Deployment(serve.engine_model(sc), sched, args.replicas, args.router)
        p = sc.plan
        text = (f"Rankflow serving: {sc.model.name} on {sc.hardware.name}, {args.replicas} x tp{p.tp} pp{p.pp}"
                f"{f' ep{p.ep}' if p.ep > 1 else ''}, {args.scheduler} ({sc.workload.precision})\n")
        if args.capacity:
            cap = max_rate(dep, work, slo)
            got["doc"] = capacity_dict(cap)
            got["result"] = simulate(dep, work.source(cap.rate_per_s))
            text += f"  highest rate meeting the SLO: {cap.rate_per_s:.3f} requests/s\n"
        else:
            got["result"] = simulate(dep, _source(args, spec, lengths))
            got["doc"] = to_dict(got["result"], slo)
        text += _summary_text(got["doc"] if not args.capacity else to_dict(got["result"], slo))
    commit(args, outputs, text)
    return 0


def _summary_text(doc: dict) -> str:
    lat = doc.get("latency", {})
    lines = []
    for name, st in lat.items():
        if isinstance(st, dict) and st.get("count"):
            lines.append(f"  {name.removesuffix('_s').upper():5} " + "  ".join(
                f"{k} {1e3 * st[k]:9.1f} ms" for k in ("mean", "p50", "p90", "p99")))
    tp = doc.get("throughput", {})
    units = {"requests_per_s": "requests/s", "output_tokens_per_s": "output tokens/s", "total_tokens_per_s": "tokens/s"}
    lines.append("  " + ", ".join(f"{v:.2f} {units.get(k, k)}" for k, v in tp.items() if isinstance(v, (int, float))))
    slo = doc.get("slo", {})
    if slo:
        parts = [f"{name.upper()} p{slo[name + '_percentile']:g} {1e3 * slo[name + '_at_percentile_s']:.1f} ms "
                 f"(target {1e3 * slo[name + '_s']:.0f} ms)" for name in ("ttft", "tpot", "e2e")
                 if slo.get(name + "_s") is not None and slo.get(name + "_at_percentile_s") is not None]
        lines.append(f"  SLO {'met' if slo['met'] else 'missed'}: " + ", ".join(parts)
                     + f"; {100 * slo['attainment']:.1f} % of requests within it, goodput "
                       f"{slo['goodput_requests_per_s']:.2f} requests/s")
    return "\n".join(lines) + "\n"


def _cheapest_text(res) -> str:
    b = res.best
    cost = f"${b.usd_per_million_output_tokens:.3f} per million output tokens" if b.usd_per_million_output_tokens else "no price"
    return (f"cheapest for {res.rate_per_s} requests/s: {b.candidate.label} x {b.candidate.replicas} replica(s) = "
            f"{b.gpus} GPUs, {cost}\n")
