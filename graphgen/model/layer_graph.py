"""Model + workload + plan -> LayerGraph: the forward ops of one rank for one microbatch, per block.

A model is a list of layers, each built by the block builders its kind names (an attention kind
from graphgen.model.attention, an MLP kind from graphgen.model.mlp), as Megatron-Core's layer specs
do; dense and sliding-window or MoE layers mix without a new code path. Where tensor parallelism
communicates is decided by the layouts written on each op (see graphgen.model.shape);
graphgen.parallel.layout.transitions turns each mismatch into its collective when the program is
built. Backward is derived by rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from graphgen.model.block import layer_ops
from graphgen.model.ends import embedding_ops, head_ops
from graphgen.model.finetune import FINETUNE_METHODS, apply_finetune
from graphgen.model.kinds import layer_kind
from graphgen.model.ops import Op, OpKind
from graphgen.model.recompute import mark_recompute
from graphgen.model.shape import BlockShape
from graphgen.parallel.layout import Layout


@dataclass(frozen=True)
class Block:
    """The ops of one unit kind: the embedding, the head, or one layer kind."""

    id: int
    kind: str
    ops: tuple[Op, ...]

    def op(self, name: str) -> Op:
        return next(op for op in self.ops if op.name == name)


EMBED = -1  # unit id of the input embedding; the LM head is unit `layers`


@dataclass(frozen=True)
class LayerGraph:
    """Forward ops per microbatch on one rank, for each unit: the embedding (-1), every layer
    (0 .. layers-1) and the LM head (layers)."""

    blocks: tuple[Block, ...]          # embedding, head, then each distinct layer kind
    layer_block: tuple[int, ...]       # block id of each layer
    residual: Layout                   # placement of the residual stream between ops and across stages
    head_out: Layout                   # placement the loss must reach (every rank has the loss)
    layers: int
    frozen_layers: int = 0             # blocks at the input side with no backward at all (freeze)
    embed_trainable: bool = True
    # Per-block sums (parameters, weight bytes): a plan search asks for them per unit of every stage
    # of every candidate, and they depend on the unit's block only.
    _sums: dict = field(default_factory=dict, init=False, compare=False, repr=False, hash=False)

    @property
    def embed(self) -> tuple[Op, ...]:
        return self.blocks[0].ops

    @property
    def head(self) -> tuple[Op, ...]:
        return self.blocks[1].ops

    @property
    def layer(self) -> tuple[Op, ...]:
        """Ops of the first layer (what the per-layer table shows)."""
        return self.unit_block(0).ops

    def unit_block(self, unit: int) -> Block:
        if unit < 0:
            return self.blocks[0]
        return self.blocks[1] if unit == self.layers else self.blocks[self.layer_block[unit]]

    def unit_ops(self, unit: int) -> tuple[Op, ...]:
        return self.unit_block(unit).ops

    def has_backward(self, unit: int) -> bool:
        """Frozen units with nothing trainable before them need no backward pass at all."""
        if unit < 0:
            return self.embed_trainable
        return unit >= self.frozen_layers or unit == self.layers

    def chunk_units(self, chunk_layers, g: int) -> list[int]:
        """Units of global pipeline chunk g (of any copy of the model, position g % chunks): the
        embedding with the first position, the LM head with the last."""
        pos, last = g % len(chunk_layers), len(chunk_layers) - 1
        return ([EMBED] if pos == 0 else []) + list(chunk_layers[pos]) + ([self.layers] if pos == last else [])

    def unit_params(self, unit: int, expert: bool | None = None) -> float:
        """Parameters of a unit on this rank (only the routed experts', or only the others, if asked)."""
        return self.block_sum(unit, ("params", expert), lambda op: op.weight_params
                              if expert is None or op.expert == expert else 0.0)

    def unit_trainable(self, unit: int, expert: bool | None = None) -> float:
        if 0 <= unit < self.frozen_layers:
            return 0.0
        return self.block_sum(unit, ("trainable", expert), lambda op: op.weight_params
                              if op.trainable and (expert is None or op.expert == expert) else 0.0)

    def block_sum(self, unit: int, key: tuple, term) -> float:
        """term summed over the ops of a unit's block, once per block and key (key names term)."""
        block = self.unit_block(unit)
        return self.memo(("block", block.id, *key), lambda: sum(term(op) for op in block.ops))

    def memo(self, key: tuple, compute):
        """compute(), once per key for this graph (key names what compute derives from it)."""
        got = self._sums.get(key)
        if got is None:
            got = self._sums[key] = compute()
        return got


def quantise(ops: tuple[Op, ...], weight_bytes: float, e: float) -> tuple[Op, ...]:
    """Linears whose weights are stored in another dtype (fp8, int8/int4, fp4 for inference): each
    reads its weights at that size; the embedding table, norms and the GEMMs kept in 16 bits (LM head,
    router: ModelOpt's default quantisation configs disable '*lm_head*' and '*router*', and AWQ/GPTQ
    skip the head) stay in the compute dtype."""
    return tuple(replace(op, weight_bytes=weight_bytes, bytes=op.bytes + op.weight_params * (weight_bytes - e))
                 if op.kind is OpKind.MATMUL and op.weight_params > 0 and op.weight_bytes is None
                 and not op.high_precision else op for op in ops)


def build_layer_graph(sh: BlockShape) -> LayerGraph:
    m, w = sh.model, sh.workload
    ft = w.finetune
    method = FINETUNE_METHODS[ft.method]
    e, T = sh.e, sh.tokens
    blocks = [Block(0, "embed", apply_finetune(embedding_ops(sh), ft, method.trains_embedding(ft), T, e)),
              Block(1, "head", apply_finetune(mark_recompute(head_ops(sh), sh.recompute_modules), ft,
                                              method.trains_head(ft), T, e))]
    ids: dict[tuple[str, str], int] = {}
    layer_block = []
    for layer in range(m.layers):
        kind = layer_kind(m, layer)
        if kind not in ids:
            ops = mark_recompute(layer_ops(sh, kind), sh.recompute_modules)
            ids[kind] = len(blocks)
            blocks.append(Block(len(blocks), "/".join(kind),
                                apply_finetune(ops, ft, method.trains_block_weights(), T, e, block=True)))
        layer_block.append(ids[kind])
    if sh.weight_bytes and sh.weight_bytes != sh.e:
        blocks = [Block(b.id, b.kind, quantise(b.ops, sh.weight_bytes, sh.e)) for b in blocks]
    return LayerGraph(tuple(blocks), tuple(layer_block), residual=sh.resid, head_out=sh.replicated, layers=m.layers,
                      frozen_layers=ft.frozen_layers if method.frozen_prefix else 0,
                      embed_trainable=method.trains_embedding(ft))
