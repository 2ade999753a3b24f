"""One replica under static (request-level) batching, the baseline Orca (Yu et al. OSDI'22, Sec. 2.3)
measures against: when the replica is idle it takes up to `batch_size` waiting requests (FIFO, as many as
are waiting; it does not wait for a full batch), runs their prompts in one iteration and then decodes the
whole batch until its longest request is done. Requests that finish early keep their slot (padding: the
batch's decode size stays `batch_size` and their context keeps growing) and are returned with the batch,
since, as Orca notes, a static batch cannot return early-finished requests; the next batch starts only
then. KV memory for input + output is reserved per request at admission (FasterTransformer-style
reservation), so a static batch never preempts."""

from __future__ import annotations

from collections import deque

from graphgen.serving.state import DECODE, DONE, Seq, blocks_for


class StaticReplica:
    def __init__(self, block_size: int, kv_blocks: int, batch_size: int, itl: list[tuple[float, int]]) -> None:
        self.bs = block_size
        self.kv_blocks = kv_blocks
        self.batch_size = batch_size
        self.itl = itl
        self.waiting: deque[Seq] = deque()
        self.batch: list[Seq] = []
        self.step = 0          # 0: the batch's prefill; j >= 1: its j-th decode iteration
        self.last_step = 0     # the longest output in the batch, minus one
        self.sum_input = 0
        self.out_lens: list[int] = []  # the batch's output lengths, ascending (tokens produced per step)
        self.live = 0          # how many of out_lens exceed the current step

    def add(self, seq: Seq) -> None:
        self.waiting.append(seq)

    def pending(self) -> bool:
        return bool(self.waiting or self.batch)

    def _form(self, now_s: float) -> bool:
        free = self.kv_blocks
        while self.waiting and len(self.batch) < self.batch_size:
            s = self.waiting[0]
            need = blocks_for(s.input_len + s.output_len, self.bs)
            if need > free:
                break
            self.waiting.popleft()
            free -= need
            s.blocks = need
            s.scheduled_s = now_s
            self.batch.append(s)
        if not self.batch:
            return False
        self.step = 0
        self.sum_input = sum(s.input_len for s in self.batch)
        self.out_lens = sorted(s.output_len for s in self.batch)
        self.last_step = self.out_lens[-1] - 1
        self.live = 0
        return True

    def plan(self, now_s: float) -> tuple[int, int, int, int, int] | None:
        if not self.batch and not self._form(now_s):
            return None
        if self.step == 0:
            return self.sum_input, self.sum_input, 0, 0, len(self.batch)
        n = len(self.batch)
        return 0, 0, n, self.sum_input + n * self.step, 0

    def complete(self, end_s: float, dur_s: float) -> list[Seq]:
        if self.step == 0:
            for s in self.batch:
                s.first_token_s = s.last_token_s = s.prefill_done_s = end_s
                s.generated = 1
                s.state = DECODE
        else:
            # Requests with output_len > step produced a token in this decode iteration.
            while self.live < len(self.out_lens) and self.out_lens[self.live] <= self.step:
                self.live += 1
            self.itl.append((dur_s, len(self.out_lens) - self.live))
        if self.step < self.last_step:
            self.step += 1
            return []
        done, self.batch = self.batch, []
        for s in done:
            s.generated = s.output_len
            s.state = DONE
            s.blocks = 0
        return done
