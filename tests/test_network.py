"""Closed forms of the bus-bandwidth collective model on a DGX A100-like two-level network."""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphgen.config import parse_hardware_config
from graphgen.costs.network import NetworkModel, bus_coefficient, deepep_remote_share, link_bandwidth
from graphgen.parallel.layout import Collective

# Copied from hardware_configs/A100-SXM4-80GB.yaml (commit 9d8080e) without the message-size curves,
# so the closed forms are exact; kept literal so that edits to the shipped file do not move these tests.
A100 = {
    "name": "DGX-A100-80GB",
    "device": {
        "name": "A100-SXM4-80GB",
        "peak_tflops": {"fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312},
        "hbm_gib": 80,
        "hbm_bandwidth_gbs": 2039,
        "launch_overhead_us": 2.0,
        "memory_reserved_gib": 1.5,
        "efficiency": {
            "matmul": {"points": [[2.15, 0.38], [17.2, 0.71], [137, 0.73], [1100, 0.81], [8796, 0.82]]},
            "attention": {"points": [[512, 0.32], [1024, 0.43], [2048, 0.50], [4096, 0.55], [8192, 0.58],
                                     [16384, 0.61]]},
            "memory_bound": 0.83,
        },
    },
    "node": {
        "gpus_per_node": 8,
        "intra": {"topology": "switch", "bandwidth_gbs": 300, "latency_us": 3.4, "efficiency": 0.78,
                  "algorithm": "ring"},
    },
    "scale_out": {"topology": "switch", "bandwidth_gbs": 25, "latency_us": 14, "efficiency": 0.96,
                  "algorithm": "ring"},
    "parallelism": {"tp": 1, "pp": 1, "dp": 8, "zero_stage": 0, "recompute": "none"},
    "execution_backend": {"model": "analytical"},
}

NV_BW = 300e9 * 0.78   # bytes/s per GPU on NVLink after efficiency
NV_LAT = 3.4e-6
IB_BW = 25e9 * 0.96    # bytes/s per GPU NIC after efficiency
IB_LAT = 14e-6


def hw(**patch):
    """A100 config with dotted-path patches, e.g. hw(**{"node.intra.derate": 0.5})."""
    data = copy.deepcopy(A100)
    for key, value in patch.items():
        node = data
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = value
    return parse_hardware_config(data)


def net(**patch) -> NetworkModel:
    return NetworkModel(hw(**patch))


# ----------------------------------------------------------------------------------- closed forms

S = 256 * 2**20  # 256 MiB


def test_link_bandwidth():
    h = hw()
    assert link_bandwidth(h.node.intra) == pytest.approx(NV_BW)
    assert link_bandwidth(h.scale_out, 1e9) == pytest.approx(IB_BW)
    h = hw(**{"scale_out.derate": 0.5})
    assert link_bandwidth(h.scale_out) == pytest.approx(IB_BW * 0.5)


def test_ring_all_reduce_one_node():
    n = 8
    expected = 2 * (n - 1) / n * S / NV_BW + 2 * (n - 1) * NV_LAT
    assert net().collective_time(Collective.ALL_REDUCE, S, 8, 1) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kind", [Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_TO_ALL])
@pytest.mark.parametrize("n", [2, 4, 8])
def test_all_gather_reduce_scatter_one_node(kind, n):
    expected = (n - 1) / n * S / NV_BW + (n - 1) * NV_LAT
    assert net().collective_time(kind, S, n, 1) == pytest.approx(expected, rel=1e-12)


def test_all_reduce_is_reduce_scatter_plus_all_gather():
    m = net()
    ar = m.collective_time(Collective.ALL_REDUCE, S, 8, 1)
    rs = m.collective_time(Collective.REDUCE_SCATTER, S, 8, 1)
    ag = m.collective_time(Collective.ALL_GATHER, S, 8, 1)
    assert ar == pytest.approx(rs + ag, rel=1e-12)


def test_numbers_for_a_1_gib_all_reduce():
    # 2*7/8 * 2^30 B / 234 GB/s = 8.0305 ms, plus 14 * 3.4 us = 47.6 us
    t = net().collective_time(Collective.ALL_REDUCE, 2**30, 8, 1)
    assert t == pytest.approx(8.0305e-3 + 47.6e-6, rel=1e-4)


def test_one_member_or_empty_message_is_free():
    m = net()
    assert m.collective_time(Collective.ALL_REDUCE, S, 1, 1) == 0.0
    assert m.collective_time(Collective.ALL_REDUCE, 0, 8, 1) == 0.0
    assert bus_coefficient(Collective.ALL_REDUCE, 1) == 0.0
    assert bus_coefficient(Collective.ALL_REDUCE, 4) == pytest.approx(1.5)
    assert bus_coefficient(Collective.ALL_GATHER, 4) == pytest.approx(0.75)


@pytest.mark.parametrize("kind, coef", [(Collective.ALL_REDUCE, 2 * 7 / 8), (Collective.ALL_GATHER, 7 / 8),
                                        (Collective.REDUCE_SCATTER, 7 / 8)])
def test_group_over_two_nodes_bottlenecked_by_nics(kind, coef):
    """4 GPUs in each of 2 nodes: scale-out offers 4 NICs = 96 GB/s < NVLink 234 GB/s."""
    m = net(**{"node.intra.latency_us": 0, "scale_out.latency_us": 0})
    bw = min(NV_BW, 4 * IB_BW)
    assert bw == pytest.approx(4 * IB_BW)
    assert m.collective_time(kind, S, 4, 2) == pytest.approx(coef * S / bw, rel=1e-12)


@pytest.mark.parametrize("per_node, nodes", [(4, 2), (8, 4), (2, 8)])
def test_an_all_to_all_over_nodes_sends_each_ranks_remote_share_through_its_own_nic(per_node, nodes):
    """Not a ring: each rank's (n - m)/n of its buffer leaves through its own NIC while (m - 1)/n goes to
    its node's peers, so m NICs do not add up for one rank (nccl-tests' multi-node alltoall bus bandwidth
    sits near one NIC's rate); a ring collective over the same group does use all m."""
    m = net(**{"node.intra.latency_us": 0, "scale_out.latency_us": 0})
    n = per_node * nodes
    expected = max((per_node - 1) / n * S / NV_BW, (n - per_node) / n * S / IB_BW)
    assert m.collective_time(Collective.ALL_TO_ALL, S, per_node, nodes) == pytest.approx(expected, rel=1e-12)
    ring = m.collective_time(Collective.ALL_GATHER, S, per_node, nodes)
    assert ring == pytest.approx((n - 1) / n * S / min(NV_BW, per_node * IB_BW), rel=1e-12)
    assert m.collective_time(Collective.ALL_TO_ALL, S, per_node, nodes) > ring


def test_deepep_sends_one_copy_per_remote_node_holding_an_expert():
    # 4 experts on 2 nodes: a top-1 token leaves its node half the time; a top-2 token's two experts both
    # stay home with probability (2/4)(1/3), and its two copies cross once at most
    assert deepep_remote_share(4, 1, 2) == pytest.approx(0.5)
    assert deepep_remote_share(4, 2, 2) == pytest.approx((1 - 1 / 6) / 2)
    assert deepep_remote_share(512, 10, 1) == 0.0
    # top-10 of 512 over 4 nodes: ~2.8 remote nodes per token against 7.5 remote copies for a plain all-to-all
    assert deepep_remote_share(512, 10, 4) * 10 == pytest.approx(3 * (1 - math.prod((384 - i) / (512 - i)
                                                                                    for i in range(10))))
    # DeepSeek-V3 over 8 nodes, one of its 8 groups per node, 4 groups per token: 4 of 8 nodes are
    # reached, the token's own among them half the time, so 3.5 of its 8 copies cross
    assert deepep_remote_share(256, 8, 8, 8, 4) * 8 == pytest.approx(7 * (1 - 35 / 70))
    assert deepep_remote_share(256, 8, 8, 8, 4) < deepep_remote_share(256, 8, 8)
    m = net(**{"node.intra.latency_us": 0, "scale_out.latency_us": 0})
    share = deepep_remote_share(512, 10, 4)
    plain = m.collective_time(Collective.ALL_TO_ALL, S, 8, 4)
    deduplicated = m.collective_time(Collective.ALL_TO_ALL, S, 8, 4, "deepep", share)
    assert deduplicated == pytest.approx(max(7 / 32 * S / NV_BW, share * S / IB_BW), rel=1e-12)
    assert deduplicated < plain


def test_group_over_nodes_bottlenecked_by_nvlink_when_nics_are_fast():
    # 8 NICs x 50 GB/s = 400 GB/s > NVLink 234 GB/s: NVLink is the slowest dimension.
    m = net(**{"scale_out.bandwidth_gbs": 50, "scale_out.efficiency": 1.0,
               "node.intra.latency_us": 0, "scale_out.latency_us": 0})
    assert m.collective_time(Collective.ALL_REDUCE, S, 8, 2) == pytest.approx(2 * 15 / 16 * S / NV_BW)


def test_one_gpu_per_node_uses_one_nic():
    m = net(**{"scale_out.latency_us": 0})
    assert m.collective_time(Collective.ALL_REDUCE, S, 1, 4) == pytest.approx(2 * 3 / 4 * S / IB_BW)


def test_p2p_time():
    m = net()
    assert m.p2p_time(S, same_node=True) == pytest.approx(NV_LAT + S / NV_BW, rel=1e-12)
    assert m.p2p_time(S, same_node=False) == pytest.approx(IB_LAT + S / IB_BW, rel=1e-12)
    assert m.p2p_time(0, same_node=False) == pytest.approx(IB_LAT)


def test_latency_bound_small_message_counts_ring_steps():
    m = net()
    tiny = 1.0
    assert m.collective_time(Collective.ALL_REDUCE, tiny, 8, 1) == pytest.approx(14 * NV_LAT, rel=1e-6)
    assert m.collective_time(Collective.ALL_GATHER, tiny, 8, 1) == pytest.approx(7 * NV_LAT, rel=1e-6)


def test_flat_ring_over_nodes_counts_nccls_steps():
    # NCCL's tuning model (src/graph/tuning.cc): a ring over 8 GPUs x 64 nodes has 511 all-gather
    # steps, 63 of them network hops; an all-reduce has 1022, 126 across the network.
    m = net()
    tiny = 1.0
    assert m.collective_time(Collective.ALL_GATHER, tiny, 8, 64) == pytest.approx(
        (511 - 63) * NV_LAT + 63 * IB_LAT, rel=1e-6)
    assert m.collective_time(Collective.ALL_REDUCE, tiny, 8, 64) == pytest.approx(
        (1022 - 126) * NV_LAT + 126 * IB_LAT, rel=1e-6)
    # One GPU per node: every step crosses the network.
    assert m.collective_time(Collective.ALL_GATHER, tiny, 1, 64) == pytest.approx(63 * IB_LAT, rel=1e-6)
    # A tree on the network dimension keeps each dimension's own steps.
    t = net(**{"scale_out.algorithm": "tree"}).collective_time(Collective.ALL_GATHER, tiny, 8, 64)
    assert t == pytest.approx(7 * NV_LAT + 6 * IB_LAT, rel=1e-6)


@pytest.mark.parametrize("algorithm, steps", [("ring", 7), ("tree", 3), ("direct", 1)])
def test_algorithm_sets_latency_steps(algorithm, steps):
    m = net(**{"node.intra.algorithm": algorithm})
    t = m.collective_time(Collective.ALL_GATHER, S, 8, 1)
    assert t == pytest.approx(7 / 8 * S / NV_BW + steps * NV_LAT, rel=1e-12)
    t = m.collective_time(Collective.ALL_REDUCE, S, 8, 1)
    assert t == pytest.approx(14 / 8 * S / NV_BW + 2 * steps * NV_LAT, rel=1e-12)


def test_message_efficiency_curve_slows_small_messages():
    curve = {"points": [[128, 0.76], [1024, 0.98], [8192, 1.0]]}
    m = net(**{"node.intra.message_efficiency": curve, "node.intra.latency_us": 0})
    # below the first point the first efficiency holds
    t = m.collective_time(Collective.ALL_GATHER, 64 * 2**20, 8, 1)
    assert t == pytest.approx(7 / 8 * 64 * 2**20 / (NV_BW * 0.76), rel=1e-12)
    # at and above the last point the curve is 1
    t = m.collective_time(Collective.ALL_GATHER, 8192 * 2**20, 8, 1)
    assert t == pytest.approx(7 / 8 * 8192 * 2**20 / NV_BW, rel=1e-12)
    # log-linear in between: 362 MiB is the geometric midpoint of 128 and 1024 MiB
    mid = math.sqrt(128 * 1024)
    t = m.collective_time(Collective.ALL_GATHER, mid * 2**20, 8, 1)
    assert t == pytest.approx(7 / 8 * mid * 2**20 / (NV_BW * 0.87), rel=1e-9)


# ------------------------------------------------------------------------------------ properties

KINDS = st.sampled_from(list(Collective))
SHAPES = st.sampled_from([(2, 1), (4, 1), (8, 1), (1, 2), (1, 8), (2, 2), (4, 2), (8, 4), (8, 16)])
SIZES = st.floats(min_value=1.0, max_value=64e9, allow_nan=False)
PROPS = dict(max_examples=60, deadline=None)


@settings(**PROPS)
@given(KINDS, SHAPES, SIZES, st.sampled_from(["node.intra", "scale_out"]),
       st.floats(1.0, 10.0), st.booleans())
def test_more_bandwidth_is_never_slower(kind, shape, nbytes, link, factor, with_curve):
    base = A100_with_curve() if with_curve else {}
    lo = net(**base)
    bw = (300 if link == "node.intra" else 25) * factor
    hi = net(**base, **{f"{link}.bandwidth_gbs": bw})
    assert hi.collective_time(kind, nbytes, *shape) <= lo.collective_time(kind, nbytes, *shape) * (1 + 1e-12)
    same = link == "node.intra"
    assert hi.p2p_time(nbytes, same) <= lo.p2p_time(nbytes, same) * (1 + 1e-12)


@settings(**PROPS)
@given(KINDS, SHAPES, SIZES, st.floats(1.0, 100.0), st.booleans())
def test_larger_messages_are_never_faster(kind, shape, nbytes, factor, with_curve):
    m = net(**(A100_with_curve() if with_curve else {}))
    small = m.collective_time(kind, nbytes, *shape)
    large = m.collective_time(kind, nbytes * factor, *shape)
    assert large >= small * (1 - 1e-12)
    for same in (True, False):
        assert m.p2p_time(nbytes * factor, same) >= m.p2p_time(nbytes, same) * (1 - 1e-12)


@settings(**PROPS)
@given(KINDS, SHAPES, SIZES, st.sampled_from(["node.intra", "scale_out"]),
       st.floats(0.05, 1.0, exclude_max=True))
def test_derate_is_never_faster(kind, shape, nbytes, link, derate):
    healthy = net()
    degraded = net(**{f"{link}.derate": derate})
    t0 = healthy.collective_time(kind, nbytes, *shape)
    t1 = degraded.collective_time(kind, nbytes, *shape)
    assert t1 >= t0 * (1 - 1e-12)
    per_node, nodes = shape
    uses_link = per_node > 1 if link == "node.intra" else nodes > 1
    if not uses_link:
        assert t1 == t0
    same = link == "node.intra"
    assert degraded.p2p_time(nbytes, same) >= healthy.p2p_time(nbytes, same)


@settings(**PROPS)
@given(KINDS, SIZES, st.sampled_from([2, 4, 8]))
def test_spanning_nodes_is_never_faster_than_one_node(kind, nbytes, n):
    """The same number of ranks is never quicker when split over nodes (IB slower than NVLink)."""
    m = net()
    one = m.collective_time(kind, nbytes, n, 1)
    two = m.collective_time(kind, nbytes, n // 2, 2)
    assert two >= one * (1 - 1e-12)


def A100_with_curve() -> dict:
    curve = {"points": [[128, 0.76], [1024, 0.98], [8192, 1.0]]}
    return {"node.intra.message_efficiency": curve, "scale_out.message_efficiency": curve}


def test_collective_fit_replaces_the_link_numbers_for_its_kind():
    fit = {"efficiency": 0.5, "step_latency_us": 10.0, "base_latency_us": 20.0}
    m = net(**{"node.intra.collective_fits": {"all_gather": fit}})
    plain = net()
    t = m.collective_time(Collective.ALL_GATHER, S, 8, 1)
    assert t == pytest.approx(7 / 8 * S / (300e9 * 0.5) + 7 * 10e-6 + 20e-6, rel=1e-12)
    # Kinds without a fit keep the link's efficiency and latency.
    assert m.collective_time(Collective.ALL_REDUCE, S, 8, 1) == plain.collective_time(Collective.ALL_REDUCE, S, 8, 1)
