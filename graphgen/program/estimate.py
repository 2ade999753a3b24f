"""An upper bound on a program's node count, from its templates alone, before any role is built.

The builder refuses programs above MAX_NODES with this number, so it must never undercount: it
cuts each template where the data-parallel emitter could attach (graphgen.parallel.zero) and
counts the segments as graphgen.program.emit would, instead of assuming a fixed number per pass
(a ZeRO-3 pass is cut at every unit's gather and gradient bucket). Its cost grows with the
templates' items, never with microbatches or GPUs.
"""

from __future__ import annotations

from graphgen.model.layer_graph import LayerGraph
from graphgen.parallel.zero import GradGroup, gather_points, grad_groups, grads_every_microbatch
from graphgen.program.emit import pass_segments
from graphgen.program.roles import PassTemplates
from graphgen.program.templates import Template
from graphgen.scenario import Scenario
from graphgen.schedule import SCHEDULES
from graphgen.units import dtype_bytes

PIPE = 2  # a receive before and a send after a pass, at most


def _grad_cuts(tpl: Template, groups: list[GradGroup], pos: int) -> set[int]:
    """Where a pass is cut after the item that makes a gradient bucket final."""
    n = len(tpl.items)
    return {max(tpl.last_use.get(u, n - 1) for u in b.units) + 1
            for grp in groups for b in grp.buckets[pos] if b.units}


def _gather_cuts(sc: Scenario, tpl: Template, groups: list[GradGroup]) -> tuple[set[int], int]:
    """ZeRO-3's cuts (before each gather point, after each span that releases a later gather) and
    its gathers per pass instance."""
    cuts, gathers = set(), 0
    for grp in groups:
        points = gather_points(tpl, grp.bucket_of, sc.plan.zero3_regather_after_recompute)
        gathers += len(points)
        cuts |= {first for first, _, _ in points} | {last + 1 for _, last, _ in points}
    return cuts, gathers


def _pass_nodes(sc: Scenario, tpl: Template, phase: str, pos: int, groups: list[GradGroup],
                coarse: bool) -> tuple[int, int]:
    """(nodes of an ordinary instance of this pass, nodes of its one special instance): the first
    forward of a chunk, gated by ZeRO-1/2's step-start gathers, or its last backward, where ZeRO-0/1
    reduce gradients."""
    p = sc.plan
    grads = phase in ("B", "W")
    cuts, comm = set(), 0
    if p.zero_stage == 3 and phase != "W":
        cuts, comm = _gather_cuts(sc, tpl, groups)
    extra: set[int] = set()
    extra_comm = 0
    if grads:
        buckets = sum(len(grp.buckets[pos]) for grp in groups)
        if grads_every_microbatch(p.zero_stage):
            cuts |= _grad_cuts(tpl, groups, pos)
            comm += buckets
        else:
            extra, extra_comm = _grad_cuts(tpl, groups, pos), buckets
    elif phase == "F" and p.zero_stage in (1, 2) and p.overlap_param_gather:
        extra = {i for grp in groups for u, i in tpl.first_use.items() if u in grp.bucket_of}

    def segments(at: set[int]) -> int:
        return len(pass_segments(tpl, at, True)) if coarse else len(tpl.items)

    ordinary = segments(cuts) + comm + PIPE
    return ordinary, segments(cuts | extra) + comm + extra_comm + PIPE


def estimate_nodes(sc: Scenario, lg: LayerGraph, chunk_layers, templates: list[Template], ids: PassTemplates,
                   detail: str) -> int:
    """At least as many nodes as build_program will make: every pass instance, its transfers and its
    data-parallel collectives, and each role's step-level collectives and optimizer step."""
    p = sc.plan
    sched = SCHEDULES[p.schedule]
    positions = range(ids.positions)
    groups = [grp for grp in grad_groups(p, lg, positions, lambda g: lg.chunk_units(chunk_layers, g),
                                         dtype_bytes(p.grad_reduce_dtype), sc.model.moe is not None) if grp.sync]
    per_chunk = -(-sc.microbatches // sched.copies)  # instances of each pass per global chunk, at most
    total = p.pp  # optimizer steps
    for pos in positions:
        nodes = {phase: _pass_nodes(sc, templates[ids.ids[(phase, pos)]], phase, pos, groups, detail == "coarse")
                 for phase in sched.phases}
        # Every microbatch runs a forward and one backward (whole, or input-gradient then weight-gradient).
        backward = [nodes[ph] for ph in ("B", "Bi") if ph in nodes]
        passes = [nodes["F"]] + ([(max(b[0] for b in backward), max(b[1] for b in backward))] if backward else [])
        passes += [nodes["W"]] if "W" in nodes else []
        chunk = sum((per_chunk - 1) * ordinary + special for ordinary, special in passes)
        # step-start or post-step parameter gathers, and gradient reductions after the last backward
        chunk += 2 * sum(len(grp.buckets[pos]) for grp in groups)
        total += sched.copies * chunk
    return total
