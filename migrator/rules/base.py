"""Rule base class and the registry every rule joins by subclassing."""

from __future__ import annotations

import importlib
import pkgutil
from typing import ClassVar

_REGISTRY: dict[str, type[Rule]] = {}


class Rule:
    """One rule = one class = one stable code = one fixture folder = one doc entry.

    Subclasses set ``code`` (``MIGnnn``), ``name`` (kebab-case) and ``summary`` (one line,
    says what to do). The class docstring is the rule's documentation shown by
    ``migrate --explain CODE``: markdown with ``What``, ``Why``, ``Before`` and ``After``
    sections. Defining a subclass with a ``code`` registers it. A rule with a ``plan`` method
    also declares ``anchors`` (``migrator.anchors_spec``: what must be in a file for it to
    find anything); ``python -m migrator.anchors_gen`` then regenerates the prefilter tables.
    """

    code: ClassVar[str] = ""
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.code:
            return  # abstract intermediate base
        other = _REGISTRY.get(cls.code)
        if other is not None and other.__qualname__ != cls.__qualname__:
            raise RuntimeError(f"rule code {cls.code} used by {other.__name__} and {cls.__name__}")
        _REGISTRY[cls.code] = cls


def _discover() -> None:
    package = importlib.import_module("migrator.rules")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"migrator.rules.{info.name}")


def all_rules() -> list[type[Rule]]:
    """Every registered rule class, sorted by code."""
    _discover()
    return [_REGISTRY[c] for c in sorted(_REGISTRY)]


def get_rule(code: str) -> type[Rule] | None:
    """The rule class for ``code`` (case-insensitive), or None."""
    _discover()
    return _REGISTRY.get(code.upper())
