"""A registry is a dict, a decorator, and list/get; an unknown name lists the valid ones."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import EdgeticketError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = entry
            return entry
        return decorator

    def add(self, name: str, entry: T) -> T:
        return self.register(name)(entry)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def entries(self) -> list[T]:
        """In the order they were registered."""
        return list(self._entries.values())

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise EdgeticketError(f"unknown {self.kind} '{name}'",
                                  hint=f"choose one of: {', '.join(self.names())}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries
