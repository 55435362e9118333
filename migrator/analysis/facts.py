"""Frozen facts about a training script: wrapper, models, optimizers, loaders, backward sites."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import libcst as cst

from migrator.analysis import names as N
from migrator.analysis.flow import Binding, Functions, binding_of, flow_refs
from migrator.analysis.index import Index
from migrator.targets import VOCABULARIES, WRAPPER_QNAMES, generic_method

# A helper function's parameter of this name is the entry's wrapper (migrator.program).
_BORROWED = {v.wrapper_var: name for name, v in VOCABULARIES.items()}


@dataclass(frozen=True)
class WrapperFact:
    """A module-level ``rt = Runtime(...)`` / ``fabric = Fabric(...)`` already in the file."""

    name: str
    target: str
    stmt: cst.CSTNode
    call: cst.Call


@dataclass(frozen=True)
class OptimizerFact:
    call: cst.Call
    stmt: cst.CSTNode  # block-level statement of the construction
    target: cst.BaseExpression | None  # what it is assigned to (None: not a plain assignment)
    models: tuple[cst.BaseExpression, ...]  # model expressions whose parameters it optimises


@dataclass(frozen=True)
class ModelFact:
    """A trained or manually-updated ``nn.Module`` binding (``model`` or ``self.model``)."""

    expr: cst.BaseExpression  # as written where its parameters are handed over
    binding: Binding
    optimizers: tuple[OptimizerFact, ...]
    construction: cst.Assign | None  # ``model = Net(...)...`` when found in the file
    class_def: cst.ClassDef | None  # in-file class of the model, when known
    refs: tuple[cst.CSTNode, ...]  # every load of the model value (flow through params/self)
    manual: bool  # no optimizer: parameters updated by hand (``p.data.add_(p.grad)``)


@dataclass(frozen=True)
class LoaderFact:
    call: cst.Call
    target: cst.BaseExpression | None
    stmt: cst.CSTNode
    binding: Binding | None
    refs: tuple[cst.CSTNode, ...]
    loops: tuple[cst.For, ...]  # loops iterating it (directly, enumerate, tqdm, zip)
    evaluation: bool
    set_up: bool  # already passed through the wrapper


@dataclass(frozen=True)
class BackwardFact:
    call: cst.Call
    loss: cst.BaseExpression
    scaled: bool  # ``scaler.scale(loss).backward()``


def root_object(expr: cst.BaseExpression) -> cst.BaseExpression:
    """``model.fc`` -> ``model``; ``self.net.fc`` -> ``self.net``."""
    while isinstance(expr, cst.Attribute):
        inner = expr.value
        if isinstance(inner, cst.Name) and inner.value == "self":
            return expr
        expr = inner
    return expr


def strip_chain(expr: cst.BaseExpression) -> cst.BaseExpression:
    """``Net().to(device).eval()`` -> ``Net()``: drop trailing method calls on a construction."""
    while (
        isinstance(expr, cst.Call)
        and isinstance(expr.func, cst.Attribute)
        and isinstance(expr.func.value, cst.Call)
    ):
        expr = expr.func.value
    return expr


class CoreFacts:
    """Facts shared by every group: wrapper, module classes, bindings. Computed on first use, then fixed."""

    def __init__(self, ix: Index) -> None:
        self.ix = ix
        self.funcs = Functions(ix)

    # --- names ----------------------------------------------------------------------------
    @cached_property
    def _global_scope(self):
        return self.ix.scope_of(self.ix.module.body[0]) if self.ix.module.body else None

    def free_name(self, preferred: str) -> str:
        """``preferred`` unless the module already binds it to something else."""
        scope = self.ix.scopes.get(self.ix.module)
        name = preferred
        while scope is not None and name in scope.assignments:
            name += "_"
        return name

    # --- wrapper ----------------------------------------------------------------------------
    @cached_property
    def wrapper(self) -> WrapperFact | None:
        for stmt in self.ix.module.body:
            if not isinstance(stmt, cst.SimpleStatementLine):
                continue
            for small in stmt.body:
                if isinstance(small, cst.Assign) and isinstance(small.value, cst.Call):
                    q = self.ix.call_qname(small.value)
                    target = small.targets[0].target
                    if q in WRAPPER_QNAMES and isinstance(target, cst.Name):
                        return WrapperFact(target.value, WRAPPER_QNAMES[q], stmt, small.value)
        return None

    def wrapper_method(self, call: cst.Call) -> str | None:
        """``rt.setup(...)`` -> ``"setup"`` when the receiver is the file's wrapper object."""
        w = self.wrapper
        f = call.func
        if not isinstance(f, cst.Attribute):
            return None
        recv = f.value
        if isinstance(recv, cst.Attribute) and recv.attr.value == "strategy":
            recv = recv.value  # fabric.strategy.reduce_boolean_decision
        if not isinstance(recv, cst.Name):
            return None
        if w is not None and recv.value == w.name:
            return generic_method(w.target, f.attr.value)
        target = self.borrowed_wrapper(recv)
        return generic_method(target, f.attr.value) if target is not None else None

    def borrowed_wrapper(self, name: cst.Name) -> str | None:
        """The target of a wrapper a helper function takes as a parameter (``def
        train_one_epoch(rt, ...)``, see ``migrator.program``), when ``name`` reads it."""
        target = _BORROWED.get(name.value)
        fn = self.ix.function_of(name) if target is not None else None
        while fn is not None:
            p = fn.params
            if any(q.name.value == name.value for q in (*p.posonly_params, *p.params, *p.kwonly_params)):
                return target
            fn = self.ix.function_of(fn)
        return None

    @cached_property
    def wrapper_calls(self) -> tuple[tuple[str, cst.Call], ...]:
        out = []
        for call in self.ix.calls:
            m = self.wrapper_method(call)
            if m is not None:
                out.append((m, call))
        return tuple(out)

    # --- classes ----------------------------------------------------------------------------
    @cached_property
    def module_classes(self) -> dict[str, cst.ClassDef]:
        """In-file ``nn.Module`` subclasses (transitively through in-file bases)."""
        found: dict[str, cst.ClassDef] = {}
        changed = True
        while changed:
            changed = False
            for cls in self.ix.classes:
                if cls.name.value in found:
                    continue
                for base in cls.bases:
                    q = self.ix.imported_qname(base.value)
                    local = isinstance(base.value, cst.Name) and base.value.value in found
                    if q == N.NN_MODULE or local:
                        found[cls.name.value] = cls
                        changed = True
                        break
        return found

    def module_class_of(self, call: cst.Call) -> cst.ClassDef | None:
        if isinstance(call.func, cst.Name):
            return self.module_classes.get(call.func.value)
        return None

    def is_module_construction(self, expr: cst.BaseExpression) -> bool:
        expr = self.unwrap_dp(strip_chain(expr))
        if not isinstance(expr, cst.Call):
            return False
        return self.module_class_of(expr) is not None or N.is_module_ctor(self.ix.call_qname(expr))

    def unwrap_dp(self, expr: cst.BaseExpression) -> cst.BaseExpression:
        """``nn.DataParallel(Net())`` -> ``Net()``."""
        while isinstance(expr, cst.Call) and self.ix.call_qname(expr) in N.DATA_PARALLEL and expr.args:
            expr = strip_chain(expr.args[0].value)
        return expr

    # --- bindings -----------------------------------------------------------------------------
    def assignments_of(self, b: Binding) -> list[cst.Assign]:
        """Plain ``x = ...`` / ``self.x = ...`` statements that store into ``b``."""
        out = []
        for node in self.ix.assigns:
            if isinstance(node, cst.Assign) and len(node.targets) == 1:
                t = node.targets[0].target
                if isinstance(t, (cst.Name, cst.Attribute)) and binding_of(self.ix, t) == b:
                    out.append(node)
        return out

    def refs(self, b: Binding | None) -> tuple[cst.CSTNode, ...]:
        return tuple(flow_refs(self.ix, self.funcs, b)) if b is not None else ()

    def assign_target(self, value: cst.CSTNode) -> cst.BaseExpression | None:
        parent = self.ix.parent.get(value)
        if isinstance(parent, cst.Assign) and parent.value is value and len(parent.targets) == 1:
            t = parent.targets[0].target
            if isinstance(t, (cst.Name, cst.Attribute)):
                return t
        return None
