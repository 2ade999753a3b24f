"""Scenario -> Program: one costed DAG per role (pipeline stage), ranks bound only by lookup.

Each model chunk's forward and backward pass is lowered once into a template: a chain of fused
compute segments split wherever a tensor-parallel layout change needs a collective. The schedule
then stamps templates out per microbatch, adding pipeline send/recv, data-parallel gradient and
parameter collectives, and the optimizer step. Work grows with roles x microbatches x layers,
never with the number of GPUs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from graphgen.costs.compute import ComputeModel
from graphgen.costs.network import NetworkModel, bus_coefficient
from graphgen.ir import CollectiveNode, ComputeNode, Node, Phase, RecvNode, Role, SendNode, Stream
from graphgen.model.ops import Op, OpKind
from graphgen.model.transformer import LayerGraph, activation_bytes, build_layer_graph
from graphgen.parallel.layout import Collective, grad_produced, grad_required, transition
from graphgen.parallel.mesh import Mesh, span
from graphgen.parallel.zero import Bucket, grad_collective, grads_every_microbatch, make_buckets
from graphgen.scenario import Scenario
from graphgen.schedule import Step, stage_order
from graphgen.units import GB, dtype_bytes

EMBED = -1  # unit id of the input embedding; the LM head is unit `layers`


@dataclass(frozen=True)
class OpCost:
    """Per-op costs on one rank for one microbatch, shown in the per-layer table."""

    name: str
    kind: str
    fwd_s: float
    bwd_s: float
    fwd_flops: float
    bwd_flops: float


@dataclass(frozen=True)
class AxisInfo:
    axis: str
    size: int
    per_node: int
    nodes: int


@dataclass(frozen=True)
class Program:
    scenario: Scenario
    mesh: Mesh
    roles: tuple[Role, ...]
    layer_graph: LayerGraph
    layer_costs: tuple[OpCost, ...]
    axes: dict[str, AxisInfo]
    chunk_layers: tuple[tuple[int, ...], ...]   # global chunk -> its layers
    compute_model: ComputeModel = field(repr=False)

    def role_of_rank(self, rank: int) -> int:
        return self.mesh.coords(rank)["pp"]

    def ranks_of_role(self, role: int) -> range:
        """Ranks of a role are a contiguous block in Megatron order (pp outermost)."""
        per = self.mesh.world // self.mesh.pp
        return range(role * per, (role + 1) * per)


# ------------------------------------------------------------------------------------- templates


@dataclass(frozen=True, slots=True)
class _Item:
    """One node of a pass template; instantiated per microbatch."""

    is_comm: bool
    name: str
    duration: float
    flops: float
    bytes: float
    phase: Phase
    unit: int
    layers: tuple[int, int]
    ops: tuple[str, ...] = ()
    kind: Collective | None = None
    group_size: int = 1


@dataclass(frozen=True)
class _Template:
    items: tuple[_Item, ...]
    first_use: dict[int, int]   # unit -> index of its first item in this pass
    last_use: dict[int, int]    # unit -> index of its last item (backward: its grads are final)


def _layer_span(units: Iterable[int], n_layers: int) -> tuple[int, int]:
    us = [u for u in units if 0 <= u < n_layers]
    return (min(us), max(us)) if us else (-1, -1)


class _Atoms:
    """Collects ops and collectives of one pass. Adjacent ops of the same unit (layer, embedding,
    head) and phase fuse into one compute segment; units stay separate so that data-parallel
    buckets and FSDP gathers can attach at layer granularity."""

    def __init__(self, costs: dict[tuple[str, str], tuple[float, float, float]], tp_time, tp: int,
                 n_layers: int) -> None:
        self.costs = costs
        self.tp_time = tp_time
        self.tp = tp
        self.n_layers = n_layers
        self.items: list[_Item] = []
        self._seg: list[tuple[str, float, float, float]] = []
        self._key: tuple[Phase, int] | None = None

    def _flush(self) -> None:
        if not self._seg:
            return
        phase, unit = self._key
        names = tuple(s[0] for s in self._seg)
        self.items.append(_Item(False, f"{phase.value}:{names[0]}..{names[-1]}", sum(s[1] for s in self._seg),
                                sum(s[2] for s in self._seg), sum(s[3] for s in self._seg), phase, unit,
                                _layer_span([unit], self.n_layers), names))
        self._seg = []

    def op(self, op: Op, unit: int, phase: Phase, direction: str) -> None:
        if (phase, unit) != self._key:
            self._flush()
            self._key = (phase, unit)
        t, fl, by = self.costs[(op.name, direction)]
        self._seg.append((op.name, t, fl, by))

    def comm(self, kind: Collective, nbytes: float, phase: Phase, unit: int) -> None:
        self._flush()
        self._key = None
        self.items.append(_Item(True, f"{phase.value}:tp_{kind.value}", self.tp_time(kind, nbytes), 0.0,
                                nbytes, phase, unit, _layer_span([unit], self.n_layers), kind=kind,
                                group_size=self.tp))

    def template(self, phase: Phase = Phase.BACKWARD) -> _Template:
        self._flush()
        if not self.items:
            # A pass with nothing to do (a fully frozen stage's backward, a stage the balanced split
            # left without layers) still orders the schedule and passes tensors through.
            self.items.append(_Item(False, "noop", 0.0, 0.0, 0.0, phase, -2, (-1, -1), ("noop",)))
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for idx, it in enumerate(self.items):
            first.setdefault(it.unit, idx)
            last[it.unit] = idx
        return _Template(tuple(self.items), first, last)


def _op_costs(lg: LayerGraph, cm: ComputeModel, selective: bool) -> dict[tuple[str, str], tuple]:
    """(op name, 'fwd'|'bwd') -> (seconds, FLOPs, bytes). Backward is derived by rule."""
    out = {}
    for op in (*lg.embed, *lg.layer, *lg.head):
        kernels = op.gemm_kernels
        fwd_t = cm.time(op.kind, op.flops, op.bytes, kernels, op.seq_len, op.attention_blocks, _gemm(op, "fwd"))
        out[(op.name, "fwd")] = (fwd_t, op.flops, op.bytes)
        bf, bb = op.flops * op.bwd_flops_factor, op.bytes * op.bwd_bytes_factor
        if op.kind is OpKind.MATMUL and bf:
            # dgrad, plus wgrad when the weight trains: each the forward's FLOPs, in its own shape.
            passes = ("dgrad", "wgrad")[:max(1, round(op.bwd_flops_factor))]
            t = sum(cm.time(op.kind, bf / len(passes), bb / len(passes), kernels, gemm=_gemm(op, p)) for p in passes)
        else:
            t = cm.time(op.kind, bf, bb, kernels, op.seq_len, op.attention_blocks) if (bf or bb) else 0.0
        if selective and op.recompute_selective:
            t += out[(op.name, "fwd")][0]
            bf += op.flops
        out[(op.name, "bwd")] = (t, bf, bb)
    return out


def _gemm(op: Op, gemm_pass: str) -> tuple[str, float, float, float] | None:
    """(pass, m, k, n) of a linear's GEMM as cuBLAS sees it, from its (in, out) shape and FLOPs."""
    d_in, d_out = op.shape
    if op.kind is not OpKind.MATMUL or not d_in or not d_out or op.gemm_kernels != 1:
        return None
    tokens = op.flops / (2 * d_in * d_out)
    return {"fwd": ("fwd", tokens, d_in, d_out), "dgrad": ("dgrad", tokens, d_out, d_in),
            "wgrad": ("wgrad", d_out, tokens, d_in)}[gemm_pass]


