"""The cluster: one device, its node (scale-up fabric) and the scale-out fabric, each number sourced."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt, field_validator, model_validator

from graphgen.config.base import DimInt, Fraction, NonNegFloat, PosFloat, Rate, Str, Strict
from graphgen.costs.algorithms import ALGORITHMS
from graphgen.interp import direction_shares, interpolate_points


class EfficiencyCurve(Strict):
    """Achieved fraction of peak as a function of an op's work, interpolated in log space.

    Points are [x, fraction of peak]: x is GFLOP per kernel for GEMMs, the sequence length (tokens)
    for fused attention, MiB per message for a network link. Below the first point the first
    fraction holds, above the last the last.
    """

    points: list[tuple[PosFloat, Fraction]] = Field(
        min_length=1, max_length=10_000,
        description="[x, fraction of peak] pairs, interpolated in log x: x is GFLOP per kernel for GEMMs, the "
                    "sequence length in tokens for fused attention (the kernel's rate is set by how far each "
                    "query block walks along the keys, not by batch or heads), MiB per message for network links.")
    source: Str = Field("", description="Where the measurements come from.")

    @model_validator(mode="after")
    def _sorted(self) -> EfficiencyCurve:
        _increasing(self.points, "points must have strictly increasing x values (one efficiency per x)")
        return self


def _increasing(points: list[tuple[float, float]], message: str) -> None:
    xs = [p[0] for p in points]
    if any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
        raise ValueError(message)


Ratio = Annotated[float, Field(ge=0.25, le=4.0)]


class HeadDimCurve(Strict):
    """The same kernel's [sequence length, fraction of peak] points at another head dimension, and its forward
    over backward rate there where measured apart (else the kernel's)."""

    head_dim: Annotated[StrictInt, Field(gt=0, le=1024)] = Field(description="Head dimension these points were measured at.")
    points: list[tuple[PosFloat, Fraction]] = Field(min_length=1, max_length=10_000,
                                                    description="[sequence length, fraction of peak] pairs.")
    source: Str = Field(min_length=1, description="Where the measurements come from.")
    fwd_over_bwd: list[tuple[PosFloat, Ratio]] | None = Field(
        None, min_length=1, max_length=1000,
        description="[sequence length, forward rate / backward rate] at this head dimension (default: the kernel's).")
    fwd_over_bwd_source: Str = Field("", description="Where these forward and backward rates come from.")

    @model_validator(mode="after")
    def _sorted(self) -> HeadDimCurve:
        _increasing(self.points, "points must have strictly increasing sequence lengths")
        _increasing(self.fwd_over_bwd or [], "fwd_over_bwd must have strictly increasing sequence lengths")
        if bool(self.fwd_over_bwd) != bool(self.fwd_over_bwd_source):
            raise ValueError("fwd_over_bwd and fwd_over_bwd_source come together")
        return self


class AttentionCurve(EfficiencyCurve):
    """A fused attention kernel's efficiency: `points` is the published forward + backward rate; where the
    kernel's forward and backward rates are measured apart, `fwd_over_bwd` splits it. The split keeps a
    training step without recompute on the published curve (backward = 2.5 x forward FLOPs, the
    FlashAttention convention) and prices what runs one direction only: the forward that full recompute
    reruns, a prefill."""

    fwd_over_bwd: list[tuple[PosFloat, Ratio]] | None = Field(
        None, min_length=1, max_length=1000,
        description="[sequence length, forward rate / backward rate] pairs, interpolated in log x (default: "
                    "both directions at the fwd+bwd rate).")
    fwd_over_bwd_source: Str = Field("", description="Where the forward and backward rates come from.")
    head_dim: Annotated[StrictInt, Field(gt=0, le=1024)] = Field(
        128, description="Head dimension `points` were measured at (FlashAttention's benchmarks: 128).")
    other_head_dims: list[HeadDimCurve] = Field(
        default_factory=list, max_length=16,
        description="The kernel measured at other head dimensions; a head dimension between two measured ones "
                    "interpolates in log head dimension, one outside them takes the nearest.")

    @model_validator(mode="after")
    def _ratio_sorted(self) -> AttentionCurve:
        ratio = self.fwd_over_bwd or []
        _increasing(ratio, "fwd_over_bwd must have strictly increasing sequence lengths")
        if bool(ratio) != bool(self.fwd_over_bwd_source):
            raise ValueError("fwd_over_bwd and fwd_over_bwd_source come together: the ratios and where the two "
                             "rates were measured")
        dims = [self.head_dim, *(c.head_dim for c in self.other_head_dims)]
        if len(set(dims)) != len(dims):
            raise ValueError(f"head dimensions must differ from each other and from head_dim: {dims}")
        _check_directions_below_peak(self.points, ratio)
        for c in self.other_head_dims:
            _check_directions_below_peak(c.points, c.fwd_over_bwd or ratio)
        return self


def _check_directions_below_peak(points: list[tuple[float, float]], ratio: list[tuple[float, float]]) -> None:
    """Neither direction may run above peak once the fwd+bwd rate is split. The product of two curves
    linear in log x can peak between their bends, so each piece is sampled as well."""
    if not ratio:
        return
    bends = sorted({p[0] for p in points} | {p[0] for p in ratio})
    inner = [a * (b / a) ** (k / 8) for a, b in zip(bends, bends[1:], strict=False) for k in range(1, 8)]
    for x in [*bends, *inner]:
        rate = interpolate_points(points, x)
        faster = max(direction_shares(interpolate_points(ratio, x)))
        if rate * faster > 1.0:
            raise ValueError(f"fwd_over_bwd {interpolate_points(ratio, x):g} at sequence length {x:g} puts one "
                             f"direction at {rate * faster:.2f} x peak (the fwd+bwd rate there is {rate:g})")


GemmPass = Literal["fwd", "dgrad", "wgrad"]
_Dim = Annotated[StrictInt, Field(gt=0, le=1 << 40)]


class GemmTable(Strict):
    """Measured efficiencies of exact GEMM shapes, as the framework runs them.

    Each entry is [m, k, n, pass, fraction of peak] with the shape cuBLAS sees: fwd (tokens, in, out),
    dgrad (tokens, out, in), wgrad (out, tokens, in). A GEMM whose shape is listed uses its entry;
    any other falls back to the matmul curve. BF16/FP16 GEMMs only.
    """

    entries: list[tuple[_Dim, _Dim, _Dim, GemmPass, Fraction]] = Field(
        min_length=1, max_length=100_000, description="[m, k, n, pass, fraction of peak] rows.")
    source: Str = Field("", description="Where the measurements come from.")


class GroupedGemmTable(Strict):
    """Measured efficiencies of grouped GEMMs (the experts of an MoE layer in one call), as the framework runs them.

    Each entry is [groups, m, k, n, pass, fraction of peak], with each group's shape as the GEMM library sees it
    (the convention of GemmTable). A grouped GEMM whose shape is listed uses its entry; any other falls back to
    the matmul_grouped curve, or to the matmul curve by FLOPs per group. BF16/FP16 GEMMs only.
    """

    entries: list[tuple[_Dim, _Dim, _Dim, _Dim, GemmPass, Fraction]] = Field(
        min_length=1, max_length=100_000, description="[groups, m, k, n, pass, fraction of peak] rows.")
    source: Str = Field("", description="Where the measurements come from.")


class CrossEntropyEfficiency(Strict):
    """Fractions of HBM bandwidth the loss kernels reach, over the bytes Rankflow counts for them (graphgen.model.
    ends: fused, e bytes read and e written per logit each way; unfused, Megatron's passes over fp32 logits)."""

    fused: Fraction | None = Field(None, description="The fused cross-entropy kernel.")
    unfused: Fraction | None = Field(None, description="The unfused passes (upcast, max, exp, sum, divide, ...).")
    source: Str = ""


class PermuteEfficiency(Strict):
    """Fractions of HBM bandwidth Transformer Engine's fused MoE token permutation reaches (moe_permute_with_probs
    and moe_unpermute, Megatron --moe-permute-fusion), over the bytes Rankflow counts for permutation 1 and
    unpermutation 1 (graphgen.model.mlp); the local-expert sort beside them stays at memory_bound."""

    fwd: Fraction = Field(description="Forward: the permute and unpermute kernels.")
    bwd: Fraction = Field(description="Backward: their gradients.")
    source: Str = Field(min_length=1, description="Where the rates were measured.")


class AttentionFill(Strict):
    """The share of the attention curve's rate a fused attention call reaches with its query blocks spread
    thin over the SMs: x is 128-row query blocks per SM (batch x heads x query blocks / SM count), the
    curve's own measurements ran 2,048 blocks. Below the first point the share falls in proportion."""

    fwd: EfficiencyCurve = Field(description="[blocks per SM, share of the curve's rate] for the forward kernel.")
    bwd: EfficiencyCurve = Field(description="[blocks per SM, share of the curve's rate] for the backward kernel.")


class Efficiency(Strict):
    matmul: EfficiencyCurve = Field(description="GEMM efficiency versus GEMM size.")
    matmul_shapes: GemmTable | None = Field(
        None, description="Measured efficiencies of exact GEMM shapes (fwd, dgrad and wgrad), used before the curve.")
    matmul_grouped: EfficiencyCurve | None = Field(
        None, description="Grouped (MoE expert) GEMM efficiency versus GFLOP per group, all passes together "
                          "(defaults to the matmul curve). BF16/FP16 only.")
    matmul_grouped_shapes: GroupedGemmTable | None = Field(
        None, description="Measured efficiencies of exact grouped GEMM shapes, used before the matmul_grouped curve.")
    matmul_fp8: EfficiencyCurve | None = Field(
        None, description="FP8 GEMM efficiency versus size (defaults to the matmul curve).")
    attention: AttentionCurve = Field(description="Fused attention efficiency versus sequence length (tokens).")
    attention_kernels: dict[Str, AttentionCurve] = Field(
        default_factory=dict, description="Other fused-attention implementations by name (workload.attention_kernel).")
    attention_fill: AttentionFill | None = Field(
        None, description="Measured share of the attention rate with few query blocks per SM, forward and backward "
                          "(default: the rate holds from one block per SM up, and falls in proportion below).")
    memory_bound: Fraction = Field(
        0.8, description="Fraction of HBM bandwidth reached by element-wise kernels and norms.")
    memory_bound_source: Str = ""
    cross_entropy: CrossEntropyEfficiency | None = Field(
        None, description="Measured HBM-bandwidth fractions of the cross-entropy kernels (default: memory_bound).")
    moe_permute: PermuteEfficiency | None = Field(
        None, description="Measured HBM-bandwidth fractions of the fused MoE token permutation, used when the plan "
                          "sets moe_permute_fusion (default: memory_bound).")


DeviceDtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "fp4"]


