"""Pipeline parallelism: which stage holds which layers, and the point-to-point transfers between
chunks (where a stage's send and its peer's receive enter the DAG)."""

from __future__ import annotations

from graphgen.config import ModelSpec, ParallelPlan
from graphgen.ir import Phase, RecvNode, SendNode
from graphgen.model.params import mlp_linears


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


def _counts_megatron(layers: int, p: ParallelPlan) -> list[int] | tuple[str, str, str]:
    """Layers per chunk position (c x pp + s) with Megatron's first/last-stage counts or its
    embedding/loss accounting, or (field, problem, fix) when Megatron would refuse the split."""
    pp, v = p.pp, p.virtual_stages
    P = pp * v
    if p.first_stage_layers is None and p.last_stage_layers is None:
        total = layers + p.split_accounts_embedding + p.split_accounts_loss
        if total % P:
            return ("parallelism.pp", f"{layers} layers plus the embedding/loss counted as layers make {total}, "
                    f"not divisible by pp x virtual_stages = {P}", "change pp or virtual_stages, or the accounting")
        counts = [total // P] * P
        counts[0] -= p.split_accounts_embedding
        counts[-1] -= p.split_accounts_loss
        return counts
    first = p.first_stage_layers if p.first_stage_layers is not None else -1
    last = p.last_stage_layers if p.last_stage_layers is not None else -1
    middle = pp - (first >= 0) - (last >= 0)
    rest = layers - max(first, 0) - max(last, 0)
    if pp < 2 or rest < 0 or (middle == 0 and rest) or (middle and rest % (middle * v)) \
            or max(first, 0) % v or max(last, 0) % v:
        return ("parallelism.first_stage_layers", f"{layers} layers cannot be split as first={p.first_stage_layers}, "
                f"last={p.last_stage_layers} over pp={pp} stages x {v} chunks evenly elsewhere",
                "choose first/last stage layers that leave a multiple of (other stages x virtual_stages)")
    per = {0: first, pp - 1: last}
    counts = [0] * P
    for s in range(pp):
        n = per.get(s, -1)
        for c in range(v):
            counts[c * pp + s] = n // v if n >= 0 else (rest // (middle * v) if middle else 0)
    return counts


def _megatron_split(p: ParallelPlan) -> bool:
    return p.first_stage_layers is not None or p.last_stage_layers is not None or \
        p.split_accounts_embedding or p.split_accounts_loss


def split_problem(layers: int, p: ParallelPlan, standard_chunks: bool) -> tuple[str, str, str] | None:
    """Why the plan's layer split cannot be made, or None."""
    if not _megatron_split(p):
        return None
    if p.stage_split == "balanced":
        return ("parallelism.stage_split", "the balanced split cannot be combined with first/last stage layers "
                "or embedding/loss accounting", "use stage_split=even")
    if not standard_chunks and (p.first_stage_layers is not None or p.last_stage_layers is not None):
        return ("parallelism.first_stage_layers", f"first/last stage layers name stages of schedules whose stage s "
                f"holds chunks c x pp + s, not the {p.schedule} schedule's", "use split_accounts_embedding/loss")
    out = _counts_megatron(layers, p)
    if isinstance(out, tuple):
        return out
    if min(out) < 0:
        return ("parallelism.pp", "the embedding/loss accounting leaves a chunk with fewer than no layers",
                "lower pp or virtual_stages")
    return None


def stage_layers(m: ModelSpec, p: ParallelPlan) -> list[tuple[int, ...]]:
    """Layers of each model chunk position (model order) under the plan's split."""
    chunks = p.pp * p.virtual_stages
    if p.stage_split == "balanced":
        # nanotron's get_block_compute_costs: attention projections counted as 4 x heads x head_dim x
        # hidden (as if MHA) plus the MLP's weights; the LM head costs vocab x hidden.
        layer_cost = 4 * m.heads * m.d_head * m.hidden + sum(lin.weights for lin in mlp_linears(m))
        return split_layers_balanced(m.layers, chunks, layer_cost, m.vocab * m.hidden)
    counts = _counts_megatron(m.layers, p) if _megatron_split(p) else None
    if not isinstance(counts, list):  # the scenario check has refused a split that cannot be made
        return split_layers(m.layers, chunks)
    out, start = [], 0
    for n in counts:
        out.append(tuple(range(start, start + n)))
        start += n
    return out


def tag(kind: int, g: int, mb: int, G: int, M: int) -> int:
    """Deterministic pipeline tag from (activation|grad, destination chunk, microbatch)."""
    return (kind * G + g) * M + mb + 1


class PipelineEmitter:
    """Receives before and sends after each pass whose neighbouring chunk lives on another stage.
    Each TP rank sends its 1/tp share of the boundary activation (Megatron's scatter-gather
    optimisation; under sequence parallelism the shard is all it holds). Chunks flow in position
    order within their copy of the model (positions per copy). A neighbour on the same stage (the
    chunks of an interleaved schedule with pp=1, the bottom of a V) is handed over in memory: the
    consuming pass depends on the producing one, with no transfer (no rank sends to itself)."""

    def __init__(self, em, stage_of_chunk: list[int], positions: int, microbatches: int, boundary_bytes: float) -> None:
        self.em, self.stage_of, self.M, self.boundary = em, stage_of_chunk, microbatches, boundary_bytes
        self.G, self.P = len(stage_of_chunk), positions
        self.local: dict[tuple[int, int, bool], int] = {}  # (consumer chunk, mb, forward) -> producer's last node

    def recv(self, g: int, mb: int, fwd: bool) -> list[int]:
        pos = g % self.P
        if (fwd and pos == 0) or (not fwd and pos == self.P - 1):
            return []
        src = self.stage_of[g - 1 if fwd else g + 1]
        if src == self.stage_of[g]:
            producer = self.local.pop((g, mb, fwd), None)
            if producer is None:  # the schedule runs a consumer before its producer on one stage
                raise ValueError(f"chunk {g} microbatch {mb} runs before its input on the same stage")
            return [producer]
        return [self.em.add(RecvNode, name=f"recv_{'act' if fwd else 'grad'}.c{g}.mb{mb}", bytes=self.boundary,
                            peer_role=src, tag=tag(0 if fwd else 1, g, mb, self.G, self.M), deps=(), microbatch=mb,
                            chunk=g, phase=Phase.FORWARD if fwd else Phase.BACKWARD)]

    def send(self, g: int, mb: int, fwd: bool, last: int) -> None:
        pos = g % self.P
        if fwd and pos < self.P - 1:
            self._send(g, g + 1, mb, True, last)
        if not fwd and pos > 0:
            self._send(g, g - 1, mb, False, last)

    def _send(self, g: int, dst: int, mb: int, fwd: bool, last: int) -> None:
        if self.stage_of[dst] == self.stage_of[g]:
            self.local[(dst, mb, fwd)] = last
            return
        kind = "act" if fwd else "grad"
        self.em.add(SendNode, name=f"send_{kind}.c{g}.mb{mb}", bytes=self.boundary, peer_role=self.stage_of[dst],
                    tag=tag(0 if fwd else 1, dst, mb, self.G, self.M), deps=(last,), microbatch=mb, chunk=g,
                    phase=Phase.FORWARD if fwd else Phase.BACKWARD)
