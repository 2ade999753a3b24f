"""Inference iterations through the engine: prefill and decode times, the KV cache and its blocks,
quantised weights, the tabulated iteration model, and the inputs that must be refused."""

from __future__ import annotations

import pytest

from graphgen.errors import RankflowError
from graphgen.inference.table import tabulate
from rankflow import api
from tests.helpers import ROOT

H100 = ROOT / "hardware_configs" / "H100-SXM5-80GB.yaml"
B200 = ROOT / "hardware_configs" / "B200.yaml"
LLAMA8 = ROOT / "model_configs" / "llama3.1-8b.yaml"
GIB = 2**30


def infer(*sets: str, model=LLAMA8, hw=H100):
    return api.load_scenario(model, hw, overrides=["workload.run_type=inference", "parallelism.dp=1",
                                                   "parallelism.tp=1", *sets])


def step(sc) -> float:
    return api.simulate(sc).step_time_s


def test_a_small_decode_step_reads_the_weights_at_memory_speed():
    sc = infer("workload.inference.batch=1", "workload.inference.context_len=16")
    mem = api.memory(sc).roles[0]
    dev = sc.hardware.device
    floor = mem.weights / (dev.hbm_bandwidth_gbs * 1e9 * dev.efficiency.memory_bound)
    assert floor < step(sc) < 1.5 * floor


def test_decode_grows_with_batch_and_context_and_prefill_with_the_prompt():
    t = {b: step(infer(f"workload.inference.batch={b}", "workload.inference.context_len=2048")) for b in (1, 32, 256)}
    assert t[1] < t[32] < t[256]
    assert step(infer("workload.inference.batch=32", "workload.inference.context_len=8192")) > t[32]
    p1, p4 = (step(infer("workload.inference.phase=prefill", f"workload.inference.input_len={n}")) for n in (1024, 4096))
    assert 4 < p4 / p1 < 6  # linear layers x4, attention x16