class DeviceSpec(Strict):
    name: Str
    peak_tflops: dict[DeviceDtype, Rate] = Field(
        min_length=1, description="Dense (non-sparse) peak TFLOP/s per dtype.")
    hbm_gib: Rate = Field(description="Device memory in GiB.")
    hbm_bandwidth_gbs: Rate = Field(description="HBM bandwidth, GB/s.")
    board_power_w: Rate | None = Field(
        None, description="Board (TDP) power of one GPU, watts, at the configuration this file models (e.g. "
                          "700 W H100 SXM5, 500 W for the 96 GB Grand Teton part).")
    launch_overhead_us: Annotated[float, Field(ge=0, le=1e6, strict=True)] = Field(
        4.0, description="Fixed cost per kernel, microseconds.")
    sm_count: DimInt | None = Field(
        None, description="Streaming multiprocessors (compute units): a fused attention call with fewer "
                          "query blocks than this leaves SMs idle. Unset: no such penalty.")
    efficiency: Efficiency
    overlap_slowdown: Annotated[float, Field(ge=0, le=1, strict=True)] = Field(
        0.0, description="Fractional slowdown of compute kernels while communication kernels run beside "
                         "them (SM and memory-bandwidth contention).")
    allocator_fragmentation: Annotated[float, Field(ge=0, lt=1, strict=True)] = Field(
        0.15, description="Caching-allocator slack as a fraction of allocated memory: memory reserved but "
                          "not usable because it is split into pieces too small for the next request.")
    memory_reserved_gib: Annotated[float, Field(ge=0, le=1e6, strict=True)] = Field(
        1.5, description="CUDA context, NCCL buffers and allocator slack, GiB.")
    sources: dict[Str, Str] = Field(default_factory=dict, description="field -> source.")


