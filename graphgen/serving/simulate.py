"""The serving simulation: an event loop over request arrivals, replica iterations and KV transfers.

Each replica runs iterations back to back while it has work; an iteration's length comes from the
deployment's IterationModel for the batch the replica's scheduler forms (schedulers.py, continuous.py,
static.py). A router (routers.py) places each arriving request on a replica of the first pool; with
disaggregation, a request whose prompt is done is routed to a decode replica and arrives there after
`kv_transfer_time(input_len)`, the prefill replica keeping its KV blocks until then. Events at the same
instant run in the order they were filed, and an idle replica forms its batch only after all of them
(requests arriving together are batched together), so a run is a pure function of its inputs.

A request that a replica can never serve (longer than the model's context, more KV blocks than a replica
holds, a prompt over the budget without chunking) raises RankflowError, or with oversized="drop" is left
out and listed in the result (a closed-loop user then sends their next request at once)."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace

from graphgen.errors import RankflowError
from graphgen.serving.continuous import BudgetReplica
from graphgen.serving.model import IterationModel, Request
from graphgen.serving.routers import ROUTERS
from graphgen.serving.schedulers import MAX_REPLICAS, ContinuousBatching, PoolSpec, SchedulerConfig
from graphgen.serving.sources import RequestSource, check_count
from graphgen.serving.state import Iteration, Seq
from graphgen.serving.static import StaticReplica

MAX_ITERATIONS = 5_000_000  # about a minute of simulation; an overloaded run past it is refused
_ARRIVE, _END, _KV_READY, _STEP = 0, 1, 2, 3


@dataclass(frozen=True)
class Deployment:
    """What serves: the per-replica cost model, the scheduler, how many replicas and how requests are
    spread over them (a disaggregated scheduler sizes its own pools; leave replicas at 1)."""

    model: IterationModel
    scheduler: SchedulerConfig = field(default_factory=ContinuousBatching)
    replicas: int = 1
    router: str = "round_robin"

    def physical_pools(self) -> tuple[PoolSpec, ...]:
        """The scheduler's pools of replicas, each replica a whole copy of the model on its GPUs."""
        if (isinstance(self.replicas, bool) or not isinstance(self.replicas, int)
                or not 1 <= self.replicas <= MAX_REPLICAS):
            raise RankflowError(f"must be a whole number from 1 to {MAX_REPLICAS:,}, got {self.replicas!r}",
                                field="replicas", fix=f"set replicas from 1 to {MAX_REPLICAS:,}")
        if self.router not in ROUTERS:
            raise RankflowError(f"unknown router {self.router!r}", field="router",
                                fix=f"use one of: {', '.join(ROUTERS)}")
        return self.scheduler.pools(self.model, self.replicas)

    def pools(self) -> tuple[PoolSpec, ...]:
        """The pools the simulation schedules: a pipelined replica is as many engines as it has stages,
        each with its share of the KV blocks and a whole pass per iteration (vLLM's virtual engines:
        vllm/core/scheduler.py Scheduler.__init__ 'num_gpu_blocks //= pipeline_parallel_size', one
        scheduler per stage in vllm/engine/llm_engine.py), so pp batches are in flight at once."""
        return tuple(_virtual(p) for p in self.physical_pools())

    def replica_count(self) -> int:
        return sum(p.count for p in self.physical_pools())


