"""Name -> class registries with a useful miss.

A config names a component (`config.tokenizer.name = "titok"`); the package
that owns the component keeps an explicit `Registry` and turns the name into
the class. An unknown name fails listing the valid ones, so a typo in a config
never passes silently.
"""

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name no registry entry has; the message lists the valid names."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """An explicit mapping from names to components of one kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding `item` under `name`; a duplicate name is an error."""

        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return add

    def unregister(self, name: str) -> T:
        """Removes and returns the entry `name` (for tests that register their own)."""
        if name not in self._items:
            raise UnknownNameError(f"{self.kind} {name!r} is not registered")
        return self._items.pop(name)

    def get(self, name: str) -> T:
        if name not in self._items:
            valid = ", ".join(sorted(self._items)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid names: {valid}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
