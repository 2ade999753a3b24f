"""The program builder: golden structure, conservation laws and DAG invariants."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.base import layer_table
from graphgen.costs.evaluate import cost_program
from graphgen.ir import CollectiveNode, ComputeNode, Phase, RecvNode, SendNode
from graphgen.memory import layer_activation_bytes
from graphgen.parallel.layout import Collective
from tests.helpers import TINY_GPT, TINY_LLAMA, layer_graph, run, scenario
from tests.helpers import program as build_program


def tp_collectives(role) -> Counter:
    return Counter((n.phase, n.kind) for n in role.nodes if isinstance(n, CollectiveNode) and n.axis == "tp")


def test_golden_dp2_tp2_pp2_without_sequence_parallelism():
    # 4 layers over 2 stages, 2 microbatches per replica (global batch 4 = 1 x 2 x dp 2).
    sc = scenario(TINY_GPT, {"global_batch": 4}, tp=2, pp=2, dp=2, zero_stage=0, bucket_mb=1e6)
    prog = build_program(sc)
    s0, s1 = prog.roles
    AR = Collective.ALL_REDUCE
    # Stage 0: embedding (vocab-parallel, Partial -> all-reduce) + 2 layers x 2 all-reduces forward,
    # 2 per layer backward (Megatron's g and f operators), for each of 2 microbatches.
    assert tp_collectives(s0) == {(Phase.FORWARD, AR): 2 * 5, (Phase.BACKWARD, AR): 2 * 4}
    # Stage 1: 2 layers + the vocab-parallel loss all-reduce forward; backward adds the LM head's
    # input-grad all-reduce.
    assert tp_collectives(s1) == {(Phase.FORWARD, AR): 2 * 5, (Phase.BACKWARD, AR): 2 * 5}
    assert [n.name for n in s0.nodes if isinstance(n, SendNode)] == ["send_act.c0.mb0", "send_act.c0.mb1"]
    assert [n.name for n in s1.nodes if isinstance(n, SendNode)] == ["send_grad.c1.mb0", "send_grad.c1.mb1"]
    # One data-parallel bucket per stage, all-reduced once after the last microbatch's backward.
    for role in prog.roles:
        dp = [n for n in role.nodes if isinstance(n, CollectiveNode) and n.axis == "dp"]
        assert [(n.kind, n.microbatch) for n in dp] == [(AR, 1)]
        assert role.nodes[-1].name == "optimizer_step"


def test_sequence_parallelism_turns_all_reduces_into_gather_scatter_pairs():
    sc = scenario(TINY_LLAMA, {"global_batch": 2}, tp=2, pp=1, dp=1, sp=True)
    (role,) = build_program(sc).roles
    c = tp_collectives(role)
    AG, RS = Collective.ALL_GATHER, Collective.REDUCE_SCATTER
    layers, mbs = 4, 2
    # Per layer: forward AG before qkv and fc1, RS after out_proj and fc2; backward mirrored.
    # Embedding: RS forward. LM head: AG before it, and the loss all-reduce of the vocab partials.
    assert c[(Phase.FORWARD, AG)] == mbs * (2 * layers + 1)
    assert c[(Phase.FORWARD, RS)] == mbs * (2 * layers + 1)
    assert c[(Phase.BACKWARD, RS)] == mbs * (2 * layers + 1)
    # ... and the embedding's backward gathers the full grad it scatters forward; each column-parallel
    # linear (qkv, fc1, the LM head) gathers its saved input shard again for its weight gradient.
    assert c[(Phase.BACKWARD, AG)] == mbs * (2 * layers + 1) + mbs * (2 * layers + 1)
    assert c[(Phase.FORWARD, Collective.ALL_REDUCE)] == mbs


def test_sequence_parallel_regather_follows_what_the_framework_saves():
    def tp_bwd_gathers(**plan):
        (role,) = build_program(scenario(TINY_LLAMA, {"global_batch": 2}, tp=2, pp=1, dp=1, sp=True, **plan)).roles
        return tp_collectives(role)[(Phase.BACKWARD, Collective.ALL_GATHER)]

    layers, mbs = 4, 2
    assert tp_bwd_gathers() - tp_bwd_gathers(sp_regather=False) == mbs * (2 * layers + 1)
    sharded = scenario(TINY_LLAMA, {"global_batch": 2}, tp=2, pp=1, dp=1, sp=True)
    kept = scenario(TINY_LLAMA, {"global_batch": 2}, tp=2, pp=1, dp=1, sp=True, sp_regather=False)
    saved = {op.name: op.saved_bytes for op in layer_graph(sharded).unit_block(0).ops}
    assert {op.name: op.saved_bytes for op in layer_graph(kept).unit_block(0).ops}["fc1"] == 2 * saved["fc1"]
    # In line, as the backward's other tensor-parallel collectives: in a whole backward, and in a
    # deferred weight-gradient step (zero-bubble), which issues it instead of the input-gradient step.
    def gathers(schedule, phase):
        prog = build_program(scenario(TINY_LLAMA, {"global_batch": 2}, tp=2, pp=1, dp=1, sp=True, schedule=schedule))
        return [it.parallel for t in prog.templates for it in t.items
                if it.phase is phase and it.kind is Collective.ALL_GATHER]
    whole = gathers("1f1b", Phase.BACKWARD)
    assert len(whole) == 2 * (2 * layers + 1) and not any(whole)  # re-gathers and the gradients' gathers
    wgrad = gathers("zb-h1", Phase.WGRAD)
    assert len(wgrad) == 2 * layers + 1 and not any(wgrad)  # qkv, fc1 per layer and the LM head
    assert len(gathers("zb-h1", Phase.BACKWARD)) == 2 * layers + 1
    # A frozen linear computes no weight gradient, so it needs no second gather (LoRA; the frozen
    # embedding has no backward at all, so only the row-parallel layers' gradient gathers are left).
    lora = scenario(TINY_LLAMA, {"global_batch": 2, "finetune": {"method": "lora"}}, tp=2, pp=1, dp=1, sp=True)
    (role,) = build_program(lora).roles
    assert tp_collectives(role)[(Phase.BACKWARD, Collective.ALL_GATHER)] == mbs * 2 * layers


def test_a_shared_head_gathers_again_for_its_weight_gradient_too():
    """A tied LM head (its weight is the embedding's) still runs a weight-gradient GEMM on its saved
    input shard, so it gathers it again like an untied one; a split backward keeps that GEMM, and the
    gather, with the input gradient since the weight is not the head's own."""
    def gathers(model, schedule, phase):
        prog = build_program(scenario(model, {"global_batch": 2}, tp=2, pp=1, dp=1, sp=True, schedule=schedule))
        return sum(1 for t in prog.templates for it in t.items if it.phase is phase and it.kind is Collective.ALL_GATHER)

    layers = 4
    assert gathers(TINY_GPT, "1f1b", Phase.BACKWARD) == gathers(TINY_LLAMA, "1f1b", Phase.BACKWARD)
    assert gathers(TINY_GPT, "zb-h1", Phase.WGRAD) == 2 * layers  # qkv and fc1: the tied head's stays behind
    assert gathers(TINY_GPT, "zb-h1", Phase.BACKWARD) == gathers(TINY_LLAMA, "zb-h1", Phase.BACKWARD) + 1


def test_lora_adapters_keep_the_collectives_and_the_input_their_base_has():
    """An adapter after a row-parallel base (out_proj, fc2) ends where the base did, so the collective
    after it moves the base's output, not nothing; under sequence parallelism an adapter's A keeps the
    gathered input of its column-parallel base (the shard alone cannot give A its gradient)."""
    ft = {"method": "lora", "target_modules": ["qkv_proj", "out_proj", "fc1", "fc2"]}
    plain = build_program(scenario(TINY_LLAMA, {"global_batch": 2}, tp=2, pp=1, dp=1, sp=True))
    lora = build_program(scenario(TINY_LLAMA, {"global_batch": 2, "finetune": ft}, tp=2, pp=1, dp=1, sp=True))

    def fwd_bytes(prog):
        return sorted(n.bytes for n in prog.roles[0].nodes
                      if isinstance(n, CollectiveNode) and n.axis == "tp" and n.phase is Phase.FORWARD)
    assert fwd_bytes(lora) == fwd_bytes(plain) and min(fwd_bytes(lora)) > 0
    sc = scenario(TINY_LLAMA, {"global_batch": 2, "finetune": ft}, tp=2, pp=1, dp=1, sp=True)
    ops = {op.name: op for op in layer_graph(sc).unit_block(0).ops}
    full_input = ops["fc1"].flops / (2 * ops["fc1"].shape[1]) * 2  # tokens x hidden x 2 bytes
    assert ops["fc1"].saved_bytes == pytest.approx(full_input) and not ops["fc1"].side_comm


def test_latent_attention_without_a_query_latent_gathers_its_hidden_input_again():
    """With no query latent (DeepSeek-V2-Lite) MLA's query projection reads the hidden state: under
    sequence parallelism it keeps that shard and gathers it again, as any column-parallel linear."""
    mla = dict(TINY_LLAMA, kv_heads=8, mla={"kv_lora_rank": 64, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16,
                                             "v_head_dim": 32})

    def up(**plan):
        sc = scenario(mla, {"global_batch": 1}, tp=2, pp=1, dp=1, sp=True, **plan)
        return sc, next(op for op in layer_graph(sc).unit_block(0).ops if op.name == "mla_up")
    (sc, sharded), (_, kept) = up(), up(sp_regather=False)
    hidden_bytes = 2 * sc.workload.seq_len * TINY_LLAMA["hidden"]  # the whole hidden input of one sequence, bf16
    assert kept.saved_bytes - sharded.saved_bytes == pytest.approx(hidden_bytes / 2)
    assert [c[3] for c in sharded.side_comm] == [hidden_bytes] and not kept.side_comm


def test_no_tensor_parallel_collectives_without_tensor_parallelism():
    prog = build_program(scenario(TINY_LLAMA, {"global_batch": 4}, tp=1, pp=2, dp=2))
    assert not any(isinstance(n, CollectiveNode) and n.axis == "tp" for r in prog.roles for n in r.nodes)


def total_flops(prog, phases=(Phase.FORWARD, Phase.BACKWARD)) -> float:
    total = 0.0
    for role in prog.roles:
        ranks = len(prog.ranks_of_role(role.id))
        total += ranks * sum(n.flops for n in role.nodes if isinstance(n, ComputeNode) and n.phase in phases)
    return total


PLANS = [dict(tp=1, pp=1, dp=1), dict(tp=2, pp=1, dp=1, sp=True), dict(tp=4, pp=2, dp=1, sp=True),
         dict(tp=1, pp=2, dp=2), dict(tp=2, pp=2, dp=2, sp=True, schedule="interleaved", virtual_stages=2)]


@pytest.mark.parametrize("plan", PLANS[1:])
def test_flops_are_conserved_across_plans(plan):
    """Every sharded op splits its work exactly, so the cluster's FLOPs do not depend on the plan."""
    base = total_flops(build_program(scenario(TINY_LLAMA, {"global_batch": 4}, **PLANS[0])))
    other = total_flops(build_program(scenario(TINY_LLAMA, {"global_batch": 4}, **plan)))
    assert other == pytest.approx(base, rel=1e-9)


def test_matmul_flops_match_6NT_plus_attention():
    sc = scenario(TINY_LLAMA, {"global_batch": 4, "flash_attention": False})
    lg = layer_graph(sc)
    T = sc.workload.seq_len * sc.workload.micro_batch
    m = sc.model
    linear = sum(op.flops for op in lg.layer if op.name in {"qkv_proj", "out_proj", "fc1", "fc2"})
    q, kv, d, h, f = m.heads, m.n_kv_heads, m.d_head, m.hidden, m.ffn_hidden
    params = h * (q + 2 * kv) * d + q * d * h + 3 * h * f
    assert linear == pytest.approx(2 * params * T)
    scores = sum(op.flops for op in lg.layer if op.name in {"attn_scores", "attn_values"})
    assert scores == pytest.approx(4 * T * sc.workload.seq_len * q * d)


def test_full_recompute_adds_exactly_one_forward_of_every_block():
    plain = build_program(scenario(TINY_LLAMA, {"global_batch": 2}))
    full = build_program(scenario(TINY_LLAMA, {"global_batch": 2}, recompute="full"))
    fwd_layers = sum(n.flops for r in plain.roles for n in r.nodes
                     if isinstance(n, ComputeNode) and n.phase is Phase.FORWARD and n.layers[0] >= 0)
    assert total_flops(full, (Phase.RECOMPUTE,)) == pytest.approx(fwd_layers)


def invariants(prog):
    for role in prog.roles:
        for n in role.nodes:
            assert all(d < n.id for d in n.deps), f"{n.name} depends on a later node"
        for n in role.nodes:
            if isinstance(n, RecvNode):
                peer = prog.roles[n.peer_role]
                sends = [s for s in peer.nodes if isinstance(s, SendNode) and s.tag == n.tag]
                assert len(sends) == 1 and sends[0].peer_role == role.id


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tp=st.sampled_from([1, 2, 4]), pp=st.sampled_from([1, 2, 4]), dp=st.sampled_from([1, 2]),
       mb_per_pp=st.integers(1, 3), schedule=st.sampled_from(["gpipe", "1f1b", "interleaved"]),
       zero=st.sampled_from([0, 1, 2, 3]), recompute=st.sampled_from(["none", "selective", "full"]))
