"""Side-effect rule for loop exits decided on per-rank values: the ranks decide together."""

from __future__ import annotations

import libcst as cst

from migrator.rules.base import Rule
from migrator.rules.side_effects_common import in_rank_zero_guard, is_wrapper_call, trains

_CLOCKS = {"time.time", "time.perf_counter", "time.monotonic", "time.process_time"}


def _exits(body: cst.BaseSuite) -> bool:
    """The branch ends by leaving the loop (``break`` / ``return``)."""
    stmts = body.body if isinstance(body, cst.IndentedBlock) else [body]
    last = stmts[-1] if stmts else None
    smalls = (
        last.body if isinstance(last, (cst.SimpleStatementLine, cst.SimpleStatementSuite)) else []
    )
    return any(isinstance(s, (cst.Break, cst.Return)) for s in smalls)


class CollectiveLoopExit(Rule):
    """Loop exits decided on per-rank values (loss or reward thresholds) are decided by all ranks.

    **What**: in a training loop (one that runs a backward, directly or through an in-file
    function), `if <cond>: ... break` (or `return`) and `while <cond>:` whose condition reads
    a value computed inside the loop (a loss, a reward, a patience counter, the clock) become
    `if rt.reduce_boolean_decision(<cond>, all=True):` (stop once every rank wants to stop)
    and `while rt.reduce_boolean_decision(<cond>, all=False):` (go on while any rank wants to
    go on). Fabric: `fabric.strategy.reduce_boolean_decision`. Conditions on loop counters
    (`step >= warmup`, `i += 1` counters) and constants are the same on every rank and stay.

    **Why**: each rank sees different data, so its loss crosses the threshold at a different
    step. A rank that leaves the loop alone leaves the others waiting forever in the next
    gradient all-reduce. On one process the decision is the condition itself.

    **Before**
    ```python
    if loss.item() < args.target_loss:
        break
    ```
    **After**
    ```python
    if rt.reduce_boolean_decision(loss.item() < args.target_loss, all=True):
        break
    ```
    """

    code = "MIG408"
    name = "collective-loop-exit"
    summary = "decide loop exits collectively so no rank waits forever"

    def plan(self, ctx) -> None:
        ix = ctx.ix
        for loop in ix.loops:
            if not trains(ctx, loop):
                continue
            varying = self._per_rank_names(ctx, loop)
            tests = [(loop.test, "False")] if isinstance(loop, cst.While) else []
            for node in ix.within(loop, ix.ifs):
                if ix.loops_around(node)[:1] == [loop] and _exits(node.body):
                    tests.append((node.test, "True"))
            for test, all_ in tests:
                if in_rank_zero_guard(ctx, test) or not self._depends(ctx, test, varying):
                    continue
                if any(is_wrapper_call(ctx, c) for c in ix.subtree(test, cst.Call)):
                    continue  # already collective
                change = ctx.finding(
                    self.code, test, "this exit depends on per-rank values: decide it on all ranks"
                )
                change.renders(ctx.vocab.reduce_boolean_decision)  # rendered in the replacement
                change.replace(
                    test,
                    lambda up, c=change, a=all_: c.expr(
                        c.ctx.vocab.reduce_boolean_decision, flag=up, all=a,
                        reduce="all" if a == "True" else "any",
                    ),
                )

    @staticmethod
    def _per_rank_names(ctx, loop: cst.CSTNode) -> set[str]:
        """Names assigned inside ``loop`` from values that may differ across ranks."""
        ix = ctx.ix
        out: set[str] = set()
        for node in ix.within(loop, ix.assigns):
            if isinstance(node, cst.AugAssign):
                if isinstance(node.value, cst.Integer):
                    continue  # a step counter advances in lockstep
                targets = [node.target]
            elif isinstance(node, cst.Assign):
                targets = [t.target for t in node.targets]
            else:
                targets = [node.target]
            for t in targets:
                elements = (
                    [e.value for e in t.elements] if isinstance(t, (cst.Tuple, cst.List)) else [t]
                )
                out.update(e.value for e in elements if isinstance(e, cst.Name))
        return out

    @staticmethod
    def _depends(ctx, test: cst.BaseExpression, varying: set[str]) -> bool:
        ix = ctx.ix
        names = [test] if isinstance(test, cst.Name) else ix.subtree(test, cst.Name)
        if any(n.value in varying for n in names):
            return True
        return any(ix.call_qname(c) in _CLOCKS for c in ix.subtree(test, cst.Call))
