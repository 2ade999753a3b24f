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


def stage_layers(m: ModelSpec, p: ParallelPlan) -> list[tuple[int, ...]]:
    """Layers of each model chunk under the plan's stage_split."""
    chunks = p.pp * p.virtual_stages
    if p.stage_split == "balanced":
        # nanotron's get_block_compute_costs: attention projections counted as 4 x heads x head_dim x
        # hidden (as if MHA) plus the MLP's weights; the LM head costs vocab x hidden.
        layer_cost = 4 * m.heads * m.d_head * m.hidden + sum(lin.weights for lin in mlp_linears(m))
        return split_layers_balanced(m.layers, chunks, layer_cost, m.vocab * m.hidden)
    return split_layers(m.layers, chunks)


def tag(kind: int, g: int, mb: int, G: int, M: int) -> int:
    """Deterministic pipeline tag from (activation|grad, destination chunk, microbatch)."""
    return (kind * G + g) * M + mb + 1


class PipelineEmitter:
    """Receives before and sends after each pass whose neighbouring chunk lives on another stage.
    Each TP rank sends its 1/tp share of the boundary activation (Megatron's scatter-gather
    optimisation; under sequence parallelism the shard is all it holds)."""

    def __init__(self, em, stage_of_chunk: list[int], microbatches: int, boundary_bytes: float) -> None:
        self.em, self.stage_of, self.M, self.boundary = em, stage_of_chunk, microbatches, boundary_bytes
        self.G = len(stage_of_chunk)

    def recv(self, g: int, mb: int, fwd: bool) -> list[int]:
        if (fwd and g == 0) or (not fwd and g == self.G - 1):
            return []
        src = self.stage_of[g - 1 if fwd else g + 1]
        return [self.em.add(RecvNode, name=f"recv_{'act' if fwd else 'grad'}.c{g}.mb{mb}", bytes=self.boundary,
                            peer_role=src, tag=tag(0 if fwd else 1, g, mb, self.G, self.M), deps=(), microbatch=mb,
                            chunk=g, phase=Phase.FORWARD if fwd else Phase.BACKWARD)]

    def send(self, g: int, mb: int, fwd: bool, last: int) -> None:
        if fwd and g < self.G - 1:
            self.em.add(SendNode, name=f"send_act.c{g}.mb{mb}", bytes=self.boundary, peer_role=self.stage_of[g + 1],
                        tag=tag(0, g + 1, mb, self.G, self.M), deps=(last,), microbatch=mb, chunk=g,
                        phase=Phase.FORWARD)
        if not fwd and g > 0:
            self.em.add(SendNode, name=f"send_grad.c{g}.mb{mb}", bytes=self.boundary,
                        peer_role=self.stage_of[g - 1], tag=tag(1, g - 1, mb, self.G, self.M), deps=(last,),
                        microbatch=mb, chunk=g, phase=Phase.BACKWARD)
