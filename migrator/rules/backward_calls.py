"""MIG204: every `.backward()` on a loss goes through the wrapper."""

from __future__ import annotations

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
            change.replace(b.call, change.expr(ctx.vocab.backward, args=args))
            change.message = f"backward through the wrapper: {change.code_text(ctx.vocab.backward, args=bare(ctx.ix, b.loss))}"
            if b.scaled:  # unscaled only while MIG205 removes the scaler; else keep its scaling
                scaler = ctx.facts.scaler_bindings[binding_of(ctx.ix, b.call.func.value.func.value)]
                change.require(scaler)
                kept = ctx.fallback(change)
                scaled = [ctx.ix.code(b.call.func.value), *(arg_text(ctx.ix, a) for a in b.call.args)]
                kept.replace(b.call, kept.expr(ctx.vocab.backward, args=", ".join(scaled)))
                shown = kept.code_text(ctx.vocab.backward, args=ctx.ix.code(b.call.func.value))
                kept.message = f"backward through the wrapper, the GradScaler kept: {shown}"
