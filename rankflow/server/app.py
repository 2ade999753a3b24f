"""The REST API (FastAPI): /v1/simulate, /v1/memory, /v1/trace, /v1/serve (+ /cheapest), /v1/search jobs, /v1/models,
/v1/hardware, /v1/health, the OpenAPI document at /docs, and the web page at /. Every route calls the same
library functions as the CLI and returns the same JSON documents; every error is the CLI's one line.

A new capability is a new route here calling its library function; nothing below changes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from graphgen.errors import RankflowError
from rankflow import catalog
from rankflow.server import work
from rankflow.server.body_limit import BodyLimit
from rankflow.server.inputs import (
    CheapestRequest,
    ScenarioRequest,
    SearchRequest,
    ServeRequest,
    SimulateRequest,
)
from rankflow.server.jobs import Busy, JobStore

STATIC = Path(__file__).resolve().parent / "static"
API_VERSION = "1.0"


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20       # a request body (pasted YAML included)
    request_timeout_s: float = 60.0     # one simulate/memory/trace/serve request
    max_concurrent: int = 4             # requests computing at once; more get 429
    max_jobs: int = 2                   # search jobs running at once; more get 429
    max_search_plans: int = 200_000     # candidates in one search job
    job_timeout_s: float = 600.0        # one search job's wall time
    # Worker processes per search job. 1 runs it in the server's own process: workers re-import the main
    # module of whatever embeds the app, which must then guard it; `rankflow server` does and uses every core.
    job_workers: int = 1


MAX_ERROR = 1000  # characters of an error line: a message echoes input, and input can be long


def _error(status: int, message: str) -> JSONResponse:
    # Shipped files are named from the install root, not by the server's absolute path.
    message = message.replace(f"{catalog.ROOT}/", "")
    if len(message) > MAX_ERROR:
        message = message[:MAX_ERROR] + "..."
    return JSONResponse({"error": message}, status_code=status)


def _validation_line(exc: RequestValidationError) -> str:
    """The first validation error as the CLI's one line: where, what, and the fix."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {msg} (fix: see /docs for the request schema)"


def _release(gate: asyncio.Semaphore, task: asyncio.Future) -> None:
    gate.release()
    if not task.cancelled():
        task.exception()  # retrieved: a late failure of an answered request is not an error to log


def create_app(limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    app = FastAPI(title="Rankflow", version=API_VERSION,
                  description="LLM training and serving performance simulator: step time, memory, plans, serving.")
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    jobs = JobStore(limits.max_jobs, max_seconds=limits.job_timeout_s)
    gate = asyncio.Semaphore(limits.max_concurrent)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_line(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        fix = "see /docs for the routes and their methods" if exc.status_code in (404, 405) else \
            "send a JSON body as /docs describes"
        return _error(exc.status_code, f"{exc.detail} (fix: {fix})")

    async def compute(fn: Callable[[], Any]) -> Response:
        if gate.locked():
            return _error(429, f"{limits.max_concurrent} requests are computing; retry shortly")
        await gate.acquire()
        task = asyncio.ensure_future(run_in_threadpool(fn))
        done, _ = await asyncio.wait({task}, timeout=limits.request_timeout_s)
        if not done:
            # The thread cannot be stopped: its slot stays taken until it ends, so the bound on
            # concurrent work holds even for requests already answered with 504.
            task.add_done_callback(lambda t: _release(gate, t))
            return _error(504, f"the request ran past the server's {limits.request_timeout_s:g} s limit "
                               "(fix: a smaller model, fewer microbatches, or the CLI)")
        gate.release()
        try:
            out = task.result()
        except RankflowError as exc:
            return _error(422, exc.one_line())
        except Exception as exc:  # noqa: BLE001 - a bug still answers in the error shape, without a traceback
            return _error(500, f"internal error: {type(exc).__name__}: {exc} (fix: report it with the request)")
        if isinstance(out, str):  # an already rendered document: byte-identical to the CLI's file
            return Response(out, media_type="application/json")
        return JSONResponse(out)

    _compute_routes(app, compute, limits)
    _search_routes(app, jobs, limits)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


def _compute_routes(app: FastAPI, compute: Callable[[Callable[[], Any]], Any], limits: Limits) -> None:
    @app.get("/v1/health")
    async def health() -> dict:
        return {"status": "ok", "api_version": API_VERSION}

    listings: dict[str, dict] = {}  # the shipped configs do not change while the server runs

    async def listing(kind: str) -> JSONResponse:
        # Outside the compute gate: the page needs the lists even while long requests hold every slot.
        if kind not in listings:
            listings[kind] = await run_in_threadpool(work.listing, kind)
        return JSONResponse(listings[kind])

    @app.get("/v1/models")
    async def models() -> Response:
        return await listing("models")

    @app.get("/v1/hardware")
    async def hardware() -> Response:
        return await listing("hardware")

    @app.post("/v1/simulate")
    async def simulate(req: SimulateRequest) -> Response:
        """One training step (or inference iteration): the document `run_perf.py --json` writes."""
        return await compute(lambda: work.simulate(req, limits.request_timeout_s))

    @app.post("/v1/memory")
    async def memory(req: ScenarioRequest) -> Response:
        """Per-GPU memory of every pipeline stage: the document `--memory-only --json` writes."""
        return await compute(lambda: work.memory(req))

    @app.post("/v1/trace")
    async def trace(req: ScenarioRequest) -> Response:
        """The Chrome/Perfetto trace of the step (one rank per pipeline stage), as `--trace` writes it."""
        return await compute(lambda: work.trace(req))

    @app.post("/v1/serve")
    async def serve(req: ServeRequest) -> Response:
        """A serving simulation (rate_per_s) or the highest rate meeting the SLO (capacity: true)."""
        return await compute(lambda: work.serve(req))

    @app.post("/v1/serve/cheapest")
    async def cheapest(req: CheapestRequest) -> Response:
        """The cheapest deployment (GPU type, plan, replicas) that serves rate_per_s within the SLO."""
        return await compute(lambda: work.cheapest(req))


def _search_routes(app: FastAPI, jobs: JobStore, limits: Limits) -> None:
    @app.post("/v1/search", status_code=202)
    async def submit(req: SearchRequest) -> JSONResponse:
        """Start a plan search; poll GET /v1/search/{id}, fetch /result, cancel with DELETE."""
        try:
            work.search_inputs(req)  # an unknown or path-like name is a 422 now, not a failed job later
        except RankflowError as exc:
            return _error(422, exc.one_line())
        try:
            job = jobs.submit("search", lambda progress: work.search(req, progress, limits.max_search_plans,
                                                                         limits.job_workers))
        except Busy as exc:
            return _error(429, f"{exc} (fix: wait for one to finish or cancel one)")
        return JSONResponse(job.status(), status_code=202)

    @app.get("/v1/search/{job_id}")
    async def status(job_id: str) -> JSONResponse:
        job = jobs.get(job_id)
        return JSONResponse(job.status()) if job else _error(404, f"no job '{job_id}'")

    @app.get("/v1/search/{job_id}/result")
    async def result(job_id: str) -> JSONResponse:
        job = jobs.get(job_id)
        if job is None:
            return _error(404, f"no job '{job_id}'")
        if job.state != "done":
            return _error(409, f"job '{job_id}' is {job.state}" + (f": {job.error}" if job.error else ""))
        return JSONResponse(job.result)

    @app.delete("/v1/search/{job_id}")
    async def cancel(job_id: str) -> JSONResponse:
        job = jobs.cancel(job_id)
        return JSONResponse(job.status()) if job else _error(404, f"no job '{job_id}'")

