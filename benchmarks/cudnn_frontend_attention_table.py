"""Attention curves from NVIDIA cudnn-frontend's SDPA training benchmark, as hardware-config YAML.

    python -m benchmarks.cudnn_frontend_attention_table RESULTS.csv BACKEND PEAK_TFLOPS \
        [--from 8192] [--shape SHAPE.csv SHAPE_BACKEND SHAPE_PEAK_TFLOPS]

RESULTS.csv is one of benchmark/sdpa_benchmark_training/artifacts/sdpa_bf16_benchmark_results_<GPU>.csv of
NVIDIA/cudnn-frontend (read it from the repository at a commit; it is not copied here). Its rows give forward and
backward TFLOP/s per backend (pyt_cudnn, cudnn_fe, flash_attention, pyt_flash_attention) at one causal GQA
shape over sequence lengths, the backward counted as 2.5 x the forward's FLOPs, which is Rankflow's convention
too. Printed: `points` (fwd+bwd rate, 3.5 / (1/fwd + 2.5/bwd), as a fraction of the peak) and `fwd_over_bwd`.

Single-call timings through PyTorch carry a fixed dispatch cost that dominates short sequences. With --from L the
rows below L are replaced by another run's shape (--shape: a run through cudnn_fe, say), scaled to this run's
point at L, and take that run's forward/backward ratios.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def rates(text: str, backend: str) -> dict[int, tuple[float, float]]:
    """Sequence length -> (forward, backward) TFLOP/s of one backend, rows with both rates measured."""
    out = {}
    for row in csv.DictReader(text.splitlines()):
        if row["backend"] == backend and float(row["fwd_tflops_per_sec"]) > 0 and float(row["bwd_tflops_per_sec"]) > 0:
            out[int(row["q_seqlen"])] = (float(row["fwd_tflops_per_sec"]), float(row["bwd_tflops_per_sec"]))
    if not out:
        raise ValueError(f"no measured rows for backend {backend!r}")
    return out


def combined(fwd: float, bwd: float) -> float:
    """The fwd+bwd rate of a pass pair whose backward does 2.5 x the forward's FLOPs."""
    return 3.5 / (1.0 / fwd + 2.5 / bwd)


def curve(measured: dict[int, tuple[float, float]], peak: float) -> tuple[dict[int, float], dict[int, float]]:
    """(fraction of peak, forward/backward ratio) per sequence length."""
    return ({s: combined(f, b) / peak for s, (f, b) in measured.items()},
            {s: f / b for s, (f, b) in measured.items()})


def reshaped(points: dict[int, float], ratios: dict[int, float], shape: tuple[dict[int, float], dict[int, float]],
             start: int) -> tuple[dict[int, float], dict[int, float]]:
    """Below `start`, the shape run's points scaled to this run's point at `start`, and its ratios."""
    if start not in points or start not in shape[0]:
        raise ValueError(f"both runs need a row at sequence length {start}")
    scale = points[start] / shape[0][start]
    low = [s for s in shape[0] if s < start]
    return ({**{s: shape[0][s] * scale for s in low}, **{s: v for s, v in points.items() if s >= start}},
            {**{s: shape[1][s] for s in low}, **{s: v for s, v in ratios.items() if s >= start}})


def yaml_lines(points: dict[int, float], ratios: dict[int, float]) -> list[str]:
    fmt = lambda d, nd: ", ".join(f"[{s}, {d[s]:.{nd}f}]" for s in sorted(d))  # noqa: E731
    return [f"points: [{fmt(points, 3)}]", f"fwd_over_bwd: [{fmt(ratios, 2)}]"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cudnn_frontend_attention_table")
    ap.add_argument("csv", type=Path)
    ap.add_argument("backend")
    ap.add_argument("peak", type=float, help="the device's dense bf16 peak, TFLOP/s")
    ap.add_argument("--from", dest="start", type=int, help="replace the rows below this length by --shape's shape")
    ap.add_argument("--shape", nargs=3, metavar=("CSV", "BACKEND", "PEAK"))
    args = ap.parse_args(argv)
    if args.start is not None and not args.shape:
        ap.error("--from needs --shape")
    try:
        points, ratios = curve(rates(args.csv.read_text(), args.backend), args.peak)
        if args.start is not None:
            other = curve(rates(Path(args.shape[0]).read_text(), args.shape[1]), float(args.shape[2]))
            points, ratios = reshaped(points, ratios, other, args.start)
    except (OSError, ValueError, KeyError) as exc:
        print(f"cudnn_frontend_attention_table: {args.csv}: {exc} (fix: give a cudnn-frontend results CSV and a "
              "backend it lists)", file=sys.stderr)
        sys.exit(2)
    print("\n".join(yaml_lines(points, ratios)))


if __name__ == "__main__":
    main()