def test_dag_invariants_and_breakdown(tp, pp, dp, mb_per_pp, schedule, zero, recompute):
    """Acyclic (every edge points back), every receive has exactly one send, the replay finishes,
    and the breakdown adds up to the step time."""
    v = 2 if schedule == "interleaved" and pp > 1 else 1
    if schedule == "interleaved" and pp == 1:
        schedule = "1f1b"
    model = dict(TINY_LLAMA, layers=8)
    sc = scenario(model, {"global_batch": dp * pp * mb_per_pp}, tp=tp, pp=pp, dp=dp, schedule=schedule,
                  virtual_stages=v, zero_stage=zero, recompute=recompute, sp=tp > 1)
    prog = build_program(sc)
    invariants(prog)
    res = run(prog)
    assert res.breakdown.total == pytest.approx(res.step_time_s, rel=1e-9)
    assert res.step_time_s > 0


@settings(max_examples=20, deadline=None)
@given(st.floats(0.1, 10.0), st.sampled_from(["node.intra", "scale_out"]))
def test_more_bandwidth_is_never_slower(factor, link):
    plan = dict(tp=4, pp=2, dp=2, zero_stage=3)
    slow = scenario(TINY_LLAMA, {"global_batch": 8}, **plan)
    hw = slow.hardware
    section = hw.node.intra if link == "node.intra" else hw.scale_out
    faster = section.model_copy(update={"bandwidth_gbs": section.bandwidth_gbs * (1 + factor)})
    if link == "node.intra":
        hw2 = hw.model_copy(update={"node": hw.node.model_copy(update={"intra": faster})})
    else:
        hw2 = hw.model_copy(update={"scale_out": faster})
    prog = build_program(slow)
    t_slow = run(prog).step_time_s
    # The same program, re-costed under the faster cluster: no rebuild.
    from backends.analytical import replay
    t_fast = replay(prog, cost_program(prog, hw2)).result.step_time_s
    assert t_fast <= t_slow * (1 + 1e-12)
    assert t_fast == pytest.approx(run(dataclasses.replace(slow, hardware=hw2)).step_time_s, rel=1e-12)


