"""The REST API through FastAPI's test client and a real uvicorn process: the same documents as the CLI,
the same one-line errors as 4xx, bounded bodies, requests and jobs, and names only (never paths)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install -e '.[server]'")
pytest.importorskip("httpx", reason="the server extra is not installed: pip install -e '.[server]'")

from fastapi.testclient import TestClient  # noqa: E402

from graphgen.errors import RankflowError  # noqa: E402
from rankflow import cli  # noqa: E402
from rankflow.server.app import Limits, create_app  # noqa: E402
from rankflow.server.launch import parser  # noqa: E402
from rankflow.server.launch import run as launch  # noqa: E402
from tests.helpers import ROOT  # noqa: E402

PLAN = {"model": "llama2-7b", "hardware": "a100", "parallelism": {"tp": 2, "pp": 2, "dp": 2}}


@pytest.fixture(scope="module")
def client():
    return TestClient(create_app())


def test_health_models_hardware(client):
    assert client.get("/v1/health").json()["status"] == "ok"
    models = client.get("/v1/models").json()["models"]
    assert len(models) >= 40 and any(r["name"] == "llama3.1-70b" for r in models)
    assert any(r["name"] == "H100-SXM5-80GB" for r in client.get("/v1/hardware").json()["hardware"])


def test_simulate_and_memory_are_the_cli_documents(client, tmp_path):
    out = tmp_path / "r.json"
    args = ["--model", "llama2-7b", "--hardware", "a100", "--set", "parallelism.dp=2", "--set", "parallelism.pp=2",
            "--set", "parallelism.tp=2", "--json", str(out), "--quiet"]
    assert cli.main(args) == 0
    got = client.post("/v1/simulate", json=PLAN)
    assert got.status_code == 200 and got.text == out.read_text()
    mem = tmp_path / "m.json"
    assert cli.main([*args[:-3], "--memory-only", "--json", str(mem), "--quiet"]) == 0
    assert client.post("/v1/memory", json=PLAN).text == mem.read_text()


def test_pasted_yaml_equals_the_shipped_names(client):
    model = (ROOT / "model_configs/llama2-7b.yaml").read_text()
    hardware = (ROOT / "hardware_configs/A100-SXM4-80GB.yaml").read_text()
    pasted = client.post("/v1/simulate", json={"model_yaml": model, "hardware_yaml": hardware,
                                               "parallelism": PLAN["parallelism"]})
    assert pasted.json()["step_time_s"] == client.post("/v1/simulate", json=PLAN).json()["step_time_s"]


@pytest.mark.parametrize("body, status, words", [
    ({**PLAN, "model": "lama2-7b"}, 422, ["no model named 'lama2-7b'", "llama2-7b"]),
    ({**PLAN, "model": "/etc/passwd"}, 422, ["the server takes names only"]),
    ({**PLAN, "model": "model_configs/llama2-7b.yaml"}, 422, ["the server takes names only"]),
    ({**PLAN, "parallelism": {"tp": 3, "dp": 1}}, 422, ["parallelism.tp", "does not divide"]),
    ({**PLAN, "parallelism": {"tp": True}}, 422, ["parallelism.tp"]),
    ({**PLAN, "bogus": 1}, 422, ["bogus"]),
    ({"hardware": "a100"}, 422, ["exactly one of 'model' and 'model_yaml'"]),
    ({**PLAN, "set": ["model.layers=1e400"]}, 422, ["model.layers"]),
    ({"model_yaml": "model: [1, 2", "hardware": "a100"}, 422, ["<model_yaml>", "cannot parse"]),
])
def test_bad_requests_get_one_line(client, body, status, words):
    got = client.post("/v1/simulate", json=body)
    assert got.status_code == status
    error = got.json()["error"]
    assert "\n" not in error and all(w in error for w in words), error


def test_bodies_are_bounded():
    small = TestClient(create_app(Limits(max_body_bytes=1000)))
    got = small.post("/v1/simulate", json={**PLAN, "set": ["workload.seq_len=4096"] * 60})
    assert got.status_code == 413 and "larger than 1,000 bytes" in got.json()["error"]


def test_work_is_bounded_in_time():
    hasty = TestClient(create_app(Limits(request_timeout_s=0.001)))
    got = hasty.post("/v1/trace", json={"model": "llama3.1-70b", "hardware": "h100",
                                        "parallelism": {"tp": 8, "pp": 4, "dp": 2}})
    assert got.status_code == 504 and "limit" in got.json()["error"]


def test_trace_is_a_chrome_trace(client):
    got = client.post("/v1/trace", json=PLAN)
    events = got.json()["traceEvents"]
    assert any(e.get("ph") == "X" for e in events)


def test_serve_endpoint(client):
    body = {"model": "llama3.1-8b", "hardware": "h100", "requests": 200, "input_len": 512, "output_len": 128}
    sim = client.post("/v1/serve", json={**body, "rate_per_s": 2}).json()
    assert sim["schema"] == "rankflow.serving" and sim["kind"] == "simulation"
    cap = client.post("/v1/serve", json={**body, "capacity": True}).json()
    assert cap["kind"] == "capacity" and cap["rate_per_s"] > 0
    both = client.post("/v1/serve", json={**body, "capacity": True, "rate_per_s": 1})
    assert both.status_code == 422 and "not both" in both.json()["error"]
    big = client.post("/v1/serve", json={**body, "capacity": True, "requests": 20000})  # fine as a simulation
    assert big.status_code == 422 and "once per probe" in big.json()["error"]


def test_launcher_binds_loopback_by_default():
    assert parser().parse_args([]).host == "127.0.0.1"
    with pytest.raises(RankflowError, match="port"):
        launch(["--port", "70000"])


def test_a_taken_port_is_refused_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RankflowError, match=f"cannot listen on 127.0.0.1:{port}"):
            launch(["--port", str(port)])
    with pytest.raises(RankflowError, match="--host/--port"):
        launch(["--host", "no-such-host.invalid", "--port", "8000"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """A real `rankflow server` process on a free loopback port."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rankflow", "server", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(200):
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError(proc.stderr.read().decode())
    yield url
    proc.terminate()
    proc.wait(10)


