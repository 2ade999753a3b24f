"""Scaling sweeps and recommendations as text, JSON (schemas rankflow.sweep 1.1 / rankflow.recommend 1.0), CSV
and PNG. Pure: the CLI writes what these return."""

from __future__ import annotations

import csv
import io
import json

SCHEMA_VERSION = "1.1"  # 1.1: stragglers_s per point
RECOMMEND_VERSION = "1.0"
POINT_FIELDS = ("point", "gpus", "step_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "mfu", "scaling_efficiency",
                "compute_s", "pipeline_bubble_s", "exposed_comm_s", "stragglers_s", "peak_memory_gib", "bottleneck", "evidence",
                "advice")


def _point(p) -> dict:
    r = p.result
    return {"point": p.label, "gpus": p.gpus, "step_time_s": r.step_time_s, "tokens_per_s": r.tokens_per_s,
            "tokens_per_s_per_gpu": r.tokens_per_s_per_gpu, "mfu": r.mfu, "scaling_efficiency": p.efficiency,
            "compute_s": r.breakdown.compute, "pipeline_bubble_s": r.breakdown.pipeline_bubble,
            "exposed_comm_s": dict(r.breakdown.exposed_comm), "stragglers_s": r.breakdown.stragglers,
            "peak_memory_gib": max(m.total for m in r.memory) / 2**30,
            "plan": dict(r.plan), "bottleneck": p.limit.kind, "evidence": p.limit.evidence, "advice": p.limit.advice}


def dumps(points) -> str:
    return json.dumps({"schema": "rankflow.sweep", "schema_version": SCHEMA_VERSION,
                       "model": points[0].result.model if points else None,
                       "points": [_point(p) for p in points]}, indent=2, allow_nan=False) + "\n"


def to_csv(points) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=POINT_FIELDS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for p in points:
        row = _point(p)
        row["exposed_comm_s"] = sum(row["exposed_comm_s"].values())
        w.writerow(row)
    return out.getvalue()


def summary(points) -> str:
    width = max([5, *(len(p.label) for p in points)])  # labels are field=value: cutting them can merge rows
    lines = [f"Rankflow sweep: {points[0].result.model}" if points else "Rankflow sweep: no points",
             f"  {'point':{width}} {'GPUs':>6} {'step s':>9} {'tok/s/GPU':>10} {'MFU':>6} {'eff':>6}  bottleneck"]
    for p in points:
        r = p.result
        lines.append(f"  {p.label:{width}} {p.gpus:>6} {r.step_time_s:9.4f} {r.tokens_per_s_per_gpu:10.1f} "
                     f"{100 * r.mfu:5.1f}% {100 * p.efficiency:5.1f}%  {p.limit.evidence}")
    kinds = {p.limit.kind for p in points}
    if points:
        lines += ["", "What to change:"] + [f"  {k}: {next(p.limit.advice for p in points if p.limit.kind == k)}"
                                            for k in sorted(kinds)]
    return "\n".join(lines) + "\n"


def png(points) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [p.label for p in points]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    x = range(len(points))
    a.plot(x, [p.result.tokens_per_s for p in points], "o-", label="tokens/s")
    a.set_ylabel("tokens/s")
    a2 = a.twinx()
    a2.plot(x, [100 * p.efficiency for p in points], "s--", color="C1", label="scaling efficiency")
    a2.set_ylabel("scaling efficiency (%)")
    a.set_xticks(list(x), labels, rotation=30, ha="right")
    a.set_title("throughput and efficiency")
    own = {"compute": lambda d: d.compute, "bubble": lambda d: d.pipeline_bubble, "stragglers": lambda d: d.stragglers}
    waits = any(p.result.breakdown.stragglers > 0 for p in points)
    parts = ["compute", "bubble", *sorted({k for p in points for k in p.result.breakdown.exposed_comm}),
             *(["stragglers"] if waits else [])]
    bottom = [0.0] * len(points)
    for part in parts:
        vals = [own[part](p.result.breakdown) if part in own else p.result.breakdown.exposed_comm.get(part, 0.0)
                for p in points]
        b.bar(list(x), vals, bottom=bottom, label=part if part in own else f"{part} comm")
        bottom = [u + v for u, v in zip(bottom, vals, strict=True)]
    b.set_xticks(list(x), labels, rotation=30, ha="right")
    b.set_ylabel("seconds per step")
    b.set_title("time breakdown")
    b.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _rec(r) -> dict:
    from reports.search_out import _row

    res = r.result
    return {**_row(r.entry), "simulated_step_time_s": res.step_time_s,
            "simulated_mfu": res.mfu, "run": r.entry.run}


def recommend_dumps(recs) -> str:
    return json.dumps({"schema": "rankflow.recommend", "schema_version": RECOMMEND_VERSION,
                       "recommendations": [_rec(r) for r in recs]}, indent=2, allow_nan=False) + "\n"


def recommend_csv(recs) -> str:
    from reports.search_out import CSV_FIELDS, _row

    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in recs:
        w.writerow({k: ("" if v is None else v) for k, v in _row(r.entry).items()})
    return out.getvalue()


def recommend_summary(recs) -> str:
    from reports.search_out import _plan_text

    lines = ["Rankflow recommend:", f"  {'#':>2} {'GPU':18} {'GPUs':>6}  {'plan':44} {'days':>7} {'cost $':>12} "
                                    f"{'mem room GiB':>12}"]
    for i, r in enumerate(recs, 1):
        e = r.entry
        lines.append(f"  {i:>2} {e.hardware[:18]:18} {e.gpus:>6}  {_plan_text(e.record.plan):44} "
                     f"{e.run['wall_days']:7.1f} {e.run['cost_usd']:12,.0f} {e.record.headroom_gib:12.1f}")
    return "\n".join(lines) + "\n"
