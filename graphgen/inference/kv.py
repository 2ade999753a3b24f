"""The KV cache: bytes per token on one GPU, the cache an iteration holds, and the blocks an engine can
allocate (vLLM: what gpu_memory_utilization leaves after weights, the activation peak of a
max_num_batched_tokens forward and memory outside PyTorch, in blocks of block_size tokens;
vllm/worker/worker.py determine_num_available_blocks)."""

from __future__ import annotations

import math

from graphgen.config import ModelSpec
from graphgen.inference.shape import kv_dtype
from graphgen.inference.view import key_len
from graphgen.scenario import Scenario
from graphgen.units import dtype_bytes


def cache_width(m: ModelSpec, tp: int) -> float:
    """Elements one token keeps in one layer's cache on one TP rank: keys and values of the rank's KV
    heads (replicated when there are fewer KV heads than ranks), or MLA's latent and rotary key, which
    every rank keeps whole (DeepSeek-V2 Sec. 2.1.2)."""
    if m.mla is not None:
        return m.mla.kv_lora_rank + m.mla.qk_rope_head_dim
    return max(m.n_kv_heads / tp, 1.0) * 2 * m.d_head


def layer_tokens(m: ModelSpec, layer: int, tokens: int) -> int:
    """Tokens of a sequence a layer keeps: all of them, or its sliding window."""
    if m.attention_kind(layer) == "sliding" and m.sliding_window:
        return min(tokens, m.sliding_window)
    return tokens


def kv_bytes_per_token(sc: Scenario, layers) -> float:
    """Cache bytes one token of context costs on one GPU, over the given layers (full-attention layers)."""
    return len(layers) * cache_width(sc.model, sc.plan.tp) * dtype_bytes(kv_dtype(sc))


def iteration_cache(sc: Scenario, layers) -> float:
    """Bytes of KV cache on one GPU for the iteration's batch at its context."""
    spec, m = sc.workload.inference, sc.model
    per = cache_width(m, sc.plan.tp) * dtype_bytes(kv_dtype(sc))
    return spec.batch * sum(layer_tokens(m, layer, key_len(spec)) for layer in layers) * per


def num_blocks(free_bytes: float, sc: Scenario, layers) -> int:
    """KV blocks that fit in free_bytes on one GPU (vLLM counts every layer at full length)."""
    per_block = sc.workload.inference.block_size * kv_bytes_per_token(sc, layers)
    return max(0, math.floor(free_bytes / per_block)) if per_block > 0 else 0