def test_pipeline_bubble_shrinks_with_more_microbatches():
    def bubble_fraction(m):
        res = run(scenario(TINY_LLAMA, {"global_batch": m}, pp=4, dp=1))
        return res.breakdown.pipeline_bubble / res.step_time_s
    assert bubble_fraction(16) < bubble_fraction(4) < bubble_fraction(1) + 1e-12


def test_interleaving_reduces_the_bubble():
    def step(schedule, v):
        sc = scenario(dict(TINY_LLAMA, layers=8), {"global_batch": 8}, pp=4, schedule=schedule, virtual_stages=v)
        return run(sc).step_time_s
    assert step("interleaved", 2) < step("1f1b", 1) < step("gpipe", 1) + 1e-12


# Korthikanti et al. 2022, Table 2: activation bytes per layer (fp16, with dropout, no flash).
def korthikanti(s, b, h, a, t, variant):
    if variant == "none":
        return s * b * h * (34 + 5 * a * s / h)
    if variant == "tp":
        return s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    if variant == "tp+sp":
        return s * b * h / t * (34 + 5 * a * s / h)
    if variant == "tp+sp+selective":
        return s * b * h / t * 34
    if variant == "full":
        return 2 * s * b * h / t  # with SP the checkpointed input is sharded too
    raise ValueError(variant)


@pytest.mark.parametrize("variant,plan", [
    ("none", dict(tp=1)), ("tp", dict(tp=4)), ("tp+sp", dict(tp=4, sp=True)),
    ("tp+sp+selective", dict(tp=4, sp=True, recompute="selective")), ("full", dict(tp=4, sp=True, recompute="full"))])
def test_activation_memory_reproduces_korthikanti(variant, plan):
    wl = {"global_batch": 2, "micro_batch": 2, "flash_attention": False, "precision": "fp16"}
    sc = scenario(TINY_GPT, wl, dp=1, **plan)
    lg = layer_graph(sc)
    s, b, h, a, t = 512, 2, TINY_GPT["hidden"], TINY_GPT["heads"], plan["tp"]
    resid = 2 * s * b * h / (t if plan.get("sp") else 1)
    got = layer_activation_bytes(lg.layer, sc.plan.recompute, resid)
    assert got == pytest.approx(korthikanti(s, b, h, a, t, variant))


def test_balanced_split_matches_nanotrons_partition():
    """nanotron's cost split for Llama-3-8B-like blocks on 8 stages. In block units the head costs
    2.2 blocks and the stage thresholds are 4.28, 8.55, 12.83, 17.10, 21.38, 25.66, 29.93: a stage
    keeps the block that crosses its threshold, which gives 5, 4, 4, 5, 4, 4, 4 and 2 (+ head)."""
    from graphgen.parallel.pipeline import split_layers_balanced

    h, f, V = 4096, 14336, 131072
    layer = 4 * h * h + 3 * f * h
    split = split_layers_balanced(32, 8, layer, V * h)
    assert [len(s) for s in split] == [5, 4, 4, 5, 4, 4, 4, 2]
    assert [x for s in split for x in s] == list(range(32))


