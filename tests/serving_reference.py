"""A deliberately naive token-budget replica for the serving tests: it walks every running request every
iteration (as vLLM's scheduler does) instead of keeping decoders as aggregates with block and finish
events. Same scheduling rules, written independently; the fast replica must reproduce its runs exactly."""

from __future__ import annotations

from collections import deque

from graphgen.serving.state import DECODE, DONE, PREFILL, WAITING, Seq, blocks_for


class NaiveBudgetReplica:
    def __init__(self, block_size, kv_blocks, max_batched_tokens, max_seqs, chunked, hold_handoffs, itl):
        self.bs, self.free, self.budget, self.max_seqs = block_size, kv_blocks, max_batched_tokens, max_seqs
        self.chunked, self.hold, self.itl = chunked, hold_handoffs, itl
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []  # admission order
        self.items: list[tuple[Seq, int]] = []
        self.decs: list[Seq] = []
        self.last_end_s = 0.0

    def add(self, seq):
        self.waiting.append(seq)

    def pending(self):
        return bool(self.waiting or self.running)

    def _preempt_tail(self):
        v = self.running.pop()
        if v.state == DECODE:
            v.last_token_s = self.last_end_s
        self.free += v.blocks
        v.blocks, v.computed, v.state = 0, 0, WAITING
        v.preemptions += 1
        self.waiting.appendleft(v)
        return v

    def _fit(self, s, need):
        """Free `need` blocks, preempting from the tail; False if `s` itself went."""
        while self.free < need:
            if self._preempt_tail() is s:
                return False
        return True

    def plan(self, now_s):
        self.items, self.decs = [], []
        preempted = False
        for s in list(self.running):
            if s.state != DECODE:
                continue
            if s.computed + 1 > s.blocks * self.bs:
                if self.free < 1:
                    preempted = True
                    if not self._fit(s, 1):
                        break
                self.free -= 1
                s.blocks += 1
            self.decs.append(s)
        used = 0
        for s in list(self.running):
            if s.state != PREFILL or s not in self.running:
                continue
            room = self.budget - sum(d.state == DECODE for d in self.decs) - used
            if room <= 0:
                break
            n = min(s.input_len + s.generated - s.computed, room)
            need = blocks_for(s.computed + n, self.bs) - s.blocks
            if need > self.free:
                preempted = True
                if not self._fit(s, need):
                    break
            self.free -= need
            s.blocks += need
            self.items.append((s, n))
            used += n
        self.decs = [s for s in self.decs if s.state == DECODE]
        if not preempted:
            used = self._admit(used, now_s)
        if not self.items and not self.decs:
            return None
        return (sum(n for _, n in self.items), sum(s.computed + n for s, n in self.items), len(self.decs),
                sum(s.computed + 1 for s in self.decs), len(self.items))

    def _admit(self, used, now_s):
        while self.waiting and len(self.running) < self.max_seqs:
            room = self.budget - len(self.decs) - used
            s = self.waiting[0]
            n = s.input_len + s.generated - s.computed
            if room <= 0 or (n > room and not self.chunked):
                break
            n = min(n, room)
            need = blocks_for(s.computed + n, self.bs) - s.blocks
            if need > self.free:
                break
            self.waiting.popleft()
            self.running.append(s)
            self.free -= need
            s.blocks += need
            if s.scheduled_s < 0:
                s.scheduled_s = now_s
            if s.generated and s.computed:
                s.state = DECODE
                self.decs.append(s)
            else:
                s.state = PREFILL
                self.items.append((s, n))
            used += n
        return used

    def complete(self, end_s, dur_s):
        out = []
        for s, n in self.items:
            s.computed += n
            if s.computed < s.input_len + s.generated:
                continue
            s.generated += 1
            if s.first_token_s < 0:
                s.first_token_s = s.prefill_done_s = end_s
            else:
                self.itl.append((end_s - s.last_token_s, 1))
            s.last_token_s = end_s
            if s.generated >= s.stop_at:
                out.append(self._leave(s))
            else:
                s.state = DECODE
        for s in self.decs:
            s.computed += 1
            s.generated += 1
            self.itl.append((end_s - s.last_token_s, 1))
            s.last_token_s = end_s
            if s.generated >= s.stop_at:
                out.append(self._leave(s))
        self.last_end_s = end_s
        return out

    def _leave(self, s):
        self.running.remove(s)
        s.state = DONE
        if not (self.hold and s.generated < s.output_len):
            self.release(s)
        return s

    def release(self, s):
        self.free += s.blocks
        s.blocks = 0
