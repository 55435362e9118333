"""Where a value flows: a binding's uses, through assignments, call parameters, `self.` attributes and globals."""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from migrator.analysis.index import Index


@dataclass(frozen=True)
class Binding:
    """Where a value is stored: a name in a scope, or ``self.<attr>`` of a class."""

    kind: str  # "name" | "attr"
    owner: object  # libcst Scope for names, ClassDef for attributes
    name: str


def lookup(table, name: str):
    """``table[name]`` or nothing: libcst's Accesses/Assignments have ``in`` but no ``get``."""
    return table[name] if name in table else ()  # noqa: SIM401 - no .get on these


def binding_of(ix: Index, target: cst.CSTNode) -> Binding | None:
    """The binding an assignment target (``x`` or ``self.x``) writes, or the one an expression reads."""
    if isinstance(target, cst.Name):
        scope = ix.scope_of(target)
        if scope is None:
            return None
        for access in lookup(scope.accesses, target.value):
            if access.node is target:
                for a in access.referents:
                    if hasattr(a, "scope"):
                        return Binding("name", a.scope, target.value)
        # a store: the scope that owns the assignment of this name
        for a in lookup(scope.assignments, target.value):
            return Binding("name", a.scope, target.value)
        return Binding("name", scope, target.value)
    if (
        isinstance(target, cst.Attribute)
        and isinstance(target.value, cst.Name)
        and target.value.value == "self"
    ):
        cls = ix.class_of(target)
        if cls is not None:
            return Binding("attr", cls, target.attr.value)
    return None


def direct_refs(ix: Index, b: Binding) -> list[cst.CSTNode]:
    """Loads of ``b``: Name nodes (globals read inside functions included) or ``self.x`` nodes."""
    if b.kind == "attr":
        return [
            a
            for a in ix.self_attrs
            if a.attr.value == b.name and ix.class_of(a) is b.owner and not _is_store(ix, a)
        ]
    out = []
    scope = b.owner
    for assignment in lookup(scope.assignments, b.name):
        for access in assignment.references:
            if isinstance(access.node, cst.Name) and access.node not in out:
                out.append(access.node)
    return sorted(out, key=ix.order)


def _is_store(ix: Index, node: cst.CSTNode) -> bool:
    parent = ix.parent.get(node)
    if isinstance(parent, cst.AssignTarget) and parent.target is node:
        return True
    return isinstance(parent, (cst.AnnAssign, cst.AugAssign)) and parent.target is node


class Functions:
    """In-file functions by name (module level) and methods by class, for call -> param mapping."""

    def __init__(self, ix: Index) -> None:
        self.ix = ix
        self.top: dict[str, cst.FunctionDef] = {}
        self.methods: dict[tuple[cst.ClassDef, str], cst.FunctionDef] = {}
        self.classes = {c.name.value: c for c in ix.classes if isinstance(ix.parent.get(c), cst.Module)}
        for fn in ix.functions:
            parent = ix.parent.get(ix.parent.get(fn))
            if isinstance(ix.parent.get(fn), cst.Module):
                self.top[fn.name.value] = fn
            elif isinstance(parent, cst.ClassDef):
                self.methods[(parent, fn.name.value)] = fn

    def callee(self, call: cst.Call) -> tuple[cst.FunctionDef, int] | None:
        """The in-file function a call runs and how many leading params are implicit (self)."""
        f = call.func
        if isinstance(f, cst.Name) and f.value in self.top:
            return self.top[f.value], 0
        if isinstance(f, cst.Name) and f.value in self.classes:
            init = self.methods.get((self.classes[f.value], "__init__"))
            return (init, 1) if init is not None else None
        if isinstance(f, cst.Attribute) and isinstance(f.value, cst.Name) and f.value.value == "self":
            cls = self.ix.class_of(call)
            fn = self.methods.get((cls, f.attr.value)) if cls is not None else None
            if fn is not None:
                return fn, 1
        return None


def param_for(fn: cst.FunctionDef, offset: int, call: cst.Call, arg: cst.Arg) -> cst.Param | None:
    """The parameter of ``fn`` that receives ``arg`` at ``call``."""
    params = list(fn.params.params)
    if arg.keyword is not None:
        every = params + list(fn.params.kwonly_params)
        return next((p for p in every if p.name.value == arg.keyword.value), None)
    if arg.star:
        return None
    positional = [a for a in call.args if a.keyword is None and not a.star]
    i = positional.index(arg) + offset
    return params[i] if i < len(params) else None


def flow_refs(ix: Index, funcs: Functions, start: Binding) -> list[cst.CSTNode]:
    """Every load of the value stored in ``start``, following it through plain re-assignment
    (``b = a``), call arguments into in-file functions' parameters, and ``self.x = a``."""
    seen: set[Binding] = set()
    todo = [start]
    out: list[cst.CSTNode] = []
    while todo:
        b = todo.pop()
        if b in seen:
            continue
        seen.add(b)
        for ref in direct_refs(ix, b):
            out.append(ref)
            nxt = _forward(ix, funcs, ref)
            if nxt is not None and nxt not in seen:
                todo.append(nxt)
    return sorted(set(out), key=ix.order)


def _forward(ix: Index, funcs: Functions, ref: cst.CSTNode) -> Binding | None:
    parent = ix.parent.get(ref)
    if isinstance(parent, cst.Arg) and parent.value is ref:
        call = ix.parent.get(parent)
        if isinstance(call, cst.Call):
            found = funcs.callee(call)
            if found is not None:
                p = param_for(found[0], found[1], call, parent)
                if p is not None:
                    return binding_of(ix, p.name)
        return None
    if isinstance(parent, cst.Assign) and parent.value is ref and len(parent.targets) == 1:
        return binding_of(ix, parent.targets[0].target)
    return None
