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
    # what names cannot follow into a module: ("nonlocal", name, def) a nested function re-binding
    # this scope's variable, ("class", name, class) a class body (its own scoping rules)
    opaque: list[tuple[str, str, cst.CSTNode]] = field(default_factory=list)


class _Collector(cst.CSTVisitor):
    """Walks statements in source order. A lambda, nested function or comprehension is its own
    scope: the names it reads and does not bind itself count as reads where it appears (they
    run later, but read this scope's variables then); its own parameters and variables do not.
    Class bodies are skipped (their names are recorded in ``Usage.opaque``)."""

    def __init__(self, usage: Usage) -> None:
        self.u = usage
        self._store_ctx: list[str] = []

    def _store(self, target: cst.BaseExpression, kind: str = "store") -> None:
        for name in _target_names(target):
            self.u.stores.append(name.value)
            self.u.events.append((kind, name.value, name))
            if kind == "store":
                self.u.assigned.add(name.value)

    def _outer(self, nodes: Iterable[cst.CSTNode | None]) -> None:
        for n in nodes:
            if n is not None:
                n.visit(self)

    def _free(self, inner: Usage, local: set[str]) -> None:
        """The reads of a nested scope that it does not bind: reads of this scope."""
        for kind, name, node in inner.events:
            if kind == "load" and name not in local:
                self.u.loads.append(name)
                self.u.events.append(("load", name, node))
        self.u.opaque.extend(inner.opaque)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self._outer(d.decorator for d in node.decorators)
        self._outer(_param_outer(node.params))
        self._outer([node.returns])
        inner = usage([node.body])
        declared = _declared(node.body)
        self.u.opaque.extend(("nonlocal", n, node) for n in declared["nonlocal"])
        self._free(inner, scope_names(node) | declared["global"])
        self._store(node.name)
        return False

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        self._outer(d.decorator for d in node.decorators)
        self._outer(a.value for a in (*node.bases, *node.keywords))
        self.u.opaque.append(("class", node.name.value, node))
        self._store(node.name)
        return False

    def visit_Lambda(self, node: cst.Lambda) -> bool:
        self._outer(_param_outer(node.params))
        self._free(usage([node.body]), scope_names(node))
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

    def _comprehension(self, node: _Comprehension) -> bool:
        first = node.for_in
        first.iter.visit(self)  # the first iterable is evaluated in this scope
        inner = Usage()
        c = _Collector(inner)
        c._store(first.target)  # the loop variables first: they are bound before the element
        for part in (*first.ifs, first.inner_for_in, *_elements(node)):
            if part is not None:
                part.visit(c)
        self._free(inner, scope_names(node))
        return False

    def visit_ListComp(self, node: cst.ListComp) -> bool:
        return self._comprehension(node)

    def visit_GeneratorExp(self, node: cst.GeneratorExp) -> bool:
        return self._comprehension(node)

    def visit_SetComp(self, node: cst.SetComp) -> bool:
        return self._comprehension(node)

    def visit_DictComp(self, node: cst.DictComp) -> bool:
        return self._comprehension(node)

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


_Comprehension = cst.ListComp | cst.GeneratorExp | cst.SetComp | cst.DictComp
_Scope = cst.Lambda | cst.FunctionDef | _Comprehension


def _elements(node: _Comprehension) -> list[cst.BaseExpression]:
    return [node.key, node.value] if isinstance(node, cst.DictComp) else [node.elt]


def _params(params: cst.Parameters) -> list[cst.Param]:
    star = [p for p in (params.star_arg, params.star_kwarg) if isinstance(p, cst.Param)]
    return [*params.posonly_params, *params.params, *params.kwonly_params, *star]


def _param_outer(params: cst.Parameters) -> list[cst.BaseExpression | None]:
    """Defaults and annotations: evaluated where the function is defined."""
    return [x for p in _params(params) for x in (p.default, p.annotation.annotation if p.annotation else None)]


def _declared(body: cst.CSTNode) -> dict[str, set[str]]:
    """``global`` / ``nonlocal`` names of a function body (not of functions nested in it)."""
    out: dict[str, set[str]] = {"global": set(), "nonlocal": set()}

    class _Decl(cst.CSTVisitor):
        def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
            return False

        def visit_ClassDef(self, node: cst.ClassDef) -> bool:
            return False

        def visit_Global(self, node: cst.Global) -> None:
            out["global"].update(n.name.value for n in node.names)

        def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
            out["nonlocal"].update(n.name.value for n in node.names)

    body.visit(_Decl())
    return out


