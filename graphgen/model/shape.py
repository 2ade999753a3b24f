"""What every block builder needs to know about one rank's share of one microbatch."""

from __future__ import annotations

from dataclasses import dataclass

from graphgen.config.model import ModelSpec, Workload
from graphgen.parallel.layout import PARTIAL, REPLICATE, Layout, layout, shard
from graphgen.units import dtype_bytes


def activation_bytes(precision: str) -> float:
    """fp8 training keeps activations and communication in bf16; only GEMM inputs are cast."""
    return dtype_bytes("bf16") if precision == "fp8" else dtype_bytes(precision)


@dataclass(frozen=True)
class BlockShape:
    """Sizes and tensor-parallel layouts of one microbatch on one rank.

    Megatron TP: the residual stream is Replicate on tp, or Shard(seq) under sequence parallelism;
    attention heads, the MLP width and the vocabulary are Shard on tp; row-parallel outputs Partial.
    """

    model: ModelSpec
    workload: Workload
    tp: int
    sp: bool          # sequence parallelism in effect (sp and tp > 1)
    vocab: int        # padded vocabulary
    pp: int

    @property
    def e(self) -> float:
        return activation_bytes(self.workload.precision)

    @property
    def tokens(self) -> int:
        return self.workload.micro_batch * self.workload.seq_len

    @property
    def resid_tokens(self) -> float:
        """Tokens each rank holds in the residual stream."""
        return self.tokens / self.tp if self.sp else self.tokens

    def _tp(self, placement) -> Layout:
        return layout(tp=placement) if self.tp > 1 else Layout()

    @property
    def resid(self) -> Layout:
        return self._tp(shard("seq") if self.sp else REPLICATE)

    @property
    def heads(self) -> Layout:
        return self._tp(shard("heads"))

    @property
    def hid(self) -> Layout:
        return self._tp(shard("hidden"))

    @property
    def vocab_shard(self) -> Layout:
        return self._tp(shard("vocab"))

    @property
    def row_out(self) -> Layout:
        return self._tp(PARTIAL)

    @property
    def column_shards(self) -> frozenset[str]:
        """Axes on which a column-parallel linear shards a replicated input."""
        return frozenset({"tp"}) if self.tp > 1 else frozenset()

    @property
    def eager(self) -> bool:
        return not self.workload.fused_kernels

    @property
    def eager_glu(self) -> bool:
        w = self.workload
        return not (w.fused_kernels if w.fused_swiglu is None else w.fused_swiglu)

    def local(self, out_bytes: float, sharded: bool) -> float:
        """This rank's share of an output: tp-sharded ops hold 1/tp; any op does under SP."""
        return out_bytes / self.tp if (sharded or self.sp) and self.tp > 1 else out_bytes