def _chunk_stream(lg: LayerGraph, layers: tuple[int, ...], first: bool, last: bool) -> list[tuple[Op, int]]:
    stream: list[tuple[Op, int]] = [(op, EMBED) for op in lg.embed] if first else []
    for layer in layers:
        stream.extend((op, layer) for op in lg.layer)
    if last:
        stream.extend((op, lg.layers) for op in lg.head)
    return stream


def _forward(at: _Atoms, stream: list[tuple[Op, int]], start, end, phase: Phase) -> None:
    """Lower ops in order; wherever the producer's placement differs from the consumer's, the
    layout table names the tensor-parallel collective (this is where TP all-reduces appear)."""
    if not stream:
        return
    cur, cur_bytes, cur_unit = start, 0.0, stream[0][1]
    for op, unit in stream:
        kind = transition(cur, op.in_layout)
        if kind is not None:
            at.comm(kind, cur_bytes, phase, cur_unit)
        at.op(op, unit, phase, "fwd")
        cur, cur_bytes, cur_unit = op.out_layout, op.out_bytes, unit
    kind = transition(cur, end)
    if kind is not None:
        at.comm(kind, cur_bytes, phase, cur_unit)


def _backward(at: _Atoms, stream: list[tuple[Op, int]], grad_in, resid, full_recompute: bool,
              n_layers: int, has_backward, every: int = 1) -> None:
    """Reverse pass: each op's grad placement is derived from its forward placements. Units that
    need no gradient (a frozen prefix) get no backward at all."""
    cur = grad_in
    by_unit: list[tuple[int, list[Op]]] = []
    for op, unit in stream:
        if not by_unit or by_unit[-1][0] != unit:
            by_unit.append((unit, []))
        by_unit[-1][1].append(op)
    for unit, ops in reversed(by_unit):
        if not has_backward(unit):
            continue
        if full_recompute and 0 <= unit < n_layers and unit % every == 0:
            # Checkpointed block: rerun its forward (TP collectives included) before its backward.
            _forward(at, [(op, unit) for op in ops], resid, resid, Phase.RECOMPUTE)
        for op in reversed(ops):
            kind = transition(cur, grad_required(op.out_layout))
            if kind is not None:
                at.comm(kind, op.out_bytes, Phase.BACKWARD, unit)
            at.op(op, unit, Phase.BACKWARD, "bwd")
            cur = grad_produced(op.in_layout, op.shards_input)


