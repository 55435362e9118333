"""Which plain names a group of statements reads and binds, and renaming them (libcst, no scopes)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import libcst as cst


@dataclass
class Usage:
    """Names read (``loads``) and bound (``stores``) by some statements, in source order."""

    loads: list[str] = field(default_factory=list)
    stores: list[str] = field(default_factory=list)
    events: list[tuple[str, str, cst.Name]] = field(default_factory=list)  # (kind, name, node)
    assigned: set[str] = field(default_factory=set)  # bound by a plain ``=`` (not ``+=``)


class _Collector(cst.CSTVisitor):
    """Walks statements; names under nested functions, lambdas and classes are skipped
    (they run later, in their own scope); comprehension variables count as local stores."""

    def __init__(self, usage: Usage) -> None:
        self.u = usage
        self._store_ctx: list[str] = []

    def _store(self, target: cst.BaseExpression, kind: str = "store") -> None:
        for name in _target_names(target):
            self.u.stores.append(name.value)
            self.u.events.append((kind, name.value, name))
            if kind == "store":
                self.u.assigned.add(name.value)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self._store(node.name)
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self._store(node.name)
        return False

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)  # ``.attr`` is not a name
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)  # ``keyword=`` is not a name
        return False

    def visit_Assign(self, node: cst.Assign) -> bool:
        node.value.visit(self)
        for t in node.targets:
            _visit_subscripts(t.target, self)
            self._store(t.target)
        return False

    def visit_AnnAssign(self, node: cst.AnnAssign) -> bool:
        if node.value is not None:
            node.value.visit(self)
        self._store(node.target)
        return False

    def visit_AugAssign(self, node: cst.AugAssign) -> bool:
        node.value.visit(self)
        for name in _target_names(node.target):
            self.u.loads.append(name.value)
            self.u.events.append(("load", name.value, name))
        _visit_subscripts(node.target, self)
        self._store(node.target, "augstore")
        return False

    def visit_For(self, node: cst.For) -> bool:
        node.iter.visit(self)
        self._store(node.target)
        node.body.visit(self)
        if node.orelse is not None:
            node.orelse.visit(self)
        return False

    def visit_CompFor(self, node: cst.CompFor) -> bool:
        node.iter.visit(self)
        self._store(node.target)
        for cond in node.ifs:
            cond.visit(self)
        if node.inner_for_in is not None:
            node.inner_for_in.visit(self)
        return False

    def visit_ListComp(self, node: cst.ListComp) -> bool:
        node.for_in.visit(self)  # the loop variables first: they are bound before the element
        node.elt.visit(self)
        return False

    def visit_GeneratorExp(self, node: cst.GeneratorExp) -> bool:
        node.for_in.visit(self)
        node.elt.visit(self)
        return False

    def visit_SetComp(self, node: cst.SetComp) -> bool:
        node.for_in.visit(self)
        node.elt.visit(self)
        return False

    def visit_DictComp(self, node: cst.DictComp) -> bool:
        node.for_in.visit(self)
        node.key.visit(self)
        node.value.visit(self)
        return False

    def visit_AsName(self, node: cst.AsName) -> bool:
        self._store(node.name)
        return False

    def visit_Name(self, node: cst.Name) -> bool:
        self.u.loads.append(node.value)
        self.u.events.append(("load", node.value, node))
        return False


def _visit_subscripts(target: cst.BaseExpression, visitor: cst.CSTVisitor) -> None:
    """``a[i] = v`` / ``a.x = v`` read ``a`` (and ``i``): visit what is not a bound name."""
    if isinstance(target, (cst.Tuple, cst.List)):
        for el in target.elements:
            _visit_subscripts(el.value, visitor)
    elif isinstance(target, cst.StarredElement):
        _visit_subscripts(target.value, visitor)
    elif not isinstance(target, cst.Name):
        target.visit(visitor)


def _target_names(target: cst.CSTNode) -> list[cst.Name]:
    if isinstance(target, cst.Name):
        return [target]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [n for el in target.elements for n in _target_names(el.value)]
    if isinstance(target, cst.StarredElement):
        return _target_names(target.value)
    return []


def usage(nodes: Iterable[cst.CSTNode]) -> Usage:
    """The names ``nodes`` read and bind, in source order."""
    u = Usage()
    collector = _Collector(u)
    for node in nodes:
        node.visit(collector)
    return u


class Renamer(cst.CSTTransformer):
    """Replace plain names (loads and stores, never attributes or keywords) by expressions."""

    def __init__(self, mapping: Mapping[str, cst.BaseExpression]) -> None:
        self.mapping = mapping

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        return True

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.Attribute:
        # ``x.attr``: the attribute name is not a variable (restore it if it was renamed)
        return updated.with_changes(attr=original.attr)

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg:
        return updated.with_changes(keyword=original.keyword)

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        return False

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.BaseExpression:
        new = self.mapping.get(original.value)
        return new if new is not None else updated


def rename(node: cst.CSTNode, mapping: Mapping[str, cst.BaseExpression]) -> cst.CSTNode:
    """``node`` with every name in ``mapping`` replaced."""
    return node.visit(Renamer(mapping)) if mapping else node
