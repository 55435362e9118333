"""Edits keyed by original nodes, grouped per finding so a suppressed finding drops its edits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import libcst as cst

# A replacement is a ready node or a function of the *updated* node (so edits nest:
# stripping `.to(device)` keeps an edit made inside the receiver).
Replacement = cst.CSTNode | Callable[[cst.CSTNode], cst.CSTNode]


class EditConflict(Exception):
    """Two findings edit the same node: a bug in the rules, reported as an internal error."""


@dataclass
class Edits:
    """Statement- and expression-level edits; every key is a node of the ORIGINAL tree."""

    replace: dict[cst.CSTNode, Replacement] = field(default_factory=dict)
    remove: set[cst.CSTNode] = field(default_factory=set)  # statements or small statements
    before: dict[cst.CSTNode, list[cst.CSTNode]] = field(default_factory=dict)
    after: dict[cst.CSTNode, list[cst.CSTNode]] = field(default_factory=dict)
    # first statement -> (last statement, With node whose body is replaced by the range)
    wrap: dict[cst.CSTNode, tuple[cst.CSTNode, cst.With]] = field(default_factory=dict)
    unwrap: set[cst.CSTNode] = field(default_factory=set)  # compound stmt -> its body
    drop_aliases: set[cst.ImportAlias] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(
            self.replace or self.remove or self.before or self.after or self.wrap
            or self.unwrap or self.drop_aliases
        )

    def merge(self, other: Edits) -> None:
        """Add ``other``'s edits; the same node replaced or wrapped twice is a conflict."""
        for key, value in other.replace.items():
            if key in self.replace:
                raise EditConflict(f"node replaced twice: {type(key).__name__}")
            self.replace[key] = value
        for key, value in other.wrap.items():
            if key in self.wrap:
                raise EditConflict("statement wrapped twice")
            self.wrap[key] = value
        for key, stmts in other.before.items():
            self.before.setdefault(key, []).extend(stmts)
        for key, stmts in other.after.items():
            self.after.setdefault(key, []).extend(stmts)
        self.remove |= other.remove
        self.unwrap |= other.unwrap
        self.drop_aliases |= other.drop_aliases

    def nodes(self) -> list[cst.CSTNode]:
        """Every original node an edit is keyed by (wrapped ranges by their first and last)."""
        return [
            *self.replace, *self.remove, *self.before, *self.after, *self.wrap,
            *(last for last, _ in self.wrap.values()), *self.unwrap, *self.drop_aliases,
        ]

    def touched(self) -> list[cst.CSTNode]:
        """Original nodes whose subtree disappears (for import-usage checks)."""
        return [*self.replace, *self.remove]
