"""Rank <-> mesh coordinates in Megatron order (tp innermost, then cp, ep, dp, pp), and groups.

Keeping tp innermost puts each tensor-parallel group inside one node, on the fast fabric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

AXES: tuple[str, ...] = ("tp", "cp", "ep", "dp", "pp")  # Megatron's RankGenerator order, tp innermost


@dataclass(frozen=True)
class Mesh:
    tp: int = 1
    cp: int = 1
    ep: int = 1
    dp: int = 1
    pp: int = 1

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(getattr(self, a) for a in AXES)

    @property
    def world(self) -> int:
        n = 1
        for s in self.sizes:
            n *= s
        return n

    def stride(self, axis: str) -> int:
        st = 1
        for a in AXES:
            if a == axis:
                return st
            st *= getattr(self, a)
        raise KeyError(axis)

    def coords(self, rank: int) -> dict[str, int]:
        out = {}
        for a in AXES:
            size = getattr(self, a)
            out[a] = rank % size
            rank //= size
        return out

    def rank(self, **coords: int) -> int:
        r = 0
        for a in reversed(AXES):
            r = r * getattr(self, a) + coords.get(a, 0)
        return r

    def group(self, axis: str | tuple[str, ...], rank: int) -> tuple[int, ...]:
        """Ranks that share every coordinate of `rank` except `axis` (or adjacent axes), in axis order."""
        names = (axis,) if isinstance(axis, str) else axis
        st, size = self.stride(names[0]), math.prod(getattr(self, a) for a in names)
        c = self.coords(rank)
        base = rank - sum(c[a] * self.stride(a) for a in names)
        return tuple(base + i * st for i in range(size))

    def axis_span(self, axis: str | tuple[str, ...], gpus_per_node: int) -> tuple[int, int]:
        """(members per node, nodes) of the axis's groups, computed without listing ranks, so its
        cost does not grow with the group size. Equals span(group(axis, 0)) for regular groups; for a
        group that fills nodes unevenly it gives the fewest members any node holds, whose NICs then
        bound the scale-out traffic. A tuple of adjacent axes spans them as one group."""
        names = (axis,) if isinstance(axis, str) else axis
        n, st, gpn = math.prod(getattr(self, a) for a in names), self.stride(names[0]), gpus_per_node
        if n == 1:
            return 1, 1
        if st >= gpn:
            return 1, n  # consecutive members are at least a node apart
        nodes = (n - 1) * st // gpn + 1

        def count(j: int) -> int:  # members i with j*gpn <= i*st < (j+1)*gpn
            return min(n, -(-(j + 1) * gpn // st)) - -(-j * gpn // st)

        period = st // math.gcd(st, gpn)  # the per-node counts repeat every lcm(st, gpn) / gpn nodes
        return min(count(j) for j in {*range(min(nodes, period)), nodes - 1}), nodes

    def groups(self, axis: str | tuple[str, ...]) -> list[tuple[int, ...]]:
        """All groups of an axis, each once, ordered by their first rank."""
        seen: dict[int, tuple[int, ...]] = {}
        for r in range(self.world):
            g = self.group(axis, r)
            seen.setdefault(g[0], g)
        return [seen[k] for k in sorted(seen)]


def span(members: tuple[int, ...], gpus_per_node: int) -> tuple[int, int]:
    """(members per node, nodes) of a group: how it splits over the scale-up and scale-out dims.

    Groups made by `Mesh.group` are regular, so every node holds the same number of members.
    """
    counts: dict[int, int] = {}
    for r in members:
        counts[r // gpus_per_node] = counts.get(r // gpus_per_node, 0) + 1
    if len(set(counts.values())) != 1:
        raise ValueError(f"group {members[:4]}... holds unequal numbers of ranks per node: {sorted(counts.values())}")
    return len(members) // len(counts), len(counts)