def scope_names(node: _Scope) -> set[str]:
    """The names local to a lambda, function or comprehension: they shadow the enclosing ones."""
    if isinstance(node, cst.Lambda):
        return {p.name.value for p in _params(node.params)}
    if isinstance(node, cst.FunctionDef):
        declared = _declared(node.body)
        own = set(usage([node.body]).stores) - declared["global"] - declared["nonlocal"]
        return {p.name.value for p in _params(node.params)} | own
    names: set[str] = set()
    comp: cst.CompFor | None = node.for_in
    while comp is not None:
        names.update(n.value for n in _target_names(comp.target))
        comp = comp.inner_for_in
    return names


def usage(nodes: Iterable[cst.CSTNode]) -> Usage:
    """The names ``nodes`` read and bind, in source order."""
    u = Usage()
    collector = _Collector(u)
    for node in nodes:
        node.visit(collector)
    return u


class Renamer(cst.CSTTransformer):
    """Replace plain names (loads and stores, never attributes or keywords) by expressions;
    inside a lambda, nested function or comprehension, not the names that scope binds itself."""

    def __init__(self, mapping: Mapping[str, cst.BaseExpression], shadowed: frozenset[str] = frozenset()) -> None:
        self.mapping = mapping
        self._shadowed = [shadowed]

    def _outer(self, node: cst.CSTNode | None) -> cst.CSTNode | None:
        """``node`` (evaluated where its scope is defined) renamed as in the enclosing scope."""
        return None if node is None else node.visit(Renamer(self.mapping, self._shadowed[-2]))

    def _enter(self, node: _Scope) -> bool:
        own = scope_names(node) | (_declared(node.body)["global"] if isinstance(node, cst.FunctionDef) else set())
        self._shadowed.append(self._shadowed[-1] | own)
        return True

    def _leave(self, original: _Scope, updated: _Scope) -> _Scope:
        if isinstance(original, (cst.Lambda, cst.FunctionDef)):
            params = updated.params
            pairs = zip(_params(original.params), _params(params))
            swap = {id(new): new.with_changes(
                default=self._outer(old.default),
                annotation=old.annotation and old.annotation.with_changes(annotation=self._outer(old.annotation.annotation)),
            ) for old, new in pairs}
            updated = updated.with_changes(params=_replace_params(params, swap))
        if isinstance(original, cst.FunctionDef):
            updated = updated.with_changes(
                name=original.name,
                decorators=[d.with_changes(decorator=self._outer(d.decorator)) for d in original.decorators],
                returns=original.returns and original.returns.with_changes(annotation=self._outer(original.returns.annotation)),
            )
        elif not isinstance(original, cst.Lambda):  # the first iterable runs in the enclosing scope
            updated = updated.with_changes(for_in=updated.for_in.with_changes(iter=self._outer(original.for_in.iter)))
        self._shadowed.pop()
        return updated

    visit_Lambda = visit_FunctionDef = visit_ListComp = visit_GeneratorExp = visit_SetComp = visit_DictComp = _enter
    leave_Lambda = leave_FunctionDef = leave_ListComp = leave_GeneratorExp = leave_SetComp = leave_DictComp = _leave

    def leave_Param(self, original: cst.Param, updated: cst.Param) -> cst.Param:
        return updated.with_changes(name=original.name)

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False  # not moved into a module (Usage.opaque)

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        return True

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.Attribute:
        # ``x.attr``: the attribute name is not a variable (restore it if it was renamed)
        return updated.with_changes(attr=original.attr)

    def leave_Arg(self, original: cst.Arg, updated: cst.Arg) -> cst.Arg:
        return updated.with_changes(keyword=original.keyword)

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.BaseExpression:
        if original.value in self._shadowed[-1]:
            return updated
        new = self.mapping.get(original.value)
        return new if new is not None else updated


def _replace_params(params: cst.Parameters, swap: dict[int, cst.Param]) -> cst.Parameters:
    def one(p):
        return swap.get(id(p), p) if isinstance(p, cst.Param) else p

    return params.with_changes(
        posonly_params=[one(p) for p in params.posonly_params], params=[one(p) for p in params.params],
        kwonly_params=[one(p) for p in params.kwonly_params], star_arg=one(params.star_arg),
        star_kwarg=one(params.star_kwarg),
    )


def rename(node: cst.CSTNode, mapping: Mapping[str, cst.BaseExpression]) -> cst.CSTNode:
    """``node`` with every name in ``mapping`` replaced."""
    return node.visit(Renamer(mapping)) if mapping else node
