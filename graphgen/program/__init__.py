"""Scenario -> Program: one DAG per role (pipeline stage), ranks bound only by lookup.

Each model chunk's forward and backward pass is lowered once into a template (templates.py); the
schedule then stamps templates out per microbatch (roles.py), adding pipeline send/recv,
data-parallel gradient and parameter collectives, and the optimizer step. Work grows with roles x
microbatches (x layers at op level), never with the number of GPUs.

The program is structure only: what runs and what moves how many bytes over which axis. Costs are
attached when it is evaluated (graphgen.costs.evaluate), so both backends share it unchanged and a
search can re-cost it under another cluster without rebuilding it.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphgen.errors import RankflowError
from graphgen.ir import Phase, Role
from graphgen.model.layer_graph import LayerGraph, build_layer_graph
from graphgen.model.shape import BlockShape
from graphgen.parallel.layout import AXES, grad_required_layout
from graphgen.parallel.mesh import Mesh
from graphgen.parallel.pipeline import stage_layers
from graphgen.program.roles import PassTemplates, build_role
from graphgen.program.templates import (
    PassBuilder,
    Template,
    chunk_stream,
    lower_backward,
    lower_forward,
    lower_wgrad,
)
from graphgen.scenario import Scenario
from graphgen.schedule import SCHEDULES

DETAILS = ("coarse", "ops")
MAX_NODES = 1_500_000  # nodes over all roles: about ten seconds of building and replaying


EXPERT_AXES = frozenset({"ep", "etp", "edp"})


@dataclass(frozen=True)
class Program:
    scenario: Scenario
    mesh: Mesh                                  # dense layers' ranks: tp x cp x dp x pp
    roles: tuple[Role, ...]
    layer_graph: LayerGraph
    templates: tuple[Template, ...]
    chunk_layers: tuple[tuple[int, ...], ...]   # global chunk -> its layers
    detail: str = "ops"                         # "ops": a node per fused op; "coarse": per pass segment
    expert_mesh: Mesh | None = None             # expert layers' ranks: etp x ep x edp x pp, same ranks

    def role_of_rank(self, rank: int) -> int:
        return self.mesh.coords(rank)["pp"]

    def ranks_of_role(self, role: int) -> range:
        """Ranks of a role are a contiguous block in Megatron order (pp outermost)."""
        per = self.mesh.world // self.mesh.pp
        return range(role * per, (role + 1) * per)

    def axis_view(self, axis: str) -> tuple[Mesh, tuple[str, ...]]:
        """The mesh and its axes that a communication axis's groups run over. Gradients of dense
        weights reduce over dp and cp together (Megatron's data-parallel group with context
        parallelism); expert axes are the expert mesh's."""
        if axis in EXPERT_AXES:
            return self.expert_mesh, {"ep": ("ep",), "etp": ("tp",), "edp": ("dp",)}[axis]
        return self.mesh, (("cp", "dp") if axis == "dp" else (axis,))

    def axis_span(self, axis: str, gpus_per_node: int) -> tuple[int, int]:
        mesh, names = self.axis_view(axis)
        return mesh.axis_span(names, gpus_per_node)

    def axis_groups(self, axis: str) -> list[tuple[int, ...]]:
        mesh, names = self.axis_view(axis)
        return mesh.groups(names)

    def group_size(self, axis: str) -> int:
        mesh, names = self.axis_view(axis)
        size = 1
        for n in names:
            size *= getattr(mesh, n)
        return size

    @property
    def axes(self) -> tuple[str, ...]:
        """Communication axes with more than one rank, in mesh order (expert axes for MoE models)."""
        moe = self.scenario.model.moe is not None
        return tuple(a for a in AXES if (moe or a not in EXPERT_AXES) and self.group_size(a) > 1)


def expert_imbalance(sc: Scenario) -> float:
    """Routed tokens on the busiest expert-parallel rank over the balanced share: from the per-expert
    load when given (experts placed contiguously, E/ep per rank), else the stated factor; a capacity
    factor drops what exceeds it."""
    m, w, p = sc.model, sc.workload, sc.plan
    if m.moe is None:
        return 1.0
    factor = w.expert_imbalance
    if w.expert_load:
        per = m.moe.experts // p.ep
        total = sum(w.expert_load)
        factor = max(sum(w.expert_load[r * per:(r + 1) * per]) for r in range(p.ep)) / total * p.ep
    cf = m.moe.capacity_factor
    return max(1.0, min(factor, cf) if cf else factor)


