"""Compute cost: roofline of the device's peak and HBM bandwidth, scaled by measured efficiency.

time = max(FLOPs / (peak x eff_kind(size)), bytes / (HBM bw x eff_mem)) + launch overhead
Efficiency curves come from the hardware config, each with its source, interpolated in log space:
GEMMs by GFLOP per kernel, fused attention by sequence length. An attention kernel's efficiency is
set by how far each query block walks along the keys; more batch or heads only add blocks, so a
batch of short sequences runs at the short-sequence rate however many FLOPs the call has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from graphgen.config import AttentionCurve, DeviceSpec, EfficiencyCurve
from graphgen.interp import direction_shares, interpolate_points
from graphgen.model.ops import Op, OpKind, op_work
from graphgen.units import GB, TERA, US, dtype_bytes


def interpolate(curve: EfficiencyCurve, x: float) -> float:
    return interpolate_points(curve.points, x)


LOW_PRECISION = ("fp8", "fp4")
GROUPED_M_TOLERANCE = 0.02  # tokens per group: routing and capacity padding move them by a token or a few


@dataclass(frozen=True)
class ComputeModel:
    device: DeviceSpec
    precision: str
    attention_kernel: str | None = None
    # Training under an fp8/fp4 recipe: a low-precision GEMM needs its operands cast (and transposed,
    # for the other GEMM of its backward) by kernels of their own -- Transformer Engine's Linear runs
    # fp8_cast_transpose_fused on its input in forward and fp8_cast_transpose_bgrad_fused on the output
    # gradient in backward (transformer_engine/pytorch/module/linear.py, cpp_extensions/transpose.py);
    # torchao's float8 casts the same tensors. Inference engines fuse the quantisation into the kernel before.
    casts: bool = False
    fused_loss: bool = False  # the workload's cross-entropy runs as one fused kernel
    fused_permute: bool = False  # MoE tokens are permuted by Transformer Engine's fused kernels

    @cached_property
    def gemm_shapes(self) -> dict[tuple[str, int, int, int], float]:
        """(pass, m, k, n) -> measured efficiency, for 16-bit GEMMs on devices that list shapes."""
        table = self.device.efficiency.matmul_shapes
        if table is None or self.precision not in ("bf16", "fp16"):
            return {}
        return {(p, m, k, n): eff for m, k, n, p, eff in table.entries}

    @cached_property
    def grouped_shapes(self) -> dict[tuple[str, int, int, int], list[tuple[int, float]]]:
        """(pass, groups, the two weight dimensions as cuBLAS sees them) -> [(tokens per group, measured
        efficiency)], for 16-bit grouped GEMMs."""
        table = self.device.efficiency.matmul_grouped_shapes
        got: dict[tuple[str, int, int, int], list[tuple[int, float]]] = {}
        if table is not None and self.precision in ("bf16", "fp16"):
            for g, m, k, n, p, eff in table.entries:
                tokens, fixed = _grouped_split(p, m, k, n)
                got.setdefault((p, g, *fixed), []).append((tokens, eff))
        return got

    def _measured(self, gemm: tuple) -> float | None:
        """A listed shape's efficiency. A grouped GEMM's tokens per group vary with routing (capacity padding
        rounds them up), so the listed token count nearest its own within GROUPED_M_TOLERANCE counts as its:
        the rows of a forward or input-gradient GEMM, the inner dimension of a weight-gradient one."""
        p, m, k, n, groups = gemm
        if not groups:
            return self.gemm_shapes.get((p, round(m), round(k), round(n)))
        tokens, fixed = _grouped_split(p, m, k, n)
        if tokens <= 0:
            return None
        near = [(abs(mm / tokens - 1), eff)
                for mm, eff in self.grouped_shapes.get((p, groups, *(round(x) for x in fixed)), ())]
        near = [x for x in near if x[0] <= GROUPED_M_TOLERANCE]
        return min(near)[1] if near else None

    def _gemm_efficiency(self, gflop_per_kernel: float, gemm: tuple | None) -> tuple[float, bool]:
        """A measured shape's efficiency, else the curve: fp8/fp4, grouped (MoE experts) or plain GEMMs;
        and whether it was measured over a whole grouped call (its launches included)."""
        eff = self.device.efficiency
        grouped = bool(gemm and gemm[4])
        measured = self._measured(gemm) if gemm else None
        if measured:
            return measured, grouped
        if self.precision in LOW_PRECISION and eff.matmul_fp8:
            # fp4 GEMMs: no curve of their own is measured yet; the fp8 one is the closest shape
            return interpolate(eff.matmul_fp8, gflop_per_kernel), False
        if grouped and eff.matmul_grouped and self.precision in ("bf16", "fp16"):
            return interpolate(eff.matmul_grouped, gflop_per_kernel), True
        return interpolate(eff.matmul, gflop_per_kernel), False

    @property
    def attention_curve(self) -> AttentionCurve:
        eff = self.device.efficiency
        return eff.attention_kernels[self.attention_kernel] if self.attention_kernel else eff.attention

    @property
    def matmul_peak(self) -> float:
        """Peak FLOP/s for the workload's GEMMs (fp32 uses TF32 tensor cores when listed)."""
        pk = self.device.peak_tflops
        key = "tf32" if self.precision == "fp32" and "tf32" in pk else self.precision
        return pk[key] * TERA

    @property
    def vector_peak(self) -> float:
        """Peak for attention and non-GEMM math: fp8 recipes keep these in bf16."""
        pk = self.device.peak_tflops
        if self.precision in ("fp8", "fp4"):
            return pk.get("bf16", pk[self.precision] / 2) * TERA
        return self.matmul_peak

    @property
    def hbm(self) -> float:
        return self.device.hbm_bandwidth_gbs * GB

    def memory_time(self, nbytes: float, kind: OpKind | None = None) -> float:
        eff = self.device.efficiency
        frac = eff.memory_bound
        if kind is OpKind.LOSS and eff.cross_entropy is not None:
            frac = (eff.cross_entropy.fused if self.fused_loss else eff.cross_entropy.unfused) or frac
        return nbytes / (self.hbm * frac)

    def attention_fill(self, blocks: float, backward: bool = False) -> float:
        """The share of the attention curve's rate a call with `blocks` parallel query blocks reaches: the
        curves were measured with ~2048 in flight; with fewer than one per SM the rest idle, and where the
        device lists measurements (attention_fill) the rate falls off before that."""
        sms = self.device.sm_count
        if not sms or blocks <= 0:
            return 1.0
        waves = blocks / sms
        table = self.device.efficiency.attention_fill
        if table is None:
            return min(1.0, waves)
        curve = table.bwd if backward else table.fwd
        x0, y0 = curve.points[0]
        return y0 * waves / x0 if waves < x0 else interpolate(curve, waves)

    def attention_efficiency(self, seq_len: float, head_dim: float = 0.0) -> float:
        """The kernel's fwd+bwd fraction of peak at this sequence length and head dimension: between two
        measured head dimensions the rate interpolates in log head dimension, outside them the nearest holds
        (no head dimension given: the curve's own)."""
        curve = self.attention_curve
        if not curve.other_head_dims or head_dim <= 0:
            return interpolate(curve, seq_len)
        measured = self._head_dim_curves
        if head_dim <= measured[0][0]:
            return interpolate_points(measured[0][1], seq_len)
        for (h0, p0), (h1, p1) in zip(measured, measured[1:], strict=False):
            if head_dim <= h1:
                f = math.log(head_dim / h0) / math.log(h1 / h0)
                return (1 - f) * interpolate_points(p0, seq_len) + f * interpolate_points(p1, seq_len)
        return interpolate_points(measured[-1][1], seq_len)

    @cached_property
    def _head_dim_curves(self) -> list[tuple[int, list[tuple[float, float]]]]:
        """The attention curve's measurements by head dimension, smallest first (read per attention op)."""
        curve = self.attention_curve
        return sorted([(curve.head_dim, curve.points), *((c.head_dim, c.points) for c in curve.other_head_dims)])

    def attention_direction(self, seq_len: float, backward: bool, head_dim: float = 0.0) -> float:
        """The share of the fwd+bwd rate one direction runs at, where the kernel's two rates are known
        apart (r = forward / backward rate): with backward doing 2.5 x the forward's FLOPs, forward runs
        at (1 + 2.5 r) / 3.5 of the combined rate and backward at that over r, so the two together still
        take the combined curve's time. The ratio is that of the measured head dimension nearest the op's
        (in log head dimension) where that one was measured apart, else the kernel's."""
        curve = self.attention_curve
        ratio = curve.fwd_over_bwd
        if head_dim > 0 and curve.other_head_dims:
            near = min([(abs(math.log(head_dim / curve.head_dim)), ratio),
                        *((abs(math.log(head_dim / c.head_dim)), c.fwd_over_bwd or ratio) for c in curve.other_head_dims)],
                       key=lambda x: x[0])
            ratio = near[1]
        if not ratio:
            return 1.0
        forward, back = direction_shares(interpolate_points(ratio, seq_len))
        return back if backward else forward

    def time(self, kind: OpKind, flops: float, nbytes: float, kernels: int = 1, seq_len: float = 0.0,
             blocks: float = 0.0, gemm: tuple[str, float, float, float, int] | None = None,
             backward: bool = False, head_dim: float = 0.0) -> float:
        """Seconds for `kernels` launches that together do `flops` and move `nbytes`; a fused attention
        kernel also needs its key/value length `seq_len`, its parallel query `blocks` and whether it is
        the backward kernel, and a GEMM may name its (pass, m, k, n, groups) to use a measured shape
        (see gemm_shape)."""
        launch = kernels * self.device.launch_overhead_us * US
        if kind is OpKind.MATMUL:
            eff, whole_call = self._gemm_efficiency(flops / max(kernels, 1) / 1e9, gemm)
            t_math = flops / (self.matmul_peak * eff)
            if whole_call:  # a grouped-GEMM measurement timed the call with its launches
                launch = self.device.launch_overhead_us * US
        elif kind is OpKind.ATTENTION:
            if seq_len <= 0:
                raise ValueError("a fused attention op needs its sequence length")
            fill = self.attention_fill(blocks, backward) * self.attention_direction(seq_len, backward, head_dim)
            t_math = flops / (self.vector_peak * self.attention_efficiency(seq_len, head_dim) * fill)
        else:
            t_math = 0.0  # norms, element-wise ops, lookups and the loss are bandwidth-bound
        return max(t_math, self.memory_time(nbytes, kind)) + launch

    @cached_property
    def sixteen_bit(self) -> ComputeModel:
        """This device at 16 bits, for the GEMMs an fp8/fp4 recipe leaves there (itself when the device
        lists no 16-bit peak)."""
        pk = self.device.peak_tflops
        sixteen = next((d for d in ("bf16", "fp16") if d in pk), None)
        return ComputeModel(self.device, sixteen, self.attention_kernel, fused_loss=self.fused_loss,
                            fused_permute=self.fused_permute) if sixteen else self

    def cast_time(self, op: Op, direction: str) -> float:
        """One cast-and-transpose kernel: the GEMM's 16-bit input (forward) or output gradient (backward)
        read once and written twice in the low-precision dtype; an input a fused norm already wrote in
        low precision only transposed."""
        d_in, d_out = op.shape
        elements = op.flops / (2 * d_out) if direction == "fwd" else op.flops / (2 * d_in)
        low = dtype_bytes(self.precision)
        nbytes = elements * (2 * low if direction == "fwd" and op.norm_input else dtype_bytes("bf16") + 2 * low)
        return self.memory_time(nbytes) + self.device.launch_overhead_us * US

    def op_time(self, op: Op, direction: str, selective: bool = False) -> float:
        """Seconds of one op in one direction (see graphgen.model.ops.op_work). A GEMM's backward runs
        its dgrad and, when the weight trains, its wgrad, each the forward's FLOPs in its own shape;
        selective recompute reruns the op's forward inside its backward. Under an fp8/fp4 recipe only
        linear layers run in low precision (not weightless GEMMs, nor those marked high_precision)."""
        if op.kind is OpKind.MATMUL and self.precision in LOW_PRECISION and (op.high_precision or not op.shape[0]) \
                and self.sixteen_bit is not self:
            return self.sixteen_bit.op_time(op, direction, selective)
        t = self._op_time(op, direction, selective)
        if self.casts and op.kind is OpKind.MATMUL and direction in ("fwd", "bwd", "bwd_in") and op.flops \
                and op.shape[0] and not op.high_precision:
            t += self.cast_time(op, direction)
        return t

    def _permute_extra(self, op: Op, direction: str) -> float:
        """What the fused permutation's measured rate adds over the memory-bound rate for its share of the op."""
        rates = self.device.efficiency.moe_permute
        nbytes = op.permute_bytes[direction != "fwd"]
        if not (self.fused_permute and rates and nbytes) or direction == "bwd_w":
            return 0.0
        frac = rates.fwd if direction == "fwd" else rates.bwd
        return nbytes / (self.hbm * frac) - self.memory_time(nbytes)

    def _op_time(self, op: Op, direction: str, selective: bool) -> float:
        if op.permute_bytes[0]:
            return self._plain_op_time(op, direction, selective) + self._permute_extra(op, direction)
        return self._plain_op_time(op, direction, selective)

    def _plain_op_time(self, op: Op, direction: str, selective: bool) -> float:
        k = op.gemm_kernels
        if direction == "fwd":
            return self.time(op.kind, op.flops, op.bytes, k, op.seq_len, op.attention_blocks, gemm_shape(op, "fwd"),
                             head_dim=op.head_dim)
        bf, bb = op_work(op, "bwd")
        if op.kind is OpKind.MATMUL and bf:
            n = max(1, round(op.bwd_flops_factor))
            # a product without weights (attention scores, a linear-attention core) has input gradients only
            passes = ("dgrad", "wgrad")[:n] if op.weight_params > 0 else ("dgrad",) * n
            if direction != "bwd":
                passes = tuple(p for p in passes if (p == "wgrad") == (direction == "bwd_w"))
            t = sum(self.time(op.kind, bf / n, bb / n, k, gemm=gemm_shape(op, p)) for p in passes)
        elif direction == "bwd_w":
            t = 0.0
        else:
            t = self.time(op.kind, bf, bb, k, op.seq_len, op.attention_blocks, backward=True,
                          head_dim=op.head_dim) if (bf or bb) else 0.0
        if selective and op.recompute_selective and direction != "bwd_w":
            t += self.op_time(op, "fwd")
        return t


