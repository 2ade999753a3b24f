"""The validation harness on small CSVs shipped with the tests, and on ../shared when it exists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.validate import Row, attention_kernel, summarize, validate
from tests.helpers import ROOT

SAMPLE = ROOT / "tests" / "data" / "validation" / "training_sample.csv"
SHARED = ROOT.parent / "shared" / "validation"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/validation is not beside this checkout")


def test_rows_are_predicted_or_skipped_with_a_reason():
    rows = {r.id: r for r in validate(SAMPLE)}
    assert rows["T1-tps"].predicted > 0 and rows["T1-mfu"].predicted > 0
    # MFU under llm-foundry's own convention follows the predicted throughput exactly.
    assert rows["T1-mfu"].definition == "llmfoundry"
    assert rows["T2-moe"].predicted > 0  # a MoE model the catalogue knows (benchmarks/model_catalogue.yaml)
    assert rows["T4-moe-unknown"].skipped.startswith("MoE model not in")
    assert rows["T3-nogb"].skipped == "global_batch not stated"


def test_llm_foundry_attention_kernel_follows_the_table_that_ran_it():
    big = 'mosaicml/llm-foundry README "## H100 80GB BF16 (Large Scale, >= 128 GPUs)"'
    small = 'mosaicml/llm-foundry README "## H100 80GB BF16"'
    assert attention_kernel({"source": big, "model": "MPT-7b"}) is None  # flash-attn 2.4.2: the default curve
    assert attention_kernel({"source": big, "model": "MPT-13b"}) == "triton"
    assert attention_kernel({"source": small, "model": "MPT-7b"}) == "triton"
    assert attention_kernel({"source": "NVIDIA NeMo", "model": "Llama"}) is None


def test_summary_counts_errors_and_verdicts():
    rows = [Row("a", "s", "step_time_s", 1.0, 1.1, None), Row("b", "s", "step_time_s", 2.0, 1.8, None),
            Row("c", "s", "oom", True, True, None), Row("d", "s", "oom", False, True, None),
            Row("e", "s", "step_time_s", 1.0, None, "why")]
    s = summarize(rows)
    assert s["overall"]["mape_pct"] == pytest.approx(10.0)
    assert s["verdicts"]["oom"] == {"rows": 2, "accuracy_pct": 50.0}
    assert s["skipped"] == {"rows": 1, "reasons": {"why": 1}}


def test_cli_json_layout(tmp_path):
    out = tmp_path / "v.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.validate", str(SAMPLE), "--json", str(out), "--quiet"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert {"id", "metric", "measured", "predicted", "error_pct", "skipped"} <= set(doc["rows"][0])
    assert "MAPE" in p.stdout and "skipped" in p.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmarks.validate", str(tmp_path / "none.csv")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not found" in bad.stderr


@needs_shared
def test_zero_table_rows_of_the_shared_memory_csv():
    from benchmarks.validate_memory import validate as validate_memory

    rows = [r for r in validate_memory(SHARED / "memory.csv") if r.id.startswith("ZERO")]
    assert len(rows) == 18
    for r in rows:
        digits = len(str(r.measured).split(".")[1]) if "." in str(r.measured) else 0
        assert abs(r.predicted - r.measured) <= 0.5 * 10**-digits + 1e-9, r.id


@needs_shared
def test_shared_training_csv_parses_every_row():
    rows = validate(SHARED / "training.csv")
    assert len(rows) == sum(1 for _ in (SHARED / "training.csv").open()) - 1
    assert all(r.predicted is not None or r.skipped for r in rows)


def test_sample_files_exist():
    assert Path(SAMPLE).exists()


def test_framework_profiles_apply_to_their_rows_and_name_valid_plan_fields():
    from benchmarks.validate import framework_overrides, load_frameworks
    from graphgen.config import ParallelPlan

    profiles = load_frameworks()
    assert profiles and all(p.get("source") for p in profiles.values())
    row = {"source": "Narayanan et al. 2021 ... Table 2", "notes": "ZeRO-3 via DeepSpeed, no model parallelism"}
    sets = framework_overrides(row, profiles)
    assert ("parallelism.zero3_gather_gbs", 18.6) in sets
    # Every field a profile sets is a real plan field with a valid value.
    plan = ParallelPlan.model_validate({"zero_stage": 3, **{k.split(".", 1)[1]: v for k, v in sets}})
    assert plan.zero3_regather_after_recompute
    assert framework_overrides({"source": "Narayanan et al. 2021 Table 1", "notes": "PTD-P"}, profiles) == []


def test_composer_mixed_precision_sets_the_gradient_reduce_dtype():
    from benchmarks.validate import grad_reduce_dtype

    src = "mosaicml/llm-foundry scripts/train/benchmarking/README.md"
    assert grad_reduce_dtype({"source": src, "notes": "precision amp_bf16 (DEFAULT); grad accum 1"}) == "fp32"
    assert grad_reduce_dtype({"source": src, "notes": "precision bf16 (PURE); grad accum 4"}) == "bf16"
    assert grad_reduce_dtype({"source": "Narayanan et al. 2021", "notes": ""}) == "fp32"


def test_llm_foundry_mpt_mapping_reproduces_its_parameter_count():
    # The benchmark MPTs keep MPTConfig's defaults: biases on (no_bias=False), a learned position
    # table of max_seq_len rows, tied embeddings. README NumParams for MPT-7b at 2048 tokens: 6658859008.
    from benchmarks.validate import _architecture
    from graphgen.config import ModelSpec
    from graphgen.model.flops import total_params

    row = {"model": "MPT-7b", "layers": "32", "hidden": "4096", "heads": "32", "kv_heads": "32",
           "ffn_hidden": "16384", "vocab": "50368", "seq_len": "2048"}
    assert total_params(ModelSpec(**_architecture(row, {}))) == 6658859008