# A collective kind, or an implementation of one with its own measured fit (DeepEP's dispatch/combine kernels).
CollectiveName = Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "deepep_all_to_all"]


class CollectiveFit(Strict):
    """A measured linear fit of one collective kind on one dimension:
    time = bus bytes / (bandwidth x efficiency) + steps x step latency + base latency."""

    efficiency: Fraction = Field(description="Fraction of the link bandwidth reached.")
    step_latency_us: NonNegFloat = Field(description="Latency per ring step, microseconds.")
    base_latency_us: NonNegFloat = Field(
        0.0, description="Fixed cost per collective (launch and synchronisation), microseconds.")
    source: Str = ""


class LinkSpec(Strict):
    """One network dimension as seen by one GPU."""

    topology: Literal["switch", "ring", "fully_connected"] = Field(
        "switch", description="switch: non-blocking switch (NVSwitch, fat tree); ring; fully_connected.")
    bandwidth_gbs: Rate = Field(description="Per-GPU unidirectional bandwidth in GB/s (decimal).")
    latency_us: Annotated[float, Field(ge=0, le=1e6, strict=True)] = Field(description="Per-hop latency, microseconds.")
    efficiency: Fraction = Field(
        1.0, description="Achieved fraction of bandwidth for large collectives (NCCL bus bandwidth / link).")
    derate: Fraction = Field(1.0, description="Degraded-link factor applied on top of efficiency (1 = healthy).")
    algorithm: Str = Field("ring", description="Collective algorithm on this dimension (graphgen.costs.algorithms: "
                                               "ring, tree or direct).")
    message_efficiency: EfficiencyCurve | None = Field(
        None, description="Extra factor versus message size, points [MiB, fraction]: NCCL reaches its "
                          "peak bus bandwidth only for messages of hundreds of MiB.")
    collective_fits: dict[CollectiveName, CollectiveFit] = Field(
        default_factory=dict, description="Measured fits per collective kind; a kind listed here uses its fit "
                                          "instead of efficiency, message_efficiency and latency_us (analytical "
                                          "backend; ASTRA-sim uses the link's own numbers).")
    source: Str = ""

    _known_algorithm = field_validator("algorithm")(lambda cls, name: ALGORITHMS.check(name))


