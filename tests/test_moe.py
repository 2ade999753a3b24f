"""Mixture of experts, latent attention, context parallelism, module recompute and uneven pipeline
splits, through the public API on small variants of the shipped model configs."""

from __future__ import annotations

import pytest

from graphgen.errors import RankflowError
from graphgen.ir import CollectiveNode
from graphgen.model.params import active_params, total_params
from graphgen.parallel.layout import Collective
from graphgen.parallel.pipeline import stage_layers
from rankflow import api
from tests.helpers import ROOT, run

H100 = ROOT / "hardware_configs" / "H100-SXM5-80GB.yaml"
MIXTRAL = ROOT / "model_configs" / "mixtral-8x7b.yaml"
SMALL = ["model.layers=4", "workload.seq_len=1024", "workload.global_batch=16"]


def moe(*overrides: str, model=MIXTRAL):
    return api.load_scenario(model, H100, overrides=[*SMALL, "parallelism.dp=8", *overrides])


def collectives(sc, axis: str):
    prog = api.build(sc, "ops")
    return [n for n in prog.roles[0].nodes if isinstance(n, CollectiveNode) and n.axis == axis]


@pytest.mark.parametrize("name, total, active", [
    # Published totals and active counts (model cards and papers; see each config's header).
    ("mixtral-8x7b", 46.7, 12.9), ("mixtral-8x22b", 141, 39), ("deepseek-v2", 236, 21),
    ("deepseek-v2-lite", 15.7, 2.4), ("qwen3-30b-a3b", 30.5, 3.3), ("qwen3-235b-a22b", 235, 22),
    ("gpt-oss-120b", 117, 5.1), ("gpt-oss-20b", 21, 3.6), ("llama4-scout", 109, 17)])
def test_shipped_moe_configs_count_their_published_parameters(name, total, active):
    m = api.load_model(ROOT / "model_configs" / f"{name}.yaml").model
    assert total_params(m) / 1e9 == pytest.approx(total, rel=0.02)
    # Active counts differ in what they include (embeddings, sinks, unrounded cards): 20 %.
    assert active_params(m) / 1e9 == pytest.approx(active, rel=0.2)


def test_deepseek_v3_counts_the_main_model_and_its_mtp_module_apart():
    m = api.load_model(ROOT / "model_configs" / "deepseek-v3.yaml").model
    main = m.model_copy(update={"mtp_layers": 0})
    assert total_params(main) / 1e9 == pytest.approx(671, rel=0.01)
    assert active_params(main) / 1e9 == pytest.approx(37, rel=0.03)
    assert 10e9 < total_params(m) - total_params(main) < 14e9  # HF's extra 14B holds shared copies


def test_dispatch_and_combine_are_all_to_alls_on_ep_sized_by_the_routed_tokens():
    sc = moe("parallelism.ep=8")
    a2a = collectives(sc, "ep")
    assert a2a and all(n.kind is Collective.ALL_TO_ALL and n.group_size == 8 for n in a2a)
    m, w = sc.model, sc.workload
    routed_bytes = 2 * w.micro_batch * w.seq_len * m.moe.top_k * m.hidden
    assert all(n.bytes == pytest.approx(routed_bytes) for n in a2a)
    # Per layer and microbatch: dispatch and combine in forward, both again in backward.
    assert len(a2a) == 4 * m.layers * sc.microbatches
    assert not collectives(moe("parallelism.ep=1"), "ep")


def test_expert_gradients_reduce_over_the_expert_data_parallel_group():
    sc = moe("parallelism.ep=4")
    assert sc.plan.edp == 2
    grads = [n for n in collectives(sc, "edp") if "grads" in n.name]
    dense = [n for n in collectives(sc, "dp") if "grads" in n.name]
    assert grads and all(n.group_size == 2 for n in grads)
    assert dense and all(n.group_size == 8 for n in dense)
    # Under the distributed optimizer, expert states shard over edp, dense ones over dp.
    z1 = run(moe("parallelism.ep=4", "parallelism.zero_stage=1")).memory[0]
    z0 = run(moe("parallelism.ep=4")).memory[0]
    assert z1.optimizer_states < z0.optimizer_states / 2


def test_load_imbalance_slows_the_step_and_a_per_expert_load_sets_it():
    balanced = run(moe("parallelism.ep=8")).step_time_s
    skewed = run(moe("parallelism.ep=8", "workload.expert_imbalance=1.5")).step_time_s
    assert skewed > balanced * 1.05
    # Experts 0 and 1 on rank 0 (8 experts, ep 8: one each) take 3/8 and 1/8 of the tokens.
    load = "workload.expert_load=[0.375,0.125,0.0625,0.0625,0.125,0.125,0.0625,0.0625]"
    from graphgen.program import expert_imbalance

    assert expert_imbalance(moe("parallelism.ep=8", load)) == pytest.approx(3.0)
    assert expert_imbalance(moe("parallelism.ep=4", load)) == pytest.approx(2.0)
    # no rank takes more than every copy its experts can get: min(ep, E/k) shares (Mixtral: 8 experts, top-2),
    # and the factor means nothing at ep = 1
    assert expert_imbalance(moe("parallelism.ep=2", "workload.expert_imbalance=10")) == 2.0
    assert expert_imbalance(moe("parallelism.ep=8", "workload.expert_imbalance=8")) == 4.0
    assert run(moe("parallelism.ep=1", "workload.expert_imbalance=3")).step_time_s == run(moe("parallelism.ep=1")).step_time_s


