"""Costs outside the layers' GEMMs that frameworks pay every microbatch or step: the loss kernels, the
embedding's dense gradient, and Megatron-Core's passes over its gradient buffer."""

from __future__ import annotations

import dataclasses

import pytest

from graphgen.config import CrossEntropyEfficiency
from graphgen.costs.compute import ComputeModel
from graphgen.model.ops import OpKind
from graphgen.program.roles import optimizer_item
from tests.helpers import TINY_LLAMA, layer_graph, scenario


def _op(sc, name):
    lg = layer_graph(sc)
    return next(op for ops in (lg.embed, lg.head, lg.layer) for op in ops if op.name == name)


def _plan(sc, **update):
    return dataclasses.replace(sc, plan=sc.plan.model_copy(update=update))


@pytest.mark.parametrize("fused,fwd,bwd", [(True, 4, 4), (False, 38, 14)])
def test_cross_entropy_moves_the_bytes_of_its_implementation_per_logit(fused, fwd, bwd):
    sc = scenario(TINY_LLAMA, {"fused_cross_entropy": fused, "seq_len": 256, "global_batch": 2})
    ce = _op(sc, "cross_entropy")
    logits = sc.workload.seq_len * sc.padded_vocab  # one microbatch of one sequence, tp = 1
    assert ce.bytes == pytest.approx(fwd * logits)
    assert ce.bytes * ce.bwd_bytes_factor == pytest.approx(bwd * logits)


def test_a_measured_cross_entropy_bandwidth_prices_only_the_loss_of_its_kind():
    sc = scenario(TINY_LLAMA, {"fused_cross_entropy": True, "seq_len": 256, "global_batch": 2})
    ce, norm = _op(sc, "cross_entropy"), _op(sc, "ln_final")
    eff = sc.hardware.device.efficiency
    slow = sc.hardware.device.model_copy(update={"efficiency": eff.model_copy(
        update={"cross_entropy": CrossEntropyEfficiency(fused=eff.memory_bound / 4)})})
    base, fused = ComputeModel(sc.hardware.device, "bf16", fused_loss=True), ComputeModel(slow, "bf16", fused_loss=True)
    launch = sc.hardware.device.launch_overhead_us * 1e-6
    assert fused.op_time(ce, "fwd") - launch == pytest.approx(4 * (base.op_time(ce, "fwd") - launch))
    assert fused.op_time(norm, "fwd") == base.op_time(norm, "fwd")
    unfused = ComputeModel(slow, "bf16", fused_loss=False)  # only the fused kernel was measured
    assert unfused.op_time(ce, "fwd") == base.op_time(ce, "fwd")


def test_the_embedding_backward_writes_the_whole_table_and_megatron_adds_it_to_main_grad():
    sc = scenario(TINY_LLAMA, {"seq_len": 256, "global_batch": 2})
    base = _op(sc, "embedding")
    copied = _op(_plan(sc, main_grad_copy=True), "embedding")
    table = sc.padded_vocab * sc.model.hidden
    lookup = base.bytes
    assert base.bytes * base.bwd_bytes_factor == pytest.approx(3 * lookup + 2 * table)  # zero-filled bf16 gradient
    # plus the hook's main_grad.add_: read the bf16 gradient, read and write the fp32 buffer
    assert copied.bytes * copied.bwd_bytes_factor == pytest.approx(3 * lookup + 2 * table + (2 + 8) * table)


@pytest.mark.parametrize("dp,prescaled", [(1, False), (4, True)])
def test_gradient_buffer_passes_add_traffic_over_the_unsharded_buffer(dp, prescaled):
    base = scenario(TINY_LLAMA, {"global_batch": 8}, dp=dp, zero_stage=1)
    sc = dataclasses.replace(base, plan=base.plan.model_copy(update={"grad_buffer_passes": 2.0,
                                                                      "grad_prescale": True}))
    lg = layer_graph(base)
    chunk = (tuple(range(lg.layers)),)
    before, after = optimizer_item(base, lg, chunk, (0,)), optimizer_item(sc, lg, chunk, (0,))
    params = sum(lg.unit_trainable(u) for u in lg.chunk_units(chunk, 0))
    passes = 2 + (2 if prescaled else 0)
    assert after.bytes - before.bytes == pytest.approx(passes * params * 4, rel=1e-9)  # fp32 main grads




