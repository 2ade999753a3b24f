"""The expected wait for the slowest host in a synchronous training step.

Hosts of one SKU do not run at one speed: manufacturing and power management leave GPUs of a cluster
8 % apart on average, up to 22 % (Sinha et al., arXiv 2208.11035v3), and noise comes and goes from
step to step. Every step of synchronous training ends at a collective that waits for all hosts, so the
step takes as long as the slowest one, and the expected maximum of n independent samples grows like
sqrt(log n). Rankflow follows SimuMax's model of it (MooreThreads/SimuMax simumax/core/perf_llm.py
@4dcaae5, estimate_straggler_increase_ratio and get_effective_straggler_sample_count): the GPUs of one
host vary together, and no more hosts vary independently than there are data-parallel replicas (and,
for MoE layers, expert-data-parallel ones). The cluster's `stragglers.spread` sets the size.

The allowance scales the whole step, as the timeline of the slowest host stretches: SimuMax scales the
step less its exposed data-parallel communication and optimizer, which it times apart; the two differ
by a few percent of the allowance.
"""

from __future__ import annotations

import math

from graphgen.scenario import Scenario


def independent_hosts(sc: Scenario) -> int:
    """Hosts whose speed varies independently: the hosts the step spans (the node's allocation unit,
    an NVL72 rack's compute tray), at most one per data-parallel (and expert-data-parallel) replica."""
    p, node = sc.plan, sc.hardware.node
    hosts = -(-sc.world // (node.allocation_gpus or node.gpus_per_node))
    n = min(hosts, p.dp)
    if sc.model.moe is not None:
        n = min(n, p.edp)
    return max(1, n)


def straggler_factor(sc: Scenario) -> float:
    """The expected step over the step every host would take alone (1 for inference, one host, or a
    cluster without stragglers)."""
    spread = sc.hardware.stragglers.spread
    n = independent_hosts(sc)
    if sc.workload.run_type != "training" or n <= 1 or spread <= 0:
        return 1.0
    lg = math.log2(n)
    return 1.0 + lg / (lg + 1.0) * spread * math.sqrt(lg)