def test_kv_cache_sizes_and_blocks_follow_vllm():
    sc = infer("workload.inference.batch=10", "workload.inference.context_len=999")
    mem = api.memory(sc).roles[0]
    per_token = 32 * 8 * 2 * 128 * 2  # layers x KV heads x (K, V) x head_dim x bf16 bytes = 128 KiB
    assert mem.kv_cache == pytest.approx(10 * 1000 * per_token)
    spec, dev = sc.workload.inference, sc.hardware.device
    scale = spec.max_num_batched_tokens / (sc.workload.micro_batch * sc.workload.seq_len)
    free = spec.gpu_memory_utilization * dev.hbm_gib * GIB - mem.weights - mem.transient * scale - mem.reserved
    assert mem.kv_blocks == int(free // (16 * per_token))
    fp8 = api.memory(infer("workload.inference.batch=10", "workload.inference.context_len=999",
                           "workload.inference.kv_dtype=fp8")).roles[0]
    assert fp8.kv_cache == pytest.approx(mem.kv_cache / 2) and fp8.kv_blocks >= 2 * mem.kv_blocks - 1


def test_latent_attention_caches_its_compressed_vector():
    lite = ROOT / "model_configs" / "deepseek-v2-lite.yaml"
    sc = infer("workload.inference.batch=1", "workload.inference.context_len=99", model=lite)
    mla = sc.model.mla
    assert api.memory(sc).roles[0].kv_cache == pytest.approx(100 * sc.model.layers * (mla.kv_lora_rank + mla.qk_rope_head_dim) * 2)


def test_moe_decode_reads_only_the_experts_its_tokens_pick():
    qwen = ROOT / "model_configs" / "qwen3-30b-a3b.yaml"
    sc = infer("workload.inference.batch=1", "workload.inference.context_len=16", model=qwen)
    dev = sc.hardware.device
    everything = api.memory(sc).roles[0].weights / (dev.hbm_bandwidth_gbs * 1e9 * dev.efficiency.memory_bound)
    one = step(sc)
    assert one < 0.3 * everything  # top-8 of 128 experts per layer, not all 128
    big = step(infer("workload.inference.batch=512", "workload.inference.context_len=16", model=qwen))
    assert big > everything  # 512 tokens x 8 picks touch every expert
    # tensor-parallel MoE serving routes each rank's share of the tokens (no sp flag needed)
    tp2 = infer("workload.inference.batch=8", "parallelism.tp=2", model=qwen)
    assert tp2.plan.sp and 0 < step(tp2) < step(infer("workload.inference.batch=8", model=qwen))


def test_quantised_weights_are_read_at_their_size():
    bf16 = step(infer("workload.inference.batch=1", "workload.inference.context_len=16"))
    int4 = step(infer("workload.inference.batch=1", "workload.inference.context_len=16", "workload.inference.weight_dtype=int4"))
    assert int4 < 0.5 * bf16
    w = api.memory(infer("workload.inference.weight_dtype=int4")).roles[0].weights
    assert w < 0.4 * api.memory(infer()).roles[0].weights  # the embedding table stays bf16
    fp4 = infer("workload.precision=fp4", "workload.inference.phase=prefill", "workload.inference.input_len=4096", hw=B200)
    fp8 = infer("workload.precision=fp8", "workload.inference.phase=prefill", "workload.inference.input_len=4096", hw=B200)
    assert step(fp4) < step(fp8)


@pytest.mark.parametrize("sets, field", [
    (["workload.precision=fp4"], "weight_dtype"),                                  # H100 has no fp4 peak
    (["workload.inference.context_len=200000"], "workload.inference"),              # beyond max_position
])
def test_impossible_inference_is_refused(sets, field):
    model = api.load_model(LLAMA8).model.model_dump(exclude_none=True)
    model["max_position"] = 131072
    with pytest.raises(RankflowError) as err:
        api.load_scenario({"model": model, "workload": {"run_type": "inference", "inference": {}}}, H100,
                          overrides=["parallelism.dp=1", "parallelism.tp=1", *sets])
    assert field in str(err.value)


def test_the_tabulated_iteration_model_matches_the_engine():
    sc = infer("workload.inference.batch=8")
    tab = tabulate(sc, step, api.memory(sc).roles[0].kv_blocks)
    for b, c in ((3, 700), (100, 2500)):
        direct = step(infer(f"workload.inference.batch={b}", f"workload.inference.context_len={c}"))
        assert tab.iteration_time(0, 0, b, b * c) == pytest.approx(direct, rel=0.02)
    direct = step(infer("workload.inference.phase=prefill", "workload.inference.input_len=3000"))
    assert tab.iteration_time(3000, 3000, 0, 0) == pytest.approx(direct, rel=0.02)
    # a chunk after cached tokens pays attention over them too
    assert tab.iteration_time(512, 4096, 0, 0) > tab.iteration_time(512, 512, 0, 0)
    # four 1000-token prompts prefilled together: attention is per prompt, not over all 4000 tokens
    direct = step(infer("workload.inference.phase=prefill", "workload.inference.batch=4",
                        "workload.inference.input_len=1000"))
    assert tab.iteration_time(4000, 4000, 0, 0, 4) == pytest.approx(direct, rel=0.02)
    assert tab.iteration_time(4000, 4000, 0, 0, 4) < tab.iteration_time(4000, 4000, 0, 0, 1)


def test_tensor_parallel_decode_all_reduces_and_reports_its_block():
    sc = api.load_scenario(ROOT / "model_configs" / "llama3.1-70b.yaml", H100,
                           overrides=["workload.run_type=inference", "parallelism.dp=1", "parallelism.tp=8",
                                      "workload.inference.batch=32", "workload.precision=fp8"])
    res = api.simulate(sc)
    assert res.breakdown.exposed_comm["tp"] > 0
    from reports.json_out import result_to_dict

    doc = result_to_dict(res)
    assert doc["schema_version"] == "3.0" and doc["inference"]["phase"] == "decode"
    assert doc["inference"]["max_sequences_at_context"] > 32 and doc["memory"]["roles"][0]["kv_cache_gib"] > 0


@pytest.mark.parametrize("phase,fix", [("decode", "parallelism.cp=1 for decode"),
                                       ("prefill", "divides workload.inference.input_len")])
def test_context_parallelism_in_inference_names_what_the_user_can_change(phase, fix):
    # The fix said "2 x cp divides workload.seq_len": a field an inference workload never sets (decode's is 1).
    with pytest.raises(RankflowError, match=fix) as exc:
        infer(f"workload.inference.phase={phase}", "workload.inference.input_len=1001", "parallelism.cp=2")
    assert exc.value.field == "parallelism.cp"


def test_default_lengths_fit_a_short_context_model():
    """GPT-3's context is 2,048 tokens: the default 2,048-token prompt plus the tokens generated would not
    fit, so the default prompt is shortened; a prompt the user asks for is still refused when too long."""
    path = ROOT / "model_configs" / "gpt3-175b.yaml"
    hw = api.load_hardware(ROOT / "hardware_configs" / "A100-SXM4-80GB.yaml")
    plan = ["workload.run_type=inference", "parallelism.tp=8", "parallelism.dp=1"]
    sc = api.load_scenario(path, hw, overrides=plan)
    spec = sc.workload.inference
    assert spec.input_len == 2048 - spec.output_len and spec.context() + 1 <= 2048
    with pytest.raises(RankflowError, match="max_position"):
        api.load_scenario(path, hw, overrides=[*plan, "workload.inference.input_len=2048"])
