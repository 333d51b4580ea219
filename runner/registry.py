"""A small name -> object registry that refuses duplicates.

Pluggable pieces (rule families, corpus presets, later interventions) register here so that a
typo or a second definition under the same name is an error at import time, not a silent
override.

A registry may also *discover* entries from an entry-point group (``[project.entry-points]`` of
any installed distribution): they are loaded on the first lookup, so what a registry holds never
depends on which modules happened to be imported first. This is how a lower layer (``runner``)
names pieces a higher layer (``interventions``) provides without importing it.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._discovered = entry_point_group is None

    def _discover(self) -> None:
        """Load every entry point of the group once (name -> object), refusing duplicates."""
        group = self.entry_point_group
        if self._discovered or group is None:
            return
        self._discovered = True
        for ep in entry_points(group=group):
            if ep.name not in self._items:  # registered by hand already (tests, notebooks)
                self.register(ep.name, ep.load())

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered; pick another name")
        self._items[name] = item
        return item

    def __call__(self, name: str):
        """Decorator form: ``@REGISTRY("name")``."""

        def deco(item: T) -> T:
            return self.register(name, item)

        return deco

    def get(self, name: str) -> T:
        self._discover()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._discover()
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._items)
