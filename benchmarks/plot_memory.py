"""Plot the simulated per-GPU memory timeline of every pipeline stage as a PNG.

    python -m benchmarks.plot_memory --hardware_config H.yaml --model_config M.yaml [--set k=v ...] --out mem.png

Needs matplotlib (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import sys

from graphgen.errors import RankflowError
from graphgen.memory_timeline import memory_timeline
from rankflow import api


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.plot_memory", description=__doc__.splitlines()[0])
    ap.add_argument("--hardware_config", required=True)
    ap.add_argument("--model_config", required=True)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", default="memory_timeline.png")
    args = ap.parse_args(argv)
    try:
        sc = api.load_scenario(args.model_config, args.hardware_config, None, args.set)
    except RankflowError as exc:
        print(f"plot_memory: error: {exc.one_line()}", file=sys.stderr)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_memory: error: matplotlib is not installed (fix: pip install -e '.[bench]')", file=sys.stderr)
        return 2
    prog, ev = api.evaluate(sc, "analytical", detail="ops")
    res, tl = ev.result, ev.timeline
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for role in prog.roles:
        series = memory_timeline(prog, tl.start[role.id], tl.finish[role.id], role.id)
        ts = [t * 1e3 for t, _ in series]
        gib = [b / 2**30 for _, b in series]
        ax.step(ts, gib, where="post", label=role.name, linewidth=1)
    cap = sc.hardware.device.hbm_gib
    ax.axhline(cap, color="black", linestyle="--", linewidth=0.8, label=f"capacity {cap:g} GiB")
    ax.set_xlabel("simulated time in the step (ms)")
    ax.set_ylabel("allocated (GiB)")
    ax.set_title(f"{sc.model.name} on {sc.world} x {sc.hardware.device.name}: memory per GPU over one step")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out} (step {res.step_time_s:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
