"""Renderers of a serving run: a latency plot (PNG bytes) and a Chrome/Perfetto trace (JSON text) of a
sample of requests and the iterations around them. They return data; the caller writes files."""

from __future__ import annotations

import io
import json

from graphgen.errors import RankflowError
from graphgen.serving.metrics import DEFAULT_SLO, SLO, summarize, tpot_of
from graphgen.serving.simulate import RequestRecord, ServingResult

REQUESTS_PID = 10_000  # the trace's process for sampled requests, after every replica's


def _sample(records: tuple[RequestRecord, ...], n: int) -> list[RequestRecord]:
    """n requests evenly spread over the run (by id), always the same ones for the same run."""
    if n <= 0 or not records:
        return []
    if n >= len(records):
        return list(records)
    step = len(records) / n
    return [records[int(i * step)] for i in range(n)]


def _request_events(r: RequestRecord, tid: int) -> list[dict]:
    def span(name: str, start: float, end: float) -> dict:
        return {"ph": "X", "name": name, "cat": "request", "pid": REQUESTS_PID, "tid": tid,
                "ts": round(start * 1e6, 3), "dur": round(max(end - start, 0.0) * 1e6, 3),
                "args": {"id": r.id, "input_len": r.input_len, "output_len": r.output_len,
                         "preemptions": r.preemptions}}
    events = [{"ph": "M", "name": "thread_name", "pid": REQUESTS_PID, "tid": tid,
               "args": {"name": f"request {r.id}"}},
              span("queued", r.arrival_s, r.scheduled_s), span("prefill", r.scheduled_s, r.prefill_done_s)]
    if r.kv_ready_s is not None:
        events.append(span("kv transfer", r.prefill_done_s, r.kv_ready_s))
        events.append(span("decode", r.kv_ready_s, r.finish_s))
    else:
        events.append(span("decode", r.prefill_done_s, r.finish_s))
    return events


def chrome_trace(result: ServingResult, sample_requests: int = 32, max_iterations: int = 20_000) -> dict:
    """One process per replica with its iterations on one track, and one track per sampled request
    (queued, prefill, KV transfer, decode). Iterations are those overlapping the sampled requests' span,
    the first `max_iterations` of them, so the file stays small for long runs."""
    sample = _sample(result.records, sample_requests)
    lo = min((r.arrival_s for r in sample), default=0.0)
    hi = max((r.finish_s for r in sample), default=0.0)
    events: list[dict] = []
    for i, role in enumerate(result.replica_roles):
        events.append({"ph": "M", "name": "process_name", "pid": i, "tid": 0,
                       "args": {"name": f"replica {i} ({role})"}})
        events.append({"ph": "M", "name": "thread_name", "pid": i, "tid": 0, "args": {"name": "iterations"}})
    kept = 0
    for it in result.iterations:
        if it.start_s + it.duration_s < lo or it.start_s > hi:
            continue
        if kept >= max_iterations:
            break
        kept += 1
        name = "mixed" if it.prefill_tokens and it.decode_seqs else "prefill" if it.prefill_tokens else "decode"
        events.append({"ph": "X", "name": name, "cat": "iteration", "pid": it.replica, "tid": 0,
                       "ts": round(it.start_s * 1e6, 3), "dur": round(it.duration_s * 1e6, 3),
                       "args": {"prefill_tokens": it.prefill_tokens, "prefill_context": it.prefill_context,
                                "prefill_seqs": it.prefill_seqs, "decode_seqs": it.decode_seqs, "decode_context": it.decode_context}})
    events.append({"ph": "M", "name": "process_name", "pid": REQUESTS_PID, "tid": 0,
                   "args": {"name": f"requests (sample of {len(sample)})"}})
    for tid, r in enumerate(sample):
        events += _request_events(r, tid)
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def trace_json(result: ServingResult, sample_requests: int = 32, max_iterations: int = 20_000) -> str:
    return json.dumps(chrome_trace(result, sample_requests, max_iterations), separators=(",", ":"),
                      allow_nan=False) + "\n"


def _cdf(ax, values: list[float], label: str, target: float | None) -> None:
    v = sorted(values)
    if v:
        ax.plot([x * 1e3 for x in v], [(i + 1) / len(v) for i in range(len(v))], drawstyle="steps-post")
    if target is not None:
        ax.axvline(target * 1e3, color="C3", linestyle="--", label="SLO target")
        ax.legend(loc="lower right")
    ax.set_xlabel(f"{label} (ms)")
    ax.set_ylabel("fraction of requests")
    ax.grid(alpha=0.3)


def latency_png(result: ServingResult, slo: SLO = DEFAULT_SLO, title: str = "Rankflow serving") -> bytes:
    """CDFs of TTFT, TPOT and end-to-end latency, and TTFT over arrival time; SLO targets dashed."""
    try:
        import matplotlib
    except ImportError:
        raise RankflowError("matplotlib is not installed", field="png", fix="pip install -e '.[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = result.records
    s = summarize(result, slo)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=100)
    _cdf(axes[0][0], [r.first_token_s - r.arrival_s for r in recs], "time to first token", slo.ttft_s)
    _cdf(axes[0][1], [t for t in map(tpot_of, recs) if t is not None], "time per output token", slo.tpot_s)
    _cdf(axes[1][0], [r.finish_s - r.arrival_s for r in recs], "end-to-end latency", slo.e2e_s)
    ax = axes[1][1]
    ax.scatter([r.arrival_s for r in recs], [(r.first_token_s - r.arrival_s) * 1e3 for r in recs], s=3, alpha=0.5)
    ax.set_xlabel("arrival (s)")
    ax.set_ylabel("time to first token (ms)")
    ax.grid(alpha=0.3)
    rate = f"{s.requests_per_s:.2f} req/s" if s.requests_per_s is not None else "-"
    fig.suptitle(f"{title}: {s.requests} requests, {rate}, SLO {'met' if s.slo_met else 'missed'}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