def test_moe_overlap_hides_dispatch_behind_compute():
    slow_net = ["parallelism.ep=8", "parallelism.dp=2", "parallelism.tp=4", "parallelism.sp=true"]
    plain = run(moe(*slow_net), "coarse").step_time_s
    overlapped = run(moe(*slow_net, "parallelism.moe_overlap=true"), "coarse")
    assert overlapped.step_time_s < plain
    assert overlapped.step_time_s == pytest.approx(run(moe(*slow_net, "parallelism.moe_overlap=true"), "ops")
                                                   .step_time_s, rel=1e-9)


@pytest.mark.parametrize("overrides, field", [
    (["parallelism.ep=3"], "parallelism.ep"),                       # does not divide 8 experts
    (["parallelism.ep=8", "parallelism.dp=4"], "parallelism.ep"),   # more than the ranks it is carved from
    (["parallelism.etp=3"], "parallelism.etp"),
    (["parallelism.tp=2"], "parallelism.sp"),                       # MoE with TP needs SP
    (["parallelism.cp=3"], "parallelism.cp"),                       # 2 x cp must divide the sequence
    (["model.moe.top_k=9"], "model.moe"),
])
def test_impossible_expert_and_context_plans_name_their_field(overrides, field):
    with pytest.raises(RankflowError) as err:
        moe(*overrides)
    assert field in str(err.value)


def test_context_parallel_ring_overlaps_what_allgather_exposes():
    long = ["workload.seq_len=16384", "workload.global_batch=8", "parallelism.cp=4", "parallelism.dp=2"]
    ring, gather = (api.load_scenario(MIXTRAL, H100, overrides=[*SMALL, *long, f"parallelism.cp_algorithm={a}"])
                    for a in ("ring", "allgather"))
    ring_comm, gather_comm = collectives(ring, "cp"), collectives(gather, "cp")
    assert ring_comm and gather_comm
    assert {n.kind for n in gather_comm} == {Collective.ALL_GATHER, Collective.REDUCE_SCATTER}
    # ring hides half of what all-gather exposes; its kernels walk s/cp keys per call, all-gather's the whole
    # sequence, so its attention runs lower on the curve and the step need not be shorter
    assert run(ring).breakdown.exposed_comm["cp"] < 0.75 * run(gather).breakdown.exposed_comm["cp"]
    # Each rank holds seq/cp tokens of activations.
    base = api.load_scenario(MIXTRAL, H100, overrides=[*SMALL, "workload.seq_len=16384", "workload.global_batch=8",
                                                       "parallelism.dp=8"])
    assert run(ring).memory[0].activations < run(base).memory[0].activations / 3


def test_recompute_modules_trade_activations_for_backward_time():
    plain = run(moe("parallelism.ep=8"))
    recompute = run(moe("parallelism.ep=8", "parallelism.recompute=selective",
                        "parallelism.recompute_modules=[layernorm,moe]"))
    act_only = run(moe("parallelism.ep=8", "parallelism.recompute=selective", "parallelism.recompute_modules=[moe_act]"))
    assert recompute.memory[0].activations < act_only.memory[0].activations < plain.memory[0].activations
    assert recompute.step_time_s > act_only.step_time_s > plain.step_time_s


def test_mla_attention_has_its_latent_projections():
    sc = api.load_scenario(ROOT / "model_configs" / "deepseek-v2-lite.yaml", H100,
                           overrides=["model.layers=3", "workload.seq_len=1024", "workload.global_batch=8",
                                      "parallelism.dp=8", "parallelism.ep=8"])
    from tests.helpers import layer_graph

    names = [op.name for op in layer_graph(sc).unit_ops(1)]
    assert {"mla_down", "mla_norm", "mla_up"} <= set(names) and "qkv_proj" not in names
    assert run(sc).step_time_s > 0


def test_uneven_pipeline_splits_follow_megatron():
    m = api.load_model(ROOT / "model_configs" / "qwen3-235b-a22b.yaml").model
    accounts = api.load_scenario(ROOT / "model_configs" / "qwen3-235b-a22b.yaml", H100, overrides=[
        "parallelism.pp=8", "parallelism.dp=4", "parallelism.ep=4", "parallelism.schedule=interleaved",
        "parallelism.virtual_stages=4", "parallelism.split_accounts_embedding=true",
        "parallelism.split_accounts_loss=true", "workload.global_batch=64"]).plan
    counts = [len(c) for c in stage_layers(m, accounts)]
    assert counts[0] == counts[-1] == 2 and set(counts[1:-1]) == {3} and sum(counts) == 94
    first_last = accounts.model_copy(update={"split_accounts_embedding": False, "split_accounts_loss": False,
                                              "first_stage_layers": 10, "last_stage_layers": 12, "virtual_stages": 2})
    counts = [len(c) for c in stage_layers(m, first_last)]
    assert counts[0] == counts[8] == 5 and counts[7] == counts[15] == 6 and sum(counts) == 94
    with pytest.raises(RankflowError, match="first_stage_layers"):
        api.load_scenario(ROOT / "model_configs" / "qwen3-235b-a22b.yaml", H100, overrides=[
            "parallelism.pp=8", "parallelism.dp=4", "parallelism.ep=4", "parallelism.first_stage_layers=9",
            "workload.global_batch=64"])


