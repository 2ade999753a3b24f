"""Collective and point-to-point cost on a two-dimensional network (scale-up x scale-out).

Bus-bandwidth model, as NCCL reports and SimAI uses: a collective over N ranks moves
coef(N) x S bytes through each rank's slowest dimension, where coef is 2(N-1)/N for an
all-reduce, (N-1)/N for an all-gather, reduce-scatter or all-to-all, and S the full buffer.
A group with m members in each of k nodes drains its scale-out traffic through the m NICs of
its members in a node, so for a ring the scale-out dimension offers m x NIC bandwidth (rail-optimised,
one NIC per GPU). An all-to-all is no ring: each rank sends the (N - m) / N of its buffer bound for
other nodes through its own NIC, while the (m - 1) / N for its node's peers crosses the scale-up
network; the slower of the two sets its time (nccl-tests' multi-node alltoall bus bandwidth sits near
one NIC's rate). Latency: a ring over both dimensions is NCCL's flat ring, whose N-1 steps
(2(N-1) for an all-reduce) are network hops between nodes and NVLink hops within them; other
algorithms add each dimension's own steps at that dimension's per-step latency.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from graphgen.config import Cluster, CollectiveFit, LinkSpec
from graphgen.costs.algorithms import ALGORITHMS
from graphgen.costs.compute import interpolate
from graphgen.parallel.layout import Collective
from graphgen.units import GB, MIB, US


def link_bandwidth(link: LinkSpec, nbytes: float | None = None, fit: CollectiveFit | None = None) -> float:
    """Achievable bytes/s of one GPU's port on a dimension (efficiency and derate applied),
    for a message of nbytes when the link has a message-size curve. A measured collective fit
    replaces both the link's efficiency and its size curve."""
    if fit is not None:
        return link.bandwidth_gbs * GB * fit.efficiency * link.derate
    bw = link.bandwidth_gbs * GB * link.efficiency * link.derate
    if nbytes is not None and link.message_efficiency is not None:
        bw *= interpolate(link.message_efficiency, max(nbytes, 1.0) / MIB)
    return bw


def _steps(kind: Collective, n: int, algorithm: str) -> int:
    return ALGORITHMS[algorithm].steps(kind, n)


def bus_coefficient(kind: Collective, n: int) -> float:
    if n <= 1:
        return 0.0
    return (2.0 if kind is Collective.ALL_REDUCE else 1.0) * (n - 1) / n


@dataclass(frozen=True)
class _Dim:
    """One network dimension as one collective sees it (bytes/s, seconds)."""

    size: int
    bandwidth: float
    step_latency: float
    base_latency: float
    algorithm: str


def _dim(link: LinkSpec, kind: Collective, nbytes: float, size: int, implementation: str = "") -> _Dim:
    fit = link.collective_fits.get(f"{implementation}_{kind.value}") if implementation else None
    fit = fit or link.collective_fits.get(kind.value)
    step, base = (fit.step_latency_us, fit.base_latency_us) if fit else (link.latency_us, 0.0)
    return _Dim(size, link_bandwidth(link, nbytes, fit), step * US, base * US, link.algorithm)


