"""MIG210: where the set-up model is a bare DDP wrapper, the model's own methods, attributes and state dicts go through unwrap."""

from __future__ import annotations

import libcst as cst

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
            for ref in m.refs:
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
