"""Side-effect rules that need agreement across ranks: evaluation sums and per-rank loop exits."""

from __future__ import annotations

import libcst as cst

from migrator.rules.base import Rule
from migrator.rules.side_effects_common import is_wrapper_call, trains


def _zero(node: cst.CSTNode) -> bool:
    return isinstance(node, (cst.Integer, cst.Float)) and float(node.value) == 0.0


def _global_size(ix, node: cst.CSTNode, group: set[str]) -> bool:
    """``len(x.dataset)`` / ``len(x.sampler)``, or another accumulator of the same loop."""
    if isinstance(node, cst.Name):
        return node.value in group
    if isinstance(node, cst.Call) and ix.call_qname(node) == "builtins.len" and node.args:
        inner = node.args[0].value
        return isinstance(inner, cst.Attribute) and inner.attr.value in ("dataset", "sampler")
    return False


class ReduceEvalAccumulators(Rule):
    """Evaluation sums (`correct += ...`, `test_loss += ...`) are summed across ranks before use.

    **What**: in a loop over an evaluation loader that the wrapper shards, an accumulator
    initialised to `0` before the loop, increased with `+=` inside it, and after the loop
    divided by the data set size (`len(loader.dataset)`) or by another such accumulator
    (`correct / total`) gets `x = rt.all_reduce(x, op="sum")` right after the loop. Python
    numbers stay python numbers, so formatting is unchanged. Targets whose evaluation loaders
    are not sharded (Fabric keeps every rank on the whole evaluation set, because its sampler
    pads) need no reduction and get none. Sums divided by a per-rank count (`len(loader)`)
    are left alone: they are not sums over the data set.

    **Why**: each rank sees 1/N of the evaluation set; without the reduction every rank
    reports about 1/N of the truth. With it, 1 and N processes print the same numbers.

    **Before**
    ```python
    for data, target in test_loader:
        correct += pred.eq(target).sum().item()
    print(correct / len(test_loader.dataset))
    ```
    **After**
    ```python
    for data, target in test_loader:
        correct += pred.eq(target).sum().item()
    correct = rt.all_reduce(correct, op="sum")
    print(correct / len(test_loader.dataset))
    ```
    """

    code = "MIG407"
    name = "reduce-eval-accumulators"
    summary = "sum evaluation accumulators across ranks before dividing"

    def plan(self, ctx) -> None:
        if not ctx.vocab.eval_data_sharded:
            return
        done: set[cst.CSTNode] = set()
        for lf in ctx.facts.loaders:
            if not lf.evaluation:
                continue
            for loop in lf.loops:
                if trains(ctx, loop):
                    continue  # a training loop over this loader (a migrated file's rt.backward)
                for init, after in self._accumulators(ctx, loop):
                    if init in done:
                        continue
                    done.add(init)
                    change = ctx.finding(
                        self.code, init, f"sum `{init.value}` across ranks before using it"
                    )
                    new = change.stmt(ctx.vocab.all_reduce_sum, value=init)
                    target = cst.AssignTarget(target=cst.Name(init.value))
                    assign = cst.Assign(targets=[target], value=new.body[0].value)
                    change.insert_after(after, cst.SimpleStatementLine(body=[assign]))

    @staticmethod
    def _accumulators(ctx, loop: cst.CSTNode) -> list[tuple[cst.Name, cst.CSTNode]]:
        ix = ctx.ix
        names = {
            a.target.value
            for a in ix.subtree(loop, cst.AugAssign)
            if isinstance(a.operator, cst.AddAssign) and isinstance(a.target, cst.Name)
        }
        fn = ix.function_of(loop)
        found: dict[str, tuple[cst.Name, cst.CSTNode]] = {}
        for node in ix.assigns:
            if not isinstance(node, cst.Assign) or ix.function_of(node) is not fn:
                continue
            block = ix.block_of(ix.statement(node))
            holder = next(
                (a for a in (loop, *ix.ancestors(loop)) if ix.parent.get(a) is block), None
            )
            if holder is None or ix.order(node) > ix.order(loop):
                continue
            for target in _zero_inits(node):
                if target.value in names:
                    found[target.value] = (target, holder)
        group = set(found)
        later = {}
        for name, (_target, holder) in found.items():
            body = list(ix.block_of(holder).body)
            later[name] = body[body.index(holder) + 1 :]
        used = set()
        for name in sorted(group):
            for stmt in later[name]:
                for node in ix.subtree(stmt, (cst.BinaryOperation, cst.AugAssign)):
                    if isinstance(node, cst.BinaryOperation) and isinstance(
                        node.operator, cst.Divide
                    ):
                        left, right = node.left, node.right
                    elif isinstance(node, cst.AugAssign) and isinstance(
                        node.operator, cst.DivideAssign
                    ):
                        left, right = node.target, node.value
                    else:
                        continue
                    if _factor(left, name):
                        if _global_size(ix, right, group - {name}):
                            used.add(name)
                            if isinstance(right, cst.Name):
                                used.add(right.value)
                        elif isinstance(right, cst.Call) and ix.call_qname(right) == "builtins.len":
                            used.discard(name)
                            group.discard(name)
                if _reduced(ctx, stmt, name):
                    group.discard(name)
        return [found[n] for n in sorted(used & group, key=lambda n: ix.order(found[n][0]))]


def _zero_inits(assign: cst.Assign) -> list[cst.Name]:
    """Names an assignment sets to zero: ``n = 0``, ``a = b = 0.0``, ``a, b = 0.0, 0``."""
    out = []
    for t in assign.targets:
        target, value = t.target, assign.value
        if isinstance(target, cst.Name) and _zero(value):
            out.append(target)
        elif (
            isinstance(target, cst.Tuple)
            and isinstance(value, cst.Tuple)
            and len(target.elements) == len(value.elements)
        ):
            for te, ve in zip(target.elements, value.elements):
                if isinstance(te.value, cst.Name) and _zero(ve.value):
                    out.append(te.value)
    return out


def _factor(node: cst.CSTNode, name: str) -> bool:
    """``name`` itself or a factor of a product (``100.0 * correct``)."""
    if isinstance(node, cst.Name):
        return node.value == name
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Multiply):
        return _factor(node.left, name) or _factor(node.right, name)
    return False


def _reduced(ctx, stmt: cst.CSTNode, name: str) -> bool:
    """``name = rt.all_reduce(...)`` already follows the loop (a migrated file)."""
    if isinstance(stmt, cst.SimpleStatementLine) and isinstance(stmt.body[0], cst.Assign):
        a = stmt.body[0]
        t = a.targets[0].target
        return (
            isinstance(t, cst.Name)
            and t.value == name
            and isinstance(a.value, cst.Call)
            and is_wrapper_call(ctx, a.value)
        )
    return False
