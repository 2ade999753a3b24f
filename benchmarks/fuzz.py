"""Fuzz campaign: generated bad inputs (benchmarks/fuzz_cases.py) against whole run_perf.py processes,
each with a timeout.

    python -m benchmarks.fuzz [--cases 1000] [--seed 0] [--timeout 20] [--jobs 2]

Prints `cases=N contract_ok=N tracebacks=N hangs=N partial_outputs=N nonfinite=N nondeterministic=N`
and the first few failing cases. The contract: exit 0 with every requested output written and finite,
or exit 2 with one line on stderr and no output; the same inputs give the same bytes (every success is
run twice).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.fuzz_cases import ROOT, case, outputs_of


def _finite(doc) -> bool:
    if isinstance(doc, dict):
        return all(_finite(v) for v in doc.values())
    if isinstance(doc, list):
        return all(_finite(v) for v in doc)
    return not isinstance(doc, float) or math.isfinite(doc)


def _run(d: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run([sys.executable, str(ROOT / "run_perf.py"), *args], cwd=d, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _outputs(d: Path, args: list[str]) -> dict[str, bytes]:
    return {p: (d / p).read_bytes() for p in outputs_of(args) if (d / p).exists()}


def check(seed: int, timeout: float) -> str:
    """'ok' or the name of the broken promise."""
    files, args = case(seed)
    with tempfile.TemporaryDirectory(prefix="rankflow-fuzz-") as tmp:
        d = Path(tmp)
        (d / "out").mkdir()
        for name, text in files.items():
            (d / name).write_text(text)
        p = _run(d, args, timeout)
        if p is None:
            return "hangs"
        if "Traceback" in p.stderr or p.returncode not in (0, 2):
            return "tracebacks"
        got = _outputs(d, args)
        if p.returncode == 2:
            lines = p.stderr.strip().splitlines()
            if got:
                return "partial_outputs"
            return "ok" if len(lines) == 1 and "fix:" in lines[0] else "tracebacks"
        if "--memory-only" not in args and len(got) != len(outputs_of(args)):
            return "partial_outputs"
        if any(k.endswith(".json") and not _finite(json.loads(v)) for k, v in got.items()):
            return "nonfinite"
        for f in (d / "out").iterdir():
            f.unlink()
        again = _run(d, args, timeout)
        return "ok" if again is not None and _outputs(d, args) == got else "nondeterministic"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per process")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    seeds = range(args.seed, args.seed + args.cases)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda s: check(s, args.timeout), seeds))
    counts = {k: results.count(k) for k in ("ok", "tracebacks", "hangs", "partial_outputs", "nonfinite",
                                            "nondeterministic")}
    print(f"cases={len(results)} contract_ok={counts['ok']} tracebacks={counts['tracebacks']} hangs={counts['hangs']} "
          f"partial_outputs={counts['partial_outputs']} nonfinite={counts['nonfinite']} "
          f"nondeterministic={counts['nondeterministic']}")
    for seed, r in zip(seeds, results, strict=True):
        if r != "ok":
            print(f"  seed {seed}: {r}: {case(seed)[1]}")
    return 0 if counts["ok"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
