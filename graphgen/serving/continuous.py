"""One replica under iteration-level scheduling with a token budget: continuous batching (Orca, Yu et al.
OSDI'22; vLLM), chunked prefill (Sarathi-Serve, Agrawal et al. OSDI'24), and the two pools of
prefill/decode disaggregation (DistServe, Zhong et al. OSDI'24) are all this class with different flags.

Each iteration, as vLLM V1 schedules (vllm/v1/core/sched/scheduler.py `schedule` and `_preempt_request`,
vllm-project/vllm at 00024d314514900f361ad072af6931e403b7f589):
  1. running decodes each take one token of the budget; one whose next token crosses a block boundary
     needs a new KV block, and when none is free the most recently admitted running request is
     preempted (recompute: its blocks are freed, its computed tokens reset, and it goes back to the
     front of the waiting queue), repeatedly, until the block fits or the request preempted itself;
  2. with `chunked`, running requests part-way through their prompt continue with a chunk of what is
     left of the budget (Sarathi-Serve: decodes first, then ongoing prefills, then new ones; vLLM V0's
     `_schedule_chunked_prefill` in vllm/core/scheduler.py orders them the same way);
  3. only if nothing was preempted this iteration (as vLLM V1), waiting requests are admitted in FIFO
     order while the running count is below `max_seqs`, the budget has room and their KV blocks are
     free; the first that does not fit stops admission (head-of-line, no skipping). Without `chunked`
     a prompt is admitted whole or not at all, so prefills of newly admitted requests run in the same
     iteration as one decode token of every running request: vLLM V1's mixed batches, not vLLM V0's
     prefill-only iterations (`_schedule_default` ran prefills alone, decodes waiting).

Decoding requests advance one token per iteration, so they are kept as aggregates (count and the sum of
`computed - iteration`) with per-request events only when one needs a new block or finishes: the cost of
an iteration is its prefill work and its events, not the size of the batch."""

from __future__ import annotations

from collections import deque

from graphgen.serving.state import DECODE, DONE, PREFILL, WAITING, Seq, blocks_for


def _order(s: Seq) -> int:
    return s.order


