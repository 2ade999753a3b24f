"""Collective algorithms on one network dimension: how many latency-bound steps each takes.

A new algorithm is one entry here (its step count, and ASTRA-sim's name for it); the bandwidth
term is the bus-bandwidth model of graphgen.costs.network for every algorithm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from graphgen.parallel.layout import Collective
from graphgen.registry import Registry


@dataclass(frozen=True)
class Algorithm:
    name: str
    base_steps: object            # n -> steps of a one-pass collective (all-gather, reduce-scatter)
    astra_name: str               # ASTRA-sim's implementation name
    astra_all_reduce_only: bool = False  # ASTRA-sim runs it for all-reduce only (other kinds use ring)

    def steps(self, kind: Collective, n: int) -> int:
        """Latency-bound steps of a collective over n ranks; an all-reduce is two passes."""
        if n <= 1:
            return 0
        base = self.base_steps(n)
        return 2 * base if kind is Collective.ALL_REDUCE else base


ALGORITHMS: Registry[Algorithm] = Registry("collective algorithm")
ALGORITHMS.add("ring", Algorithm("ring", lambda n: n - 1, "ring"))
ALGORITHMS.add("tree", Algorithm("tree", lambda n: max(1, math.ceil(math.log2(n))), "doubleBinaryTree",
                                 astra_all_reduce_only=True))
ALGORITHMS.add("direct", Algorithm("direct", lambda n: 1, "direct"))
