"""A SearchResult as text, as its JSON document (schema rankflow.search 1.0), as a CSV of every evaluated
plan, and as a PNG of its Pareto front. Pure: the CLI writes what these return."""

from __future__ import annotations

import csv
import io
import json

from graphgen.search.evaluate import PLAN_FIELDS

SCHEMA_VERSION = "1.0"
CSV_FIELDS = ("hardware", "gpus", *PLAN_FIELDS, "status", "reason", "step_time_s", "tokens_per_s", "mfu",
              "peak_memory_gib", "headroom_gib", "usd_per_million_tokens", "train_wall_days", "train_cost_usd")


def _row(e) -> dict:
    r, run = e.record, e.run or {}
    return {"hardware": e.hardware, "gpus": e.gpus, **{k: r.plan.get(k) for k in PLAN_FIELDS}, "status": r.status,
            "reason": r.reason, "step_time_s": r.step_time_s, "tokens_per_s": r.tokens_per_s, "mfu": r.mfu,
            "peak_memory_gib": r.peak_memory_gib, "headroom_gib": r.headroom_gib,
            "usd_per_million_tokens": e.usd_per_mtok, "train_wall_days": run.get("wall_days"),
            "train_cost_usd": run.get("cost_usd")}


def to_csv(found) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for e in found.evaluated:
        w.writerow({k: ("" if v is None else v) for k, v in _row(e).items()})
    return out.getvalue()


def to_dict(found) -> dict:
    from reports.json_out import result_to_dict

    return {
        "schema": "rankflow.search", "schema_version": SCHEMA_VERSION, "model": found.model,
        "train_tokens": found.train_tokens,
        "spaces": [{"hardware": h, "gpus": n, "candidates": c} for h, n, c in found.spaces],
        "counts": found.counts(),
        "top": [{**_row(t.entry), "simulated": result_to_dict(t.result)} for t in found.top],
        "cheapest": [_row(e) for e in found.cheapest],
        "pareto": [_row(e) for e in found.pareto],
        "check": found.check,
    }


def dumps(found) -> str:
    return json.dumps(to_dict(found), indent=2, allow_nan=False) + "\n"


def _plan_text(p: dict) -> str:
    extra = "".join(f" {k}={p[k]}" for k in ("cp", "ep") if p.get(k, 1) > 1)
    sched = p["schedule"] + (f"/v{p['virtual_stages']}" if p["virtual_stages"] > 1 else "")
    return f"tp{p['tp']} pp{p['pp']} dp{p['dp']}{extra} {sched} mb{p['micro_batch']} zero{p['zero_stage']} rc-{p['recompute']}"


def summary(found, wall_s: float | None = None) -> str:
    c = found.counts()
    total = sum(c.values())
    lines = [f"Rankflow search: {found.model}",
             "  spaces: " + ", ".join(f"{n} x {h} ({k:,} plans)" for h, n, k in found.spaces),
             f"  {total:,} plans: {c['ok']:,} timed, {c['oom']:,} do not fit (exact memory), {c['invalid']:,} cannot run"]
    if wall_s:
        lines.append(f"  {wall_s:.1f} s, {total / wall_s:,.0f} plans/s")
    chk = found.check
    if chk.get("plans"):
        lines.append(f"  fast evaluation vs DAG replay on {chk['plans']} plans: largest difference "
                     f"{100 * chk['max_rel_diff']:.2f} %")
    lines += ["", "Top plans by throughput (step time from the full DAG replay):",
              f"  {'#':>3} {'hardware':18} {'GPUs':>6}  {'plan':44} {'step s':>9} {'tok/s/GPU':>10} {'MFU':>6} "
              f"{'mem GiB':>8} {'$/Mtok':>8}"]
    for i, t in enumerate(found.top, 1):
        e, res = t.entry, t.result
        cost = f"{e.usd_per_mtok:8.3f}" if e.usd_per_mtok is not None else f"{'-':>8}"
        lines.append(f"  {i:>3} {e.hardware[:18]:18} {e.gpus:>6}  {_plan_text(e.record.plan):44} {res.step_time_s:9.4f} "
                     f"{res.tokens_per_s_per_gpu:10.1f} {100 * res.mfu:5.1f}% {e.record.peak_memory_gib:8.1f} {cost}")
        if e.run:
            run = e.run
            money = f", ${run['cost_usd']:,.0f}" if run["cost_usd"] is not None else ""
            lines.append(f"      training run: {run['wall_days']:.1f} days, {run['gpu_hours']:,.0f} GPU-hours{money}")
    if found.pareto:
        lines += ["", f"Pareto front (time, cost, GPUs): {len(found.pareto)} plans"]
    return "\n".join(lines) + "\n"


def front_png(found) -> bytes:
    """Time to train (or step time) against cost for every timed plan, the front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def xy(e):
        time = e.run["wall_days"] if e.run else e.record.step_time_s
        cost = e.run["cost_usd"] if e.run and e.run["cost_usd"] is not None else e.usd_per_mtok
        return time, cost
    pts = [xy(e) for e in found.evaluated if e.ok and xy(e)[1] is not None]
    front = sorted(xy(e) for e in found.pareto if xy(e)[1] is not None)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    if pts:
        ax.scatter(*zip(*pts, strict=True), s=6, alpha=0.35, label="plans")
    if front:
        ax.plot(*zip(*front, strict=True), "o-", color="C3", label="Pareto front")
    run = found.train_tokens is not None
    ax.set_xlabel("time to train (days)" if run else "step time (s)")
    ax.set_ylabel("cost (USD)" if run else "cost (USD per million tokens)")
    ax.set_title(f"{found.model}: plan search")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