def test_real_server_docs_and_simulate(server):
    import httpx

    assert "swagger" in httpx.get(f"{server}/docs").text.lower()
    spec = httpx.get(f"{server}/openapi.json").json()
    for path in ("/v1/simulate", "/v1/memory", "/v1/serve", "/v1/search", "/v1/search/{job_id}", "/v1/models"):
        assert path in spec["paths"]
    got = httpx.post(f"{server}/v1/simulate", json=PLAN, timeout=60)
    assert got.status_code == 200 and json.loads(got.text)["gpus"] == 8
    assert "<title>Rankflow</title>" in httpx.get(f"{server}/").text


def _browser() -> str | None:
    import shutil

    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _page(browser: str, url: str) -> str:
    """The page's DOM after its scripts ran, as headless Chromium renders it."""
    # Virtual time runs the page's polling timers instantly; a generous budget outlasts a small search.
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=900000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return out.stdout


def _shown(dom: str, element: str) -> tuple[float, str]:
    import re

    m = re.search(rf'id="{element}"[^>]*data-value="([^"]+)"[^>]*>([^<]*)<', dom)
    assert m, f"#{element} not rendered"
    return float(m.group(1)), m.group(2)


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium (Debian: apt-get install chromium)")
def test_page_in_a_real_browser_shows_the_api_numbers(server):
    from urllib.parse import urlencode

    import httpx

    browser = _browser()
    inputs = {"model": "llama3.1-8b", "hardware": "H100-SXM5-80GB", "tp": "2", "pp": "2", "dp": "2",
              "recompute": "selective", "global_batch": "64", "run": "1"}
    dom = _page(browser, f"{server}/?{urlencode(inputs)}")
    assert 'data-ready="1"' in dom
    api = httpx.post(f"{server}/v1/simulate", timeout=60, json={
        "model": "llama3.1-8b", "hardware": "H100-SXM5-80GB", "set": ["workload.global_batch=64"],
        "parallelism": {"tp": 2, "pp": 2, "dp": 2, "cp": 1, "ep": 1, "zero_stage": 1, "recompute": "selective",
                        "schedule": "1f1b", "virtual_stages": 1, "sp": False}}).json()
    step, text = _shown(dom, "step-time")
    assert step == pytest.approx(api["step_time_s"], rel=1e-12) and text == f"{api['step_time_s']:.4f} s"
    assert _shown(dom, "tokens-per-s")[0] == pytest.approx(api["throughput"]["tokens_per_s"], rel=1e-12)
    assert _shown(dom, "mfu")[1] == f"{100 * api['flops']['mfu']:.1f} %"
    peak = max(r["total_gib"] for r in api["memory"]["roles"])
    assert _shown(dom, "peak-mem")[0] == pytest.approx(peak, rel=1e-12)
    assert dom.count("<rect") > 10  # the breakdown and memory charts were drawn
    assert "share this run" in dom and "run=1" in dom  # the share link encodes the inputs


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium (Debian: apt-get install chromium)")
def test_page_shows_the_one_line_error(server):
    from urllib.parse import urlencode

    dom = _page(_browser(), f"{server}/?{urlencode({'model': 'llama2-7b', 'hardware': 'a100', 'tp': '3', 'run': '1'})}")
    assert 'class="error"' in dom and "does not divide" in dom


# Regressions from a hostile review: each was a 500, an unbounded job, a wrong status or a leak.

