"""Hardware config + Program -> ASTRA-sim's system JSON, network YAML and remote-memory JSON.

Pure: returns file contents; the runner writes them.
"""

from __future__ import annotations

import json

from backends.chakra.writer import network_dims
from graphgen.config import LinkSpec
from graphgen.costs.algorithms import ALGORITHMS
from graphgen.costs.compute import ComputeModel
from graphgen.program import Program
from graphgen.units import GB, GIB

TOPOLOGY = {"switch": "Switch", "ring": "Ring", "fully_connected": "FullyConnected"}


def _links(prog: Program) -> list[LinkSpec]:
    """One link per network dimension, in network_dims order."""
    hw = prog.scenario.hardware
    return [hw.node.intra] if len(network_dims(prog)) == 1 else [hw.node.intra, hw.scale_out]


def astra_bandwidth(link: LinkSpec) -> float:
    """ASTRA-sim's network GB/s is 2^30 bytes/s; efficiency and derate apply as in Rankflow."""
    return link.bandwidth_gbs * GB * link.efficiency * link.derate / GIB


def system_json(prog: Program, template: str) -> str:
    """The system JSON: the template (astra_configs/system.json) with each dimension's collective
    algorithms and the device's peak filled in."""
    cfg = json.loads(template)
    links = _links(prog)
    for coll in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all"):
        algos = []
        for link in links:
            algo = ALGORITHMS[link.algorithm]
            all_reduce_only = algo.astra_all_reduce_only and coll != "all-reduce"
            algos.append("ring" if all_reduce_only else algo.astra_name)
        cfg[f"{coll}-implementation"] = algos
    sc = prog.scenario
    cfg["peak-perf"] = ComputeModel(sc.hardware.device, sc.workload.precision).matmul_peak / 1e12
    return json.dumps(cfg, indent=2) + "\n"


def network_yaml(prog: Program, congestion_aware: bool) -> str:
    dims = network_dims(prog)
    links = _links(prog)
    if congestion_aware and len(dims) > 1:
        raise ValueError("the congestion-aware build takes one-dimensional topologies only")
    topo = ", ".join(TOPOLOGY[link.topology] for link in links)
    bws = ", ".join(f"{astra_bandwidth(link):.6f}" for link in links)
    lats = ", ".join(f"{link.latency_us * 1000:.3f}" for link in links)
    return (f"topology: [ {topo} ]\nnpus_count: [ {', '.join(str(d) for d in dims)} ]\n"
            f"bandwidth: [ {bws} ]  # GB/s (2^30 bytes/s)\nlatency: [ {lats} ]  # ns\n")
