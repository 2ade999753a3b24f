"""The mutable state of one request inside the simulation (a slotted class: the hot loop touches it), the
shape of one iteration, and the KV-block arithmetic every scheduler shares.

Token accounting follows vLLM V1 (vllm/v1/core/sched/scheduler.py, `schedule`): a request has
num_tokens = prompt + generated tokens and num_computed_tokens whose KV is cached; each iteration
schedules some of the difference, and when the computed tokens catch up a new token is sampled. A
prefill, a chunk of one, a decode step and a recompute after preemption are all that one rule."""

from __future__ import annotations

from dataclasses import dataclass

from graphgen.serving.model import Request

WAITING, PREFILL, DECODE, DONE = range(4)


class Seq:
    __slots__ = ("req", "input_len", "output_len", "stop_at", "computed", "generated", "blocks", "state",
                 "order", "base", "block_k", "fin_k", "scheduled_s", "prefill_done_s", "first_token_s", "last_token_s",
                 "finish_s", "kv_ready_s", "preemptions", "replica", "decode_replica")

    def __init__(self, req: Request) -> None:
        self.req = req
        self.input_len = req.input_len
        self.output_len = req.output_len
        self.stop_at = req.output_len  # generated tokens after which it leaves this replica (1 on a prefill pool)
        self.computed = 0              # tokens whose KV is cached on the current replica
        self.generated = 0             # output tokens produced so far
        self.blocks = 0                # KV blocks held on the current replica
        self.state = WAITING
        self.order = -1                # admission number on the replica: vLLM's running-list position
        self.base = 0                  # while decoding: computed = base + replica iteration index
        self.block_k = -1              # while decoding: iteration at which it needs its next block
        self.fin_k = -1                # while decoding: iteration after which it has all its tokens
        self.scheduled_s = -1.0
        self.prefill_done_s = -1.0     # the model produced the first token
        self.first_token_s = -1.0      # the client got it (later with disaggregation: after the KV moved)
        self.last_token_s = -1.0
        self.finish_s = -1.0
        self.kv_ready_s = -1.0
        self.preemptions = 0
        self.replica = -1
        self.decode_replica = -1


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


@dataclass(frozen=True, slots=True)
class Iteration:
    """One forward pass of one replica: what the IterationModel was asked and what it answered."""

    replica: int
    start_s: float
    duration_s: float
    prefill_tokens: int
    prefill_context: int
    decode_seqs: int
    decode_context: int
    prefill_seqs: int