# --------------------------------------------------------------------------------------- program


def stage_layers(sc: Scenario) -> list[tuple[int, ...]]:
    """Layers of each model chunk under the plan's stage_split."""
    p, m = sc.plan, sc.model
    chunks = p.pp * p.virtual_stages
    if p.stage_split == "balanced":
        layer_cost = 4 * m.heads * m.d_head * m.hidden + 3 * m.ffn_hidden * m.hidden
        return split_layers_balanced(m.layers, chunks, layer_cost, m.vocab * m.hidden)
    return split_layers(m.layers, chunks)


def split_layers_balanced(layers: int, chunks: int, layer_cost: float, head_cost: float) -> list[tuple[int, ...]]:
    """nanotron's compute-balanced split (models/base.py): blocks in order (embedding at cost 0, the
    layers, then the LM head) go to a stage until the running cost passes that stage's share of the
    total; the block that passes it stays, and later blocks go to the next stage."""
    total = layers * layer_cost + head_cost
    thresholds = [total * (r + 1) / chunks for r in range(chunks)]
    out: list[list[int]] = [[] for _ in range(chunks)]
    stage, cumulative = 0, 0.0
    for layer in range(layers):
        out[stage].append(layer)
        cumulative += layer_cost
        if cumulative > thresholds[stage] and stage < chunks - 1:
            stage += 1
    return [tuple(x) for x in out]


def split_layers(layers: int, chunks: int) -> list[tuple[int, ...]]:
    """Even split; when uneven, the extra layers go to the middle chunks, away from the
    embedding and LM head that already weigh on the first and last."""
    base, rem = divmod(layers, chunks)
    extra = set(range(1, 1 + rem)) if rem <= chunks - 2 else set(range(rem))
    out, start = [], 0
    for c in range(chunks):
        n = base + (1 if c in extra else 0)
        out.append(tuple(range(start, start + n)))
        start += n
    return out


