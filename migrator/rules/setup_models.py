"""MIG202/MIG203: one `setup(model, *optimizers)` per trained model; manual-SGD models set up alone."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.analysis.flow import lookup
from migrator.plan import Change, PlanContext
from migrator.rules._setup import (
    already_set_up,
    model_text,
    own_optimizer,
    setup_anchor,
    skipped_branches,
)
from migrator.rules.base import Rule


def _global_decl(ctx: PlanContext, change: Change, anchor: cst.CSTNode, names: list[str]) -> None:
    """Rebinding a module global inside a function needs ``global`` (else it becomes local)."""
    fn = ctx.ix.function_of(anchor)
    if fn is None:
        return
    module_scope = ctx.ix.scopes.get(ctx.ix.module)
    fn_scope = ctx.ix.scopes.get(fn.body)
    wanted = []
    for name in names:
        if "." in name or "[" in name:
            continue
        params = {p.name.value for p in fn.params.params}
        local = any(a.scope is fn_scope for a in (lookup(fn_scope.assignments, name) if fn_scope else ()))
        if module_scope is not None and name in module_scope.assignments and name not in params and not local:
            wanted.append(name)
    if wanted:
        first = fn.body.body[0]
        change.insert_before(first, cst.parse_statement(f"global {', '.join(wanted)}\n"))


def _set_up_alone(change: Change, stmt: cst.If, in_body: bool, code: str) -> None:
    """Set the model up alone on the branch of ``stmt`` that does not build the optimizer."""
    if in_body and stmt.orelse is None:
        def add_else(u: cst.If) -> cst.If:
            body = cst.IndentedBlock(body=[cst.parse_statement(code)])
            return u.with_changes(orelse=cst.Else(body=body))

        change.replace(stmt, add_else)
        return
    block = stmt.orelse.body if in_body else stmt.body
    change.insert_before(block.body[0], cst.parse_statement(code))


class SetupModelRule(Rule):
    """Set up each trained model with all of its optimizers, once.

    **What**: after the last optimizer of a model is built (and before the training loop),
    inserts `model, optimizer = rt.setup(model, optimizer)`; GANs get one call per network
    (`netG, optG = rt.setup(netG, optG)` and `netD, optD = ...`). The names are rebound, so
    later code, globals and helper functions receiving them use the wrapped objects. `.to()` /
    `.cuda()` moves of the model become redundant (MIG102) and `model.module` keeps working.
    Modules without an optimizer are not set up (frozen helpers: see MIG104 for moves).

    **Why**: setup moves the model to the process's device, wraps it for the strategy (DDP,
    FSDP, ...) and precision, and makes the optimizer step through the strategy.

    An optimizer built on some paths only (`if args.use_optimizer: optimizer = AdamW(...)`,
    manual SGD otherwise) is set up with the model in its branch, and the model alone on the
    other one (an `else:` is added): `else: model = rt.setup(model)`. One `setup` per path
    keeps every target and strategy (FSDP and DeepSpeed set up module and optimizers
    together). A module that builds its own optimizer over `self.parameters()` in its class
    is not set up (setup cannot rebind `self`): MIG903 reports it.

    **Before**: `optimizer = optim.SGD(model.parameters())`  **After**: the same line, then
    `model, optimizer = rt.setup(model, optimizer)`
    """

    code = "MIG202"
    anchors = A.MODELS
    name = "setup-model"
    summary = "Set up each trained model with its optimizers: model, opt = rt.setup(model, opt)"

    def plan(self, ctx: PlanContext) -> None:
        for m in ctx.facts.models:
            if m.manual or already_set_up(ctx, m):
                continue
            anchor = setup_anchor(ctx, m)
            last = max(m.optimizers, key=lambda o: ctx.ix.order(o.call))
            if anchor is None:
                ctx.finding(
                    self.code, last.call,
                    f"set up {ctx.ix.code(m.expr)} by hand: its optimizers are not plain "
                    "assignments in one scope, or one optimizer covers several models",
                    fixed=False,
                )
                continue
            if own_optimizer(ctx, m):
                ctx.finding(
                    self.code, last.call,
                    f"set up by hand: the module builds its own optimizer over "
                    f"{ctx.ix.code(m.expr)}.parameters() inside its class; set up each such "
                    "module with its optimizer where it is created (outside the class)",
                    fixed=False,
                )
                continue
            branches = skipped_branches(ctx, m)
            if branches is None:
                ctx.finding(
                    self.code, last.call,
                    f"set up {ctx.ix.code(m.expr)} by hand: its optimizers are built on some "
                    "paths only (an elif chain or a one-line branch), and the model must be set "
                    "up on the others too",
                    fixed=False,
                )
                continue
            # one name per optimizer variable (built in both branches of an ``if`` = one)
            model = model_text(ctx, m)
            names = list(dict.fromkeys([model, *(ctx.ix.code(o.target) for o in m.optimizers)]))
            change = ctx.finding(self.code, last.call, "")
            call = change.code_text(ctx.vocab.setup, args=", ".join(names))
            change.insert_after(anchor, cst.parse_statement(f"{', '.join(names)} = {call}\n"))
            _global_decl(ctx, change, anchor, names)
            change.message = f"set up the model with its optimizers: {', '.join(names)} = {call}"
            if branches:
                alone = change.code_text(ctx.vocab.setup, args=model)
                for stmt, in_body in branches:
                    _set_up_alone(change, stmt, in_body, f"{model} = {alone}\n")
                change.message += (
                    f"; the paths that build no optimizer train it too: {model} = {alone} there"
                )


class SetupManualModelRule(Rule):
    """Set up a model trained without an optimizer (manual SGD on `p.data`).

    **What**: a module whose parameters are updated by hand (`for p in model.parameters():
    p.data.add_(p.grad, alpha=-lr)`) is set up alone right after it is built:
    `model = rt.setup(model)`.

    **Why**: gradients must be averaged across processes during backward, which only the
    wrapped module does; the manual update then sees the same gradients on every rank.

    **Before**: `model = RNNModel(...)`  **After**: the same line, then `model = rt.setup(model)`
    """

    code = "MIG203"
    anchors = A.MODELS
    name = "setup-manual-model"
    summary = "Set up a model updated without an optimizer: model = rt.setup(model)"

    def plan(self, ctx: PlanContext) -> None:
        for m in ctx.facts.models:
            if not m.manual or already_set_up(ctx, m):
                continue
            anchor = setup_anchor(ctx, m)
            if anchor is None:
                continue
            name = model_text(ctx, m)
            change = ctx.finding(self.code, m.construction, "")
            call = change.code_text(ctx.vocab.setup, args=name)
            change.insert_after(anchor, cst.parse_statement(f"{name} = {call}\n"))
            change.message = f"parameters are updated by hand: set the model up alone ({name} = {call})"
