"""Side-effect rule for loop exits decided on per-rank values: the ranks decide together."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
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

    An unseeded script that draws torch random numbers (`torch.randn`, `.normal_()`) also
    gets, right after the wrapper object, a seed every rank takes from rank 0
    (`rt.seed_everything(rt.broadcast(torch.initial_seed() % 2**32))`; Accelerate:
    `torch.manual_seed` of rank 0's seed gathered): torch seeds each process from the OS, so
    the ranks would draw different targets and batches, the averaged gradients would fit no
    rank's data and an exit every rank must agree on would never come (pytorch/examples
    regression fits a random polynomial until its loss is below 1e-3). With one seed the
    ranks train on the same (replicated, MIG303) data. Seeded scripts keep their seeds.

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
    anchors = A.BACKWARD  # loops that train: a backward, bare or through the wrapper
    name = "collective-loop-exit"
    summary = "decide loop exits collectively so no rank waits forever"

    def plan(self, ctx) -> None:
        ix = ctx.ix
        first = None
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
                first = first or change
                change.renders(ctx.vocab.reduce_boolean_decision)  # rendered in the replacement
                change.replace(
                    test,
                    lambda up, c=change, a=all_: c.expr(
                        c.ctx.vocab.reduce_boolean_decision, flag=up, all=a,
                        reduce="all" if a == "True" else "any",
                    ),
                )

        if first is not None:
            _share_seed(ctx, first)

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


# torch functions and tensor methods that draw from the default generator.
_DRAWS = {"rand", "randn", "randint", "randperm", "normal", "rand_like", "randn_like",
          "randint_like", "bernoulli", "multinomial", "poisson"}
_IN_PLACE_DRAWS = {"normal_", "uniform_", "random_", "bernoulli_", "exponential_", "cauchy_",
                   "log_normal_", "geometric_"}
_SEEDS = {"manual_seed", "seed_everything", "set_seed", "seed"}


def draws_unseeded(ix) -> bool:
    """The file draws torch random numbers and never seeds (nor shares a seed)."""
    draws = False
    for call in ix.calls:
        func = call.func
        last = func.attr.value if isinstance(func, cst.Attribute) else (
            func.value if isinstance(func, cst.Name) else None)
        if last in _SEEDS:
            return False  # the script seeds (or a migrated file already shares the seed)
        qname = ix.call_qname(call) or ""
        if (qname.startswith("torch.") and qname.rsplit(".", 1)[-1] in _DRAWS) or (
            isinstance(func, cst.Attribute) and last in _IN_PLACE_DRAWS
        ):
            draws = True
    return draws


def _share_seed(ctx, change) -> None:
    """An unseeded script that draws torch random numbers gets rank 0's seed on every rank.

    torch seeds each process from the OS, so the ranks of an unseeded script draw different
    numbers: different targets and batches (pytorch/examples regression draws the polynomial
    it fits). The averaged gradients then fit no rank's data and a threshold exit that every
    rank must reach is never reached. With one seed every rank draws what rank 0 draws (the
    replicated data MIG303 reports), the losses agree and the loop ends as on 1 process.
    """
    ix = ctx.ix
    role = ctx.options.role
    if role is not None and (role.library or not role.trains):
        return  # no module-level wrapper object of its own to take the seed from
    if not draws_unseeded(ix):
        return
    body = list(ix.module.body)
    wrapper = ctx.facts.wrapper
    if wrapper is not None:
        if wrapper.target != ctx.vocab.name or wrapper.stmt not in body:
            return
        after = body.index(wrapper.stmt) + 1
    else:
        from migrator.rules.wrapper_object import wrapper_anchor

        after = body.index(wrapper_anchor(ctx)) + 1
    if after >= len(body):
        return
    change.insert_before(body[after], change.stmt(ctx.vocab.share_seed))
    change.message += (
        "; the script is unseeded, so every rank draws rank 0's random numbers "
        "(else each rank fits its own random data and no exit is ever agreed)"
    )
