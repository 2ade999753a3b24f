"""The serving validation harness: each kind of run (offline, batch, closed loop) on small CSVs written
here in the published files' layouts, and every row of ../shared's serving files when it exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.validate_inference import source_of, validate
from tests.helpers import ROOT

SHARED = ROOT.parent / "shared" / "validation"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/validation is not beside this checkout")


def _csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_batch_runs_predict_throughput_and_honour_exclusions(tmp_path):
    f = _csv(tmp_path / "koyeb_a100_sxm_llama3.1-8b.csv",
             "token_shape_group,prefill_len,decode_len,batch_size,total_decode_time_s,expected_agg_tokens_per_s",
             "small,1484,512,1,6.5,78.77", "small,1487,512,8,6.79,603.29", "large,6000,1000,32,1,1")
    rows = validate(f, source_of(f))
    assert [r.metric for r in rows] == ["tokens_per_s", "tokens_per_s"]  # the excluded PCIe row is gone
    one, eight = (r.predicted for r in rows)
    # decode at batch 1 streams the weights once per token: 16 GB at about 2 TB/s
    assert 50 < one < 130
    assert 5 * one < eight < 8 * one  # batching amortises the weights, not perfectly (KV reads grow)
    assert rows[0].source == "koyeb" and rows[0].definition == "vllm"


def test_offline_rows_read_the_long_layout(tmp_path):
    f = _csv(tmp_path / "inference.csv",
             "id,model,gpu,num_gpus,tp,pp,batch,input_len,output_len,precision,framework,metric,value,source,notes",
             "A,Llama 3.1 8B,H100-SXM,1,1,1,max,128,128,FP8,trt,tokens_per_s,28312,s,n",
             "B,Llama 3.1 8B,H100-SXM,1,1,1,max,128,2048,FP8,trt,tokens_per_s,22714,s,n",
             "C,Llama 3.1 8B,H100-SXM,1,1,1,max,128,128,FP8,trt,ttft_ms,10,s,n")
    rows = {r.id: r for r in validate(f, source_of(f))}
    assert rows["A-tokens_per_s"].predicted > rows["B-tokens_per_s"].predicted > 1000
    assert "not predicted" in rows["C-ttft_ms"].skipped


def test_closed_loop_latencies_grow_with_concurrency(tmp_path):
    f = _csv(tmp_path / "nim_llama3.3_70b_8xa100_bf16.csv",
             "Input Tokens,Output Tokens,Concurrency,TTFT (ms),ITL (ms),Throughput (Tokens/s)",
             "200,200,1,47.73,18.11,54.77", "200,200,25,135.15,19.63,247.48")
    rows = validate(f, source_of(f))
    by = {(r.id.split("-")[1], r.metric): r.predicted for r in rows}
    assert by[("1", "ttft_ms")] > by[("0", "ttft_ms")] > 0
    assert by[("1", "itl_ms")] > by[("0", "itl_ms")] > 5
    assert by[("1", "tokens_per_s")] > 10 * by[("0", "tokens_per_s")]


def test_the_cli_routes_serving_files_and_refuses_unknown_layouts(tmp_path):
    f = _csv(tmp_path / "nemo_llama2_inference_h100.csv", "device,model,TP,actual", "H100,Llama 2-7B,1,1.44")
    p = subprocess.run([sys.executable, "-m", "benchmarks.validate", str(f)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "latency_s" in p.stdout and "nemo-inference" in p.stdout
    odd = _csv(tmp_path / "odd.csv", "a,b", "1,2")
    p = subprocess.run([sys.executable, "-m", "benchmarks.validate", str(odd)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "serving_sources.yaml" in p.stderr


@needs_shared
@pytest.mark.parametrize("name", ["rapid-llm/koyeb_a100_sxm_llama3.1-8b.csv", "rapid-llm/nemo_llama2_inference_a100.csv",
                                  "rapid-llm/nim_llama3.3_70b_8xa100_bf16.csv"])
def test_every_shared_serving_row_is_predicted(name):
    path = SHARED / name
    rows = validate(path, source_of(path))
    assert rows and all(r.predicted is not None and r.predicted > 0 for r in rows), [r.skipped for r in rows]