@pytest.mark.parametrize("impl,extra", [("foreach", 52), ("per_tensor", 60)])
def test_an_unfused_adamw_moves_its_intermediates_per_parameter(impl, extra):
    base = scenario(TINY_LLAMA, {"global_batch": 8}, dp=4, zero_stage=1)
    sc = scenario(TINY_LLAMA, {"global_batch": 8, "optimizer_impl": impl}, dp=4, zero_stage=1)
    lg = layer_graph(base)
    chunk = (tuple(range(lg.layers)),)
    before, after = optimizer_item(base, lg, chunk, (0,)), optimizer_item(sc, lg, chunk, (0,))
    local = sum(lg.unit_trainable(u) for u in lg.chunk_units(chunk, 0)) / 4  # ZeRO-1 updates its shard
    assert after.bytes - before.bytes == pytest.approx(extra * local, rel=1e-9)
    sgd = scenario(TINY_LLAMA, {"global_batch": 8, "optimizer": "sgd", "optimizer_impl": impl}, dp=4, zero_stage=1)
    plain = scenario(TINY_LLAMA, {"global_batch": 8, "optimizer": "sgd"}, dp=4, zero_stage=1)
    assert optimizer_item(sgd, lg, chunk, (0,)).bytes == optimizer_item(plain, lg, chunk, (0,)).bytes


@pytest.mark.parametrize("framework, version, impl, rescale", [
    ("composer", None, "per_tensor", True), ("torchtitan", "2024.08", "foreach", True),
    ("torchtitan", "2024.12", "foreach", True), ("torchtitan", "2025.02", "fused", True),
    ("hf-trainer", None, "foreach", True), ("megatron-lm", None, "fused", False), (None, None, "fused", False)])
def test_framework_profiles_name_their_optimizer_implementation_and_clip(framework, version, impl, rescale):
    from rankflow import api

    workload = {"seq_len": 256, "global_batch": 8}
    if framework:
        workload["framework"] = framework
    if version:
        workload["framework_version"] = version
    w = api.load_scenario({"model": dict(TINY_LLAMA), "workload": workload}, scenario(TINY_LLAMA).hardware).workload
    assert (w.optimizer_impl, w.grad_clip_rescale) == (impl, rescale)


@pytest.mark.parametrize("zero", [0, 3])
def test_a_clip_that_always_rescales_reads_and_writes_every_gradient_it_holds(zero):
    base = scenario(TINY_LLAMA, {"global_batch": 8}, dp=4, zero_stage=zero)
    sc = scenario(TINY_LLAMA, {"global_batch": 8, "grad_clip_rescale": True}, dp=4, zero_stage=zero)
    lg = layer_graph(base)
    chunk = (tuple(range(lg.layers)),)
    params = sum(lg.unit_trainable(u) for u in lg.chunk_units(chunk, 0))
    held = params / 4 if zero >= 2 else params
    grown = optimizer_item(sc, lg, chunk, (0,)).bytes - optimizer_item(base, lg, chunk, (0,)).bytes
    assert grown == pytest.approx(2 * held * 4, rel=1e-9)  # fp32 gradients


TINY_MOE = dict(TINY_LLAMA, layers=4, kv_heads=8,
                moe={"experts": 8, "top_k": 2, "expert_ffn_hidden": 256, "shared_experts": 1})


def _moe_op(sc, name):
    lg = layer_graph(sc)
    return next(op for u in range(lg.layers) for op in lg.unit_block(u).ops if op.name == name)


@pytest.mark.parametrize("ep,sorted_", [(2, True), (8, False)])  # 4 local experts, or one
def test_the_alltoall_dispatcher_sorts_received_tokens_by_local_expert(ep, sorted_):
    base = scenario(TINY_MOE, {"seq_len": 256, "global_batch": 8}, dp=8, ep=ep)
    deepep = _plan(base, moe_dispatcher="deepep")
    h = base.model.hidden
    routed = base.workload.seq_len * base.model.moe.top_k  # tokens x top-k, balanced, one microbatch
    for name in ("permute", "unpermute"):
        op, plain = _moe_op(base, name), _moe_op(deepep, name)
        extra = op.bytes - plain.bytes
        assert extra == pytest.approx(2 * 2 * routed * h if sorted_ else 0.0)
        # its backward is one more sort, not the permutation's own backward factor applied to it
        assert op.bytes * op.bwd_bytes_factor - plain.bytes * plain.bwd_bytes_factor == pytest.approx(extra)


def test_sharded_gradient_passes_divide_expert_gradients_by_their_own_group():
    moe = dict(TINY_MOE)
    for ep in (1, 8):
        sc = _plan(scenario(moe, {"global_batch": 8}, dp=8, ep=ep, zero_stage=2),
                   grad_buffer_passes=2.0)
        lg = layer_graph(sc)
        chunk = (tuple(range(lg.layers)),)
        item = optimizer_item(sc, lg, chunk, (0,))
        base = optimizer_item(_plan(sc, grad_buffer_passes=0.0), lg, chunk, (0,))
        units = lg.chunk_units(chunk, 0)
        dense = sum(lg.unit_trainable(u, False) for u in units)
        experts = sum(lg.unit_trainable(u, True) for u in units)
        held = dense / 8 + experts / sc.plan.edp
        assert item.bytes - base.bytes == pytest.approx(2 * 4 * held)


