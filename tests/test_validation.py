"""The validation harness on small CSVs shipped with the tests, and on ../shared when it exists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.validate import Row, row_scenario, row_source, summarize, validate
from tests.helpers import ROOT

SAMPLE = ROOT / "tests" / "data" / "validation" / "training_sample.csv"
SHARED = ROOT.parent / "shared" / "validation"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/validation is not beside this checkout")


def test_rows_are_predicted_or_skipped_with_a_reason():
    rows = {r.id: r for r in validate(SAMPLE)}
    assert rows["T1-tps"].predicted > 0 and rows["T1-mfu"].predicted > 0
    # MFU under llm-foundry's own convention follows the predicted throughput exactly.
    assert rows["T1-mfu"].convention == "llmfoundry" and rows["T1-mfu"].definition.startswith("composer")
    assert rows["T2-moe"].predicted > 0  # a MoE model the catalogue knows (benchmarks/model_catalogue.yaml)
    assert rows["T4-moe-unknown"].skipped.startswith("MoE model not in")
    assert rows["T3-nogb"].skipped == "global_batch not stated"


ROW = {"id": "x", "model": "MPT-7b", "layers": "32", "hidden": "4096", "heads": "32", "kv_heads": "32",
       "ffn_hidden": "16384", "vocab": "50368", "seq_len": "2048", "gpu": "H100-80GB", "num_gpus": "8", "tp": "1",
       "pp": "1", "dp": "8", "cp": "", "ep": "", "vpp": "", "zero_stage": "3", "recompute": "none",
       "sequence_parallel": "", "global_batch": "64", "micro_batch": "1", "notes": "", "params_b": ""}


def test_llm_foundry_attention_kernel_follows_the_table_that_ran_it():
    """From sources.yaml and the composer profile alone: the triton kernel, except where the large-scale
    table's sweep ran flash-attn 2."""
    big = 'mosaicml/llm-foundry README "## H100 80GB BF16 (Large Scale, >= 128 GPUs)"'
    small = 'mosaicml/llm-foundry README "## H100 80GB BF16"'
    kernel = {(src, m): row_scenario({**ROW, "source": src, "model": m}, {}).workload.attention_kernel
              for src in (big, small) for m in ("MPT-7b", "MPT-13b")}
    assert kernel[(big, "MPT-7b")] is None and kernel[(big, "MPT-13b")] == "triton"
    assert kernel[(small, "MPT-7b")] == "triton"
    assert row_source({"source": "NVIDIA/NeMo docs", "notes": "", "model": "Llama"})["framework"] == "nemo"