def test_names_decided_without_the_file_system(client):
    for name in ("x" * 300, "pyproject.toml.txt", "catalog", "README.md", "a\0b"):
        error = client.post("/v1/simulate", json={**PLAN, "model": name}).json()["error"]
        assert "no model named" in error or "is a path" in error
        assert len(error) < 400
    assert "is a path" in client.post("/v1/simulate", json={**PLAN, "hardware": "../a100"}).json()["error"]


def test_errors_name_shipped_files_from_the_install_root(client):
    error = client.post("/v1/simulate", json={**PLAN, "parallelism": {"tp": 0}}).json()["error"]
    assert str(ROOT) not in error and "hardware_configs/A100-SXM4-80GB.yaml" in error


def test_plan_values_keep_their_json_types(client):
    got = client.post("/v1/simulate", json={**PLAN, "parallelism": {"tp": "2", "dp": 4}})
    assert got.status_code == 422 and "parallelism.tp" in got.json()["error"]


def test_serve_refuses_training_and_zero_lengths(client):
    body = {"model": "llama3.1-8b", "hardware": "h100", "rate_per_s": 5}
    got = client.post("/v1/serve", json={**body, "set": ["workload.run_type=training"]})
    assert got.status_code == 422 and "workload.run_type" in got.json()["error"]
    assert client.post("/v1/serve", json={**body, "input_len": 0}).status_code == 422
    long = client.post("/v1/serve", json={**body, "input_len": "x" * 10_000}).json()["error"]
    assert len(long) < 300


def test_chunked_and_malformed_bodies_get_the_error_shape():
    small = TestClient(create_app(Limits(max_body_bytes=1000)))
    chunks = (b'{"model": "' + b"x" * 400 for _ in range(5))
    got = small.post("/v1/simulate", content=chunks, headers={"content-type": "application/json"})
    assert got.status_code == 413 and "error" in got.json()
    bad = small.post("/v1/simulate", content=b"[" * 500, headers={"content-type": "application/json"})
    assert 400 <= bad.status_code < 500 and set(bad.json()) == {"error"}


def test_a_timed_out_request_keeps_its_slot_until_it_ends():
    slow = {"model": "llama3.1-8b", "hardware": "h100", "capacity": True, "requests": 300}  # seconds of work
    with TestClient(create_app(Limits(request_timeout_s=0.05, max_concurrent=1))) as client:  # one event loop
        assert client.post("/v1/serve", json=slow).status_code == 504
        assert client.post("/v1/simulate", json=PLAN).status_code == 429
        end, status = time.monotonic() + 120, 429
        while status == 429 and time.monotonic() < end:
            time.sleep(0.2)
            status = client.get("/v1/models").status_code
        assert status in (200, 504)  # the slot came back once the work ended


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium (Debian: apt-get install chromium)")
def test_page_search_front_and_pasted_yaml(server):
    import re
    from urllib.parse import urlencode

    import httpx

    dom = _page(_browser(), f"{server}/?{urlencode({'model': 'llama2-7b', 'hardware': 'A100-SXM4-80GB', 'search': '1', 'gpus': '8'})}")
    assert "done: " in dom and "<circle" in dom
    job = httpx.post(f"{server}/v1/search", json={"model": "llama2-7b", "hardware": ["A100-SXM4-80GB"], "gpus": [8],
                                                  "set": []}).json()
    while httpx.get(f"{server}/v1/search/{job['id']}").json()["state"] in ("queued", "running"):
        time.sleep(0.2)
    doc = httpx.get(f"{server}/v1/search/{job['id']}/result").json()
    best = float(re.search(r'data-best="([^"]+)"', dom).group(1))
    assert best == pytest.approx(doc["top"][0]["simulated"]["step_time_s"], rel=1e-12)
    assert int(re.search(r'data-plans="(\d+)"', dom).group(1)) == len(doc["pareto"])
    pasted = {"model_yaml": (ROOT / "model_configs/llama2-7b.yaml").read_text(),
              "hardware_yaml": (ROOT / "hardware_configs/A100-SXM4-80GB.yaml").read_text(), "dp": "8", "run": "1"}
    step = _shown(_page(_browser(), f"{server}/?{urlencode(pasted)}"), "step-time")[0]
    by_name = httpx.post(f"{server}/v1/simulate", timeout=60, json={"model": "llama2-7b", "hardware": "a100",
                                                                    "parallelism": {"dp": 8, "sp": False}}).json()
    assert step == pytest.approx(by_name["step_time_s"], rel=1e-12)


