"""`rankflow sweep` (scaling studies) and `rankflow recommend` (which cluster, how many, which plan)."""

from __future__ import annotations

from graphgen.errors import RankflowError
from rankflow.cli import _Parser
from rankflow.search_cli import _common, _ints, _png, commit, outputs_of


def _sweep_parser() -> _Parser:
    ap = _Parser(prog="rankflow sweep", description="Scaling study: one plan (or the best) over GPU counts or a field.")
    _common(ap, hardware_many=False)
    ap.add_argument("--plan_config", "--plan-config", metavar="P.yaml", help="the plan to scale (else the hardware file's)")
    ap.add_argument("--gpus", help="GPU counts: a list (64,128) or a power-of-two range (8:1024)")
    ap.add_argument("--over", metavar="KEY=V1,V2,...", help="sweep a config field instead, e.g. workload.seq_len=2048,4096")
    ap.add_argument("--best", action="store_true", help="search the best plan at every point instead of scaling one")
    return ap


def _points(args) -> list[tuple[str, int | None, list[str]]]:
    if bool(args.gpus) == bool(args.over):
        raise RankflowError("give exactly one of --gpus and --over", field="--gpus/--over",
                            fix="e.g. --gpus 8:1024, or --over workload.seq_len=2048,4096")
    if args.gpus and args.best and args.plan_config:
        # --best searches the plan at each GPU count: the plan file was never read, even a missing one.
        raise RankflowError("--best searches the plan at every GPU count, so --plan_config would be ignored",
                            field="--plan_config", fix="drop --plan_config, or drop --best to scale that plan")
    if args.gpus:
        return [(str(n), n, list(args.set)) for n in _ints(args.gpus, "--gpus")]
    key, _, values = args.over.partition("=")
    vals = [v for v in values.split(",") if v]
    if not key or not vals or len(vals) > 64:
        raise RankflowError(f"'{args.over}' is not KEY=V1,V2,...", field="--over",
                            fix="e.g. --over workload.seq_len=2048,4096 (at most 64 values)")
    return [(f"{key}={v}", None, [*args.set, f"{key}={v}"]) for v in vals]


def run_sweep(argv: list[str]) -> int:
    from rankflow import sweep
    from reports import sweep_out

    args = _sweep_parser().parse_args(argv)
    points = _points(args)
    got: dict = {}
    outputs = outputs_of(args, {"json": lambda: sweep_out.dumps(got["p"]), "csv": lambda: sweep_out.to_csv(got["p"]),
                                "png": _png(lambda: sweep_out.png(got["p"]))})
    try:
        got["p"] = sweep.sweep(args.model_config, args.hardware_config, points, args.plan_config, args.best)
    except RankflowError as exc:
        key = (args.over or "").partition("=")[0]
        if key and exc.field == "--set" and f"'{key}=" in exc.message:  # the swept key, not a --set of the user's
            raise RankflowError(exc.message, file=exc.file, field="--over", fix=exc.fix) from None
        raise
    commit(args, outputs, "" if args.quiet else sweep_out.summary(got["p"]))
    return 0


def _recommend_parser() -> _Parser:
    ap = _Parser(prog="rankflow recommend", description="Which GPU type, how many, and which plan for a training run.")
    ap.add_argument("--model_config", "--model-config", "--model", required=True, metavar="M.yaml|NAME")
    ap.add_argument("--hardware_config", "--hardware-config", "--hardware", nargs="+", required=True, metavar="H.yaml|NAME",
                    help="the GPU types to consider (their hardware files)")
    ap.add_argument("--gpus", default="64:1024", help="GPU counts to consider (default 64:1024)")
    ap.add_argument("--tokens", type=float, required=True, help="tokens to train")
    ap.add_argument("--deadline-days", type=float)
    ap.add_argument("--budget-usd", type=float)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", metavar="OUT.json")
    ap.add_argument("--csv", metavar="OUT.csv")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--workers", type=int)
    return ap


def run_recommend(argv: list[str]) -> int:
    from graphgen.search.space import Constraints
    from rankflow import sweep
    from reports import sweep_out

    args = _recommend_parser().parse_args(argv)
    # --tokens becomes workload.train_tokens (at most MAX_FLOAT): above that the model file was blamed, not the flag.
    from graphgen.config.base import MAX_FLOAT

    for flag, v, top in (("--tokens", args.tokens, MAX_FLOAT), ("--deadline-days", args.deadline_days, 1e30),
                         ("--budget-usd", args.budget_usd, 1e30)):
        if v is not None and not (0 < v <= top):
            example = {"--tokens": "1e12", "--deadline-days": "30", "--budget-usd": "2e6"}[flag]
            raise RankflowError(f"must be a positive number up to {top:g}, got {v:g}", field=flag,
                                fix=f"e.g. {flag} {example}")
    if args.top < 1:  # --top 0 or -1 never matched the pick count and listed every cluster
        raise RankflowError(f"must be at least 1, got {args.top}", field="--top", fix="e.g. --top 5")
    # A recommendation compares clusters: a coarser plan grid (ZeRO 1/3, no or full recompute) keeps it quick.
    cons = Constraints(zero_stage=(1, 3), recompute=("none", "full"), micro_batch=(1, 2, 4))
    got: dict = {}
    outputs = outputs_of(args, {"json": lambda: sweep_out.recommend_dumps(got["r"]),
                                "csv": lambda: sweep_out.recommend_csv(got["r"])})
    got["r"] = sweep.recommend(args.model_config, args.hardware_config, _ints(args.gpus, "--gpus"),
                               [*args.set, f"workload.train_tokens={args.tokens!r}"], args.deadline_days,
                               args.budget_usd, args.top, cons, workers=args.workers)
    commit(args, outputs, "" if args.quiet else sweep_out.recommend_summary(got["r"]))
    return 0


def run(command: str, argv: list[str]) -> int:
    return run_sweep(argv) if command == "sweep" else run_recommend(argv)
