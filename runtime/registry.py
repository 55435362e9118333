"""Resolve string names (strategies, precisions) to classes; errors list the valid names."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> class table for one axis of the runtime (e.g. "strategy")."""

    def __init__(self, kind: str, extra_names: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._extra = extra_names  # names resolved elsewhere (e.g. "auto"), listed in errors
        self._entries: dict[str, type[T]] = {}

    def register(self, name: str):
        """Class decorator registering the class under ``name``."""

        def decorate(cls: type[T]) -> type[T]:
            self._entries[name] = cls
            return cls

        return decorate

    def names(self) -> list[str]:
        """Valid names: the extra ones, then registered ones in registration order."""
        return [*self._extra, *self._entries]

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; a ValueError echoing the name and the valid ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown {self.kind} {name!r}; valid {self.kind} names: {', '.join(self.names())}"
            ) from None


STRATEGIES: Registry = Registry("strategy", extra_names=("auto",))
PRECISIONS: Registry = Registry("precision")