def test_a_stage_without_layers_passes_tensors_through():
    """The balanced split can leave a stage no layers (a costly LM head on many stages)."""
    sc = scenario(dict(TINY_LLAMA, layers=4, vocab=65536), {"global_batch": 8}, pp=4, stage_split="balanced")
    prog = build_program(sc)
    assert any(not prog.chunk_layers[g] for g in range(4))
    invariants(prog)
    assert run(prog).step_time_s > 0


def test_networkx_export_is_a_dag_with_stream_edges():
    import networkx as nx

    from graphgen.ir import to_networkx

    prog = build_program(scenario(TINY_LLAMA, {"global_batch": 4}, tp=2, pp=2, dp=2, sp=True, zero_stage=1))
    g = to_networkx(prog.roles[0])
    assert nx.is_directed_acyclic_graph(g)
    kinds = {d["kind"] for _, _, d in g.edges(data=True)}
    assert kinds == {"data", "stream"}
    assert g.number_of_nodes() == len(prog.roles[0].nodes)


def test_recompute_every_second_block_halves_the_recompute():
    every1 = build_program(scenario(TINY_LLAMA, {"global_batch": 2}, recompute="full"))
    every2 = build_program(scenario(TINY_LLAMA, {"global_batch": 2}, recompute="full", recompute_every=2))
    assert total_flops(every2, (Phase.RECOMPUTE,)) == pytest.approx(total_flops(every1, (Phase.RECOMPUTE,)) / 2)


def _dp_gathers(sc) -> list[CollectiveNode]:
    role = build_program(sc).roles[0]
    return [n for n in role.nodes if isinstance(n, CollectiveNode) and n.kind is Collective.ALL_GATHER]


def _durations(sc, kind):
    prog = build_program(sc)
    dur = cost_program(prog).durations[0]
    return [(n, dur[n.id]) for n in prog.roles[0].nodes if isinstance(n, CollectiveNode) and n.kind is kind]


