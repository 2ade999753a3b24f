"""Where a search's batches of candidate plans are evaluated: in this process, in a pool of local
processes (both cores by default), or on a Ray cluster. Every executor returns the same records in
the same order; only the wall time differs."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from backends.base import Result
from graphgen.errors import RankflowError
from graphgen.scenario import Scenario
from graphgen.search.evaluate import PlanRecord, evaluate_batch

Batch = tuple[Scenario, list[tuple[int, dict]], float]  # base scenario, (index, candidate)s, headroom GiB

# Per worker process: the first copy of each base scenario it was sent, with the caches (lowered
# templates, layer graphs) its batches share. A pool unpickles a fresh copy of the base with every
# batch, and those caches are keyed by object identity, so an equal base must map back to the first
# copy or every batch would start cold. Only the last few bases are kept.
_BASES: dict[str, tuple[Scenario, dict]] = {}
_KEEP = 2


def _work(batch: Batch) -> list[PlanRecord]:
    base, items, headroom = batch
    key = repr(base)
    got = _BASES.get(key)
    if got is None:
        while len(_BASES) >= _KEEP:
            _BASES.pop(next(iter(_BASES)))
        got = _BASES[key] = (base, {})
    return evaluate_batch(got[0], items, headroom, got[1])


def run_serial(batches: list[Batch], progress: Callable[[int], None]) -> Iterator[list[PlanRecord]]:
    caches: dict = {}
    for base, items, headroom in batches:
        out = evaluate_batch(base, items, headroom, caches.setdefault(id(base.model), {}))
        progress(len(out))
        yield out


def _start_method() -> str:
    """fork starts fastest and shares what this process imported, but forking a process that runs other
    threads (a server) can copy a lock some thread holds and deadlock the child: then the workers come
    from a fresh fork server (or spawn), which re-import the caller's main module (guard it)."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


POLL_S = 0.5  # how often a caller's progress hook runs while a batch is out (to cancel or time out)


def run_local(batches: list[Batch], progress: Callable[[int], None], workers: int | None = None
              ) -> Iterator[list[PlanRecord]]:
    """A pool of worker processes (default: every core), results in batch order. A worker that dies
    (killed, out of memory) fails the search instead of leaving it waiting, and a caller's hook that
    raises stops the workers at once."""
    n = workers or os.cpu_count() or 1
    if n <= 1 or len(batches) <= 1:
        yield from run_serial(batches, progress)
        return
    for out in _pooled(_work, batches, n, progress):
        progress(len(out))
        yield out


def simulate_all(scenarios: list[Scenario], workers: int | None, tick: Callable[[], None] | None) -> list[Result]:
    """Full simulations of several plans (a search's top plans and its check sample) on a pool of local
    processes, in order; `tick` runs before each result is taken (a server job's cancel and time limit)."""
    from rankflow import api

    hook = (lambda _n: tick()) if tick is not None else (lambda _n: None)
    n = workers or os.cpu_count() or 1
    if n <= 1 or len(scenarios) <= 1:
        out = []
        for sc in scenarios:
            hook(0)
            out.append(api.simulate(sc))
        return out
    results = []
    for res in _pooled(api.simulate, scenarios, n, hook):
        hook(0)
        results.append(res)
    return results


def _pooled(fn: Callable, items: list, n: int, progress: Callable[[int], None]) -> Iterator:
    """fn over items on n worker processes, results in order."""
    pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context(_start_method()))
    done = False
    try:
        for fut in [pool.submit(fn, x) for x in items]:
            yield _result(fut, progress)
        done = True
    except BrokenProcessPool:
        raise RankflowError("a worker process of the search died (killed, or out of memory)", field="--workers",
                            fix="run it again with --workers 1, or search fewer GPU counts at once") from None
    finally:
        if not done:  # a task still running would otherwise finish before its worker exits
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                if proc.is_alive():
                    proc.terminate()
        # Joined, not left behind: its manager thread would make the next pool fork a threaded process.
        pool.shutdown(wait=True, cancel_futures=True)


def _result(fut: Future, progress: Callable[[int], None]):
    while True:
        try:
            return fut.result(timeout=POLL_S)
        except TimeoutError:
            progress(0)  # nothing new: the hook may still cancel or run out of time


def run_ray(batches: list[Batch], progress: Callable[[int], None], address: str | None = None
            ) -> Iterator[list[PlanRecord]]:
    """The same batches as Ray tasks: a local Ray instance by default, or the cluster at `address`."""
    try:
        import ray
    except ImportError:
        raise RankflowError("Ray is not installed", field="--executor",
                            fix="pip install -e '.[ray]', or use --executor local") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    task = ray.remote(_work)
    refs = [task.remote(b) for b in batches]
    for ref in refs:  # in batch order: the results do not depend on which task finishes first
        out = ray.get(ref)
        progress(len(out))
        yield out


EXECUTORS = {"serial": run_serial, "local": run_local, "ray": run_ray}
