"""MIG210: where the set-up model is a bare DDP wrapper, the model's own methods, attributes and state dicts go through unwrap."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.plan import PlanContext
from migrator.rules.base import Rule

# What a DistributedDataParallel object answers exactly as the module it wraps does.
_WRAPPER_API = frozenset({
    "parameters", "named_parameters", "buffers", "named_buffers", "modules", "named_modules",
    "children", "named_children", "train", "eval", "training", "zero_grad", "requires_grad_",
    "to", "cpu", "cuda", "float", "double", "half", "apply", "forward",
})


class UnwrapAccessRule(Rule):
    """Reach the original module through unwrap where the set-up model does not forward it.

    **What**: (targets whose set-up model is the bare torch wrapper, e.g. accelerate, where
    `prepare` returns a `DistributedDataParallel` on several processes and the module itself on
    one) after setup, `model.state_dict()`, `model.load_state_dict(...)`, the model's own
    methods and attributes (`model.generate(...)`, `model.init_hidden(bsz)`, `model.fc`)
    become `accelerator.unwrap_model(model).<name>`, and `model.module` (a former
    `nn.DataParallel`) becomes `accelerator.unwrap_model(model)`. The forward call and the
    `nn.Module` API that DDP answers itself (`parameters()`, `train()`, `eval()`, `zero_grad()`,
    ...) are left alone.

    **Why**: DDP does not forward attributes (`AttributeError: 'DistributedDataParallel'
    object has no attribute 'generate'`) and its state dict keys carry a `module.` prefix, so a
    checkpoint would no longer load in the original script, and the original's checkpoints no
    longer load into the model. Unwrapping gives the original module on 1 and N processes.

    **Before**: `torch.save(model.state_dict(), path)`
    **After**: `accelerator.save(accelerator.unwrap_model(model).state_dict(), path)`
    """

    code = "MIG210"
    anchors = A.MODELS
    name = "unwrap-access"
    summary = "Reach the model's own methods and state dict through unwrap (bare DDP wrappers)"

    def plan(self, ctx: PlanContext) -> None:
        from migrator.rules._setup import setup_anchor

        if ctx.vocab.wrapped_model_transparent:
            return
        ix = ctx.ix
        for m in ctx.facts.models:
            anchor = setup_anchor(ctx, m)
            if anchor is None:
                continue
            for ref in _value_refs(ctx, m):
                attr = ix.parent.get(ref)
                if not (isinstance(attr, cst.Attribute) and attr.value is ref):
                    continue
                name = attr.attr.value
                if name in _WRAPPER_API or ix.inside(ref, anchor):
                    continue
                if ix.function_of(ref) is ix.function_of(anchor) and ix.order(ref) < ix.order(anchor):
                    continue  # before setup: still the original module
                change = ctx.finding(self.code, attr, "")
                unwrapped = change.expr(ctx.vocab.unwrap, model=ref)
                if name == "module":
                    change.replace(attr, unwrapped)
                    shown = ix.code(unwrapped)
                else:
                    change.replace(ref, unwrapped)
                    shown = f"{ix.code(unwrapped)}.{name}"
                change.message = (
                    f"the set-up model does not forward `.{name}` (a bare DDP wrapper; its state "
                    f"dict keys carry `module.`): use {shown}"
                )


# Module methods that return the module itself: ``self.model = model.to(device)`` stores the
# same (set-up) object.
_RETURNS_SELF = frozenset({
    "to", "cuda", "cpu", "float", "double", "half", "bfloat16", "train", "eval", "requires_grad_",
})


def _value_refs(ctx: PlanContext, m) -> list[cst.CSTNode]:
    """Every load of the set-up model's value: ``m.refs`` (assignments, call parameters,
    ``self.x = name``) and, beyond them, through a function's return value into the caller's
    target (``dataset, model, opt = load_train_objs()``, by position) and through methods that
    return the module itself (``self.model = model.to(gpu_id)``)."""
    from migrator.analysis.flow import binding_of

    ix, facts = ctx.ix, ctx.facts
    out: list[cst.CSTNode] = list(m.refs)
    seen = {m.binding}
    todo = list(m.refs)
    while todo:
        ref = todo.pop()
        for target in _stored_into(ctx, _through_self_methods(ix, ref)):
            b = binding_of(ix, target)
            if b is None or b in seen:
                continue
            seen.add(b)
            new = [r for r in facts.refs(b) if r not in out]
            out.extend(new)
            todo.extend(new)
    return sorted(set(out), key=ix.order)


def _through_self_methods(ix, node: cst.CSTNode) -> cst.CSTNode:
    """``model`` -> ``model.to(gpu_id)`` (the same object) while the calls return the module."""
    while True:
        attr = ix.parent.get(node)
        call = ix.parent.get(attr)
        if not (
            isinstance(attr, cst.Attribute) and attr.value is node
            and attr.attr.value in _RETURNS_SELF
            and isinstance(call, cst.Call) and call.func is attr
        ):
            return node
        node = call


def _stored_into(ctx: PlanContext, node: cst.CSTNode) -> list[cst.BaseExpression]:
    """The targets (``x`` or ``self.x``) the value ``node`` is stored into where flow_refs does
    not follow it: an assignment of a method chain, or the callers' targets of a ``return``."""
    ix = ctx.ix
    parent = ix.parent.get(node)
    if isinstance(parent, cst.Assign) and parent.value is node and len(parent.targets) == 1:
        return [parent.targets[0].target]
    index = None
    if isinstance(parent, cst.Element) and isinstance(ix.parent.get(parent), cst.Tuple):
        tup = ix.parent.get(parent)
        if any(isinstance(e, cst.StarredElement) for e in tup.elements):
            return []
        index, parent = list(tup.elements).index(parent), ix.parent.get(tup)
    if not isinstance(parent, cst.Return):
        return []
    fn = ix.function_of(parent)
    if fn is None:
        return []
    out = []
    for call in ix.calls:
        found = ctx.facts.funcs.callee(call)
        if found is None or found[0] is not fn or fn.name.value == "__init__":
            continue  # (a class's construction returns the instance, not this value)
        assign = ix.parent.get(call)
        if not (
            isinstance(assign, cst.Assign) and assign.value is call and len(assign.targets) == 1
        ):
            continue
        target = assign.targets[0].target
        if index is None:
            out.append(target)
        elif isinstance(target, (cst.Tuple, cst.List)) and len(target.elements) > index and not any(
            isinstance(e, cst.StarredElement) for e in target.elements
        ):
            out.append(target.elements[index].value)
    return [t for t in out if isinstance(t, (cst.Name, cst.Attribute))]


