"""A deployment's iteration costs, tabulated once from its graphs and interpolated in the serving
simulation's hot loop (graphgen.serving.model.IterationModel).

An iteration of a continuous-batching engine runs its new prompt tokens and one token for each decoding
sequence through the model together. Its time splits into what every token costs alike (the linear
layers, norms, the LM head, tensor-parallel collectives: a function of the iteration's tokens), what a
decode token's attention costs (streaming its sequence's KV cache: proportional to the cached tokens)
and what prompt attention costs (quadratic in the prompt). Each part is measured on the engine's own
graphs once: pure decode steps with one cached token (the linear part), decode steps over a long cache
(the per-cached-token rate), and pure prefills (the prompt-attention rate by prompt length)."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

from graphgen.inference.kv import cache_width
from graphgen.inference.shape import kv_dtype
from graphgen.scenario import Scenario
from graphgen.units import dtype_bytes

TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
PROMPTS = (128, 512, 2048, 8192, 32768)


def _interp(xs: tuple[float, ...], ys: tuple[float, ...], x: float) -> float:
    """Piecewise linear in x; linear extrapolation past the last point."""
    if x <= xs[0]:
        return ys[0] * x / xs[0] if xs[0] else ys[0]
    i = min(bisect.bisect_left(xs, x), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass(frozen=True)
class EngineIterationModel:
    """IterationModel of one replica, from tabulated engine runs (seconds)."""

    tokens: tuple[float, ...]        # iteration tokens
    linear_s: tuple[float, ...]      # iteration time with no attention worth counting
    decode_s_per_cached: float       # decode attention per cached token of a decoding sequence
    prompts: tuple[float, ...]       # prompt lengths
    prompt_rate: tuple[float, ...]   # prompt attention seconds per (query x key) pair at that length
    transfer_s_per_token: float      # moving one token's KV cache between replicas
    block_size: int
    kv_blocks: int
    max_context: int
    # Pipeline stages of the replica. Engines keep one batch in flight per stage: vLLM runs a scheduler per
    # pipeline stage ("virtual engine"), each with 1/pp of the KV blocks, whose batches follow one another
    # through the stages (see graphgen.serving.simulate.Deployment.pools); an iteration here is one whole pass.
    virtual_engines: int = 1

    def iteration_time(self, prefill_tokens: int, prefill_context: int, decode_seqs: int,
                       decode_context: int, prefill_seqs: int = 1) -> float:
        n = prefill_tokens + decode_seqs
        if n <= 0:
            return 0.0
        t = _interp(self.tokens, self.linear_s, n) + self.decode_s_per_cached * decode_context
        if prefill_tokens:
            # s sequences taken as alike, each a chunk of p = t/s new tokens after c = (C - t)/s cached
            # ones: s x p x (c + p/2) = t x (2C - t) / 2s query-key pairs, at the rate of a C/s prompt
            s = max(prefill_seqs, 1)
            pairs = prefill_tokens * (2 * max(prefill_context, prefill_tokens) - prefill_tokens) / (2 * s)
            t += _interp(self.prompts, self.prompt_rate, prefill_context / s) * pairs
        return t

    def kv_transfer_time(self, tokens: int) -> float:
        return self.transfer_s_per_token * tokens


def _with(sc: Scenario, **spec) -> Scenario:
    return sc.with_workload(inference=sc.workload.inference.model_copy(update=spec))


def tabulate(sc: Scenario, time_of: Callable[[Scenario], float], kv_blocks: int) -> EngineIterationModel:
    """Build the table with `time_of` (a backend's step time of a scenario) over an inference scenario."""
    m = sc.model
    limit = m.max_position or 131_072
    tokens = tuple(n for n in TOKENS if n <= max(sc.workload.inference.max_num_batched_tokens, 1024))
    linear = tuple(time_of(_with(sc, phase="decode", batch=n, context_len=1)) for n in tokens)
    ctx = min(4096, limit - 2)
    longer = time_of(_with(sc, phase="decode", batch=64, context_len=ctx))
    short = time_of(_with(sc, phase="decode", batch=64, context_len=1))
    per_cached = max(longer - short, 0.0) / (64 * (ctx - 1))
    prompts = tuple(p for p in PROMPTS if p <= limit)
    rates = []
    for p in prompts:
        attn = time_of(_with(sc, phase="prefill", batch=1, input_len=p)) - _interp(tokens, linear, p)
        rates.append(max(attn, 0.0) / (p * p / 2))
    per_token = m.layers * cache_width(m, sc.plan.tp) * sc.plan.tp * dtype_bytes(kv_dtype(sc))
    link = sc.hardware.scale_out
    transfer = per_token / (link.bandwidth_gbs * 1e9 * link.efficiency)
    return EngineIterationModel(tokens, linear, per_cached, prompts, tuple(rates), transfer,
                                sc.workload.inference.block_size, kv_blocks, limit, sc.plan.pp)