def build_program(sc: Scenario) -> Program:
    p, w = sc.plan, sc.workload
    hw = sc.hardware
    mesh = Mesh(tp=p.tp, cp=p.cp, ep=p.ep, dp=p.dp, pp=p.pp)
    lg = build_layer_graph(sc)
    cm = ComputeModel(hw.device, w.precision, w.attention_kernel)
    net = NetworkModel(hw)
    gpn = hw.node.gpus_per_node

    axes = {}
    for axis in ("tp", "dp", "pp"):
        per_node, nodes = span(mesh.group(axis, 0), gpn)
        axes[axis] = AxisInfo(axis, getattr(mesh, axis), per_node, nodes)

    def axis_time(axis: str):
        info = axes[axis]
        return lambda kind, nbytes: net.collective_time(kind, nbytes, info.per_node, info.nodes)

    costs = _op_costs(lg, cm, p.recompute == "selective")
    G = p.pp * p.virtual_stages
    chunk_layers = stage_layers(sc)
    fwd_t: list[_Template] = []
    bwd_t: list[_Template] = []
    for g in range(G):
        stream = _chunk_stream(lg, chunk_layers[g], g == 0, g == G - 1)
        start = stream[0][0].in_layout if g == 0 and stream else lg.residual
        end = lg.head_out if g == G - 1 else lg.residual
        at = _Atoms(costs, axis_time("tp"), p.tp, lg.layers)
        _forward(at, stream, start, end, Phase.FORWARD)
        fwd_t.append(at.template(Phase.FORWARD))
        at = _Atoms(costs, axis_time("tp"), p.tp, lg.layers)
        _backward(at, stream, grad_required(end), lg.residual, p.recompute == "full", lg.layers, lg.has_backward,
                  p.recompute_every)
        bwd_t.append(at.template())

    layer_costs = tuple(
        OpCost(op.name, op.kind.value, costs[(op.name, "fwd")][0], costs[(op.name, "bwd")][0],
               costs[(op.name, "fwd")][1], costs[(op.name, "bwd")][1]) for op in lg.layer)

    roles = tuple(
        _build_role(sc, mesh, lg, cm, net, axis_time, stage, chunk_layers, fwd_t, bwd_t)
        for stage in range(p.pp))
    return Program(sc, mesh, roles, lg, layer_costs, axes, tuple(chunk_layers), cm)


def _gather_time(dp_time, n: int, cap_gbs: float | None):
    """ZeRO-3 parameter all-gather time, no faster than a host-limited implementation moves data."""
    if cap_gbs is None:
        return dp_time
    return lambda kind, nbytes: max(dp_time(kind, nbytes), bus_coefficient(kind, n) * nbytes / (cap_gbs * GB))


def _tag(kind: int, g: int, mb: int, G: int, M: int) -> int:
    """Deterministic pipeline tag from (activation|grad, destination chunk, microbatch)."""
    return (kind * G + g) * M + mb + 1