class NodeSpec(Strict):
    gpus_per_node: DimInt = Field(description="GPUs in one scale-up domain (a node, or an NVL72 rack).")
    allocation_gpus: DimInt | None = Field(
        None, description="GPUs in the smallest unit a job is given (an NVL72 rack's 4-GPU compute tray); the "
                          "world is a multiple of it and may fill its last scale-up domain partly. Default: "
                          "gpus_per_node.")
    intra: LinkSpec = Field(description="Scale-up fabric (NVLink/NVSwitch, Infinity Fabric).")


class Stragglers(Strict):
    """How much hosts of one SKU differ in speed from step to step and from one another. A synchronous
    training step waits for its slowest host, so the expected step grows with the number of hosts that
    vary independently (graphgen.stragglers)."""

    spread: Annotated[float, Field(ge=0, le=1, strict=True)] = Field(
        0.0, description="Base straggler factor: the slowest of n independent hosts adds spread x sqrt(log2 n) "
                         "x log2 n / (log2 n + 1) to the step (0: every host runs at the same speed).")
    source: Str = ""


class Cluster(Strict):
    """The machine without a plan: what a search or a sweep keeps fixed while the plan varies."""

    name: Str
    device: DeviceSpec
    node: NodeSpec
    scale_out: LinkSpec = Field(description="Scale-out fabric between nodes, per GPU (its NIC).")
    stragglers: Stragglers = Field(Stragglers(), description="Host-to-host speed variation (absent: none).")