def test_zero3_regathers_recomputed_layers_for_backward():
    # 4 layers, full recompute, 2 microbatches: FSDP gathers each layer for the forward and once for
    # recompute + backward; DeepSpeed frees after the recompute and gathers a third time.
    plan = dict(dp=2, zero_stage=3, recompute="full")
    keep = _dp_gathers(scenario(TINY_LLAMA, {"global_batch": 4}, **plan))
    again = _dp_gathers(scenario(TINY_LLAMA, {"global_batch": 4}, zero3_regather_after_recompute=True, **plan))
    layers = [n for n in keep if n.layers[0] >= 0 and n.layers == (n.layers[0], n.layers[0])]
    extra = Counter((n.phase, n.layers) for n in again) - Counter((n.phase, n.layers) for n in keep)
    assert len(again) - len(keep) == len(layers) // 2  # one more per layer and microbatch
    assert set(p for p, _ in extra) == {Phase.BACKWARD}
    # Without recompute there is nothing to gather again.
    plain = dict(dp=2, zero_stage=3)
    assert len(_dp_gathers(scenario(TINY_LLAMA, {"global_batch": 4}, zero3_regather_after_recompute=True,
                                    **plain))) == len(_dp_gathers(scenario(TINY_LLAMA, {"global_batch": 4}, **plain)))


def test_zero3_gather_ceiling_bounds_parameter_gathers_only():
    cap = 5.0  # GB/s per GPU
    base = dict(dp=8, recompute="none")
    capped = scenario(TINY_LLAMA, {"global_batch": 8}, zero_stage=3, zero3_gather_gbs=cap, **base)
    gathers = _durations(capped, Collective.ALL_GATHER)
    assert gathers
    for n, d in gathers:
        assert d >= (7 / 8) * n.bytes / (cap * 1e9) * (1 - 1e-12)
    fast = run(scenario(TINY_LLAMA, {"global_batch": 8}, zero_stage=3, **base))
    slow = run(capped)
    assert slow.step_time_s > fast.step_time_s
    # Gradient reductions and ZeRO-1's post-step gathers are NCCL's own buckets: no ceiling.
    rs = _durations(capped, Collective.REDUCE_SCATTER)
    assert rs and all(d < (7 / 8) * n.bytes / (cap * 1e9) for n, d in rs)
    z1 = [scenario(TINY_LLAMA, {"global_batch": 8}, zero_stage=1, **base, **extra)
          for extra in ({}, {"zero3_gather_gbs": cap})]
    t = [run(sc).step_time_s for sc in z1]
    assert t[0] == t[1]


def test_zero3_grad_all_reduce_replaces_the_reduce_scatter():
    def grad_kinds(**extra):
        prog = build_program(scenario(TINY_LLAMA, {"global_batch": 8}, dp=8, zero_stage=3, **extra))
        return Counter(n.kind for n in prog.roles[0].nodes if isinstance(n, CollectiveNode) and n.phase is Phase.GRAD_SYNC)
    plain, deepspeed = grad_kinds(), grad_kinds(zero3_grad_all_reduce=True)
    assert set(plain) == {Collective.REDUCE_SCATTER} and set(deepspeed) == {Collective.ALL_REDUCE}
    assert sum(plain.values()) == sum(deepspeed.values())


def test_regather_after_recompute_costs_time_when_gathers_are_slow():
    plan = dict(dp=8, zero_stage=3, recompute="full", zero3_gather_gbs=2.0)
    t = [run(scenario(TINY_LLAMA, {"global_batch": 8}, **plan, zero3_regather_after_recompute=r)).step_time_s
         for r in (False, True)]
    assert t[1] > t[0] * 1.2


def test_attention_rate_follows_sequence_length_not_batch():
    # Flash attention's rate is set by the key length each query block walks: 64 sequences of
    # 512 tokens run at the 512-token rate, not at the rate of one call with 8x the FLOPs of 8.
    big = dict(TINY_LLAMA, hidden=4096, heads=32, kv_heads=32, ffn_hidden=11008)

    def attention_s_per_flop(seq, mb, tp=1):
        sc = scenario(big, {"seq_len": seq, "micro_batch": mb, "global_batch": mb}, tp=tp)
        row = next(c for c in layer_table(build_program(sc)) if c["kind"] == "attention")
        launch = sc.hardware.device.launch_overhead_us * 1e-6
        return (row["fwd_ms"] / 1e3 - launch) / (row["fwd_gflop"] * 1e9)  # the kernel's own rate
    assert attention_s_per_flop(512, 64) == pytest.approx(attention_s_per_flop(512, 8), rel=1e-9)
    assert attention_s_per_flop(4096, 8) < 0.9 * attention_s_per_flop(512, 64)
    # One sequence of 512 tokens over 32 heads is 128 query blocks, more than the A100's 108 SMs:
    # no penalty. Over tp=8 (4 heads per GPU) it is 16 blocks: 16 of 108 SMs busy.
    assert attention_s_per_flop(512, 1) == pytest.approx(attention_s_per_flop(512, 8), rel=1e-9)
    assert attention_s_per_flop(512, 1, tp=8) == pytest.approx(attention_s_per_flop(512, 8, tp=8) * 108 / 16,
                                                               rel=1e-9)


