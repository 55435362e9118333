"""Facts about training: optimizers, models (trained / manual / frozen), loaders, backward sites."""

from __future__ import annotations

from functools import cached_property

import libcst as cst

from migrator.analysis import names as N
from migrator.analysis.facts import (
    BackwardFact,
    CoreFacts,
    LoaderFact,
    ModelFact,
    OptimizerFact,
    root_object,
    strip_chain,
)
from migrator.analysis.flow import Binding, binding_of


class TrainingFacts(CoreFacts):
    @cached_property
    def optimizers(self) -> tuple[OptimizerFact, ...]:
        out = []
        for call in self.ix.calls:
            if not N.is_optimizer(self.ix.call_qname(call)):
                continue
            params = call.args[0].value if call.args else None
            models: list[cst.BaseExpression] = []
            for inner in self.ix.subtree(params, cst.Call) if params is not None else ():
                f = inner.func
                if isinstance(f, cst.Attribute) and f.attr.value in N.PARAM_METHODS:
                    obj = root_object(f.value)
                    if not any(m.deep_equals(obj) for m in models):
                        models.append(obj)
            out.append(
                OptimizerFact(call, self.ix.statement(call), self.assign_target(call), tuple(models))
            )
        return tuple(out)

    @cached_property
    def constructions(self) -> dict[Binding, cst.Assign]:
        """First ``nn.Module`` construction stored into each binding."""
        out: dict[Binding, cst.Assign] = {}
        for node in self.ix.assigns:
            if not isinstance(node, cst.Assign) or len(node.targets) != 1:
                continue
            t = node.targets[0].target
            if isinstance(t, (cst.Name, cst.Attribute)) and self.is_module_construction(node.value):
                b = binding_of(self.ix, t)
                if b is not None and b not in out:
                    out[b] = node
        return out

    def _class_of_construction(self, assign: cst.Assign | None) -> cst.ClassDef | None:
        if assign is None:
            return None
        call = self.unwrap_dp(strip_chain(assign.value))
        return self.module_class_of(call) if isinstance(call, cst.Call) else None

    @cached_property
    def models(self) -> tuple[ModelFact, ...]:
        """Trained models (their parameters reach an optimizer) and manually updated ones."""
        by_binding: dict[Binding, list] = {}
        exprs: dict[Binding, cst.BaseExpression] = {}
        for opt in self.optimizers:
            for expr in opt.models:
                b = binding_of(self.ix, expr)
                if b is None:
                    continue
                by_binding.setdefault(b, []).append(opt)
                exprs.setdefault(b, expr)
        manual = set(self._manual_bindings) - set(by_binding)
        out = []
        for b in [*by_binding, *sorted(manual, key=lambda m: self.ix.order(self._manual_bindings[m]))]:
            ctor = self.constructions.get(b)
            expr = exprs.get(b) or self._manual_bindings[b]
            out.append(
                ModelFact(
                    expr=expr,
                    binding=b,
                    optimizers=tuple(by_binding.get(b, ())),
                    construction=ctor,
                    class_def=self._class_of_construction(ctor),
                    refs=self.refs(b),
                    manual=b in manual,
                )
            )
        return tuple(out)

    @cached_property
    def _manual_bindings(self) -> dict[Binding, cst.BaseExpression]:
        """Modules whose ``parameters()`` are looped over with ``.grad`` read: manual SGD."""
        out: dict[Binding, cst.BaseExpression] = {}
        for loop in self.ix.loops:
            it = loop.iter if isinstance(loop, cst.For) else None
            if not (isinstance(it, cst.Call) and isinstance(it.func, cst.Attribute)):
                continue
            body = self.ix.code(loop.body)
            if it.func.attr.value not in N.PARAM_METHODS or ".grad" not in body:
                continue
            if not any(w in body for w in (".data", "add_(", "sub_(", "copy_(")):
                continue  # reads or resets gradients, does not update the parameters
            obj = root_object(it.func.value)
            for ctor_b in self.constructions:
                # the loop may read the model through a parameter or a global: follow the flow
                if obj in self.refs(ctor_b) or binding_of(self.ix, obj) == ctor_b:
                    out.setdefault(ctor_b, obj)
        return out

    def model_of(self, expr: cst.BaseExpression) -> ModelFact | None:
        """The model fact an expression (``model``, a parameter receiving it, ``self.net``) holds."""
        for m in self.models:
            if expr in m.refs or m.expr is expr:
                return m
        b = binding_of(self.ix, expr)
        return next((m for m in self.models if m.binding == b), None) if b else None

    # --- backward ------------------------------------------------------------------------------
    @cached_property
    def scaler_bindings(self) -> dict[Binding, cst.Assign]:
        out = {}
        for node in self.ix.assigns:
            if (
                isinstance(node, cst.Assign) and isinstance(node.value, cst.Call)
                and self.ix.call_qname(node.value) in N.GRAD_SCALER and len(node.targets) == 1
            ):
                b = binding_of(self.ix, node.targets[0].target)
                if b is not None:
                    out[b] = node
        return out

    def is_scaler(self, expr: cst.BaseExpression) -> bool:
        b = binding_of(self.ix, expr) if isinstance(expr, (cst.Name, cst.Attribute)) else None
        return b is not None and b in self.scaler_bindings

    @cached_property
    def backwards(self) -> tuple[BackwardFact, ...]:
        """Every bare ``<loss>.backward(...)`` (the wrapper's own backward excluded)."""
        out = []
        for call in self.ix.calls:
            f = call.func
            if not (isinstance(f, cst.Attribute) and f.attr.value == "backward"):
                continue
            recv = f.value
            if self.wrapper_method(call) is not None or self.ix.imported_qname(f) is not None:
                continue  # rt.backward(...), torch.autograd.backward(...)
            if isinstance(recv, cst.Call) and isinstance(recv.func, cst.Name) and recv.func.value == "super":
                continue
            scaled = (
                isinstance(recv, cst.Call)
                and isinstance(recv.func, cst.Attribute)
                and recv.func.attr.value == "scale"
                and self.is_scaler(recv.func.value)
                and len(recv.args) == 1
            )
            loss = recv.args[0].value if scaled else recv
            out.append(BackwardFact(call, loss, scaled))
        return tuple(out)

    @cached_property
    def _backward_calls(self) -> list[cst.Call]:
        return [b.call for b in self.backwards]  # source order, for Index.within

    def has_backward(self, node: cst.CSTNode, depth: int = 2) -> bool:
        """``node`` contains a backward, directly or through in-file functions it calls."""
        if self.ix.within(node, self._backward_calls):
            return True
        if depth == 0:
            return False
        for call in self.ix.subtree(node, cst.Call):
            found = self.funcs.callee(call)
            if found is not None and found[0] is not node and self.has_backward(found[0], depth - 1):
                return True
        return False

    # --- loaders -----------------------------------------------------------------------------
    @cached_property
    def loaders(self) -> tuple[LoaderFact, ...]:
        out = []
        for call in self.ix.calls:
            if self.ix.call_qname(call) not in N.LOADERS:
                continue
            target = self.assign_target(call)
            b = binding_of(self.ix, target) if target is not None else None
            refs = self.refs(b)
            loops = tuple(
                loop
                for loop in self.ix.loops
                if isinstance(loop, cst.For) and any(self.ix.inside(r, loop.iter) for r in refs)
            )
            set_up = any(
                m in ("setup_dataloaders", "setup") and (self.ix.inside(call, c) or any(self.ix.inside(r, c) for r in refs))
                for m, c in self.wrapper_calls
            )
            out.append(
                LoaderFact(
                    call, target, self.ix.statement(call), b, refs, loops,
                    self._is_eval(target, loops), set_up,
                )
            )
        return tuple(out)

    def _is_eval(self, target, loops) -> bool:
        if loops:
            return not any(self.has_backward(loop) for loop in loops)
        text = self.ix.code(target).lower() if target is not None else ""
        return any(w in text for w in ("test", "val", "eval"))

    def loader_loops(self) -> dict[cst.For, LoaderFact]:
        return {loop: ld for ld in self.loaders for loop in ld.loops}