def test_a_frozen_embedding_writes_no_gradient():
    sc = scenario(TINY_LLAMA, {"seq_len": 256, "global_batch": 2,
                               "finetune": {"method": "lora", "lora_rank": 8}})
    emb = _op(sc, "embedding")
    assert not emb.trainable and emb.bytes * emb.bwd_bytes_factor == 0


def test_attention_with_few_query_blocks_per_sm_runs_below_its_curve():
    """Where a device lists measured fill shares (B200: cuDNN attention at 8-64 heads), a forward call with
    a few query blocks per SM runs at that share of the curve and its backward barely slows; a device
    without them keeps the whole rate from one block per SM up."""
    from tests.helpers import ROOT

    b200 = scenario(TINY_LLAMA, {"global_batch": 1}, hw_file=ROOT / "hardware_configs" / "B200.yaml").hardware.device
    cm = ComputeModel(b200, "bf16")
    sms = b200.sm_count
    assert cm.attention_fill(2048) == pytest.approx(1.0)
    assert cm.attention_fill(256) == pytest.approx(0.356, rel=0.02)  # 8 heads of 4,096 tokens
    assert cm.attention_fill(256, backward=True) == pytest.approx(0.904, rel=0.02)
    assert cm.attention_fill(0.5 * sms) == pytest.approx(0.356 * 0.5 / 1.73, rel=0.01)  # half an SM's worth
    fast = cm.time(OpKind.ATTENTION, 1e12, 0.0, seq_len=4096, blocks=2048)
    assert cm.time(OpKind.ATTENTION, 1e12, 0.0, seq_len=4096, blocks=256) / fast == pytest.approx(1 / 0.356, rel=0.02)
    bare = b200.model_copy(update={"efficiency": b200.efficiency.model_copy(update={"attention_fill": None})})
    plain = ComputeModel(bare, "bf16")
    assert plain.attention_fill(256) == 1.0 and plain.attention_fill(0.5 * sms) == pytest.approx(0.5)


def test_a_fused_permutation_takes_its_measured_rate_for_its_own_bytes_only():
    from graphgen.config import PermuteEfficiency

    sc = scenario(TINY_MOE, {"seq_len": 256, "global_batch": 8}, dp=8, ep=2)  # 4 local experts: sorted too
    eff = sc.hardware.device.efficiency
    rates = PermuteEfficiency(fwd=eff.memory_bound / 5, bwd=eff.memory_bound / 3, source="test")
    device = sc.hardware.device.model_copy(update={"efficiency": eff.model_copy(update={"moe_permute": rates})})
    hbm = device.hbm_bandwidth_gbs * 1e9
    plain, fused = ComputeModel(device, "bf16"), ComputeModel(device, "bf16", fused_permute=True)
    for name in ("permute", "unpermute"):
        op = _moe_op(sc, name)
        pf, pb = op.permute_bytes
        assert 0 < pf < op.bytes and 0 < pb < op.bytes * op.bwd_bytes_factor  # the local sort is not its
        for direction, nbytes, slower in (("fwd", pf, 5), ("bwd", pb, 3)):
            extra = fused.op_time(op, direction) - plain.op_time(op, direction)
            assert extra == pytest.approx((slower - 1) * nbytes / (hbm * eff.memory_bound))
        assert fused.op_time(op, "bwd_w") == plain.op_time(op, "bwd_w")
    # a device without the measurement, or a plan without the fusion, keeps the memory-bound rate
    bare = ComputeModel(sc.hardware.device, "bf16", fused_permute=True)
    assert bare.op_time(_moe_op(sc, "permute"), "fwd") == ComputeModel(sc.hardware.device, "bf16").op_time(
        _moe_op(sc, "permute"), "fwd")


def test_the_plan_flag_reaches_the_costs_of_a_whole_step():
    from graphgen.config import PermuteEfficiency
    from rankflow import api

    sc = scenario(TINY_MOE, {"seq_len": 256, "global_batch": 8}, dp=8, ep=2)
    eff = sc.hardware.device.efficiency
    rates = PermuteEfficiency(fwd=eff.memory_bound / 10, bwd=eff.memory_bound / 10, source="test")
    device = sc.hardware.device.model_copy(update={"efficiency": eff.model_copy(update={"moe_permute": rates})})
    sc = dataclasses.replace(sc, hardware=sc.hardware.model_copy(update={"device": device}))
    assert api.simulate(_plan(sc, moe_permute_fusion=True)).step_time_s > api.simulate(sc).step_time_s