@dataclass(frozen=True)
class NetworkModel:
    hardware: Cluster

    def collective_time(self, kind: Collective, nbytes: float, per_node: int, nodes: int,
                        implementation: str = "", remote_share: float | None = None) -> float:
        """Seconds for a collective of `nbytes` (full buffer) over per_node x nodes ranks; an
        implementation (e.g. "deepep") uses its own fit on a link that lists one. An all-to-all that
        sends less than the uniform (n - per_node)/n of its buffer to other nodes says so in
        remote_share (DeepEP: one copy per node, see deepep_remote_share)."""
        n = per_node * nodes
        if n <= 1 or nbytes <= 0:
            return 0.0
        intra, inter = self.hardware.node.intra, self.hardware.scale_out
        dims: list[_Dim] = []
        if per_node > 1:
            dim = _dim(intra, kind, nbytes, per_node, implementation)
            gpn = self.hardware.node.gpus_per_node
            if intra.topology == "fully_connected" and gpn > 1:
                # A full mesh gives each peer its own link: a group uses only its members' links.
                dim = dataclasses.replace(dim, bandwidth=dim.bandwidth * (per_node - 1) / (gpn - 1))
            dims.append(dim)
        if nodes > 1:
            dim = _dim(inter, kind, nbytes, nodes, implementation)
            if kind is Collective.ALL_TO_ALL:
                # Each rank sends its own (n - per_node) / n of the buffer to other nodes through its own
                # NIC: the members' NICs serve their own traffic, not one shared ring's.
                on_node = nbytes * (per_node - 1) / n / dims[0].bandwidth if per_node > 1 else 0.0
                remote = (n - per_node) / n if remote_share is None else remote_share
                return max(on_node, nbytes * remote / dim.bandwidth) + self._latency(kind, [*dims, dim])
            dims.append(dataclasses.replace(dim, bandwidth=dim.bandwidth * per_node))
        bw = min(d.bandwidth for d in dims)
        return bus_coefficient(kind, n) * nbytes / bw + self._latency(kind, dims)

    @staticmethod
    def _latency(kind: Collective, dims: list[_Dim]) -> float:
        """Latency-bound steps times per-step latency, plus the largest fixed cost. Rings on every
        dimension are one flat ring, as NCCL runs them (src/graph/tuning.cc at 5067397c, NCCL 2.2x):
        n-1 steps (2(n-1) for an all-reduce), of which nodes-1 (2(nodes-1)) cross the network and
        the rest are intra-node hops. Otherwise each dimension's algorithm contributes its own steps."""
        base = max(d.base_latency for d in dims)
        if len(dims) == 2 and all(d.algorithm == "ring" for d in dims):
            intra, inter = dims
            total, across = _steps(kind, intra.size * inter.size, "ring"), _steps(kind, inter.size, "ring")
            return base + (total - across) * intra.step_latency + across * inter.step_latency
        return base + sum(_steps(kind, d.size, d.algorithm) * d.step_latency for d in dims)

    def p2p_time(self, nbytes: float, same_node: bool) -> float:
        link = self.hardware.node.intra if same_node else self.hardware.scale_out
        return link.latency_us * US + nbytes / link_bandwidth(link, nbytes)


def deepep_remote_share(experts: int, top_k: int, nodes: int, groups: int = 1,
                        groups_per_token: int | None = None) -> float:
    """The share of an all-to-all dispatch buffer (top_k copies of each token) that DeepEP sends over the
    network: one copy to each other node holding at least one of the token's experts, forwarded there
    over NVLink (deepseek-ai/DeepEP tests/test_internode.py @ebfe47e: RDMA traffic counts a token once per
    RDMA rank it has an expert on). The experts are taken uniform over `experts` spread evenly over
    `nodes`; under group-limited routing (DeepSeek's topk_group of n_group) they come from
    `groups_per_token` groups, each taken to hold at least one of them."""
    if nodes <= 1:
        return 0.0
    reached = 1.0 - _none_picked(experts, experts / nodes, top_k)
    if groups_per_token is not None and groups > 1:
        g = groups_per_token
        if groups % nodes == 0:  # a node holds whole groups: it is reached when one of its groups is picked
            reached = 1.0 - _none_picked(groups, groups / nodes, g)
        elif nodes % groups == 0:  # a group spans nodes: its node must be picked, then hold one of the experts
            pool = g * experts / groups
            reached = g / groups * (1.0 - _none_picked(pool, experts / nodes, top_k))
    return (nodes - 1) * reached / top_k


def _none_picked(total: float, held: float, picks: int) -> float:
    """The chance that `picks` draws without replacement from `total` miss all `held` of them."""
    none = 1.0
    for i in range(picks):
        none *= max(0.0, total - held - i) / (total - i)
    return none
