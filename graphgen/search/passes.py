"""Pass profiles: each pass template's standalone time and the offset of every item in it, costed
once and shared by every plan that lowers to the same templates.

Templates depend on the layer graph (tp, sp, cp, ep, etp, micro-batch, recompute), the pipeline
split and the schedule's passes, never on dp, ZeRO or the number of microbatches; their items'
costs depend on those axes' spans over the nodes. A search over plans that differ only in dp, ZeRO,
schedule or batch therefore lowers and costs each template once.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import astuple, dataclass, field, replace

from graphgen.costs.evaluate import Coster
from graphgen.ir import comm_stream
from graphgen.model.layer_graph import LayerGraph, build_layer_graph
from graphgen.parallel.mesh import Mesh
from graphgen.parallel.pipeline import stage_layers
from graphgen.program import Program, block_shape, pass_templates
from graphgen.program.roles import PassTemplates, optimizer_item
from graphgen.program.templates import Template
from graphgen.scenario import Scenario
from graphgen.schedule import SCHEDULES


@dataclass(frozen=True)
class PassProfile:
    """One template run alone: item i starts at start[i] and ends at end[i] seconds after the pass
    starts; a collective that runs beside the next item overlaps it."""

    template: Template
    start: tuple[float, ...]
    end: tuple[float, ...]

    compute_share: float = 1.0  # the part of the pass that is compute (what overlapping communication slows)
    lead: int = 0               # items before the first compute item (collectives on their own streams)
    trail: int = 0              # index after the last compute item
    inline: dict[str, list[int]] | None = None  # stream -> indices of the collectives between them
    dur: tuple[float, ...] = ()                  # end - start per item (what the fast walk adds up)
    stream: tuple[str | None, ...] = ()          # a collective's stream, None for compute
    beside: tuple[bool, ...] = ()                # a collective running beside the next item (the walk times it)
    stop: tuple[float, ...] = ()                 # start with the duration after it: where items a..b-1 end
    lasts: tuple[tuple[tuple[str, int], ...], ...] = ()  # last_inline(b) for every b, read once per run of items
    _lasts: dict = field(default_factory=dict, compare=False, repr=False)
    _alone: dict = field(default_factory=dict, compare=False, repr=False)  # kappa -> the pass walked alone

    @property
    def duration(self) -> float:
        return self.end[-1] if self.end else 0.0

    def last_inline(self, b: int) -> list[tuple[str, int]]:
        """(stream, index) of each inline stream's last collective before item b (cached: asked once
        per run of items)."""
        got = self._lasts.get(b)
        if got is None:
            got = self._lasts[b] = []
            for name, idx in self.inline.items():
                k = bisect_left(idx, b) - 1
                if k >= 0:
                    got.append((name, idx[k]))
        return got


@dataclass(frozen=True)
class Lowered:
    """What every plan with the same templates shares: the layer graph, the chunk split, the
    templates with their profiles, and a Coster to time the plan's own collectives."""

    lg: LayerGraph
    chunk_layers: tuple[tuple[int, ...], ...]
    ids: PassTemplates
    profiles: tuple[PassProfile, ...]
    coster: Coster


def profile(coster: Coster, tpl: Template) -> PassProfile:
    start, end = [], []
    t = 0.0
    beside = 0.0  # a parallel collective's end, which the item after the next waits for
    for i, it in enumerate(tpl.items):
        x = coster.item_time(it)
        if it.is_comm and it.parallel:
            start.append(t)
            end.append(t + x)
            beside = t + x
            continue
        if beside and i and not tpl.items[i - 1].parallel:  # as the DAG: the item after the next waits for it
            t = max(t, beside)
            beside = 0.0
        start.append(t)
        t += x
        end.append(t)
    if beside:
        t = max(t, beside)
        end[-1] = max(end[-1], t)
    compute = sum(e - s for s, e, it in zip(start, end, tpl.items, strict=True) if not it.is_comm)
    work = [i for i, it in enumerate(tpl.items) if not it.is_comm]
    lead, trail = (work[0], work[-1] + 1) if work else (0, len(tpl.items))
    # A collective beside the first compute item is part of the compute section: as in the DAG, it
    # starts with that item, not before it.
    lead = next((i for i in range(lead) if tpl.items[i].parallel), lead)
    inline: dict[str, list[int]] = {}
    for i, it in enumerate(tpl.items[lead:trail], lead):
        if it.is_comm:
            inline.setdefault(comm_stream(it.axis), []).append(i)
    dur = tuple(e - s for s, e in zip(start, end, strict=True))
    streams = tuple(comm_stream(it.axis) if it.is_comm else None for it in tpl.items)
    beside_flags = tuple(it.is_comm and it.parallel for it in tpl.items)
    got = PassProfile(tpl, tuple(start), tuple(end), compute / t if t > 0 else 1.0, lead, trail, inline, dur, streams,
                      beside_flags if any(beside_flags) else (), (*start, end[-1] if end else 0.0))
    return replace(got, lasts=tuple(tuple(got.last_inline(b)) for b in range(len(start) + 1)))


def _key(sc: Scenario) -> tuple:
    """Everything the templates and their costs depend on."""
    p, sh = sc.plan, block_shape(sc)
    shape = tuple(x for x in astuple(sh) if not hasattr(x, "model_dump"))
    return (id(sc.model), id(sc.workload), id(sc.hardware), shape, p.pp, p.virtual_stages, p.schedule,
            p.stage_split, p.first_stage_layers, p.last_stage_layers, p.split_accounts_embedding,
            p.split_accounts_loss, p.recompute, p.recompute_every, p.moe_overlap, p.tp_overlap, p.moe_dispatcher,
            p.moe_permute_fusion, p.zero3_gather_gbs)


def lowered(sc: Scenario, cache: dict) -> Lowered:
    """The shared lowering of a plan, from the cache or built and costed once."""
    key = _key(sc)
    got = cache.get(key)
    if got is None:
        p = sc.plan
        lg = build_layer_graph(block_shape(sc))
        chunk_layers = tuple(stage_layers(sc.model, p))
        templates, ids = pass_templates(sc, lg, chunk_layers)
        prog = Program(sc, Mesh(tp=p.tp, cp=p.cp, dp=p.dp, pp=p.pp), (), lg, tuple(templates), chunk_layers,
                       "coarse", Mesh(tp=p.etp, ep=p.ep, dp=p.edp, pp=p.pp))
        coster = Coster(prog)
        profiles: list[PassProfile] = []
        for i, t in enumerate(templates):  # a template repeated on other layers costs what its original does
            like = ids.copies.get(i)
            profiles.append(profile(coster, t) if like is None else replace(profiles[like], template=t))
        got = cache[key] = Lowered(lg, chunk_layers, ids, tuple(profiles), coster)
    return got


def optimizer_time(sc: Scenario, low: Lowered, stage: int) -> float:
    chunks = SCHEDULES[sc.plan.schedule].chunks(sc.plan.pp, stage, sc.plan.virtual_stages)
    return low.coster.item_time(optimizer_item(sc, low.lg, low.chunk_layers, chunks))
