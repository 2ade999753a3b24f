"""One role's DAG for debugging: Graphviz DOT, and a self-contained HTML page (inline SVG).

The HTML draws each node at its simulated start time in its stream's lane, with data edges as
lines, so a reader sees dependencies and overlap at once; hovering a node shows its details.
"""

from __future__ import annotations

import html

from backends.analytical.scheduler import Timeline
from graphgen.ir import CollectiveNode, ComputeNode, RecvNode, SendNode
from graphgen.program import Program
from reports.trace import lanes

_COLORS = {"fwd": "#4e79a7", "bwd": "#e15759", "recompute": "#f28e2b", "optimizer": "#59a14f",
           "grad_sync": "#b07aa1", "param_sync": "#76b7b2"}


def _label(n, duration: float) -> str:
    if isinstance(n, ComputeNode):
        return f"{n.name}\\n{duration * 1e3:.3f} ms, {n.flops / 1e9:.1f} GFLOP"
    if isinstance(n, CollectiveNode):
        return f"{n.name}\\n{n.kind.value} {n.bytes / 2**20:.1f} MiB over {n.axis}({n.group_size})"
    if isinstance(n, SendNode | RecvNode):
        return f"{n.name}\\n{n.bytes / 2**20:.1f} MiB peer stage {n.peer_role}"
    return n.name


def selected(prog: Program, role: int, max_nodes: int):
    nodes = prog.roles[role].nodes
    return nodes[:max_nodes], len(nodes) > max_nodes


def to_dot(prog: Program, durations: list[float], role: int, max_nodes: int) -> str:
    nodes, truncated = selected(prog, role, max_nodes)
    keep = {n.id for n in nodes}
    out = [f'digraph "{prog.roles[role].name}" {{', "  rankdir=LR;", '  node [shape=box, fontsize=9];']
    if truncated:
        out.append(f'  label="first {max_nodes} of {len(prog.roles[role].nodes)} nodes";')
    for n in nodes:
        shape = "box" if isinstance(n, ComputeNode) else "ellipse"
        color = _COLORS.get(n.phase.value, "#999999")
        out.append(f'  n{n.id} [label="{_label(n, durations[n.id])}", shape={shape}, color="{color}"];')
    for n in nodes:
        for d in n.deps:
            if d in keep:
                out.append(f"  n{d} -> n{n.id};")
    out.append("}")
    return "\n".join(out) + "\n"


def to_html(prog: Program, tl: Timeline, role: int, max_nodes: int) -> str:
    nodes, truncated = selected(prog, role, max_nodes)
    st, fin = tl.start[role], tl.finish[role]
    end = max((fin[n.id] for n in nodes), default=1.0) or 1.0
    width, lane_h, left = 1800.0, 60.0, 90.0
    scale = (width - left - 10) / end
    names = lanes(prog)
    lane_of = lambda n: names.index("recv" if isinstance(n, RecvNode) else n.stream)  # noqa: E731
    pos = {}
    parts = []
    for i, lane in enumerate(names):
        parts.append(f'<text x="4" y="{i * lane_h + 34}" font-size="12">{lane}</text>')
        parts.append(f'<line x1="{left}" x2="{width}" y1="{(i + 1) * lane_h}" y2="{(i + 1) * lane_h}" '
                     'stroke="#ddd"/>')
    for n in nodes:
        x = left + st[n.id] * scale
        w = max((fin[n.id] - st[n.id]) * scale, 1.5)
        y = lane_of(n) * lane_h + 10
        pos[n.id] = (x, w, y)
    for n in nodes:
        x2, _, y2 = pos[n.id]
        for d in n.deps:
            if d in pos:
                x1, w1, y1 = pos[d]
                parts.append(f'<line x1="{x1 + w1:.1f}" y1="{y1 + 20:.1f}" x2="{x2:.1f}" y2="{y2 + 20:.1f}" '
                             'stroke="#888" stroke-width="0.4"/>')
    for n in nodes:
        x, w, y = pos[n.id]
        color = _COLORS.get(n.phase.value, "#999999")
        tip = html.escape(_label(n, fin[n.id] - st[n.id]).replace("\\n", " | ")
                          + f" | start {st[n.id] * 1e3:.3f} ms, end {fin[n.id] * 1e3:.3f} ms")
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="40" fill="{color}" '
                     f'fill-opacity="0.8"><title>{tip}</title></rect>')
    note = (f"showing the first {max_nodes} of {len(prog.roles[role].nodes)} nodes"
            if truncated else f"{len(nodes)} nodes")
    legend = " ".join(f'<span style="background:{c};color:white;padding:2px 6px">{k}</span>'
                      for k, c in _COLORS.items())
    title = html.escape(f"{prog.scenario.model.name}: {prog.roles[role].name} DAG ({note})")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body style='font-family:sans-serif'><h3>{title}</h3><p>{legend} &nbsp; x axis: simulated time, "
            f"0 to {end * 1e3:.3f} ms; lines: data dependencies; hover a box for details.</p>"
            f"<svg xmlns='http://www.w3.org/2000/svg' width='{width:.0f}' height='{len(names) * lane_h + 10:.0f}'>"
            + "".join(parts) + "</svg></body></html>\n")
