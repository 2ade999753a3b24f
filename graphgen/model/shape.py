"""What every block builder needs to know about one rank's share of one microbatch."""

from __future__ import annotations

from dataclasses import dataclass

from graphgen.config.model import ModelSpec, Workload
from graphgen.parallel.layout import PARTIAL, REPLICATE, Layout, layout, shard
from graphgen.units import dtype_bytes


def activation_bytes(precision: str) -> float:
    """fp8 (and fp4) runs keep activations and communication in bf16; only GEMM inputs are cast."""
    return dtype_bytes("bf16") if precision in ("fp8", "fp4") else dtype_bytes(precision)


@dataclass(frozen=True)
class BlockShape:
    """Sizes and layouts of one microbatch on one rank.

    Megatron TP: the residual stream is Replicate on tp, or Shard(seq) under sequence parallelism;
    attention heads, the MLP width and the vocabulary are Shard on tp; row-parallel outputs Partial.
    Context parallelism shards the sequence on cp everywhere (attention exchanges keys and values
    inside its kernel). Expert parallelism: every rank of an ep (and etp) group holds other tokens,
    so tokens are Shard on ep and etp until the dispatcher sends them to their experts.
    """

    model: ModelSpec
    workload: Workload
    tp: int
    sp: bool          # sequence parallelism in effect (sp and tp > 1)
    vocab: int        # padded vocabulary
    pp: int
    cp: int = 1
    ep: int = 1
    etp: int = 1
    imbalance: float = 1.0  # routed tokens on the busiest expert-parallel rank / the balanced share
    cp_algorithm: str = "ring"  # how context parallelism exchanges keys and values (ParallelPlan.cp_algorithm)
    recompute_modules: tuple[str, ...] = ("core_attn",)  # under selective recompute (graphgen.model.recompute)
    gather_dispatch: bool = False  # Megatron's allgather dispatcher: tokens all-gathered on ep, outputs reduce-scattered
    sort_by_local_expert: bool = False  # Megatron's alltoall dispatcher re-sorts received tokens by local expert
    kv_len: int = 0           # decode: keys each new token attends to in the KV cache (0: not a decode step)
    kv_bytes: float = 2.0     # bytes per cached key/value element
    weight_bytes: float = 0.0  # bytes per stored weight when quantised for inference (0: the compute dtype)
    main_grad_bytes: float = 0.0  # bytes per element of the main-grad buffer hooks add gradients into (0: none)
    sp_regather: bool = True  # SP keeps a column-parallel input's shard and gathers it again in backward

    @property
    def e(self) -> float:
        return activation_bytes(self.workload.precision)

    @property
    def tokens(self) -> float:
        """Tokens of one microbatch on this rank's context-parallel shard."""
        return self.workload.micro_batch * self.workload.seq_len / self.cp

    @property
    def resid_tokens(self) -> float:
        """Tokens each rank holds in the residual stream."""
        return self.tokens / self.tp if self.sp else self.tokens

    def _lay(self, **tp_axes) -> Layout:
        """A layout: the given tensor-parallel placements on top of the sharding every tensor has."""
        base = {}
        if self.cp > 1:
            base["cp"] = shard("seq")
        if self.ep > 1:
            base["ep"] = shard("tokens")
        if self.etp > 1:
            base["etp"] = shard("tokens")
        return layout(**{**base, **tp_axes})

    def _tp(self, placement) -> Layout:
        return self._lay(tp=placement) if self.tp > 1 else self._lay()

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
    def replicated(self) -> Layout:
        """Replicated on tp (a column-parallel linear's input)."""
        return self._tp(REPLICATE)

    def experts(self, etp_placement, ep_placement=None) -> Layout:
        """An expert tensor: tokens sent to this rank's experts (by default Shard by expert on ep), laid
        out on etp as given; on tp as the residual stream (the expert ranks re-divide the dense ones, so
        no tp collective applies)."""
        tp = {"tp": shard("seq") if self.sp else REPLICATE} if self.tp > 1 else {}
        ep = {"ep": ep_placement or shard("experts")} if self.ep > 1 else {}
        etp = {"etp": etp_placement} if self.etp > 1 else {}
        return layout(**{**({"cp": shard("seq")} if self.cp > 1 else {}), **tp, **ep, **etp})

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