def _virtual(pool: PoolSpec) -> PoolSpec:
    v = getattr(pool.model, "virtual_engines", 1)
    if v <= 1:
        return pool
    model = replace(pool.model, kv_blocks=pool.model.kv_blocks // v, virtual_engines=1)
    return replace(pool, model=model, count=pool.count * v)


@dataclass(frozen=True)
class RequestRecord:
    id: int
    arrival_s: float
    input_len: int
    output_len: int          # output tokens produced (all of them: requests run to completion)
    scheduled_s: float       # first admitted to a batch
    prefill_done_s: float    # the model produced the first token
    first_token_s: float     # the client got it (after the KV transfer when disaggregated, by default)
    finish_s: float
    preemptions: int
    replica: int             # global engine index (the prefill one when disaggregated; a replica with pp
                             # pipeline stages runs pp engines, see Deployment.pools)
    decode_replica: int | None
    kv_ready_s: float | None  # disaggregated: when its KV reached the decode replica


@dataclass(frozen=True)
class ServingResult:
    deployment: Deployment
    records: tuple[RequestRecord, ...]          # by id
    dropped: tuple[Request, ...]                # refused with oversized="drop"
    iterations: tuple[Iteration, ...]           # every iteration of every replica, in start order
    itl_s: tuple[tuple[float, int], ...]        # (gap between consecutive tokens of a request, how many)
    replica_roles: tuple[str, ...]              # per global engine index: "serve", "prefill", "decode"


class _Run:
    """The state of one simulation; `simulate` is its only user."""

    def __init__(self, dep: Deployment, max_iterations: int, oversized: str) -> None:
        self.specs = dep.pools()
        self.max_iterations, self.drop = max_iterations, oversized == "drop"
        self.itl: list[tuple[float, int]] = []
        self.replicas: list[BudgetReplica | StaticReplica] = []
        self.pool_of: list[int] = []      # global replica index -> pool
        self.members: list[list[int]] = []  # pool -> global replica indexes
        for p, spec in enumerate(self.specs):
            self.members.append(list(range(len(self.replicas), len(self.replicas) + spec.count)))
            for _ in range(spec.count):
                self.replicas.append(self._make(spec))
                self.pool_of.append(p)
        self.routers = [ROUTERS[dep.router]() for _ in self.specs]
        self.first_token_at_kv_ready = getattr(dep.scheduler, "first_token_at", "") == "kv_ready"
        self.outstanding = [[0] * s.count for s in self.specs]
        self.busy = [False] * len(self.replicas)
        self.waking = [False] * len(self.replicas)
        self.heap: list[tuple] = []
        self.tick = 0
        self.iterations: list[Iteration] = []
        self.done: list[Seq] = []
        self.dropped: list[Request] = []

    def _make(self, spec: PoolSpec) -> BudgetReplica | StaticReplica:
        m = spec.model
        if spec.kind == "static":
            return StaticReplica(m.block_size, m.kv_blocks, spec.batch_size, self.itl)
        return BudgetReplica(m.block_size, m.kv_blocks, spec.max_batched_tokens, spec.max_seqs, spec.chunked,
                             spec.handoff, self.itl)

    def push(self, t: float, kind: int, payload: object) -> None:
        self.tick += 1
        heapq.heappush(self.heap, (t, self.tick, kind, payload))

    def refused(self, req: Request) -> bool:
        for spec in self.specs:
            why = spec.refusal(req)
            if why is None:
                continue
            if self.drop:
                self.dropped.append(req)
                return True
            fld, msg, fix = why
            where = f"line {req.origin[1]}: the request" if req.origin else f"request {req.id}"
            raise RankflowError(f"{where} can never be served: {msg}", field=fld,
                                file=req.origin[0] if req.origin else None,
                                fix=f"{fix} (the Python API can drop such requests: simulate(..., oversized='drop'))")
        return False

    def route(self, seq: Seq, pool: int) -> int:
        i = self.routers[pool].pick(self.outstanding[pool])
        self.outstanding[pool][i] += 1
        return self.members[pool][i]

    def wake(self, r: int, now: float) -> None:
        """Have replica r form its next batch at `now`, after every other event of this instant (so
        requests arriving together are batched together)."""
        if not (self.busy[r] or self.waking[r]):
            self.waking[r] = True
            self.push(now, _STEP, r)

    def step(self, r: int, now: float) -> None:
        self.waking[r] = False
        if self.busy[r]:
            return
        shape = self.replicas[r].plan(now)
        if shape is None:
            return
        model = self.specs[self.pool_of[r]].model
        dur = model.iteration_time(*shape)
        if not (isinstance(dur, (int, float)) and math.isfinite(dur) and dur > 0):
            raise RankflowError(f"the iteration model returned {dur!r} s for {shape}", field="iteration_time",
                                fix="the IterationModel must return a finite time > 0 for any non-empty batch")
        if len(self.iterations) >= self.max_iterations:
            raise RankflowError(f"the simulation passed {self.max_iterations:,} iterations", field="max_iterations",
                                fix="simulate fewer requests or a lower rate (past capacity the queue grows "
                                    "without bound; the Python API takes a larger simulate(..., max_iterations=...))")
        self.iterations.append(Iteration(r, now, dur, *shape))
        self.busy[r] = True
        self.push(now + dur, _END, (r, dur))

    def leave(self, seq: Seq, r: int, now: float, stream) -> None:
        pool = self.pool_of[r]
        self.outstanding[pool][r - self.members[pool][0]] -= 1
        if seq.generated >= seq.output_len:
            seq.finish_s = now
            self.done.append(seq)
            nxt = stream.after_finish(now)
            if nxt is not None:
                self.push(nxt.arrival_s, _ARRIVE, nxt)
            return
        d = self.route(seq, pool + 1)
        seq.decode_replica = d
        ready = now + self.specs[pool].model.kv_transfer_time(seq.input_len)
        if not math.isfinite(ready) or ready < now:
            raise RankflowError(f"kv_transfer_time returned {ready - now!r} s", field="kv_transfer_time",
                                fix="the IterationModel must return a finite time >= 0")
        self.push(ready, _KV_READY, (seq, r, d))


def simulate(deployment: Deployment, source: RequestSource, *, oversized: str = "error",
             max_iterations: int = MAX_ITERATIONS) -> ServingResult:
    """Serve every request the source issues and record when each got its first token and finished."""
    if oversized not in ("error", "drop"):
        raise RankflowError(f"unknown choice {oversized!r}", field="oversized", fix="use 'error' or 'drop'")
    if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
        raise RankflowError(f"must be a whole number >= 1, got {max_iterations!r}", field="max_iterations",
                            fix=f"leave it at {MAX_ITERATIONS:,} or set another positive bound")
    run = _Run(deployment, max_iterations, oversized)
    stream = source.start()
    check_count(stream.total)
    for req in stream.initial():
        run.push(req.arrival_s, _ARRIVE, req)
    heap, replicas = run.heap, run.replicas
    while heap:
        now, _, kind, payload = heapq.heappop(heap)
        if kind == _END:
            r, dur = payload
            run.busy[r] = False
            for seq in replicas[r].complete(now, dur):
                run.leave(seq, r, now, stream)
            run.wake(r, now)
        elif kind == _STEP:
            run.step(payload, now)
        elif kind == _ARRIVE:
            if run.refused(payload):
                nxt = stream.after_finish(payload.arrival_s)
                if nxt is not None:
                    run.push(nxt.arrival_s, _ARRIVE, nxt)
                continue
            seq = Seq(payload)
            seq.replica = r = run.route(seq, 0)
            if run.specs[0].handoff:
                seq.stop_at = 1
            replicas[r].add(seq)
            run.wake(r, now)
        else:
            seq, src, dst = payload
            replicas[src].release(seq)
            seq.computed, seq.stop_at, seq.kv_ready_s = seq.input_len, seq.output_len, now
            if run.first_token_at_kv_ready:
                seq.first_token_s = seq.last_token_s = now
            replicas[dst].add(seq)
            run.wake(src, now)
            run.wake(dst, now)
    return _result(deployment, run, stream.total)


def _result(dep: Deployment, run: _Run, total: int) -> ServingResult:
    if len(run.done) + len(run.dropped) != total or any(r.pending() for r in run.replicas):
        raise RuntimeError("serving simulation stalled with requests unserved (a scheduler bug)")
    for r, spec in zip(run.replicas, (s for s in run.specs for _ in range(s.count)), strict=True):
        if isinstance(r, BudgetReplica) and r.free != spec.model.kv_blocks:
            raise RuntimeError("KV blocks leaked in the serving simulation (a scheduler bug)")
    records = sorted((_record(s) for s in run.done), key=lambda r: r.id)
    roles = tuple(spec.role for spec in run.specs for _ in range(spec.count))
    return ServingResult(dep, tuple(records), tuple(sorted(run.dropped, key=lambda r: r.id)),
                         tuple(run.iterations), tuple(run.itl), roles)


def _record(s: Seq) -> RequestRecord:
    req = s.req
    disagg = s.decode_replica >= 0
    return RequestRecord(req.id, req.arrival_s, req.input_len, req.output_len, s.scheduled_s, s.prefill_done_s,
                         s.first_token_s, s.finish_s, s.preemptions, s.replica, s.decode_replica if disagg else None,
                         s.kv_ready_s if disagg else None)
