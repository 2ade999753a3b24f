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
from graphgen.inference.shape import inference_shape
from graphgen.ir import Phase, Role
from graphgen.model.layer_graph import LayerGraph, build_layer_graph
from graphgen.model.shape import BlockShape
from graphgen.parallel.layout import AXES, grad_required_layout
from graphgen.parallel.mesh import Mesh
from graphgen.parallel.pipeline import stage_layers
from graphgen.program.estimate import estimate_nodes
from graphgen.program.roles import PassTemplates, build_role
from graphgen.program.templates import (
    PassBuilder,
    Template,
    chunk_stream,
    lower_backward,
    lower_forward,
    lower_wgrad,
    renumbered,
)
from graphgen.scenario import Scenario, check_work
from graphgen.schedule import SCHEDULES
from graphgen.units import dtype_bytes

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
    load when given (experts placed contiguously, E/ep per rank), else the stated factor up to what a rank
    can receive at most: every token's copies to the experts it holds, min(k, E/ep) of its k, from all ep
    ranks, i.e. min(ep, E/k) shares (1 at ep = 1). A plan search varies ep under one stated factor, so a
    factor above that bound is taken at the bound rather than refused. A capacity factor drops what
    exceeds it."""
    m, w, p = sc.model, sc.workload, sc.plan
    if m.moe is None:
        return 1.0
    factor = min(w.expert_imbalance, p.ep * min(m.moe.top_k, m.moe.experts // p.ep) / m.moe.top_k)
    if w.expert_load:
        per = m.moe.experts // p.ep
        total = sum(w.expert_load)
        factor = max(sum(w.expert_load[r * per:(r + 1) * per]) for r in range(p.ep)) / total * p.ep
    cf = m.moe.capacity_factor
    return max(1.0, min(factor, cf) if cf else factor)


def block_shape(sc: Scenario) -> BlockShape:
    p = sc.plan
    return BlockShape(sc.model, sc.workload, p.tp, p.sp and p.tp > 1, sc.padded_vocab, p.pp, cp=p.cp, ep=p.ep,
                      etp=p.etp, imbalance=expert_imbalance(sc), cp_algorithm=p.cp_algorithm,
                      recompute_modules=tuple(sorted(set(p.recompute_modules))),
                      gather_dispatch=p.moe_dispatcher == "allgather",
                      sort_by_local_expert=p.moe_dispatcher == "alltoall" and sc.workload.run_type == "training",
                      main_grad_bytes=dtype_bytes(p.grad_reduce_dtype) if p.main_grad_copy else 0.0,
                      sp_regather=p.sp_regather,
                      **inference_shape(sc))


def pass_templates(sc: Scenario, lg: LayerGraph, chunk_layers, share: bool = True
                   ) -> tuple[list[Template], PassTemplates]:
    """The templates of every chunk position for each pass the schedule runs: forward, whole
    backward, input-gradient backward, weight gradients."""
    p = sc.plan
    phases = SCHEDULES[p.schedule].phases
    every = p.recompute_every if p.recompute == "full" else None
    sizes = p.axis_sizes()
    P = len(chunk_layers)
    # Expert-parallel overlap (Megatron's EP overlap, DualPipe's paired chunks) hides a dispatch or
    # combine behind the compute beside it, here the next item of the same pass: a steady-state
    # approximation of overlapping another microbatch's compute.
    overlap = frozenset({"ep", "etp"}) if p.moe_overlap and sc.model.moe is not None else frozenset()
    gemm = frozenset({"tp"}) if p.tp_overlap and p.tp > 1 else frozenset()  # TE userbuffers / async TP
    templates: list[Template] = []
    ids: dict[tuple[str, int], int] = {}
    # Chunks of the same layer kinds in the same places lower to the same items on other layers: the
    # first such chunk is lowered, the others take its items renumbered (a deep pipeline has a few
    # kinds of chunk, not pp x v).
    seen: dict[tuple, tuple[tuple[int, ...], int]] = {}
    copies: dict[int, int] = {}
    for g in range(P):
        layers = chunk_layers[g]
        shape = (tuple(lg.layer_block[u] for u in layers), g == 0, g == P - 1,
                 tuple(bool(every and u % every == 0) for u in layers), tuple(lg.has_backward(u) for u in layers))
        if share and shape in seen:
            like, first = seen[shape]
            moved = dict(zip(like, layers, strict=True))
            for phase in (ph for ph in ("F", "B", "Bi", "W") if ph in phases):
                ids[(phase, g)] = len(templates)
                copies[len(templates)] = ids[(phase, first)]
                templates.append(renumbered(templates[ids[(phase, first)]], moved, lg.layers))
            continue
        seen[shape] = (layers, g)
        stream = chunk_stream(lg, chunk_layers[g], g == 0, g == P - 1)
        start = stream[0][1].in_layout if g == 0 and stream else lg.residual
        end = lg.head_out if g == P - 1 else lg.residual
        for phase in ("F", "B", "Bi", "W"):
            if phase not in phases:
                continue
            pb = PassBuilder(lg.layers, sizes, p.recompute == "selective" and phase != "W", overlap, gemm)
            if phase == "F":
                lower_forward(pb, stream, start, end, Phase.FORWARD)
            elif phase == "W":
                lower_wgrad(pb, stream, lg)
            else:
                lower_backward(pb, stream, grad_required_layout(end), lg.residual, lg, every,
                               "bwd" if phase == "B" else "bwd_in")
            ids[(phase, g)] = len(templates)
            templates.append(pb.template(Phase.WGRAD if phase == "W" else
                                         Phase.FORWARD if phase == "F" else Phase.BACKWARD))
    return templates, PassTemplates(ids, P, copies)


def check_detail(detail: object) -> None:
    """A DAG granularity given through the API is one of DETAILS (the CLI's choices are argparse's)."""
    if not isinstance(detail, str) or detail not in DETAILS:
        raise RankflowError(f"detail {detail!r} is not a DAG granularity", field="detail",
                            fix=f"use one of: {', '.join(DETAILS)}")


def build_program(sc: Scenario, detail: str = "ops") -> Program:
    check_detail(detail)
    check_work(sc)
    p = sc.plan
    lg = build_layer_graph(block_shape(sc))
    chunk_layers = stage_layers(sc.model, p)
    templates, ids = pass_templates(sc, lg, chunk_layers)
    nodes = estimate_nodes(sc, lg, chunk_layers, templates, ids, detail)
    if nodes > MAX_NODES:
        hint = ("drop --trace/--graph/--chakra-out to use the coarse DAG, or" if detail == "ops" else "") + \
            " lower global_batch or raise micro_batch, or use --memory-only"
        raise RankflowError(f"the {detail} DAG would hold up to {nodes:,} nodes, more than the {MAX_NODES:,} this "
                            "simulator builds", file=sc.model_file, field="workload.global_batch", fix=hint.strip())
    shared: dict = {}
    roles = tuple(build_role(sc, lg, chunk_layers, templates, ids, stage, detail == "coarse", shared)
                  for stage in range(p.pp))
    mesh = Mesh(tp=p.tp, cp=p.cp, dp=p.dp, pp=p.pp)
    experts = Mesh(tp=p.etp, ep=p.ep, dp=p.edp, pp=p.pp)
    return Program(sc, mesh, roles, lg, tuple(templates), tuple(chunk_layers), detail, experts)
