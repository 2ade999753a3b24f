"""ModelSpec + plan -> LayerGraph: the forward ops of one tensor-parallel rank for one microbatch.

Where tensor parallelism communicates is decided by the placements written on each op here:
column-parallel linears (qkv, fc1, lm_head) take a Replicate input and give a Shard output;
row-parallel linears (out_proj, fc2) give a Partial output; the residual stream is Replicate, or
Shard(seq) under sequence parallelism. graphgen.parallel.layout.transition turns each mismatch into
its all-reduce, reduce-scatter or all-gather when the program is built. Backward is derived by rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from graphgen.model.ops import Op, OpKind
from graphgen.parallel.layout import PARTIAL, REPLICATE, Placement, shard
from graphgen.scenario import Scenario
from graphgen.units import dtype_bytes


@dataclass(frozen=True)
class LayerGraph:
    """Forward ops per microbatch on one TP rank; the layer list repeats for every block."""

    embed: tuple[Op, ...]
    layer: tuple[Op, ...]
    head: tuple[Op, ...]
    residual: Placement       # placement of the residual stream between ops and across stages
    head_out: Placement       # placement the loss must reach (Replicate: every rank has the loss)
    layers: int
    frozen_layers: int = 0    # blocks at the input side with no backward at all (freeze fine-tuning)
    embed_trainable: bool = True

    def unit_ops(self, unit: int) -> tuple[Op, ...]:
        """Ops of a unit: the embedding (-1), a block (0..layers-1) or the LM head (layers)."""
        if unit < 0:
            return self.embed
        return self.head if unit == self.layers else self.layer

    def has_backward(self, unit: int) -> bool:
        """Frozen units with nothing trainable before them need no backward pass at all."""
        if unit < 0:
            return self.embed_trainable
        return unit >= self.frozen_layers or unit == self.layers

    def unit_params(self, unit: int) -> float:
        return sum(op.weight_params for op in self.unit_ops(unit))

    def unit_trainable(self, unit: int) -> float:
        if 0 <= unit < self.frozen_layers:
            return 0.0
        return sum(op.weight_params for op in self.unit_ops(unit) if op.trainable)


def activation_bytes(precision: str) -> float:
    """fp8 training keeps activations and communication in bf16; only GEMM inputs are cast."""
    return dtype_bytes("bf16") if precision == "fp8" else dtype_bytes(precision)


def build_layer_graph(sc: Scenario) -> LayerGraph:
    m, w, p = sc.model, sc.workload, sc.plan
    t = p.tp
    e = activation_bytes(w.precision)
    b, s, h = w.micro_batch, w.seq_len, m.hidden
    a, kv, d, f, V = m.heads, m.n_kv_heads, m.d_head, m.ffn_hidden, sc.padded_vocab
    T = b * s
    sp = p.sp and t > 1
    Tn = T / t if sp else T  # tokens each rank holds in the residual stream
    drop = m.dropout > 0
    gated = m.activation == "swiglu"

    if t > 1:
        resid, heads, hid, vocab = (shard("seq") if sp else REPLICATE), shard("heads"), shard("hidden"), shard("vocab")
        row_out = PARTIAL
    else:
        resid = heads = hid = vocab = row_out = REPLICATE
    mask = Tn * h if drop else 0.0  # 1-byte dropout masks (Korthikanti et al. 2022)
    norm_w = h * (2 if m.norm == "layernorm" else 1)
    qkv_out = (a + 2 * kv) * d
    col_in_saved = e * T * h / (t if sp else 1)  # SP saves the shard and re-gathers in backward

    # Eager PyTorch (fused_kernels=false) runs RMSNorm as cast, square, mean, rsqrt, scale, cast and
    # weight multiply: about 18 activation-sized passes instead of 2 (LayerNorm is one native kernel).
    # Rotary embedding in complex arithmetic reads and writes fp32 copies (about 10 passes instead
    # of 2), SwiGLU runs silu and multiply separately (5 passes instead of 3, and silu(gate) is kept).
    eager = not w.fused_kernels
    norm_passes, norm_kernels = (18, 7) if eager and m.norm == "rmsnorm" else (2, 1)
    rope_passes, rope_kernels = (10, 6) if eager else (2, 1)
    eager_glu = not (w.fused_kernels if w.fused_swiglu is None else w.fused_swiglu)
    glu_passes, glu_kernels = (5, 2) if eager_glu else (3, 1)

    def norm(name: str) -> Op:
        return Op(name, OpKind.NORM, flops=8 * Tn * h, bytes=norm_passes * e * Tn * h, in_layout=resid,
                  out_layout=resid, out_bytes=e * T * h, weight_params=norm_w, saved_bytes=e * Tn * h,
                  gemm_kernels=norm_kernels)

    def residual_add(name: str) -> Op:
        return Op(name, OpKind.ELEMENTWISE, flops=Tn * h, bytes=3 * e * Tn * h + mask, in_layout=resid,
                  out_layout=resid, out_bytes=e * T * h, saved_bytes=mask)

    ops: list[Op] = [norm("ln_attn")]
    ops.append(Op("qkv_proj", OpKind.MATMUL, flops=2 * T * h * qkv_out / t,
                  bytes=e * (T * h + h * qkv_out / t + T * qkv_out / t), in_layout=REPLICATE,
                  out_layout=heads, shards_input=t > 1, out_bytes=e * T * qkv_out,
                  weight_params=h * qkv_out / t + (qkv_out / t if m.bias else 0), saved_bytes=col_in_saved,
                  shape=(h, qkv_out / t)))
    if m.position_encoding == "rope":
        ops.append(Op("rope", OpKind.ELEMENTWISE, flops=3 * T * (a + kv) * d / t,
                      bytes=rope_passes * e * T * (a + kv) * d / t, in_layout=heads, out_layout=heads,
                      out_bytes=e * T * qkv_out, gemm_kernels=rope_kernels))
    score = 2 * b * a * s * s * d / t  # one s x s x d product over all heads of this rank
    if w.flash_attention:
        # Causal flash attention skips the masked half; backward runs 5 products to forward's 2.
        ops.append(Op("flash_attention", OpKind.ATTENTION, flops=2 * score * 0.5,
                      bytes=e * T * (2 * a + 2 * kv) * d / t, in_layout=heads, out_layout=heads,
                      out_bytes=e * T * a * d, saved_bytes=e * T * qkv_out / t + 4 * b * a * s / t,
                      bwd_flops_factor=2.5, bwd_bytes_factor=2.5, seq_len=s,
                      attention_blocks=b * (a / t) * math.ceil(s / 128)))
    else:
        probs = b * a * s * s / t
        ops.append(Op("attn_scores", OpKind.MATMUL, flops=score, bytes=e * (T * (a + kv) * d / t + probs),
                      in_layout=heads, out_layout=heads, out_bytes=e * probs * t,
                      saved_bytes=e * T * (a + kv) * d / t, recompute_selective=True))
        ops.append(Op("softmax", OpKind.ELEMENTWISE, flops=5 * probs,
                      bytes=(2 * e + (1 if drop else 0)) * probs, in_layout=heads, out_layout=heads,
                      out_bytes=e * probs * t, saved_bytes=(e + (1 if drop else 0)) * probs,
                      recompute_selective=True, selective_freed_bytes=(e + (1 if drop else 0)) * probs))
        ops.append(Op("attn_values", OpKind.MATMUL, flops=score, bytes=e * (probs + 2 * T * a * d / t),
                      in_layout=heads, out_layout=heads, out_bytes=e * T * a * d,
                      saved_bytes=(e * probs if drop else 0) + e * T * kv * d / t, recompute_selective=True,
                      selective_freed_bytes=e * probs if drop else 0))
    ops.append(Op("out_proj", OpKind.MATMUL, flops=2 * T * a * d * h / t,
                  bytes=e * (T * a * d / t + a * d * h / t + T * h), in_layout=heads, out_layout=row_out,
                  out_bytes=e * T * h, weight_params=a * d * h / t + (h if m.bias else 0), shape=(a * d / t, h),
                  saved_bytes=e * T * a * d / t))
    ops.append(residual_add("attn_residual"))
    ops.append(norm("ln_mlp"))
    up = f * (2 if gated else 1)
    ops.append(Op("fc1", OpKind.MATMUL, flops=2 * T * h * up / t, bytes=e * (T * h + h * up / t + T * up / t),
                  in_layout=REPLICATE, out_layout=hid, shards_input=t > 1, out_bytes=e * T * up,
                  weight_params=h * up / t + (up / t if m.bias else 0), saved_bytes=col_in_saved, shape=(h, up / t)))
    ops.append(Op("swiglu" if gated else m.activation, OpKind.ELEMENTWISE, flops=8 * T * f / t,
                  bytes=e * T * f / t * (glu_passes if gated else 2), in_layout=hid, out_layout=hid,
                  out_bytes=e * T * f, gemm_kernels=glu_kernels if gated else 1,
                  # Eager silu(gate) * up also keeps silu(gate) for the multiply's backward.
                  saved_bytes=e * T * (up + (f if gated and eager_glu else 0)) / t))
    ops.append(Op("fc2", OpKind.MATMUL, flops=2 * T * f * h / t, bytes=e * (T * f / t + f * h / t + T * h),
                  in_layout=hid, out_layout=row_out, out_bytes=e * T * h,
                  weight_params=f * h / t + (h if m.bias else 0), saved_bytes=e * T * f / t, shape=(f / t, h)))
    ops.append(residual_add("mlp_residual"))

    embed_params = V * h / t + (m.max_position or s) * h * (m.position_encoding == "learned")
    embed = (Op("embedding", OpKind.EMBEDDING, flops=0.0, bytes=2 * e * T * h, in_layout=REPLICATE,
                out_layout=row_out, out_bytes=e * T * h, weight_params=embed_params, saved_bytes=mask, shape=(V / t, h),
                bwd_flops_factor=0.0, bwd_bytes_factor=3.0),)
    # A tied LM head reuses the embedding table on the same rank only when one stage holds both.
    head_params = 0.0 if (m.tied_embeddings and p.pp == 1) else V * h / t
    head = (
        norm("ln_final"),
        Op("lm_head", OpKind.MATMUL, flops=2 * T * h * V / t, bytes=e * (T * h + V * h / t + T * V / t),
           in_layout=REPLICATE, out_layout=vocab, shards_input=t > 1, out_bytes=e * T * V,
           weight_params=head_params, saved_bytes=col_in_saved, shape=(h, V / t)),
        # Vocab-parallel cross-entropy: fp32 logits; per-token max, sum-exp and target logit are
        # partial sums over the vocab shards (3 fp32 values per token to all-reduce).
        # Fused: the kernel keeps only the logits' gradient in bf16; unfused: an fp32 softmax copy.
        Op("cross_entropy", OpKind.LOSS, flops=6 * T * V / t,
           bytes=(2 * e if w.fused_cross_entropy else e + 8) * T * V / t, in_layout=vocab,
           out_layout=row_out, out_bytes=12 * T, saved_bytes=(e if w.fused_cross_entropy else 4) * T * V / t,
           bwd_flops_factor=0.5, bwd_bytes_factor=1.0),
    )
    ft = w.finetune
    adapters = ft.method in ("lora", "qlora", "dora")
    train_ends = ft.method == "full" or (adapters and ft.train_embeddings)
    return LayerGraph(embed=apply_finetune(embed, ft, train_ends, T, e), layer=apply_finetune(tuple(ops), ft, not adapters, T, e),
                      head=apply_finetune(head, ft, train_ends or ft.method == "freeze", T, e), residual=resid,
                      head_out=REPLICATE, layers=m.layers,
                      frozen_layers=ft.frozen_layers if ft.method == "freeze" else 0,
                      embed_trainable=train_ends)


def nf4_bytes_per_param(ft) -> float:
    """QLoRA storage (Dettmers et al. 2023): 4-bit codes plus one absmax per block; double
    quantisation stores those as 8-bit with one fp32 constant per 256 blocks."""
    if ft.double_quant:
        return 0.5 + 1.0 / ft.quant_block + 4.0 / (ft.quant_block * 256)
    return 0.5 + 4.0 / ft.quant_block


def apply_finetune(ops: tuple[Op, ...], ft, trainable: bool, T: float, e: float) -> tuple[Op, ...]:
    """Mark weights frozen or trainable and insert adapters, by the fine-tuning method.

    A frozen linear still needs its input-gradient GEMM (dgrad) but not its weight-gradient GEMM,
    and keeps no input for backward unless an adapter reads it. LoRA adds x->A->B beside the base
    weight (A replicated and B sharded for column-parallel linears, the reverse for row-parallel
    ones, so no new collective); QLoRA stores base weights in NF4 and dequantises them before
    each use; DoRA adds a trained magnitude per output feature and the weight-norm pass.
    """
    from dataclasses import replace

    if ft.method in ("full", "freeze") and trainable:
        return ops
    out: list[Op] = []
    r = ft.lora_rank
    adapters = ft.method in ("lora", "qlora", "dora")
    for op in ops:
        is_linear = op.kind is OpKind.MATMUL and op.weight_params > 0
        target = adapters and is_linear and op.name in ft.target_modules
        if op.weight_params > 0 and not trainable:
            changes = dict(trainable=False)
            if is_linear:
                changes.update(bwd_flops_factor=1.0, saved_bytes=op.saved_bytes if target else 0.0)
            if is_linear and ft.method == "qlora" and op.name in ("qkv_proj", "out_proj", "fc1", "fc2"):
                q = nf4_bytes_per_param(ft)
                out.append(Op(f"{op.name}.dequant", OpKind.ELEMENTWISE, flops=op.weight_params,
                              bytes=op.weight_params * (q + e), in_layout=op.in_layout, out_layout=op.in_layout,
                              bwd_flops_factor=1.0, bwd_bytes_factor=1.0))
                changes["weight_bytes"] = q
            op = replace(op, **changes)
        out.append(op)
        if target:
            fin, fout = op.shape
            params = r * (fin + fout)
            extra_bytes, extra_saved = 0.0, 0.0
            if ft.method == "dora":
                params += fout  # magnitude vector
                extra_bytes = e * fin * fout  # column norms of W + BA read the weight every pass
                extra_saved = e * T * fout    # the unscaled output, for the magnitude's gradient
            out.append(Op(f"{op.name}.{ft.method}", OpKind.MATMUL, flops=2 * T * r * (fin + fout),
                          bytes=e * (T * r + params) + extra_bytes, in_layout=op.out_layout,
                          out_layout=op.out_layout, weight_params=params, saved_bytes=e * T * r + extra_saved,
                          gemm_kernels=2, shape=(fin, fout)))
    return tuple(out)
