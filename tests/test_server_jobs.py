"""Search jobs and the cheapest-deployment route through FastAPI's test client: progress, results equal to
the library's, cancellation and the bounds on what one job may take."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install -e '.[server]'")
pytest.importorskip("httpx", reason="the server extra is not installed: pip install -e '.[server]'")

from fastapi.testclient import TestClient  # noqa: E402

from rankflow import search, tool  # noqa: E402
from rankflow.catalog import hardware_path, model_path  # noqa: E402
from rankflow.server.app import Limits, create_app  # noqa: E402
from reports import search_out  # noqa: E402


def test_cheapest_deployment_matches_the_cli(tmp_path):
    client = TestClient(create_app())
    body = {"model": "llama3.1-8b", "hardware": ["h100", "a100"], "rate_per_s": 4, "tp": [1, 2], "requests": 120,
            "input_len": 512, "output_len": 128}
    got = client.post("/v1/serve/cheapest", json=body)
    assert got.status_code == 200
    out = tmp_path / "cheapest.json"
    assert tool.main(["serve", "--model", "llama3.1-8b", "--hardware", "h100", "a100", "--cheapest", "--rate", "4",
                     "--tp", "1,2", "--requests", "120", "--input-len", "512", "--output-len", "128",
                     "--json", str(out), "--quiet"]) == 0
    doc = got.json()
    assert doc == json.loads(out.read_text()) and doc["kind"] == "cheapest"
    assert doc["best"] == min((c for c in doc["candidates"] if c["slo_met"]),
                              key=lambda c: c["usd_per_million_output_tokens"])["label"]
    many = client.post("/v1/serve/cheapest", json={**body, "tp": [1, 2, 4, 8, 16, 32, 64], "pp": [1, 2, 4],
                                                    "ep": [1, 2, 4, 8]})
    assert many.status_code == 422 and "at most 64" in many.json()["error"]
    path = client.post("/v1/serve/cheapest", json={**body, "hardware": ["../etc/x.yaml"]})
    assert path.status_code == 422 and "names only" in path.json()["error"]
    # bounded in work too: options x requests, not just options
    heavy = client.post("/v1/serve/cheapest", json={**body, "tp": [1, 2, 4, 8], "requests": 2000})
    assert heavy.status_code == 422 and "more than one request may simulate" in heavy.json()["error"]
    chosen = client.post("/v1/serve/cheapest", json={**body, "set": ["parallelism.dp=4"]})
    assert chosen.status_code == 422 and "chooses parallelism.dp itself" in chosen.json()["error"]
    # a repeated name or size is the same option, evaluated once
    again = client.post("/v1/serve/cheapest", json={**body, "hardware": ["h100", "a100", "h100"], "tp": [1, 2, 2]})
    assert again.json() == doc


def _wait(client, job_id: str, timeout_s: float = 120) -> dict:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        status = client.get(f"/v1/search/{job_id}").json()
        if status["state"] not in ("queued", "running"):
            return status
        time.sleep(0.1)
    raise AssertionError("the search job did not finish")


def test_search_job_progress_result_and_cancel():
    client = TestClient(create_app(Limits(max_jobs=1, job_workers=2)))
    job = client.post("/v1/search", json={"model": "llama2-7b", "hardware": ["a100"], "gpus": [8], "top": 3})
    assert job.status_code == 202
    busy = client.post("/v1/search", json={"model": "llama2-7b", "hardware": ["a100"], "gpus": [8]})
    assert busy.status_code == 429
    early = client.get(f"/v1/search/{job.json()['id']}/result")
    status = _wait(client, job.json()["id"])
    assert early.status_code in (200, 409)
    assert status["state"] == "done" and status["plans_done"] == status["plans_total"] > 100
    doc = client.get(f"/v1/search/{job.json()['id']}/result").json()
    assert doc["schema"] == "rankflow.search" and len(doc["top"]) == 3 and doc["pareto"]
    # The job evaluates in worker processes (from a threaded server: fork server, not fork); the
    # records are the serial executor's, plan for plan.
    serial = search.search(model_path("llama2-7b"), [str(hardware_path("a100"))], [8], top=3, check=2,
                           executor="serial")
    assert doc == json.loads(json.dumps(search_out.to_dict(serial)))
    big = client.post("/v1/search", json={"model": "llama3.1-70b", "hardware": ["h100"], "gpus": [1024]}).json()
    client.delete(f"/v1/search/{big['id']}")
    assert _wait(client, big["id"])["state"] == "cancelled"
    assert client.get("/v1/search/nope").status_code == 404


def test_search_refuses_paths_and_huge_spaces():
    client = TestClient(create_app(Limits(max_search_plans=100)))
    job = client.post("/v1/search", json={"model": "llama2-7b", "hardware": ["a100"], "gpus": [64]}).json()
    status = _wait(client, job["id"])
    assert status["state"] == "failed" and "more than 100" in status["error"]
    got = client.post("/v1/search", json={"model": "/etc/passwd", "hardware": ["a100"], "gpus": [8]})
    assert got.status_code == 422 and "names only" in got.json()["error"]
    got = client.post("/v1/search", json={"model": "lama2-7b", "hardware": ["a100"], "gpus": [8]})
    assert got.status_code == 422 and got.json()["error"].startswith("model: no model named 'lama2-7b'")
    assert "llama2-7b" in got.json()["error"] and "file path" not in got.json()["error"]


def test_search_bounds_gpus_and_time():
    client = TestClient(create_app(Limits(job_timeout_s=1e-9)))
    for gpus in ([0], [-1], [10**30], [1_000_001]):
        assert client.post("/v1/search", json={"model": "llama2-7b", "hardware": ["a100"], "gpus": gpus}
                           ).status_code == 422
    job = client.post("/v1/search", json={"model": "llama2-7b", "hardware": ["a100"], "gpus": [8]}).json()
    status = _wait(client, job["id"])
    assert status["state"] == "failed" and "ran past" in status["error"]


def test_search_refuses_what_it_would_ignore_and_dedupes():
    client = TestClient(create_app())
    job = client.post("/v1/search", json={"model": "llama2-7b", "hardware": ["a100"], "gpus": [8],
                                          "set": ["parallelism.tp=2"]}).json()
    assert "the search chooses parallelism.tp itself" in _wait(client, job["id"])["error"]
    job = client.post("/v1/search", json={"model": "llama2-7b", "hardware": ["a100"], "gpus": [8], "tp": 3}).json()
    assert "no candidate plan" in _wait(client, job["id"])["error"]
    job = client.post("/v1/search", json={"model": "llama2-7b", "hardware": ["a100", "A100-SXM4-80GB"],
                                          "gpus": [8, 8], "top": 3}).json()
    assert _wait(client, job["id"])["state"] == "done"
    doc = client.get(f"/v1/search/{job['id']}/result").json()
    assert len(doc["spaces"]) == 1 and len({json.dumps(t["simulated"]["plan"]) for t in doc["top"]}) == 3


def test_a_job_cancelled_before_it_starts_stays_cancelled():
    from rankflow.server.jobs import JobStore

    store, started = JobStore(max_running=1), []
    job = store.submit("x", lambda progress: started.append(1) or {})
    store.cancel(job.id)
    time.sleep(0.2)
    assert store.get(job.id).state in ("cancelled", "done")
    assert store.get(job.id).state == "cancelled" or started  # it ran only if it started before the cancel
