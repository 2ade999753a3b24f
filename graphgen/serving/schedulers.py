"""Scheduler configs, a registry of them by name, and what each means for the simulation: the pools of
replicas it runs (one pool, or a prefill and a decode pool) and which requests it can never serve.

- "static": request-level batching (the baseline in Orca, Yu et al. OSDI'22); see static.py.
- "continuous": iteration-level batching with a token budget and a cap on running sequences (Orca; vLLM),
  whole prompts mixed with one decode token per running request (vLLM V1); see continuous.py.
- "chunked": the same with prompts cut into chunks to fit the budget left after the decodes
  (Sarathi-Serve, Agrawal et al. OSDI'24).
- "disaggregated": P prefill replicas and D decode replicas (DistServe, Zhong et al. OSDI'24); a request's
  first token comes from the prefill replica, its KV cache moves (IterationModel.kv_transfer_time) and it
  decodes on a decode replica.

Without chunking a prompt (and a recompute after preemption: prompt + tokens so far) must fit the token
budget in one iteration, which is why vLLM 0.6 set max_num_batched_tokens = max(max_model_len, 2048)
when chunked prefill was off (vllm/config.py, SchedulerConfig.__post_init__); here a request longer than
the budget is refused like one that can never fit in the KV cache."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import ClassVar

from graphgen.errors import RankflowError
from graphgen.registry import Registry
from graphgen.serving.model import IterationModel, Request
from graphgen.serving.state import blocks_for

# Replicas in one pool: far past any deployment simulated request by request, and what keeps a
# simulation of them to seconds (the REST API takes the same bound).
MAX_REPLICAS = 1024


def _whole(value: int, name: str, low: int = 1, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"from {low} to {high:,}"
        raise RankflowError(f"must be a whole number {span}, got {value!r}", field=name,
                            fix=f"set {name} to a whole number {span}")


@dataclass(frozen=True)
class PoolSpec:
    """A group of identical replicas and how each schedules. `handoff`: a prefill pool, whose requests
    leave after their first token for the next pool."""

    role: str                    # "serve", "prefill" or "decode"
    model: IterationModel
    count: int
    kind: str                    # "static" or "budget"
    batch_size: int = 0          # static
    max_batched_tokens: int = 0  # budget
    max_seqs: int = 0            # budget
    chunked: bool = False
    handoff: bool = False

    def __post_init__(self) -> None:
        check_model(self.model, self.role)

    def refusal(self, req: Request) -> tuple[str, str, str] | None:
        """(field, why, fix) if a replica of this pool can never serve `req`, else None."""
        m, total = self.model, req.input_len + req.output_len
        if total > m.max_context:
            return ("max_context", f"input {req.input_len} + output {req.output_len} tokens exceed the model's "
                    f"maximum context of {m.max_context}", "shorten the request or use a longer-context model")
        kv_tokens = req.input_len if self.handoff else total
        need = blocks_for(kv_tokens, m.block_size)
        if need > m.kv_blocks:
            return ("kv_blocks", f"needs {need} KV blocks of {m.block_size} tokens but a {self.role} replica "
                    f"holds {m.kv_blocks}", "give the replica more KV-cache memory (more GPUs or a smaller "
                    "model) or shorten the requests")
        if self.kind == "budget" and not self.chunked:
            # A recompute after preemption runs prompt + all but the last output token as one prefill.
            longest = req.input_len if self.handoff else total - 1
            if longest > self.max_batched_tokens:
                return ("max_batched_tokens", f"a prefill of {longest} tokens exceeds the per-iteration budget "
                        f"of {self.max_batched_tokens}", f"raise max_batched_tokens to at least {longest} or "
                        "use chunked prefill")
        return None


@dataclass(frozen=True)
class StaticBatching:
    kind: ClassVar[str] = "static"
    batch_size: int = 32

    def __post_init__(self) -> None:
        _whole(self.batch_size, "batch_size")

    def pools(self, model: IterationModel, replicas: int) -> tuple[PoolSpec, ...]:
        return (PoolSpec("serve", model, replicas, "static", batch_size=self.batch_size),)


def _check_budget(max_batched_tokens: int, max_seqs: int) -> None:
    _whole(max_batched_tokens, "max_batched_tokens")
    _whole(max_seqs, "max_seqs")
    if max_seqs > max_batched_tokens:
        # Every running decode takes one token of the budget each iteration; more would starve some.
        raise RankflowError(f"max_seqs ({max_seqs}) exceeds max_batched_tokens ({max_batched_tokens})",
                            field="max_seqs", fix="set max_seqs <= max_batched_tokens")


@dataclass(frozen=True)
class ContinuousBatching:
    """vLLM-style continuous batching; defaults are vLLM's max_num_seqs (256) and a budget of 8192."""

    kind: ClassVar[str] = "continuous"
    max_batched_tokens: int = 8192
    max_seqs: int = 256

    def __post_init__(self) -> None:
        _check_budget(self.max_batched_tokens, self.max_seqs)

    def pool(self, role: str, model: IterationModel, count: int, handoff: bool = False) -> PoolSpec:
        return PoolSpec(role, model, count, "budget", max_batched_tokens=self.max_batched_tokens,
                        max_seqs=self.max_seqs, chunked=False, handoff=handoff)

    def pools(self, model: IterationModel, replicas: int) -> tuple[PoolSpec, ...]:
        return (self.pool("serve", model, replicas),)


