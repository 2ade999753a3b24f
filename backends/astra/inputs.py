"""Hardware config + Program -> ASTRA-sim's system JSON, network YAML and remote-memory JSON.

Pure: returns file contents; the runner writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

from backends.chakra.writer import network_dims
from graphgen.config import LinkSpec
from graphgen.program import Program
from graphgen.units import GB, GIB

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "astra_configs"
TOPOLOGY = {"switch": "Switch", "ring": "Ring", "fully_connected": "FullyConnected"}
ALGORITHM = {"ring": "ring", "direct": "direct", "tree": "doubleBinaryTree"}


def _links(prog: Program) -> list[LinkSpec]:
    """One link per network dimension, in network_dims order."""
    hw = prog.scenario.hardware
    return [hw.node.intra] if len(network_dims(prog)) == 1 else [hw.node.intra, hw.scale_out]


def astra_bandwidth(link: LinkSpec) -> float:
    """ASTRA-sim's network GB/s is 2^30 bytes/s; efficiency and derate apply as in Rankflow."""
    return link.bandwidth_gbs * GB * link.efficiency * link.derate / GIB


def system_json(prog: Program, template: Path = TEMPLATES / "system.json") -> str:
    cfg = json.loads(template.read_text())
    links = _links(prog)
    for coll in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all"):
        algos = [ALGORITHM[link.algorithm] for link in links]
        if coll in ("all-gather", "reduce-scatter", "all-to-all"):
            algos = ["ring" if a == "doubleBinaryTree" else a for a in algos]  # tree is all-reduce only
        cfg[f"{coll}-implementation"] = algos
    cfg["peak-perf"] = prog.compute_model.matmul_peak / 1e12
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


def remote_memory_json(template: Path = TEMPLATES / "remote_memory.json") -> str:
    return template.read_text()