def _grouped_split(gemm_pass: str, m: float, k: float, n: float) -> tuple[float, tuple[float, float]]:
    """A grouped GEMM's tokens per group and its two weight dimensions, in gemm_shape's layout: tokens are
    the rows (m) of the forward and input-gradient GEMMs and the inner dimension (k) of the weight gradient."""
    return (k, (m, n)) if gemm_pass == "wgrad" else (m, (k, n))


def gemm_shape(op: Op, gemm_pass: str) -> tuple[str, float, float, float, int] | None:
    """(pass, m, k, n, groups) of a linear's GEMM as cuBLAS sees it, from its (in, out) shape and FLOPs:
    groups 0 for a plain GEMM; an MoE expert linear is one grouped GEMM over the experts it launches,
    each group the tokens routed to one expert."""
    d_in, d_out = op.shape
    groups = op.gemm_kernels if op.expert else 0
    if op.kind is not OpKind.MATMUL or not d_in or not d_out or (op.gemm_kernels != 1 and not groups):
        return None
    tokens = op.flops / (2 * d_in * d_out * max(groups, 1))
    return {"fwd": ("fwd", tokens, d_in, d_out, groups), "dgrad": ("dgrad", tokens, d_out, d_in, groups),
            "wgrad": ("wgrad", d_out, tokens, d_in, groups)}[gemm_pass]