@dataclass(frozen=True)
class ChunkedPrefill:
    """Sarathi-Serve chunked prefill; the default budget of 2048 is vLLM 0.6's with chunked prefill on."""

    kind: ClassVar[str] = "chunked"
    max_batched_tokens: int = 2048
    max_seqs: int = 256

    def __post_init__(self) -> None:
        _check_budget(self.max_batched_tokens, self.max_seqs)

    def pool(self, role: str, model: IterationModel, count: int, handoff: bool = False) -> PoolSpec:
        return PoolSpec(role, model, count, "budget", max_batched_tokens=self.max_batched_tokens,
                        max_seqs=self.max_seqs, chunked=True, handoff=handoff)

    def pools(self, model: IterationModel, replicas: int) -> tuple[PoolSpec, ...]:
        return (self.pool("serve", model, replicas),)


@dataclass(frozen=True)
class Disaggregated:
    """DistServe-style: `prefill_replicas` run prompts (scheduled by `prefill`), `decode_replicas` decode
    (scheduled by `decode`; a request preempted there recomputes locally). `decode_model`: the decode
    replicas' cost model when it differs (DistServe picks parallelism per phase); None = the deployment's.

    `first_token_at`: when the client sees the first token. "kv_ready" (default): once the KV cache has
    reached the decode replica, which streams every token to the client, so TTFT includes the transfer;
    vLLM's P2P-NCCL xPyD proxy works so (examples/online_serving/disaggregated_serving_p2p_nccl_xpyd/
    disagg_proxy_p2p_nccl_xpyd.py at cd583cfb65ae316a1f7826f263ac5f477630f767: the prefill runs with
    max_tokens=1, its output is discarded, the decode instance's stream is returned). "prefill": when the
    prefill replica produces it, as DistServe's prefill instance emits the first token."""

    kind: ClassVar[str] = "disaggregated"
    prefill_replicas: int = 1
    decode_replicas: int = 1
    prefill: ContinuousBatching | ChunkedPrefill = field(default_factory=ContinuousBatching)
    decode: ContinuousBatching | ChunkedPrefill = field(default_factory=ContinuousBatching)
    decode_model: IterationModel | None = None
    first_token_at: str = "kv_ready"

    def __post_init__(self) -> None:
        _whole(self.prefill_replicas, "prefill_replicas", high=MAX_REPLICAS)
        _whole(self.decode_replicas, "decode_replicas", high=MAX_REPLICAS)
        if self.first_token_at not in ("kv_ready", "prefill"):
            raise RankflowError(f"unknown choice {self.first_token_at!r}", field="first_token_at",
                                fix="use 'kv_ready' (the decode replica streams the first token) or 'prefill'")

    def pools(self, model: IterationModel, replicas: int) -> tuple[PoolSpec, ...]:
        if replicas != 1:
            raise RankflowError(f"replicas={replicas} with disaggregated serving", field="replicas",
                                fix="leave replicas at 1 and size the pools with prefill_replicas and "
                                    "decode_replicas")
        return (self.prefill.pool("prefill", model, self.prefill_replicas, handoff=True),
                self.decode.pool("decode", self.decode_model or model, self.decode_replicas))


SchedulerConfig = StaticBatching | ContinuousBatching | ChunkedPrefill | Disaggregated

SCHEDULERS: Registry[type] = Registry("scheduler")
for _cls in (StaticBatching, ContinuousBatching, ChunkedPrefill, Disaggregated):
    SCHEDULERS.add(_cls.kind, _cls)


def scheduler_from_dict(spec: dict) -> SchedulerConfig:
    """{"kind": "chunked", "max_batched_tokens": 512} -> ChunkedPrefill(512); a disaggregated spec's
    "prefill" and "decode" entries are specs of their own."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in SCHEDULERS:
        raise RankflowError(f"unknown scheduler {kind!r}", field="scheduler.kind",
                            fix=f"use one of: {', '.join(SCHEDULERS)}")
    for sub in ("prefill", "decode"):
        if kind == "disaggregated" and isinstance(spec.get(sub), dict):
            spec[sub] = scheduler_from_dict(spec[sub])
    names = {f.name for f in fields(SCHEDULERS[kind])} - {"decode_model"}
    unknown = sorted(set(spec) - names)
    if unknown:
        raise RankflowError(f"unknown field {unknown[0]!r} for the {kind} scheduler", field=f"scheduler.{unknown[0]}",
                            fix=f"use only: {', '.join(sorted(names)) or '(none)'}")
    return SCHEDULERS[kind](**spec)


def scheduler_to_dict(cfg: SchedulerConfig) -> dict:
    out: dict = {"kind": cfg.kind}
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in ("prefill", "decode"):
            out[f.name] = scheduler_to_dict(value)
        elif f.name == "decode_model":
            out[f.name] = None if value is None else model_to_dict(value)
        else:
            out[f.name] = value
    return out


def model_to_dict(model: IterationModel) -> dict:
    """The cost model's class and, when it is a dataclass, its fields (for the JSON output)."""
    out: dict = {"class": type(model).__name__, "block_size": model.block_size, "kv_blocks": model.kv_blocks,
                 "max_context": model.max_context}
    if is_dataclass(model):
        # Scalars only, read one by one: a tabulated model's tables would bloat the JSON (and asdict
        # would deep-copy them).
        for f in fields(model):
            value = getattr(model, f.name)
            if isinstance(value, (int, float, str, bool)):
                out[f.name] = value
    return out


def check_model(model: IterationModel, role: str = "serve") -> None:
    """The capacity fields the simulation reads must be positive whole numbers."""
    for name in ("block_size", "kv_blocks", "max_context"):
        value = getattr(model, name, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RankflowError(f"the {role} replicas' IterationModel has {name}={value!r}", field=name,
                                fix=f"give the IterationModel a whole-number {name} >= 1")