def test_an_interleaved_run_without_its_chunk_count_gets_one_megatron_could_build():
    # 2 chunks when they divide the stage's layers; else the fewest that do (3 layers per stage: 3 chunks)
    row = {**ROW, "source": "Someone's paper", "model": "GPT-x", "num_gpus": "16", "dp": "1",
           "zero_stage": "0", "notes": "interleaved 1F1B", "global_batch": "64"}
    got = {}
    for pp, layers in ((4, "32"), (4, "12"), (8, "40")):
        plan = row_scenario({**row, "pp": str(pp), "tp": str(16 // pp), "layers": layers}, {}).plan
        got[(pp, layers)] = (plan.schedule, plan.virtual_stages)
    assert got == {(4, "32"): ("interleaved", 2), (4, "12"): ("interleaved", 3), (8, "40"): ("interleaved", 5)}


def test_an_unseen_source_runs_without_a_framework_and_states_its_facts():
    row = {**ROW, "source": "Someone's blog 2026", "model": "MPT-7b", "notes": "bf16; fused CE; torch.compile"}
    sc = row_scenario(row, {})
    assert sc.framework is None and row_source(row)["name"] == "someone's"
    assert sc.workload.fused_cross_entropy and sc.workload.fused_kernels


def test_notes_that_say_lora_make_a_lora_run_counted_as_lora():
    # NeMo's 24.07 LoRA rows: the notes say LoRA; NeMo's LoRA adapts the fused qkv at rank 32 and logs
    # the method's FLOPs (no weight gradients for the frozen base), 2/3 of SFT's per token.
    from graphgen.model.flop_conventions import FLOP_CONVENTIONS

    row = {**ROW, "source": "NVIDIA/NeMo docs/source/performance/performance_summary.md (NeMo 24.07)",
           "model": "LLAMA2-7B LoRA", "notes": "LoRA fine-tuning, FP8, SQuAD packed to 4096", "tp": "1", "pp": "1",
           "num_gpus": "8", "global_batch": "32"}
    sc = row_scenario(row, {})
    ft = sc.workload.finetune
    assert ft.method == "lora" and ft.lora_rank == 32 and ft.target_modules == ["qkv_proj"]
    assert row_scenario({**row, "notes": "QLoRA, bf16", "zero_stage": "1"}, {}).workload.finetune.method == "qlora"
    assert row_scenario({**row, "notes": "SFT, FP8"}, {}).workload.finetune.method == "full"
    palm = FLOP_CONVENTIONS["palm"]
    full = palm.flops_per_token(sc.model, 4096, "none", None)
    lora = palm.flops_per_token(sc.model, 4096, "none", None, ft)
    assert lora < full * 0.75  # forward and input gradients only, plus the small adapters
    assert FLOP_CONVENTIONS["llmfoundry"].flops_per_token(sc.model, 4096, "none", None, ft) == \
        FLOP_CONVENTIONS["llmfoundry"].flops_per_token(sc.model, 4096, "none", None)


def test_summary_counts_errors_and_verdicts():
    rows = [Row("a", "s", "step_time_s", 1.0, 1.1, None), Row("b", "s", "step_time_s", 2.0, 1.8, None),
            Row("c", "s", "oom", True, True, None), Row("d", "s", "oom", False, True, None),
            Row("e", "s", "step_time_s", 1.0, None, "why")]
    s = summarize(rows)
    assert s["overall"]["mape_pct"] == pytest.approx(10.0)
    assert s["verdicts"]["oom"] == {"rows": 2, "accuracy_pct": 50.0}
    assert s["skipped"] == {"rows": 1, "reasons": {"why": 1}}
    # the slices the issues set targets on: MoE and dense context-parallel rows, time and memory apart
    moe = [Row("m1", "s", "mfu", 50.0, 40.0, None, family="MoE"),
           Row("m2", "s", "mem_gib_per_gpu", 10.0, 10.5, None, family="MoE"), *rows]
    fam = summarize(moe)["by_family"]
    assert fam["MoE"]["time"]["mape_pct"] == pytest.approx(20.0) and fam["MoE"]["memory"]["mape_pct"] == pytest.approx(5.0)
    assert set(fam) == {"MoE"}


def test_summary_gives_each_publication_table_of_the_bf16_dense_target():
    # the issues' per-source target is per table of a publication: two tables of one source apart, and
    # only BF16 dense time and throughput rows count
    rows = [Row("a", "s", "mfu", 50.0, 55.0, None, bf16_dense=True, table="T1"),
            Row("b", "s", "mfu", 50.0, 60.0, None, bf16_dense=True, table="T2"),
            Row("c", "s", "mem_gib_per_gpu", 10.0, 20.0, None, bf16_dense=True, table="T2"),
            Row("d", "s", "mfu", 50.0, 100.0, None, bf16_dense=False, table="T2")]
    tables = summarize(rows)["target_bf16_dense_by_table"]
    assert tables["T1"]["mape_pct"] == pytest.approx(10.0) and tables["T2"]["mape_pct"] == pytest.approx(20.0)
    assert tables["T2"]["rows"] == 1 and summarize(rows)["by_source"]["s"]["rows"] == 4


def test_summary_says_which_way_predictions_lean():
    """Time rows count as fast when predicted shorter, throughput rows when predicted higher; memory and
    verdicts do not count; the mean is geometric, so a 4x outlier does not outweigh its source."""
    rows = [Row("t", "s", "step_time_s", 2.0, 1.0, None),           # twice as fast
            Row("u", "s", "tokens_per_s_per_gpu", 100.0, 200.0, None),  # twice as fast
            Row("v", "s", "ttft_ms", 10.0, 40.0, None),             # four times too slow
            Row("w", "s", "ttft_ms", 10.0, 10.0, None),
            Row("m", "s", "mem_gib_per_gpu", 10.0, 20.0, None), Row("o", "s", "oom", True, False, None)]
    assert summarize(rows)["overall"]["too_fast_pct"] == pytest.approx(0.0, abs=1e-9)
    assert summarize(rows[:2])["by_source"]["s"]["too_fast_pct"] == pytest.approx(100.0)
    assert summarize(rows[4:5])["overall"]["too_fast_pct"] is None


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


def test_deepspeed_rows_get_the_profile_of_deepspeed_0_3():
    row = {**ROW, "source": "Narayanan et al. 2021 ... Table 2", "notes": "ZeRO-3 via DeepSpeed, no model parallelism",
           "gpu": "A100", "model": "GPT-7.5B", "zero_stage": "3"}
    assert row_source(row)["framework"] == "deepspeed" and row_source(row)["flops"] == "megatron_hfu"
    plan = row_scenario({**row, "model": "MPT-7b"}, {}).plan
    assert plan.zero3_gather_gbs == 18.6 and plan.zero3_grad_all_reduce and plan.zero3_regather_after_recompute
    ptdp = row_scenario({**row, "notes": "PTD-P", "model": "MPT-7b"}, {}).plan
    assert ptdp.zero3_gather_gbs is None and not ptdp.overlap_grad_reduce  # Megatron 2021: reduce after backward


def test_composer_version_sets_the_gradient_reduce_dtype():
    src = "mosaicml/llm-foundry scripts/train/benchmarking/README.md"
    dtype = {n: row_scenario({**ROW, "source": src, "notes": n}, {}).plan.grad_reduce_dtype
             for n in ("precision amp_bf16 (DEFAULT); grad accum 1", "precision bf16 (PURE); grad accum 4")}
    assert dtype == {"precision amp_bf16 (DEFAULT); grad accum 1": "fp32", "precision bf16 (PURE); grad accum 4": "bf16"}


def test_llm_foundry_mpt_mapping_reproduces_its_parameter_count():
    # The benchmark MPTs keep MPTConfig's defaults: biases on (no_bias=False), a learned position
    # table of max_seq_len rows, tied embeddings. README NumParams for MPT-7b at 2048 tokens: 6658859008.
    from benchmarks.validate import _architecture
    from graphgen.config import ModelSpec
    from graphgen.model.flops import total_params

    row = {"model": "MPT-7b", "layers": "32", "hidden": "4096", "heads": "32", "kv_heads": "32",
           "ffn_hidden": "16384", "vocab": "50368", "seq_len": "2048"}
    assert total_params(ModelSpec(**_architecture(row, {}))) == 6658859008


def test_a_grid_file_runs_from_its_declared_columns(tmp_path):
    # one run per row with the plan in columns (training_sources.yaml); a failed run is skipped with its error
    from benchmarks.validate_grid import source_of
    from benchmarks.validate_grid import validate as validate_grid

    path = tmp_path / "uci_llama2_7b_train_4xa100.csv"
    path.write_text("variant,TP,PP,CP,DP,Status,Error,Avg_Step_Time_s,Total_Throughput_tokens_s,"
                    "Throughput_per_GPU_tokens_s\n"
                    "DDP,1,2,1,2,SUCCESS,,38.2194,13717.83,3429.46\n"
                    "FSDP,1,2,1,2,INSUFFICIENT_DATA,AssertionError: FSDP does not support pipeline parallelism,,,\n")
    entry = source_of(path)
    assert entry is not None and entry["model"] == "llama2-7b.yaml"
    rows = validate_grid(path, entry)
    done, failed = rows[:2], rows[2:]
    assert [r.metric for r in done] == ["step_time_s", "tokens_per_s_per_gpu"]
    assert all(r.predicted and r.predicted > 0 for r in done)
    # 38.2 s x 13,718 tokens/s = 128 sequences of 4,096 tokens: tokens/s per GPU follows from the step time
    assert done[1].predicted == pytest.approx(128 * 4096 / done[0].predicted / 4, rel=1e-9)
    assert all("FSDP does not support pipeline parallelism" in r.skipped for r in failed)