def _build_role(sc: Scenario, mesh: Mesh, lg: LayerGraph, cm: ComputeModel, net: NetworkModel,
                axis_time, stage: int, chunk_layers: list[tuple[int, ...]], fwd_t: list[_Template],
                bwd_t: list[_Template]) -> Role:
    p, w = sc.plan, sc.workload
    v, pp, M = p.virtual_stages, p.pp, sc.microbatches
    G = pp * v
    L = lg.layers
    gpn = sc.hardware.node.gpus_per_node
    chunks = [c * pp + stage for c in range(v)]
    order: list[Step] = stage_order(p.schedule, pp, stage, M, v)
    nodes: list[Node] = []
    e = activation_bytes(w.precision)
    grad_bytes = dtype_bytes(p.grad_reduce_dtype)
    dp_n, zero = p.dp, p.zero_stage
    dp_time = axis_time("dp")
    gather_time = _gather_time(dp_time, dp_n, p.zero3_gather_gbs if zero == 3 else None)
    sync = dp_n > 1

    def add(node_cls, **kw) -> int:
        nodes.append(node_cls(id=len(nodes), **kw))
        return len(nodes) - 1

    def units_of(g: int) -> list[int]:
        return ([EMBED] if g == 0 else []) + list(chunk_layers[g]) + ([L] if g == G - 1 else [])

    buckets: dict[int, list[Bucket]] = {}
    bucket_of: dict[int, Bucket] = {}
    for g in chunks:
        units = [(u, lg.unit_trainable(u), lg.unit_params(u)) for u in reversed(units_of(g))]
        buckets[g] = make_buckets(units, p.bucket_mb, grad_bytes, per_unit=zero == 3)
        bucket_of.update({u: b for b in buckets[g] for u in b.units})

    last_b = {chunks[st.chunk]: i for i, st in enumerate(order) if st.phase == "B"}
    first_f: dict[int, int] = {}
    for i, st in enumerate(order):
        if st.phase == "F":
            first_f.setdefault(chunks[st.chunk], i)

    # Pipeline p2p: each TP rank sends its 1/tp share of the boundary activation (Megatron's
    # scatter-gather optimisation; under sequence parallelism the shard is all it holds).
    boundary = e * w.micro_batch * w.seq_len * sc.model.hidden / p.tp
    stride = mesh.stride("pp")

    def p2p(other: int) -> float:
        return net.p2p_time(boundary, (stage * stride) // gpn == (other * stride) // gpn)

    def param_gather(g: int, b: Bucket, deps: tuple[int, ...], phase: Phase, mb: int) -> int:
        # The gathered (full) buffer on this TP rank: every parameter under ZeRO-3/FSDP, only the
        # updated (trainable) ones when ZeRO-1/2 re-gathers after the optimizer step.
        nb = (b.gather_params if zero == 3 else b.params) * e
        return add(CollectiveNode, name=f"dp_all_gather_params.c{g}.b{b.index}", kind=Collective.ALL_GATHER,
                   bytes=nb, axis="dp", group_size=dp_n, duration=gather_time(Collective.ALL_GATHER, nb),
                   deps=deps, phase=phase, microbatch=mb, chunk=g, layers=_layer_span(b.units, L),
                   stream=Stream.DP)

    grad_syncs: list[int] = []

    def grad_sync(g: int, b: Bucket, dep: int, mb: int) -> None:
        if b.params <= 0:
            return
        kind = grad_collective(zero, zero == 3 and p.zero3_grad_all_reduce)
        nb = b.params * grad_bytes  # the full gradient buffer, all-reduced or reduce-scattered
        grad_syncs.append(add(
            CollectiveNode, name=f"dp_{kind.value}_grads.c{g}.b{b.index}.mb{mb}", kind=kind, bytes=nb,
            axis="dp", group_size=dp_n, duration=dp_time(kind, nb), deps=(dep,), phase=Phase.GRAD_SYNC,
            microbatch=mb, chunk=g, layers=_layer_span(b.units, L), stream=Stream.DP))

    step_start_gather: dict[int, int] = {}  # unit -> all-gather issued at step start (ZeRO-1/2)
    if zero in (1, 2) and p.overlap_param_gather and sync:
        for g in chunks:
            for b in buckets[g]:
                ag = param_gather(g, b, (), Phase.PARAM_SYNC, -1)
                step_start_gather.update({u: ag for u in b.units})

    last = -1
    for i, st in enumerate(order):
        g, mb = chunks[st.chunk], st.microbatch
        fwd = st.phase == "F"
        tpl = fwd_t[g] if fwd else bwd_t[g]
        first_deps: list[int] = []
        if (fwd and g > 0) or (not fwd and g < G - 1):
            src = (g - 1) % pp if fwd else (g + 1) % pp
            first_deps.append(add(RecvNode, name=f"recv_{'act' if fwd else 'grad'}.c{g}.mb{mb}", bytes=boundary,
                                  peer_role=src, tag=_tag(0 if fwd else 1, g, mb, G, M), deps=(),
                                  microbatch=mb, chunk=g, phase=Phase.FORWARD if fwd else Phase.BACKWARD))
        before: dict[int, list[int]] = {}
        if fwd and i == first_f[g] and step_start_gather:
            for u, idx in tpl.first_use.items():
                if u in step_start_gather:
                    before.setdefault(idx, []).append(step_start_gather[u])
        after: dict[int, list[Bucket]] = {}
        if not fwd and sync and (grads_every_microbatch(zero) or (i == last_b[g] and p.overlap_grad_reduce)):
            for b in buckets[g]:
                done = [tpl.last_use[u] for u in b.units if u in tpl.last_use]
                if done:
                    after.setdefault(max(done), []).append(b)
        fsdp = zero == 3 and sync
        ids = _emit(add, tpl, first_deps, before, after, mb, g, grad_sync,
                    (param_gather, bucket_of, p.zero3_regather_after_recompute) if fsdp else None)
        last = ids[-1]
        if fwd and g < G - 1:
            add(SendNode, name=f"send_act.c{g}.mb{mb}", bytes=boundary, peer_role=(g + 1) % pp,
                tag=_tag(0, g + 1, mb, G, M), duration=p2p((g + 1) % pp), deps=(last,), microbatch=mb,
                chunk=g, phase=Phase.FORWARD)
        if not fwd and g > 0:
            add(SendNode, name=f"send_grad.c{g}.mb{mb}", bytes=boundary, peer_role=(g - 1) % pp,
                tag=_tag(1, g - 1, mb, G, M), duration=p2p((g - 1) % pp), deps=(last,), microbatch=mb,
                chunk=g, phase=Phase.BACKWARD)

    if sync and not p.overlap_grad_reduce and not grads_every_microbatch(zero):
        for g in chunks:
            for b in buckets[g]:
                grad_sync(g, b, last, M - 1)

    # Optimizer (memory-bound): AdamW reads grad, fp32 master, m, v, writes master, m, v and the
    # bf16 copy (4 x 4 + 3 x 4 + 2 = 30 bytes) plus a grad-norm read (4): 34 bytes per parameter.
    role_params = sum(lg.unit_trainable(u) for g in chunks for u in units_of(g))
    local = role_params / (dp_n if zero >= 1 else 1)
    per_param = 34.0 if w.optimizer == "adamw" else 22.0
    opt = add(ComputeNode, name="optimizer_step", duration=cm.time(OpKind.ELEMENTWISE, 0, local * per_param),
              flops=local * 12, bytes=local * per_param, deps=(last, *grad_syncs), phase=Phase.OPTIMIZER,
              microbatch=-1, chunk=-1, layers=(-1, -1), ops=("optimizer",))
    if zero in (1, 2) and not p.overlap_param_gather and sync:
        for g in chunks:
            for b in buckets[g]:
                param_gather(g, b, (opt,), Phase.PARAM_SYNC, -1)

    layers = tuple(layer for g in chunks for layer in chunk_layers[g])
    return Role(stage, f"stage{stage}", stage, tuple(chunks), layers, nodes)


def _gather_points(tpl: _Template, bucket_of: dict, regather: bool) -> list[tuple[int, int, int]]:
    """(first item, last item, unit) of each span that needs a unit's full parameters. A unit's
    items are one span, except that with `regather` a recomputed unit is gathered again for its
    backward: DeepSpeed ZeRO-3 frees parameters after every module forward, the recompute's too."""
    spans: list[tuple[int, int, int]] = []
    for u, first in sorted(tpl.first_use.items(), key=lambda kv: kv[1]):
        if u not in bucket_of:
            continue
        last = tpl.last_use[u]
        if regather and tpl.items[first].phase is Phase.RECOMPUTE:
            bwd = next(i for i in range(first, last + 1) if tpl.items[i].phase is not Phase.RECOMPUTE)
            spans.append((first, bwd - 1, u))
            first = bwd
        spans.append((first, last, u))
    return spans


def _emit(add, tpl: _Template, first_deps: list[int], before: dict[int, list[int]],
          after: dict[int, list[Bucket]], mb: int, g: int, grad_sync, fsdp) -> list[int]:
    """Stamp out a pass template as a chain of nodes.

    `before[idx]` adds deps to item idx; `after[idx]` lists gradient buckets whose grads are final
    once item idx is done. With `fsdp`, each unit's parameters are all-gathered before its first
    item (see _gather_points); the k-th gather waits for the span of the (k-2)-th to finish, so at
    most one unit is prefetched ahead of compute, as FSDP's all-gather rate limiter allows.
    """
    gathers: dict[int, int] = {}
    issue_after: dict[int, list[int]] = {}
    if fsdp is not None:
        param_gather, bucket_of, regather = fsdp
        points = _gather_points(tpl, bucket_of, regather)
        for k in range(2, len(points)):
            issue_after.setdefault(points[k - 2][1], []).append(k)

        def gather(k: int, deps: tuple[int, ...]) -> None:
            idx, _, u = points[k]
            gathers[idx] = param_gather(g, bucket_of[u], deps, tpl.items[idx].phase, mb)

        for k in range(min(2, len(points))):
            gather(k, tuple(first_deps))
    ids: list[int] = []
    prev = None
    for idx, it in enumerate(tpl.items):
        deps = list(first_deps) if prev is None else [prev]
        deps.extend(before.get(idx, ()))
        if idx in gathers:
            deps.append(gathers[idx])
        if it.is_comm:
            prev = add(CollectiveNode, name=it.name, kind=it.kind, bytes=it.bytes, axis="tp",
                       group_size=it.group_size, duration=it.duration, deps=tuple(deps), phase=it.phase,
                       microbatch=mb, chunk=g, layers=it.layers, stream=Stream.TP)
        else:
            prev = add(ComputeNode, name=it.name, duration=it.duration, flops=it.flops, bytes=it.bytes,
                       deps=tuple(deps), phase=it.phase, microbatch=mb, chunk=g, layers=it.layers, ops=it.ops)
        ids.append(prev)
        for k in issue_after.get(idx, ()):
            gather(k, (prev,))
        for b in after.get(idx, ()):
            grad_sync(g, b, prev, mb)
    return ids
