"""Speed benchmark: wall time and peak RSS of whole `run_perf.py` processes (start-up included), and
the in-process cost of one more plan through rankflow.api.

    python -m benchmarks.speed [--no-astra]

Prints one line per case: `<case> wall_s=<seconds> peak_rss_mib=<MiB>` (trace cases add
`trace_mib=`; in-process cases print `ms_per_plan=`). Targets (2-core machine): (b) GPT-3 175B on
1024 A100, (c) Llama-3.1-405B on 16,384 H100 and (d) Llama-3.1-70B on 64 H100 with 512 microbatches
each under 1 s; (e) DeepSeek-V3 on 2048 H800 with DualPipe under 2 s; the per-plan cost of (b) after the first call under 5 ms; writing the GPT-3 175B
traces for 1024 GPUs (8 microbatches) under 30 s. With ASTRA_SIM_BIN set, ASTRA-sim cases follow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GPT3_B = ["parallelism.tp=8", "parallelism.pp=8", "parallelism.dp=16", "parallelism.sp=true",
          "parallelism.schedule=interleaved", "parallelism.virtual_stages=2", "workload.global_batch=1536",
          "workload.micro_batch=1"]
CASES: list[tuple[str, str, str, list[str]]] = [
    ("(a) llama2-7b-8xA100-tp1-dp8", "A100-SXM4-80GB.yaml", "llama2-7b.yaml",
     ["parallelism.tp=1", "parallelism.pp=1", "parallelism.dp=8"]),
    ("(b) gpt3-175b-1024xA100-tp8-pp8-dp16-interleaved", "A100-SXM4-80GB.yaml", "gpt3-175b.yaml", GPT3_B),
    ("(c) llama3.1-405b-16384xH100-tp8-pp16-dp128", "H100-SXM5-80GB.yaml", "llama3.1-405b.yaml",
     ["parallelism.tp=8", "parallelism.pp=16", "parallelism.dp=128", "parallelism.sp=true",
      "workload.seq_len=8192", "workload.global_batch=2048", "workload.micro_batch=1"]),
    ("(d) llama3.1-70b-64xH100-tp8-pp4-dp2-512mb", "H100-SXM5-80GB.yaml", "llama3.1-70b.yaml",
     ["parallelism.tp=8", "parallelism.pp=4", "parallelism.dp=2", "parallelism.sp=true",
      "workload.global_batch=1024", "workload.micro_batch=1", "workload.seq_len=8192"]),
    # DeepSeek-V3 report Sec. 3.2: 2048 H800, 16-way pipeline (DualPipe), 64-way expert parallelism, ZeRO-1;
    # full recompute so that the plan fits (the report's FP8 activation storage is not modelled).
    ("(e) deepseek-v3-2048xH800-pp16-ep64-dualpipe", "H800.yaml", "deepseek-v3.yaml",
     ["parallelism.tp=1", "parallelism.pp=16", "parallelism.dp=128", "parallelism.ep=64",
      "parallelism.zero_stage=1", "parallelism.schedule=dualpipe", "parallelism.moe_overlap=true",
      "parallelism.recompute=full", "workload.global_batch=15360", "workload.micro_batch=1"]),
]

GPT3_1024 = ["parallelism.tp=8", "parallelism.pp=8", "parallelism.dp=16", "parallelism.sp=true",
             "workload.global_batch=128", "workload.micro_batch=1"]
TRACE_CASE = ("chakra-traces gpt3-175b-1024xA100-8mb", "A100-SXM4-80GB.yaml", "gpt3-175b.yaml", GPT3_1024)
ASTRA_CASES: list[tuple[str, str, str, list[str]]] = [
    ("astra llama2-7b-8xA100-tp2-pp2-dp2", "A100-SXM4-80GB.yaml", "llama2-7b.yaml",
     ["parallelism.tp=2", "parallelism.pp=2", "parallelism.dp=2", "parallelism.sp=true", "workload.global_batch=16",
      "model.layers=8"]),
    ("astra llama3.1-70b-64xH100-tp8-pp4-dp2", "H100-SXM5-80GB.yaml", "llama3.1-70b.yaml",
     ["parallelism.tp=8", "parallelism.pp=4", "parallelism.dp=2", "parallelism.sp=true", "workload.global_batch=16",
      "workload.seq_len=4096", "model.layers=16"]),
    ("astra gpt3-175b-1024xA100-8mb", "A100-SXM4-80GB.yaml", "gpt3-175b.yaml", GPT3_1024),
]


def run_case(hw: str, model: str, sets: list[str], extra: tuple[str, ...]) -> tuple[float, float, int]:
    cmd = [sys.executable, str(ROOT / "run_perf.py"), "--hardware_config", str(ROOT / "hardware_configs" / hw),
           "--model_config", str(ROOT / "model_configs" / model), "--quiet", *extra]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code:
        print(f"  failed: {proc.stderr.read().decode().strip()}", file=sys.stderr)
    return wall, usage.ru_maxrss / 1024.0, code


def per_plan_ms(hw: str, model: str, sets: list[str], repeats: int = 20) -> tuple[float, float]:
    """(ms per simulate of the same scenario after the first call, ms per simulate of a new plan)."""
    from rankflow import api

    sc = api.load_scenario(ROOT / "model_configs" / model, api.load_hardware(ROOT / "hardware_configs" / hw),
                           overrides=sets)
    api.simulate(sc)
    t0 = time.perf_counter()
    for _ in range(repeats):
        api.simulate(sc)
    same = (time.perf_counter() - t0) / repeats * 1e3
    plans = [sc.with_plan(dp=dp, pp=pp) for dp, pp in ((8, 16), (32, 4), (16, 8), (64, 2))]
    t0 = time.perf_counter()
    for p in plans:
        api.simulate(p)
    return same, (time.perf_counter() - t0) / len(plans) * 1e3


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.speed")
    ap.add_argument("--no-astra", action="store_true", help="skip the ASTRA-sim cases")
    args = ap.parse_args(argv)
    rc = 0
    out = Path(tempfile.mkdtemp(prefix="rankflow-speed-"))
    try:
        for name, hw, model, sets in CASES:
            wall, rss, code = run_case(hw, model, sets, ("--json", str(out / "r.json")))
            rc |= code
            print(f"{name} wall_s={wall:.2f} peak_rss_mib={rss:.0f}", flush=True)
        same, new = per_plan_ms(*CASES[1][1:])
        print(f"(b) in-process simulate, same plan again ms_per_plan={same:.1f}; a new plan ms_per_plan={new:.1f}",
              flush=True)
        name, hw, model, sets = TRACE_CASE
        wall, rss, code = run_case(hw, model, sets, ("--chakra-out", str(out / "et")))
        rc |= code
        size = sum(f.stat().st_size for f in (out / "et").iterdir()) / 2**20 if not code else 0.0
        print(f"{name} wall_s={wall:.2f} peak_rss_mib={rss:.0f} trace_mib={size:.0f}", flush=True)
        if args.no_astra or not os.environ.get("ASTRA_SIM_BIN"):
            print("astra cases skipped: ASTRA_SIM_BIN is not set" if not args.no_astra else "astra cases skipped")
            return 1 if rc else 0
        for name, hw, model, sets in ASTRA_CASES:
            for mode in ("scalable", "full"):
                wall, rss, code = run_case(hw, model, sets, ("--backend", "astra", "--astra-mode", mode, "--json",
                                                             str(out / "r.json")))
                rc |= code
                print(f"{name}-{mode} wall_s={wall:.2f} peak_rss_mib={rss:.0f}", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
