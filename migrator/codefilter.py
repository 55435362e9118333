"""Code prefilter: which rules could fire, decided on CPython's ``ast`` before libcst parses.

The text prefilter (``migrator.prefilter``) looks for anchor words anywhere in the text;
comments, docstrings, log messages and attribute *definitions* (``def backward(ctx, ...)``)
all count there. The engine compiles every file with ``ast`` anyway (to tell syntax this
Python rejects from a migrator bug), and one walk of that tree says which identifiers the
*code* uses, which it calls, and which string values it holds: about a tenth of a libcst
parse. A rule whose code anchors are absent provably has nothing to do; a file left with
no rule is not parsed by libcst at all.

Anchors here say the same as the rules' facts, one level coarser: every fact a rule builds
on is a call of a qualified name (``torch.save``), an attribute or keyword (``.backward()``,
``download=True``) or a string value (``"cuda:0"``). A qualified name is called through its
last identifier (``torch.save(...)``, ``save(...)`` after ``from torch import save``) or
through an alias whose import names it (``from torch import save as s``), so "called or
imported" is necessary. ``tests/migrator/test_prefilter.py`` runs the pipeline with and
without this stage over every fixture and a slice of the torch corpus, and fails for a
planning rule without code anchors.

The predicates are declared on each rule class (``anchors = ...``, terms of
``migrator.anchors_spec`` that know both their text regex and their predicate here) and
generated into ``migrator/_anchor_tables.py`` by ``python -m migrator.anchors_gen``; this
module reads that table, so deciding imports no rule module nor libcst. Edit the rule's
``anchors`` and rerun the generator (a stale table fails tests/migrator/test_anchor_tables.py).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from migrator import _anchor_tables
from migrator.anchors_spec import DEVICE_STRING, WRITE_MODE

__all__ = ["CODE_ANCHORS", "DEVICE_STRING", "WRITE_MODE", "CodeSummary", "code_rules", "summarise"]


@dataclass
class CodeSummary:
    """What one module's code (not its comments or docstrings) uses."""

    idents: set[str] = field(default_factory=set)  # names, attributes, keywords, imports, defs
    called: set[str] = field(default_factory=set)  # last identifier of every callee
    imported: set[str] = field(default_factory=set)  # every dotted part of every import
    strings: set[str] = field(default_factory=set)  # str constants outside docstrings
    int_assigned: bool = False  # ``x = 0`` (a device index candidate)

    def calls(self, *names: str) -> bool:
        """One of ``names`` is called, directly or under an alias its import names."""
        return any(n in self.called or n in self.imported for n in names)

    def calls_part(self, *parts: str) -> bool:
        """A called (or imported) identifier contains one of ``parts``."""
        return any(p in n for n in self.called | self.imported for p in parts)

    def uses(self, *names: str) -> bool:
        return any(n in self.idents for n in names)

    def uses_part(self, *parts: str) -> bool:
        return any(p in n for n in self.idents for p in parts)

    def string(self, pattern: re.Pattern[str]) -> bool:
        return any(pattern.fullmatch(s) for s in self.strings)

    def string_part(self, part: str) -> bool:
        return any(part in s for s in self.strings)


def summarise(tree: ast.AST) -> CodeSummary:
    """One walk over ``tree`` (a few ms per 1,000 lines)."""
    out = CodeSummary()
    idents, called, imported, strings = out.idents, out.called, out.imported, out.strings
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        kind = type(node)
        if kind is ast.Name:
            idents.add(node.id)
        elif kind is ast.Attribute:
            idents.add(node.attr)
        elif kind is ast.Call:
            func = node.func
            if type(func) is ast.Attribute:
                called.add(func.attr)
            elif type(func) is ast.Name:
                called.add(func.id)
        elif kind is ast.Constant:
            if type(node.value) is str and id(node) not in docstrings:
                strings.add(node.value)
        elif kind is ast.Expr:
            if type(node.value) is ast.Constant:  # a docstring or bare string: no effect
                docstrings.add(id(node.value))
        elif kind is ast.keyword:
            if node.arg:
                idents.add(node.arg)
        elif kind is ast.alias:
            imported.update(node.name.split("."))
            if node.asname:
                idents.add(node.asname)
        elif kind is ast.ImportFrom:
            if node.module:
                imported.update(node.module.split("."))
        elif kind is ast.Assign:
            value = node.value
            if type(value) is ast.Constant and type(value.value) is int:
                out.int_assigned = True
        elif kind in _NAMED:
            idents.update(_NAMED[kind](node))
    idents |= imported
    return out


def _name(node) -> tuple[str, ...]:
    return (node.name,) if node.name else ()


_NAMED: dict[type, Callable[[ast.AST], tuple[str, ...]]] = {
    ast.FunctionDef: _name,
    ast.AsyncFunctionDef: _name,
    ast.ClassDef: _name,
    ast.ExceptHandler: _name,
    ast.arg: lambda n: (n.arg,),
    ast.Global: lambda n: tuple(n.names),
    ast.Nonlocal: lambda n: tuple(n.names),
    ast.MatchAs: _name,
    ast.MatchStar: _name,
}

Anchor = Callable[[CodeSummary], bool]

# code -> a predicate: False means the rule provably finds nothing in this code (generated
# from the rules' ``anchors`` by ``python -m migrator.anchors_gen``).
CODE_ANCHORS: dict[str, Anchor] = _anchor_tables.CODE_ANCHORS


def code_rules(tree: ast.AST, codes: frozenset[str]) -> frozenset[str]:
    """The codes among ``codes`` whose code anchors ``tree`` has (unknown codes are kept)."""
    summary = summarise(tree)
    return frozenset(c for c in codes if c not in CODE_ANCHORS or CODE_ANCHORS[c](summary))