def test_dispatchers_move_what_their_implementation_moves():
    gather = moe("parallelism.ep=8", "parallelism.moe_dispatcher=allgather")
    kinds = {n.kind for n in collectives(gather, "ep")}
    assert kinds == {Collective.ALL_GATHER, Collective.REDUCE_SCATTER}
    # All-gather moves every token of the group; all-to-all only the routed copies (top-2 of 8).
    assert max(n.bytes for n in collectives(gather, "ep")) == pytest.approx(
        8 / 2 * max(n.bytes for n in collectives(moe("parallelism.ep=8"), "ep")))
    # DeepEP takes the link's measured DeepEP fit where the hardware file has one (H800), else the all-to-all's.
    h800 = ROOT / "hardware_configs" / "H800.yaml"
    nodes2 = [*SMALL, "parallelism.dp=8", "parallelism.tp=2", "parallelism.sp=true", "parallelism.ep=8"]  # 2 nodes

    def ep_time(hw, dispatcher):
        sc = api.load_scenario(MIXTRAL, hw, overrides=[*nodes2, f"parallelism.moe_dispatcher={dispatcher}"])
        return run(sc).breakdown.exposed_comm["ep"]

    assert ep_time(h800, "deepep") < ep_time(h800, "alltoall")
    assert ep_time(H100, "deepep") == ep_time(H100, "alltoall")


def test_a2a_context_parallelism_trades_the_sequence_shard_for_heads_around_the_kernel():
    long = ["workload.seq_len=16384", "workload.global_batch=8", "parallelism.cp=4", "parallelism.dp=2"]
    sc = api.load_scenario(MIXTRAL, H100, overrides=[*SMALL, *long, "parallelism.cp_algorithm=a2a"])
    comm = collectives(sc, "cp")
    assert comm and {n.kind for n in comm} == {Collective.ALL_TO_ALL}
    m = sc.model
    local = 2 * 16384 / 4  # bf16 bytes x this rank's tokens
    qkv, out = local * (m.heads + 2 * m.n_kv_heads) * m.d_head, local * m.heads * m.d_head
    per_layer = sorted({n.bytes for n in comm})
    assert per_layer == sorted({qkv, out})
    # the exchange is exposed where the ring overlaps it
    ring = api.load_scenario(MIXTRAL, H100, overrides=[*SMALL, *long])
    assert run(sc).breakdown.exposed_comm["cp"] > run(ring).breakdown.exposed_comm["cp"]
    with pytest.raises(RankflowError) as err:  # Mixtral's 8 KV heads cannot split over cp=16
        api.load_scenario(MIXTRAL, H100, overrides=[*SMALL, "workload.seq_len=32768", "workload.global_batch=16",
                                                    "parallelism.cp=16", "parallelism.cp_algorithm=a2a"])
    assert err.value.field == "parallelism.cp_algorithm"


def test_deepep_over_nodes_sends_a_token_once_per_node_and_the_plain_all_to_all_does_not():
    """Qwen3-30B-A3B's 128 experts over ep=16 ranks on 2 nodes: top-8 copies, but DeepEP crosses to the
    other node once per token that has an expert there; within one node the two dispatchers cost the same."""
    def ep_time(dispatcher: str, ep: int) -> float:
        sc = moe(f"parallelism.ep={ep}", f"parallelism.dp={ep}", "workload.global_batch=32",
                 f"parallelism.moe_dispatcher={dispatcher}", model=ROOT / "model_configs" / "qwen3-30b-a3b.yaml")
        return run(sc).breakdown.exposed_comm["ep"]

    assert ep_time("deepep", 16) < 0.8 * ep_time("alltoall", 16)
    assert ep_time("deepep", 8) == pytest.approx(ep_time("alltoall", 8), rel=1e-9)


def test_the_layer_table_shows_each_kind_of_layer_a_dense_prefix_model_has():
    sc = moe(model=ROOT / "model_configs" / "deepseek-v2-lite.yaml")
    table = run(sc).layer_table
    layers = sorted({row["layer"] for row in table})
    assert layers == [0, 1]  # the dense first layer, then the first MoE layer
    ops = {layer: {row["op"] for row in table if row["layer"] == layer} for layer in layers}
    assert "fc1" in ops[0] and "expert_fc1" not in ops[0]
    assert {"router", "permute", "expert_fc1", "unpermute"} <= ops[1]