class BudgetReplica:
    def __init__(self, block_size: int, kv_blocks: int, max_batched_tokens: int, max_seqs: int,
                 chunked: bool, hold_handoffs: bool, itl: list[tuple[float, int]]) -> None:
        self.bs = block_size
        self.free = kv_blocks
        self.budget = max_batched_tokens
        self.max_seqs = max_seqs
        self.chunked = chunked
        self.hold_handoffs = hold_handoffs  # prefill pool: keep a finished prefill's KV until it is sent
        self.itl = itl                      # (gap_s, tokens) pairs, shared with the simulation
        self.waiting: deque[Seq] = deque()
        self.running: dict[int, Seq] = {}     # admission order -> seq; popitem() is vLLM's preemption victim
        self.prefilling: dict[int, Seq] = {}  # the running ones still in their prompt
        self.n_dec = 0
        self.sum_base = 0
        self.block_due: dict[int, list[Seq]] = {}
        self.fin_due: dict[int, list[Seq]] = {}
        self.k = 0            # iterations run so far
        self.next_order = 0
        self.last_end_s = 0.0
        self.items: list[tuple[Seq, int]] = []  # this iteration's prefill work (seq, tokens)
        self.joined: list[Seq] = []             # decoders whose KV arrived from a prefill replica, admitted now
        self.dec_now = 0

    def add(self, seq: Seq) -> None:
        self.waiting.append(seq)

    def pending(self) -> bool:
        return bool(self.waiting or self.running)

    # -- planning -------------------------------------------------------------------------------------
    def plan(self, now_s: float) -> tuple[int, int, int, int, int] | None:
        """The next iteration's (prefill tokens, prefill context, decode seqs, decode context, prefill
        seqs), or None when there is nothing it can run."""
        self.items, self.joined = [], []
        preempted = self._grow_decoders(self.k)
        used, cut = self._continue_prefills(self.k) if self.prefilling else (0, False)
        if not (preempted or cut):
            self._admit(used, now_s)
        self.dec_now = self.n_dec
        if not self.items and not self.n_dec:
            return None
        p_tokens = sum(n for _, n in self.items)
        p_context = sum(s.computed + n for s, n in self.items)
        return p_tokens, p_context, self.n_dec, self.sum_base + self.n_dec * (self.k + 1), len(self.items)

    def _due(self, table: dict[int, list[Seq]], k: int, seq: Seq) -> None:
        bucket = table.get(k)
        if bucket is None:
            table[k] = [seq]
        else:
            bucket.append(seq)

    def _enter_decode(self, s: Seq, k0: int) -> None:
        """From iteration k0 on, `s` decodes one token per iteration: computed = base + k."""
        s.state = DECODE
        s.base = s.computed - k0
        self.n_dec += 1
        self.sum_base += s.base
        s.block_k = s.blocks * self.bs - s.base  # first k with base + k + 1 > blocks x block_size
        self._due(self.block_due, s.block_k, s)
        s.fin_k = s.stop_at + s.input_len - s.base - 2  # generated after k = base + k + 2 - input
        self._due(self.fin_due, s.fin_k, s)

    def _preempt_tail(self, k: int) -> Seq:
        """vLLM's recompute preemption of the last-admitted running request."""
        _, v = self.running.popitem()
        if v.state == DECODE:
            self.n_dec -= 1
            self.sum_base -= v.base
            v.computed = v.base + k
            v.generated = v.computed - v.input_len + 1
            v.last_token_s = self.last_end_s  # decoders produce a token every iteration
        elif v.state == PREFILL:
            del self.prefilling[v.order]
        self.free += v.blocks
        v.blocks = 0
        v.computed = 0
        v.state = WAITING
        v.preemptions += 1
        self.waiting.appendleft(v)  # preempted requests resume first, in their admission order
        return v

    def _make_room(self, need: int, s: Seq, k: int) -> bool:
        """Free `need` blocks for `s`, preempting from the tail; False when `s` itself was preempted."""
        while self.free < need:
            if self._preempt_tail(k) is s:
                return False
        return True

    def _grow_decoders(self, k: int) -> bool:
        due = self.block_due.pop(k, None)
        if not due:
            return False
        preempted = False
        due.sort(key=_order)  # the running list's order, as vLLM walks it
        for s in due:
            if s.state != DECODE or s.block_k != k:
                continue  # preempted or finished since this event was filed
            if self.free < 1:
                preempted = True
                if not self._make_room(1, s, k):
                    continue
            self.free -= 1
            s.blocks += 1
            s.block_k = k + self.bs
            self._due(self.block_due, s.block_k, s)
        return preempted

    def _continue_prefills(self, k: int) -> tuple[int, bool]:
        """Chunked prefill: running prompts continue, in admission order, with what the decodes left."""
        used, preempted = 0, False
        for s in list(self.prefilling.values()):
            if s.state != PREFILL:
                continue
            room = self.budget - self.n_dec - used
            if room <= 0:
                break
            n = min(s.input_len + s.generated - s.computed, room)
            need = blocks_for(s.computed + n, self.bs) - s.blocks
            if need > self.free:
                preempted = True
                if not self._make_room(need, s, k):
                    break  # it was the tail: nothing after it is running
            self.free -= need
            s.blocks += need
            self.items.append((s, n))
            used += n
        return used, preempted

    def _admit(self, used: int, now_s: float) -> None:
        chunked, bs = self.chunked, self.bs
        while self.waiting and len(self.running) < self.max_seqs:
            room = self.budget - self.n_dec - used
            if room <= 0:
                break
            s = self.waiting[0]
            n = s.input_len + s.generated - s.computed
            if n > room and not chunked:
                break
            n = min(n, room)
            need = blocks_for(s.computed + n, bs) - s.blocks
            if need > self.free:
                break
            self.waiting.popleft()
            s.order = self.next_order
            self.next_order += 1
            self.running[s.order] = s
            self.free -= need
            s.blocks += need
            if s.scheduled_s < 0:
                s.scheduled_s = now_s
            if s.generated and s.computed:  # KV sent by a prefill replica: straight to decoding
                self._enter_decode(s, self.k)
                self.joined.append(s)
            else:
                s.state = PREFILL
                self.prefilling[s.order] = s
                self.items.append((s, n))
            used += n

    # -- completion -----------------------------------------------------------------------------------
    def complete(self, end_s: float, dur_s: float) -> list[Seq]:
        """Apply the planned iteration, ending at `end_s`; the requests that leave this replica."""
        k, out, itl = self.k, [], self.itl
        for s, n in self.items:
            s.computed += n
            if s.computed < s.input_len + s.generated:
                continue  # a chunk: the prompt is not done yet
            del self.prefilling[s.order]
            s.generated += 1
            if s.first_token_s < 0:
                s.first_token_s = s.prefill_done_s = end_s
            else:
                itl.append((end_s - s.last_token_s, 1))  # resumed after preemption
            s.last_token_s = end_s
            if s.generated >= s.stop_at:
                self._leave(s)
                out.append(s)
            else:
                self._enter_decode(s, k + 1)
        steady = self.dec_now - len(self.joined)
        if steady > 0:
            itl.append((dur_s, steady))  # back-to-back iterations: their previous token ended the last one
        for s in self.joined:
            itl.append((end_s - s.last_token_s, 1))
        # Requests finishing together leave in admission order (routing and closed loops see that order).
        for s in sorted(self.fin_due.pop(k, ()), key=_order):
            if s.state == DECODE and s.fin_k == k:
                self.n_dec -= 1
                self.sum_base -= s.base
                s.computed = s.base + k + 1
                s.generated = s.stop_at
                s.last_token_s = end_s
                self._leave(s)
                out.append(s)
        self.k = k + 1
        self.last_end_s = end_s
        return out

    def _leave(self, s: Seq) -> None:
        del self.running[s.order]
        s.state = DONE
        if not (self.hold_handoffs and s.generated < s.output_len):
            self.release(s)

    def release(self, s: Seq) -> None:
        """Free the KV blocks `s` holds here (a hand-off calls this once its KV has been sent)."""
        self.free += s.blocks
        s.blocks = 0