class ClosureStepRule(Rule):
    """Keep the loss that `optimizer.step(closure)` returns where the set-up optimizer drops it.

    **What**: (targets whose set-up optimizer returns None from `step`, e.g. accelerate 1.15's
    `AcceleratedOptimizer`) `loss = optimizer.step(closure)` becomes
    `loss = optimizer.optimizer.step(closure)`: the underlying torch optimizer (LBFGS) steps
    and returns the closure's loss. Gradients are still averaged across processes, in the
    closure's backward. A `step(closure)` whose result is not used is left alone.

    **Why**: code that prints the loss or stops on it (`loss.item() < tol`) would fail with
    `'NoneType' object has no attribute 'item'`. Under fp16 mixed precision the wrapper's
    loss scaling would be bypassed: keep such scripts in fp32.
    """

    code = "MIG211"
    anchors = A.MODELS
    name = "closure-step-loss"
    summary = "Step the underlying optimizer where the wrapper's step(closure) returns None"

    def plan(self, ctx: PlanContext) -> None:
        from migrator.analysis.flow import binding_of
        from migrator.rules._setup import setup_anchor

        template = ctx.vocab.closure_step
        if template is None:
            return
        ix = ctx.ix
        for m in ctx.facts.models:
            if m.manual or setup_anchor(ctx, m) is None:
                continue
            for o in m.optimizers:
                if o.target is None:
                    continue
                for ref in ctx.facts.refs(binding_of(ix, o.target)):
                    attr = ix.parent.get(ref)
                    call = ix.parent.get(attr)
                    if not (isinstance(attr, cst.Attribute) and attr.attr.value == "step"
                            and isinstance(call, cst.Call) and call.func is attr and call.args):
                        continue
                    if isinstance(ix.parent.get(call), cst.Expr):
                        continue  # result unused
                    change = ctx.finding(self.code, call, "")
                    new = change.expr(template, optimizer=ref, closure=call.args[0].value)
                    change.replace(call, new)
                    change.message = f"the set-up optimizer's step(closure) returns None: {ix.code(new)} returns the loss"
