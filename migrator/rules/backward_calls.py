"""MIG204: every `.backward()` on a loss goes through the wrapper."""

from __future__ import annotations

import dataclasses

import libcst as cst

from migrator import anchors_spec as A
from migrator.analysis.flow import binding_of
from migrator.plan import PlanContext
from migrator.rules._util import arg_text, bare
from migrator.rules.base import Rule


class BackwardRule(Rule):
    """Call backward through the wrapper.

    **What**: `loss.backward()` becomes `rt.backward(loss)` (fabric: `fabric.backward(loss)`),
    keeping arguments such as `retain_graph=True`. Every form is covered: GAN branches,
    optimizer closures (LBFGS), `(a + b).backward()`, and `scaler.scale(loss).backward()`
    (the wrapper's precision scales the loss; see MIG205).

    **Why**: the wrapper applies precision scaling and the strategy's hooks. A bare backward
    trains silently wrong under some strategies and raises under mixed precision, so the
    migrator treats a bare backward left in its output as an internal error.

    **Before**: `loss.backward()`  **After**: `rt.backward(loss)`
    """

    code = "MIG204"
    anchors = A.BACKWARD
    name = "backward"
    summary = "Call backward through the wrapper: rt.backward(loss)"

    def plan(self, ctx: PlanContext) -> None:
        for b in ctx.facts.backwards:
            args = ", ".join([bare(ctx.ix, b.loss), *(arg_text(ctx.ix, a) for a in b.call.args)])
            change = ctx.finding(self.code, b.call, "")
            change.replace(b.call, _through_wrapper(change, ctx.vocab.backward, b, args))
            change.message = f"backward through the wrapper: {change.code_text(ctx.vocab.backward, args=bare(ctx.ix, b.loss))}"
            if b.scaled:  # unscaled only while MIG205 removes the scaler; else keep its scaling
                scaler = ctx.facts.scaler_bindings[binding_of(ctx.ix, b.call.func.value.func.value)]
                change.require(scaler)
                kept = ctx.fallback(change)
                scaled = [ctx.ix.code(b.call.func.value), *(arg_text(ctx.ix, a) for a in b.call.args)]
                kept.replace(b.call, kept.expr(ctx.vocab.backward, args=", ".join(scaled)))
                shown = kept.code_text(ctx.vocab.backward, args=ctx.ix.code(b.call.func.value))
                kept.message = f"backward through the wrapper, the GradScaler kept: {shown}"


def _through_wrapper(change, template: str, b, args: str):
    """``loss.backward(...)`` -> ``rt.backward(loss, ...)`` built from the *updated* call, so
    what other rules changed inside the loss expression (a CPU tensor moved to the device)
    stays; the original text is the fallback where the loss cannot be found again."""
    steps = _steps(b.call, b.loss)

    def render(updated: cst.Call) -> cst.BaseExpression:
        loss = _follow(updated, steps) if steps is not None else None
        if loss is None or not isinstance(updated, cst.Call):
            return change.expr(template, args=args)
        if getattr(loss, "lpar", None):
            loss = loss.with_changes(lpar=[], rpar=[])
        code = cst.Module(body=[]).code_for_node
        own = [code(a.with_changes(comma=cst.MaybeSentinel.DEFAULT)) for a in updated.args]
        return change.expr(template, args=", ".join([code(loss), *own]))

    return render


def _steps(root: cst.CSTNode, target: cst.CSTNode) -> list[tuple[str, int | None]] | None:
    """Field names (and sequence indexes) that lead from ``root`` down to ``target``."""
    if root is target:
        return []
    for f in dataclasses.fields(root):
        value = getattr(root, f.name, None)
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
        for i, child in items:
            if isinstance(child, cst.CSTNode):
                rest = _steps(child, target)
                if rest is not None:
                    return [(f.name, i), *rest]
    return None


def _follow(node: cst.CSTNode, steps) -> cst.CSTNode | None:
    for name, i in steps:
        value = getattr(node, name, None)
        if i is not None:
            value = value[i] if isinstance(value, (list, tuple)) and i < len(value) else None
        if not isinstance(value, cst.CSTNode):
            return None
        node = value
    return node if isinstance(node, cst.BaseExpression) else None
