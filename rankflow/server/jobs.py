"""Search jobs: submitted, polled with progress, fetched, cancelled. A bounded number run at once (each
in its own thread, evaluating serially, so a server never forks under its event loop); the rest are
refused with 429 rather than queued without limit. Finished jobs are kept up to a bound, oldest dropped."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from graphgen.errors import RankflowError


class Cancelled(Exception):
    """Raised inside a job's progress callback once the job is cancelled: it unwinds the search."""


class Busy(Exception):
    """Too many jobs running."""


@dataclass
class Job:
    id: str
    kind: str
    state: str = "queued"            # queued, running, done, failed, cancelled
    done: int = 0
    total: int = 0
    error: str | None = None
    result: dict[str, Any] | None = None
    started_s: float = field(default_factory=time.monotonic)
    ended_s: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def status(self) -> dict[str, Any]:
        progress = self.done / self.total if self.total else (1.0 if self.state == "done" else 0.0)
        return {"id": self.id, "kind": self.kind, "state": self.state, "plans_done": self.done,
                "plans_total": self.total, "progress": round(min(progress, 1.0), 4), "error": self.error,
                "elapsed_s": round((self.ended_s or time.monotonic()) - self.started_s, 3)}


Work = Callable[[Callable[[int, int], None]], dict[str, Any]]


class JobStore:
    def __init__(self, max_running: int = 2, max_kept: int = 64, max_seconds: float = 600.0) -> None:
        self.max_running, self.max_kept, self.max_seconds = max_running, max_kept, max_seconds
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def submit(self, kind: str, work: Work) -> Job:
        with self._lock:
            running = sum(j.state in ("queued", "running") for j in self._jobs.values())
            if running >= self.max_running:
                raise Busy(f"{running} jobs are running (the server's limit is {self.max_running})")
            job = Job(f"{kind}-{next(self._ids)}", kind)
            self._jobs[job.id] = job
            self._trim()
        threading.Thread(target=self._run, args=(job, work), daemon=True, name=job.id).start()
        return job

    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if j.state not in ("queued", "running")]
        for j in finished[:max(0, len(self._jobs) - self.max_kept)]:
            del self._jobs[j.id]

    def _run(self, job: Job, work: Work) -> None:
        def progress(done: int, total: int) -> None:
            job.done, job.total = max(job.done, done), max(job.total, total)
            if job.cancel.is_set():
                raise Cancelled
            if time.monotonic() - job.started_s > self.max_seconds:
                raise RankflowError(f"the search ran past the server's {self.max_seconds:g} s limit",
                                    field="gpus", fix="fix some dimensions (tp, pp) or search fewer GPU counts")
        if job.cancel.is_set():  # cancelled before its thread started
            return
        job.state = "running"
        try:
            job.result = work(progress)
            job.state = "done"
        except Cancelled:
            job.state = "cancelled"
        except RankflowError as exc:
            job.state, job.error = "failed", exc.one_line()
        except Exception as exc:  # noqa: BLE001 - a job's failure is reported through its status, not lost
            job.state, job.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            job.ended_s = time.monotonic()

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None:
            job.cancel.set()
            if job.state == "queued":
                job.state, job.ended_s = "cancelled", time.monotonic()
        return job
