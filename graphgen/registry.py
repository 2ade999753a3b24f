"""A named registry for pluggable families (schedules, optimizers, collective algorithms, block
builders, fine-tune methods, backends): one entry per name, looked up by the name a config gives."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.family} '{name}' is registered twice")
        self._items[name] = item
        return item

    def remove(self, name: str) -> T:
        """Take an entry out again (a plugin unloading, a test cleaning up)."""
        return self._items.pop(name)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of add."""
        return lambda item: self.add(name, item)

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.family} '{name}' (known: {', '.join(self._items)})") from None

    def check(self, name: str) -> str:
        """The name if registered; else ValueError naming the known ones (for config validators)."""
        if name not in self._items:
            raise ValueError(f"unknown {self.family} '{name}' (known: {', '.join(self._items)})")
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
