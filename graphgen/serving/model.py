"""The interface between the engine and the serving simulation: what one batch iteration of a replica
costs. The engine side (graphgen.inference, built elsewhere) tabulates these from the per-rank graphs
once per deployment; the simulation calls them in its hot loop, so they must be cheap (interpolation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Request:
    id: int
    arrival_s: float
    input_len: int      # prompt tokens
    output_len: int     # tokens to generate (the first comes out of the prefill)
    # (trace file, line) of a request read from a trace: where to fix it, not part of what the request is
    origin: tuple[str, int] | None = field(default=None, compare=False)


class IterationModel(Protocol):
    """Seconds of one iteration of one replica (all its GPUs together)."""

    block_size: int            # tokens per KV-cache block (paged attention)
    kv_blocks: int             # KV-cache blocks the replica holds (vLLM's num_gpu_blocks)
    max_context: int           # the model's maximum context (input + output)

    def iteration_time(self, prefill_tokens: int, prefill_context: int, decode_seqs: int,
                       decode_context: int, prefill_seqs: int) -> float:
        """One forward pass over `prefill_tokens` new prompt tokens of `prefill_seqs` sequences (whose
        prompts total `prefill_context` tokens including those already cached, for chunked prefill)
        together with one decode token for each of `decode_seqs` sequences whose contexts total
        `decode_context` tokens. Either part may be zero (a pure prefill, a pure decode step). The
        sequence count matters because prompt attention is quadratic per sequence: eight 1k prompts
        cost an eighth of the attention of one 8k prompt."""
        ...

    def kv_transfer_time(self, tokens: int) -> float:
        """Seconds to move `tokens` tokens of KV cache from a prefill replica to a decode replica
        (disaggregated serving)."""
        ...


@dataclass(frozen=True)
class LinearIterationModel:
    """A simple stand-in for tests and examples: time = a + b x prefill tokens + c x prefill context
    tokens x prefill tokens / max(prefill tokens, 1) + d x decode seqs + e x decode context tokens."""

    a: float = 5e-3
    b: float = 2e-5
    c: float = 1e-9
    d: float = 2e-5
    e: float = 2e-8
    block_size: int = 16
    kv_blocks: int = 20_000
    max_context: int = 131_072
    transfer_per_token: float = 1e-6
    virtual_engines: int = 1  # pipeline stages, each stage's engine a batch in flight (see EngineIterationModel)

    def iteration_time(self, prefill_tokens: int, prefill_context: int, decode_seqs: int, decode_context: int,
                       prefill_seqs: int = 1) -> float:
        if prefill_tokens <= 0 and decode_seqs <= 0:
            return 0.0
        return (self.a + self.b * prefill_tokens + self.c * prefill_context * prefill_tokens / max(prefill_tokens, 1)
                + self.d * decode_seqs + self.e * decode_context)

    def kv_transfer_time(self, tokens: int) -> float:
        return self.transfer_per_token * tokens
