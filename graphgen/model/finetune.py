"""Fine-tuning methods: which weights train, and the adapters a method inserts.

A frozen linear still needs its input-gradient GEMM (dgrad) but not its weight-gradient GEMM, and
keeps no input for backward unless an adapter reads it. LoRA adds x->A->B beside the base weight
(A replicated and B sharded for column-parallel linears, the reverse for row-parallel ones, so no
new collective); QLoRA stores base weights in NF4 and dequantises them before each use; DoRA adds a
trained magnitude per output feature and the weight-norm pass.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from graphgen.config.model import FineTune
from graphgen.model.ops import Op, OpKind
from graphgen.registry import Registry


@dataclass(frozen=True)
class FinetuneMethod:
    name: str
    adapters: bool = False          # base weights frozen, low-rank adapters train
    nf4_base: bool = False          # frozen base linears stored in NF4 (QLoRA)
    magnitude: bool = False         # DoRA's trained magnitude vector and weight-norm pass
    frozen_prefix: bool = False     # the first frozen_layers blocks (and the embedding) are frozen

    def trains_block_weights(self) -> bool:
        return not self.adapters

    def trains_embedding(self, ft: FineTune) -> bool:
        return self.name == "full" or (self.adapters and ft.train_embeddings)

    def trains_head(self, ft: FineTune) -> bool:
        return self.trains_embedding(ft) or self.frozen_prefix


FINETUNE_METHODS: Registry[FinetuneMethod] = Registry("fine-tuning method")
for _m in (FinetuneMethod("full"), FinetuneMethod("freeze", frozen_prefix=True), FinetuneMethod("lora", adapters=True),
           FinetuneMethod("qlora", adapters=True, nf4_base=True),
           FinetuneMethod("dora", adapters=True, magnitude=True)):
    FINETUNE_METHODS.add(_m.name, _m)


def nf4_bytes_per_param(ft: FineTune) -> float:
    """QLoRA storage (Dettmers et al. 2023): 4-bit codes plus one absmax per block; double
    quantisation stores those as 8-bit with one fp32 constant per 256 blocks."""
    if ft.double_quant:
        return 0.5 + 1.0 / ft.quant_block + 4.0 / (ft.quant_block * 256)
    return 0.5 + 4.0 / ft.quant_block


def _frozen(op: Op, ft: FineTune, method: FinetuneMethod, target: bool, e: float, nf4: bool) -> list[Op]:
    is_linear = op.kind is OpKind.MATMUL and op.weight_params > 0
    changes: dict = dict(trainable=False)
    if is_linear:
        # Under sequence parallelism a column-parallel linear saves only its input's shard and gathers it
        # again for its weight gradient; frozen, it has none, but an adapter's A needs the whole input,
        # which it keeps gathered (NVIDIA/NeMo nemo/collections/nlp/modules/common/megatron/adapters/
        # parallel_adapters.py @8cfedd72 ParallelLinearAdapter.forward: gather_from_sequence_parallel_region
        # ahead of linear_in for attention_qkv and linear_fc1).
        gathered = sum(c[3] for c in op.side_comm if c[1] == "wgrad")
        changes.update(bwd_flops_factor=1.0, saved_bytes=(gathered or op.saved_bytes) if target else 0.0,
                       side_comm=tuple(c for c in op.side_comm if c[1] != "wgrad"))
    if op.kind is OpKind.EMBEDDING:  # the first op: with its table frozen, no backward work is left
        changes.update(bwd_flops_factor=0.0, bwd_bytes_factor=0.0)
    out = []
    if is_linear and method.nf4_base and nf4:
        q = nf4_bytes_per_param(ft)
        out.append(Op(f"{op.name}.dequant", OpKind.ELEMENTWISE, flops=op.weight_params,
                      bytes=op.weight_params * (q + e), in_layout=op.in_layout, out_layout=op.in_layout,
                      bwd_flops_factor=1.0, bwd_bytes_factor=1.0))
        changes["weight_bytes"] = q
    out.append(replace(op, **changes))
    return out


def _adapter(op: Op, ft: FineTune, method: FinetuneMethod, tokens: float, e: float) -> Op:
    fin, fout = op.shape
    r = ft.lora_rank
    params = r * (fin + fout)
    extra_bytes, extra_saved = 0.0, 0.0
    if method.magnitude:
        params += fout                    # magnitude vector
        extra_bytes = e * fin * fout      # column norms of W + BA read the weight every pass
        extra_saved = e * tokens * fout   # the unscaled output, for the magnitude's gradient
    return Op(f"{op.name}.{method.name}", OpKind.MATMUL, flops=2 * tokens * r * (fin + fout),
              bytes=e * (tokens * r + params) + extra_bytes, in_layout=op.out_layout, out_layout=op.out_layout,
              weight_params=params, saved_bytes=e * tokens * r + extra_saved, gemm_kernels=2, shape=(fin, fout),
              # its output is the base op's, so a collective after it moves what one after the base would
              out_bytes=op.out_bytes, local_out_bytes=op.local_out_bytes, axis_bytes=op.axis_bytes)


def apply_finetune(ops: tuple[Op, ...], ft: FineTune, trainable: bool, tokens: float, e: float,
                   block: bool = False) -> tuple[Op, ...]:
    """Mark weights frozen or trainable and insert adapters, by the fine-tuning method. QLoRA stores every
    linear of a transformer block in NF4 (attention, linear-attention and latent projections, MLPs,
    experts, routers), not the embedding or the LM head: bitsandbytes replaces 'all torch.nn.Linear
    modules except for the lm_head' (huggingface/transformers src/transformers/integrations/bitsandbytes.py
    @c409cd81 replace_with_bnb_linear)."""
    method = FINETUNE_METHODS[ft.method]
    if not method.adapters and trainable:
        return ops
    out: list[Op] = []
    for op in ops:
        is_linear = op.kind is OpKind.MATMUL and op.weight_params > 0
        target = method.adapters and is_linear and op.name in ft.target_modules
        out.extend(_frozen(op, ft, method, target, e, block) if op.weight_params > 0 and not trainable else [op])
        if target:
            out.append(_adapter(out[-1], ft, method, tokens, e))
    return tuple(out)