def test_measured_gemm_shapes_override_the_curve_for_their_pass_only():
    from graphgen.config import GemmTable

    sc = scenario(TINY_LLAMA, {"seq_len": 512, "micro_batch": 1, "global_batch": 1})
    qkv = next(op for op in layer_graph(sc).layer if op.name == "qkv_proj")
    d_in, d_out = qkv.shape
    tokens = qkv.flops / (2 * d_in * d_out)
    eff = sc.hardware.device.efficiency
    table = GemmTable(entries=[(round(tokens), round(d_in), round(d_out), "fwd", 0.01)])
    device = sc.hardware.device.model_copy(update={"efficiency": eff.model_copy(update={"matmul_shapes": table})})
    slow = dataclasses.replace(sc, hardware=sc.hardware.model_copy(update={"device": device}))

    def qkv_cost(s):
        return next(c for c in layer_table(build_program(s)) if c["op"] == "qkv_proj")
    base, measured = qkv_cost(sc), qkv_cost(slow)
    peak = sc.hardware.device.peak_tflops["bf16"] * 1e12
    assert measured["fwd_ms"] / 1e3 >= qkv.flops / (peak * 0.01)
    assert measured["bwd_ms"] == pytest.approx(base["bwd_ms"], rel=1e-12)  # dgrad and wgrad are not listed


@pytest.mark.parametrize("model,workload,plan", [
    (dict(TINY_LLAMA, layers=16), {}, dict(pp=4, schedule="interleaved", virtual_stages=2, recompute="full",
                                         recompute_every=2)),
    (dict(TINY_LLAMA, layers=12), {"finetune": {"method": "freeze", "frozen_layers": 5}}, dict(pp=4)),
    (dict(TINY_LLAMA, layers=8, moe={"experts": 4, "top_k": 2, "expert_ffn_hidden": 64, "first_dense_layers": 1}),
     {}, dict(pp=4, dp=2, ep=2, schedule="zb-h1", tp=2, sp=True)),
    (dict(TINY_LLAMA, layers=8, attention_pattern=["gated_delta", "full"],
          linear_attention={"key_heads": 4, "value_heads": 8, "key_head_dim": 32, "value_head_dim": 32}),
     {}, dict(pp=4, schedule="dualpipe")),
])
def test_chunks_of_the_same_kinds_share_their_lowering(model, workload, plan):
    from graphgen.model.layer_graph import build_layer_graph
    from graphgen.parallel.pipeline import stage_layers
    from graphgen.program import block_shape, pass_templates

    sc = scenario(model, {"global_batch": 16, **workload}, **plan)
    lg, chunks = build_layer_graph(block_shape(sc)), tuple(stage_layers(sc.model, sc.plan))
    shared, ids = pass_templates(sc, lg, chunks)
    fresh, ids2 = pass_templates(sc, lg, chunks, share=False)
    assert shared == fresh and ids == ids2


def test_a_checkpoint_interval_without_full_recompute_is_inert_and_said_so():
    # recompute_every belongs to full recompute: under selective (or none) the timing and the memory
    # model both ignore it, and the result says so instead of reading it two ways
    from rankflow import api

    sel = scenario(TINY_LLAMA, {"global_batch": 2}, recompute="selective")
    sel2 = scenario(TINY_LLAMA, {"global_batch": 2}, recompute="selective", recompute_every=2)
    a, b = api.simulate(sel), api.simulate(sel2)
    assert b.step_time_s == a.step_time_s
    assert [m.activations for m in b.memory] == [m.activations for m in a.memory]
    assert any("recompute_every=2 applies to full recompute only" in n for n in b.notes)
    assert not any("recompute_every" in n for n in a.notes)
