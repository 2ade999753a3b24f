"""One role's DAG: the schedule's steps in order, each a stamped-out pass template with its pipeline
receive and send, data-parallel collectives attached, then the optimizer step.

Where a schedule orders its steps: graphgen.schedule (this walks the order). Where ZeRO gathers and
reduces: graphgen.parallel.zero. Where pipeline transfers enter: graphgen.parallel.pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphgen.ir import ComputeNode, Phase, Role, Work
from graphgen.model.layer_graph import LayerGraph
from graphgen.model.ops import OpKind
from graphgen.model.optimizers import OPTIMIZER_IMPLS, OPTIMIZERS
from graphgen.model.shape import activation_bytes
from graphgen.parallel.pipeline import PipelineEmitter
from graphgen.parallel.zero import DataParallelEmitter
from graphgen.program.emit import Attachments, Emitter, emit_pass
from graphgen.program.templates import Item, Template, make_template
from graphgen.scenario import Scenario
from graphgen.schedule import SCHEDULES
from graphgen.units import dtype_bytes


@dataclass(frozen=True)
class PassTemplates:
    """Template ids by (pass, chunk position) in the program's template list; a global chunk of any
    copy of the model uses its position's templates."""

    ids: dict[tuple[str, int], int]
    positions: int
    # template id -> the template it repeats on other layers (same items, same costs)
    copies: dict[int, int] = field(default_factory=dict, compare=False)

    def of(self, phase: str, g: int) -> int:
        return self.ids[(phase, g % self.positions)]


def optimizer_item(sc: Scenario, lg: LayerGraph, chunk_layers, chunks) -> Item:
    """The optimizer step of one role: memory-bound over the parameters this rank updates."""
    p, w = sc.plan, sc.workload
    units = [u for g in chunks for u in lg.chunk_units(chunk_layers, g)]
    shard = p.zero_stage >= 1
    dense = sum(lg.unit_trainable(u, False if sc.model.moe else None) for u in units)
    experts = sum(lg.unit_trainable(u, True) for u in units) if sc.model.moe else 0.0
    local = dense / (p.dp * p.cp if shard else 1) + experts / (p.edp if shard else 1)
    opt = OPTIMIZERS[w.optimizer]
    per_param = opt.step_bytes(low_precision_copy=w.precision != "fp32") \
        + OPTIMIZER_IMPLS[w.optimizer_impl].extra(w.optimizer)
    # Framework passes over the whole gradient buffer (zeroing, NaN check, the 1/dp pre-scaling), which
    # every rank holds unsharded below ZeRO-2.
    passes = p.grad_buffer_passes + (2.0 if p.grad_prescale and p.dp * p.cp > 1 else 0.0)
    passes += 2.0 if w.grad_clip_rescale else 0.0  # read and write every gradient once more
    held = local if p.zero_stage >= 2 else dense + experts  # ZeRO-2/3 shard gradients as the optimizer states
    grad_bytes = passes * held * dtype_bytes(p.grad_reduce_dtype)
    return Item(False, "optimizer_step", Phase.OPTIMIZER, -3, (-1, -1), op_names=("optimizer",),
                flops=local * opt.step_flops, bytes=local * per_param + grad_bytes, kernel=OpKind.ELEMENTWISE)


def build_role(sc: Scenario, lg: LayerGraph, chunk_layers, templates: list[Template], ids: PassTemplates,
               stage: int, coarse: bool, shared: dict | None = None) -> Role:
    p, w = sc.plan, sc.workload
    sched = SCHEDULES[p.schedule]
    chunks = sched.chunks(p.pp, stage, p.virtual_stages)
    order = sched.order(p.pp, stage, sc.microbatches, p.virtual_stages)
    stage_of = [0] * (len(chunk_layers) * sched.copies)
    for s in range(p.pp):
        for g in sched.chunks(p.pp, s, p.virtual_stages):
            stage_of[g] = s
    em = Emitter(shared)
    e = activation_bytes(w.precision)
    dp = DataParallelEmitter(em, p, chunks, lambda g: lg.chunk_units(chunk_layers, g), lg, e,
                             dtype_bytes(p.grad_reduce_dtype), moe=sc.model.moe is not None)
    pipe = PipelineEmitter(em, stage_of, len(chunk_layers), sc.microbatches,
                           e * w.micro_batch * w.seq_len / p.cp * sc.model.hidden / p.tp)
    last_grad = {chunks[st.chunk]: i for i, st in enumerate(order) if st.phase in ("B", "W")}
    first_f: dict[int, int] = {}
    for i, st in enumerate(order):
        if st.phase == "F":
            first_f.setdefault(chunks[st.chunk], i)

    dp.step_start(chunks)
    last = -1
    for i, st in enumerate(order):
        g, mb, phase = chunks[st.chunk], st.microbatch, st.phase
        tpl_id = ids.of(phase, g)
        first_deps = pipe.recv(g, mb, phase == "F") if phase != "W" else []
        att = Attachments()
        dp.attach(att, templates[tpl_id], g, mb, phase, i == first_f.get(g), i == last_grad.get(g), first_deps,
                  grads_here=phase in ("B", "W"))
        last = emit_pass(em, templates[tpl_id], tpl_id, first_deps, att, mb, g, coarse)
        if phase != "W":
            pipe.send(g, mb, phase == "F", last)
    dp.finish(chunks, last, sc.microbatches)
    layers = tuple(layer for g in chunks for layer in chunk_layers[g % len(chunk_layers)])
    if sc.workload.run_type == "inference":  # no gradients, no optimizer: the iteration ends with its passes
        return Role(stage, f"stage{stage}", stage, tuple(chunks), layers, em.nodes)

    templates.append(make_template([optimizer_item(sc, lg, chunk_layers, chunks)], Phase.OPTIMIZER))
    it = templates[-1].items[0]
    opt = em.add(ComputeNode, name="optimizer_step", work=Work(len(templates) - 1, 0, 0), flops=it.flops,
                 bytes=it.bytes, deps=(last, *dp.grad_syncs), phase=Phase.OPTIMIZER, microbatch=-1, chunk=-1,
                 layers=(-1, -1), ops=("optimizer",))
    dp.after_optimizer(chunks, opt)
    return Role(stage, f"stage{stage}", stage, tuple(chunks), layers, em.nodes)
