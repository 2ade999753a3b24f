"""What limits a simulated step, with the evidence and what to change (the scaling-study report)."""

from __future__ import annotations

from dataclasses import dataclass

ADVICE = {
    "compute": "compute-bound: faster kernels (fp8 GEMMs, fused attention) or more GPUs",
    "tp": "tensor-parallel communication is exposed: lower tp, keep tp inside a node, or overlap it with the GEMMs",
    "cp": "context-parallel key/value exchange is exposed: lower cp or use the ring variant that overlaps attention",
    "ep": "expert-parallel all-to-alls are exposed: keep ep inside a node, overlap dispatch (moe_overlap) or lower ep",
    "etp": "expert tensor-parallel communication is exposed: lower etp",
    "dp": "data-parallel communication is exposed: a larger micro-batch or global batch, overlapped gradient "
          "reduction, ZeRO-1/2 instead of 3, or fewer replicas across nodes",
    "pp": "pipeline transfers are exposed: fewer pipeline stages, or stages inside a node",
    "bubble": "the pipeline bubble: more microbatches, an interleaved or zero-bubble schedule, or fewer stages",
    "memory": "memory-bound: little headroom left; activation recompute, ZeRO sharding or more GPUs",
    "stragglers": "waiting for the slowest host: fewer data-parallel replicas across hosts, or a cluster whose hosts "
                  "vary less (stragglers.spread)",
}


RUNNER_UP = 0.05  # a part of the step worth naming beside the largest


@dataclass(frozen=True)
class Bottleneck:
    kind: str          # compute, an axis (tp, cp, ep, dp, pp), bubble, or memory
    share: float       # of the step time (memory: headroom over capacity)
    evidence: str
    advice: str


def bottleneck(res, memory_headroom_limit: float = 0.05) -> Bottleneck:
    """The largest part of the critical role's step time; memory when headroom is nearly gone."""
    b, step = res.breakdown, res.step_time_s
    parts = {"compute": b.compute, "bubble": b.pipeline_bubble, "stragglers": b.stragglers,
             **{a: t for a, t in b.exposed_comm.items() if t > 0}}
    kind = max(parts, key=lambda k: (parts[k], k))
    room = min(m.headroom / m.capacity for m in res.memory) if res.memory else 1.0
    if room < memory_headroom_limit:
        tight = max(res.memory, key=lambda m: m.total / m.capacity)
        text = (f"does not fit: {tight.role} needs {tight.total / 2**30:.1f} of {tight.capacity / 2**30:.1f} GiB"
                if room < 0 else f"{100 * room:.1f} % of device memory left on {tight.role}")
        return Bottleneck("memory", room, text, ADVICE["memory"])
    share = parts[kind] / step if step > 0 else 0.0
    evidence = f"{_label(kind)} is {100 * share:.0f} % of the step"
    if kind == "compute":
        evidence += f" (MFU {100 * res.mfu:.0f} %)"
    # What else takes a real share: where a compute-bound point loses its scaling efficiency.
    rest = sorted(((t / step, k) for k, t in parts.items() if k != kind and step > 0 and t / step >= RUNNER_UP),
                  reverse=True)[:2]
    if rest:
        evidence += "; then " + ", ".join(f"{_label(k)} {100 * x:.0f} %" for x, k in rest)
    return Bottleneck(kind, share, evidence, ADVICE.get(kind, ADVICE["compute"]))


def _label(kind: str) -> str:
    return {"compute": "compute", "bubble": "pipeline bubble", "stragglers": "waiting for the slowest host"}.get(
        kind, f"exposed {kind} communication")
