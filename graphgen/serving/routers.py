"""Routers that put each request on one replica of a pool, as a registry of factories: the simulation
makes a fresh router per pool per run, so no routing state outlives a run.

- "round_robin": replica i, i+1, ... in turn, whatever their load.
- "least_outstanding": the replica with the fewest requests routed to it and not yet gone from it
  (waiting, running, or its KV on the way to it); ties go to the lowest index, so runs are repeatable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from graphgen.registry import Registry


class Router(Protocol):
    def pick(self, outstanding: list[int]) -> int:
        """The index of the replica for the next request, given each replica's outstanding requests."""
        ...


@dataclass
class RoundRobin:
    next_index: int = 0

    def pick(self, outstanding: list[int]) -> int:
        i = self.next_index % len(outstanding)
        self.next_index = i + 1
        return i


@dataclass
class LeastOutstanding:
    def pick(self, outstanding: list[int]) -> int:
        return min(range(len(outstanding)), key=outstanding.__getitem__)


ROUTERS: Registry[Callable[[], Router]] = Registry("router")
ROUTERS.add("round_robin", RoundRobin)
ROUTERS.add("least_outstanding", LeastOutstanding)
