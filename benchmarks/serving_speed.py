"""Speed benchmark of the serving simulation (graphgen.serving): the schedulers with LinearIterationModel,
and `engine`: continuous batching over Llama-3.1-8B on one H100 with its iteration costs tabulated from
its own graphs (rankflow.serve.engine_model, the tabulation inside wall_s), as `rankflow serve` runs it.

    python -m benchmarks.serving_speed            # every case, each in its own process
    python -m benchmarks.serving_speed --case continuous   # one case, in this process

Each case runs as a whole `python -m benchmarks.serving_speed --case NAME` process, so wall_s includes the
interpreter start and imports; the child also reports sim_s, the simulate() call alone. Prints one line
per case: `<case> requests=<n> wall_s=<seconds> sim_s=<seconds> iterations=<n>`. Target (2-core
machine): every case well under 5 s for 10,000 Poisson requests (lengths uniform 128-1024 in,
16-512 out, at 20 requests/s, one replica; disaggregated: 1 prefill + 2 decode replicas)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 10_000
RATE_PER_S = 20.0


def _deployment(case: str):
    from graphgen.serving.model import LinearIterationModel
    from graphgen.serving.schedulers import ChunkedPrefill, ContinuousBatching, Disaggregated, StaticBatching
    from graphgen.serving.simulate import Deployment

    if case == "engine":
        from rankflow import serve

        sc = serve.inference_scenario(ROOT / "model_configs" / "llama3.1-8b.yaml",
                                      ROOT / "hardware_configs" / "H100-SXM5-80GB.yaml")
        return Deployment(serve.engine_model(sc), ContinuousBatching())
    scheduler = {"continuous": ContinuousBatching(), "chunked": ChunkedPrefill(),
                 "disaggregated": Disaggregated(prefill_replicas=1, decode_replicas=2),
                 "static": StaticBatching(32)}[case]
    return Deployment(LinearIterationModel(), scheduler)


CASES = ("continuous", "chunked", "disaggregated", "static", "engine")


def run_one(case: str) -> str:
    from graphgen.serving.lengths import UniformLength
    from graphgen.serving.simulate import simulate
    from graphgen.serving.sources import PoissonSource

    src = PoissonSource(RATE_PER_S, REQUESTS, UniformLength(128, 1024), UniformLength(16, 512), seed=0)
    dep = _deployment(case)
    t0 = time.perf_counter()
    res = simulate(dep, src)
    sim_s = time.perf_counter() - t0
    return f"sim_s={sim_s:.2f} iterations={len(res.iterations)} completed={len(res.records)}"


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.serving_speed")
    ap.add_argument("--case", choices=CASES, help="run one case in this process")
    args = ap.parse_args(argv)
    if args.case:
        print(run_one(args.case), flush=True)
        return 0
    rc = 0
    for case in CASES:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "benchmarks.serving_speed", "--case", case], cwd=ROOT,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            rc = 1
            print(f"  {case} failed: {proc.stderr.strip()}", file=sys.stderr)
        detail = proc.stdout.strip().replace(f" completed={REQUESTS}", "")
        print(f"poisson-{case} requests={REQUESTS} wall_s={wall:.2f} {detail}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