def test_a_bug_answers_in_the_error_shape(monkeypatch):
    from rankflow.server import work

    def broken(req):
        raise ZeroDivisionError("oops")
    monkeypatch.setattr(work, "memory", broken)
    got = TestClient(create_app()).post("/v1/memory", json=PLAN)
    assert got.status_code == 500 and got.json() == {
        "error": "internal error: ZeroDivisionError: oops (fix: report it with the request)"}


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium (Debian: apt-get install chromium)")
def test_page_serving_matches_the_api(server):
    import re
    from urllib.parse import urlencode

    import httpx

    inputs = {"model": "llama3.1-8b", "hardware": "H100-SXM5-80GB", "tp": "1", "serve": "1", "rate": "4",
              "requests": "200", "input_len": "512", "output_len": "128"}
    dom = _page(_browser(), f"{server}/?{urlencode(inputs)}")
    shown = float(re.search(r'data-ttft-p90="([^"]+)"', dom).group(1))
    api = httpx.post(f"{server}/v1/serve", timeout=60, json={
        "model": "llama3.1-8b", "hardware": "H100-SXM5-80GB", "parallelism": {"tp": 1, "pp": 1, "ep": 1}, "set": [],
        "rate_per_s": 4, "requests": 200, "input_len": "512", "output_len": "128", "scheduler": "continuous",
        "slo_ttft_s": 2, "slo_tpot_s": 0.2}).json()
    assert shown == pytest.approx(api["latency"]["ttft_s"]["p90"], rel=1e-12)
    assert "SLO met" in dom and "output tokens/s" in dom


def test_lists_answer_while_every_compute_slot_is_taken():
    client = TestClient(create_app(Limits(max_concurrent=0)))
    assert client.post("/v1/simulate", json=PLAN).status_code == 429
    assert client.get("/v1/models").status_code == 200 and client.get("/v1/hardware").status_code == 200


def test_traces_too_big_for_a_request_are_refused():
    got = TestClient(create_app()).post("/v1/trace", json={
        "model": "llama3.1-405b", "hardware": "h100", "parallelism": {"tp": 8, "pp": 16, "dp": 16},
        "set": ["workload.global_batch=131072"]})
    assert got.status_code == 422 and "run_perf.py --trace" in got.json()["error"]


def test_unknown_routes_say_where_the_routes_are(client):
    got = client.get("/v1/nope")
    assert got.status_code == 404 and "see /docs for the routes" in got.json()["error"]


def test_a_client_cannot_make_the_server_run_a_program_of_its_choosing(client, tmp_path, monkeypatch):
    # execution_backend.astra.binary from a client ran that file (a search job ran /bin/sh): refuse it in
    # `set`, in a config mapping and in pasted YAML, on every route that takes them.
    ran = tmp_path / "ran"
    prog = tmp_path / "astra.sh"
    prog.write_text(f"#!/bin/sh\ntouch {ran}\n")
    prog.chmod(0o755)
    sets = ["execution_backend.model=astra", f"execution_backend.astra.binary={prog}"]
    import yaml

    hw_map = yaml.safe_load((ROOT / "hardware_configs" / "A100-SXM4-80GB.yaml").read_text())
    hw_map["execution_backend"] = {"model": "astra", "astra": {"binary": str(prog)}}
    hw = yaml.safe_dump(hw_map)
    bodies = [("/v1/simulate", {**PLAN, "set": sets}), ("/v1/simulate", {"model": "llama2-7b", "hardware_yaml": hw}),
              ("/v1/memory", {"model": "llama2-7b", "hardware": hw_map}),
              ("/v1/serve", {"model": "llama3.1-8b", "hardware_yaml": hw, "rate_per_s": 1, "requests": 10}),
              ("/v1/serve/cheapest", {"model": "llama3.1-8b", "hardware": ["h100"], "rate_per_s": 1, "tp": [1],
                                      "requests": 10, "set": ["execution_backend.astra={binary: /bin/sh}"]}),
              ("/v1/search", {"model": "llama2-7b", "hardware": ["a100"], "gpus": [8], "set": sets})]
    for route, body in bodies:
        got = client.post(route, json=body)
        assert got.status_code == 422 and "execution_backend.astra.binary" in got.json()["error"], (route, got.text)
    assert not ran.exists()


def test_a_client_cannot_hold_a_compute_slot_with_a_long_astra_run(client):
    # An ASTRA-sim run keeps its thread (and slot) after a 504: its time limit is the server's, not the client's.
    from rankflow import api
    from rankflow.server.inputs import as_served

    got = client.post("/v1/simulate", json={**PLAN, "set": ["execution_backend.astra.timeout_s=86400"]})
    assert got.status_code == 422 and "execution_backend.astra.timeout_s" in got.json()["error"]
    sc = api.load_scenario(ROOT / "model_configs" / "llama2-7b.yaml",
                           api.load_hardware(ROOT / "hardware_configs" / "A100-SXM4-80GB.yaml"),
                           overrides=["execution_backend.astra.timeout_s=86400"])  # as a pasted hardware YAML may say
    assert as_served(sc, 60.0).execution.astra.timeout_s == 60.0
    assert as_served(sc).execution.astra.timeout_s == 86400