def block_shape(sc: Scenario) -> BlockShape:
    p = sc.plan
    return BlockShape(sc.model, sc.workload, p.tp, p.sp and p.tp > 1, sc.padded_vocab, p.pp, cp=p.cp, ep=p.ep,
                      etp=p.etp, imbalance=expert_imbalance(sc), cp_ring=p.cp_algorithm == "ring")


def pass_templates(sc: Scenario, lg: LayerGraph, chunk_layers) -> tuple[list[Template], PassTemplates]:
    """Forward and backward (and, for a split backward, weight-gradient) templates of every chunk."""
    p = sc.plan
    split = SCHEDULES[p.schedule].split_backward
    every = p.recompute_every if p.recompute == "full" else None
    sizes = p.axis_sizes()
    G = len(chunk_layers)
    fwd, bwd, wgrad = [], [], []
    for g in range(G):
        stream = chunk_stream(lg, chunk_layers[g], g == 0, g == G - 1)
        start = stream[0][1].in_layout if g == 0 and stream else lg.residual
        end = lg.head_out if g == G - 1 else lg.residual
        pb = PassBuilder(lg.layers, sizes, p.recompute == "selective")
        lower_forward(pb, stream, start, end, Phase.FORWARD)
        fwd.append(pb.template(Phase.FORWARD))
        pb = PassBuilder(lg.layers, sizes, p.recompute == "selective")
        lower_backward(pb, stream, grad_required_layout(end), lg.residual, lg, every, "bwd_in" if split else "bwd")
        bwd.append(pb.template(Phase.BACKWARD))
        if split:
            pb = PassBuilder(lg.layers, sizes, False)
            lower_wgrad(pb, stream, lg)
            wgrad.append(pb.template(Phase.WGRAD))
    templates = fwd + bwd + wgrad
    ids = PassTemplates(tuple(range(G)), tuple(range(G, 2 * G)), tuple(range(2 * G, 3 * G)) if split else None)
    return templates, ids


def estimate_nodes(sc: Scenario, templates: list[Template], ids: PassTemplates, detail: str) -> int:
    """About how many nodes the program will have: every pass instance's nodes, its transfers and its
    data-parallel collectives (per unit and microbatch under ZeRO-2/3)."""
    p, M = sc.plan, sc.microbatches
    total = 0
    for g in range(len(ids.forward)):
        tpls = [templates[ids.forward[g]], templates[ids.backward[g]]]
        if ids.wgrad:
            tpls.append(templates[ids.wgrad[g]])
        for tpl in tpls:
            units = len(tpl.first_use)
            # A coarse pass is a segment with its leading and trailing collectives, cut further only
            # where a collective attaches: per unit every pass under ZeRO-2/3, else in the chunk's
            # first forward and last backward.
            per_pass = len(tpl.items) if detail == "ops" else min(len(tpl.items), 3)
            dp_nodes = 2 * units if p.dp > 1 and p.zero_stage >= 2 else 0
            total += M * (per_pass + 2 + dp_nodes) + 2 * units
    return total


def build_program(sc: Scenario, detail: str = "ops") -> Program:
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {DETAILS}")
    p = sc.plan
    lg = build_layer_graph(block_shape(sc))
    chunk_layers = stage_layers(sc.model, p)
    templates, ids = pass_templates(sc, lg, chunk_layers)
    nodes = estimate_nodes(sc, templates, ids, detail)
    if nodes > MAX_NODES:
        hint = ("drop --trace/--graph/--chakra-out to use the coarse DAG, or" if detail == "ops" else "") + \
            " lower global_batch or raise micro_batch, or use --memory-only"
        raise RankflowError(f"the {detail} DAG would hold about {nodes:,} nodes, more than the {MAX_NODES:,} this "
                            "simulator builds", file=sc.model_file, field="workload.global_batch", fix=hint.strip())
    shared: dict = {}
    roles = tuple(build_role(sc, lg, chunk_layers, templates, ids, stage, detail == "coarse", shared)
                  for stage in range(p.pp))
    mesh = Mesh(tp=p.tp, cp=p.cp, dp=p.dp, pp=p.pp)
    experts = Mesh(tp=p.etp, ep=p.ep, dp=p.edp, pp=p.pp)
    return Program(sc, mesh, roles, lg, tuple(templates), tuple(chunk_layers), detail, experts)
