"""Side-effect rule that needs agreement across ranks: sums and means reported after a sharded loop."""

from __future__ import annotations

from dataclasses import dataclass

import libcst as cst

from migrator import anchors_spec as A
from migrator.rules.base import Rule
from migrator.rules.side_effects_common import in_rank_zero_guard, is_wrapper_call, trains


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
    """Sums and per-batch means reported after a loop over a sharded loader are summed across ranks.

    **What**: in a loop over a loader that the wrapper shards (the training loader on every
    target; evaluation loaders where the target shards them), an accumulator initialised to
    `0` before the loop, increased with `+=` inside it, and after the loop divided by the
    data set size (`len(loader.dataset)`), by another such accumulator (`correct / total`) or
    by the loop's number of batches (`len(loader)`, a mean of per-batch values) gets
    `x = rt.all_reduce(x, op="sum")` right after the loop, and a division by `len(loader)`
    becomes a division by `rt.all_reduce(len(loader), op="sum")`, the batches of all ranks.
    Python numbers stay python numbers of the same type (Fabric and Accelerate: the number is
    summed as a float64 tensor and converted back), so formatting is unchanged and 1 process
    prints exactly what the script printed. Targets whose evaluation loaders are not sharded
    (Fabric and Accelerate keep every rank on the whole evaluation set, because their
    samplers pad) need no reduction there and get none.

    Left rank-local, with a finding: an accumulator divided by anything else (`/ (i + 1)`, a
    per-rank count), an accumulator Fabric or Accelerate cannot be shown to hold a python
    number (`+= loss` keeps a tensor), a division by `len(loader)` that not every rank is sure
    to reach (in a branch), a loop that may `return` before the reduction, and loaders with a
    custom sampler (the runtime cannot shard them). Running averages printed inside the loop
    every k batches are rank 0's own batches: an acceptable log, left alone.

    **Exactness**: a sum over samples divided by the data set size is the 1-process number
    (up to the order of float additions) when every sample is seen once. Training samplers
    pad the last shard with repeated samples when the data set size is not a multiple of the
    number of processes: those samples count twice. A mean of per-batch means is exact only
    when each per-batch value is a mean over a full batch: N processes batch different
    samples together (and have more partial batches), so a non-linear per-batch value (a PSNR
    of the batch mean error) gives a close, not an equal, number.

    **Why**: each rank sees 1/N of the data; without the reduction rank 0 reports about 1/N
    of the truth (or its own half's mean).

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
    anchors = A.LOADER
    name = "reduce-eval-accumulators"
    summary = "sum evaluation and epoch accumulators across ranks before dividing"

    def plan(self, ctx) -> None:
        ix, vocab = ctx.ix, ctx.vocab
        any_type = vocab.all_reduce_sum == vocab.all_reduce_number  # one call takes both
        done: set[cst.CSTNode] = set()
        counted: set[cst.CSTNode] = set()
        for lf in ctx.facts.loaders:
            if _custom_sampler(lf.call):
                continue  # the runtime leaves it whole on every rank: nothing to sum
            for loop in lf.loops:
                training = trains(ctx, loop)
                if lf.evaluation and training:
                    continue  # a training loop over this loader (a migrated file's rt.backward)
                if lf.evaluation and not vocab.eval_data_sharded:
                    continue
                if in_rank_zero_guard(ctx, loop):
                    continue
                early = _returns_inside(ix, loop)
                for acc in self._accumulators(ctx, loop):
                    init = acc.init
                    if init in done:
                        continue
                    done.add(init)
                    why = acc.blocked or (
                        "the loop may return before the sum" if early else None
                    )
                    if why is None and not any_type and not acc.number:
                        why = "it may hold a tensor (only python numbers are summed here)"
                    if why is not None:
                        ctx.finding(
                            self.code, init,
                            f"`{init.value}` stays this rank's own sum ({why}): the number "
                            "reported after the loop is rank 0's share, not the whole data's",
                            fixed=False,
                        )
                        continue
                    change = ctx.finding(
                        self.code, init, f"sum `{init.value}` across ranks before using it"
                    )
                    template = vocab.all_reduce_number if acc.number else vocab.all_reduce_sum
                    new = change.stmt(template, value=init, type=f"type({init.value})")
                    target = cst.AssignTarget(target=cst.Name(init.value))
                    assign = cst.Assign(targets=[target], value=new.body[0].value)
                    change.insert_after(acc.holder, cst.SimpleStatementLine(body=[assign]))
                    for count in acc.counts:
                        if count in counted:
                            continue
                        counted.add(count)
                        change.replace(count, change.expr(
                            _quoted_for(ix, count, vocab.all_reduce_number), value=count, type="int"
                        ))

    @staticmethod
    def _accumulators(ctx, loop: cst.CSTNode) -> list[_Acc]:
        ix = ctx.ix
        adds: dict[str, list[cst.BaseExpression]] = {}
        for a in ix.subtree(loop, cst.AugAssign):
            if isinstance(a.operator, cst.AddAssign) and isinstance(a.target, cst.Name):
                adds.setdefault(a.target.value, []).append(a.value)
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
                if target.value in adds:
                    found[target.value] = (target, holder)
        loader_names = {ix.code(loop.iter)} | {
            ix.code(a.value) for c in ix.subtree(loop.iter, cst.Call) for a in c.args
        }  # `loader`, `enumerate(loader, 1)`, `tqdm(self.loader)`
        group = set(found)
        later = {}
        for name, (_target, holder) in found.items():
            body = list(ix.block_of(holder).body)
            later[name] = body[body.index(holder) + 1 :]
        used: set[str] = set()
        counts: dict[str, list[cst.Call]] = {}
        blocked: dict[str, str] = {}
        other: set[str] = set()
        for name in sorted(group):
            holder_block = ix.block_of(found[name][1])
            for stmt in later[name]:
                if _reduced(ctx, stmt, name):
                    group.discard(name)
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
                    if not _factor(left, name):
                        continue
                    if _global_size(ix, right, group - {name}):
                        used.add(name)
                        if isinstance(right, cst.Name):
                            used.add(right.value)
                    elif _batch_count(ix, right, loader_names):
                        used.add(name)
                        if _always_reached(ix, node, holder_block):
                            counts.setdefault(name, []).append(right)
                        else:
                            blocked.setdefault(
                                name, "its division by the number of batches is not reached "
                                "by every rank alike"
                            )
                    else:
                        other.add(name)
        out = []
        for name in sorted((used | other) & group, key=lambda n: ix.order(found[n][0])):
            init, holder = found[name]
            why = blocked.get(name)
            if name in other:
                why = "it is divided by a count the migrator cannot sum across ranks"
            number = all(_number(ix, v, loop) for v in adds[name])
            out.append(_Acc(init, holder, tuple(counts.get(name, ())), number, why))
        return out


@dataclass(frozen=True)
class _Acc:
    init: cst.Name
    holder: cst.CSTNode  # the statement after which the sum is reduced
    counts: tuple[cst.Call, ...]  # ``len(loader)`` divisors to sum across ranks
    number: bool  # every ``+=`` adds a python number
    blocked: str | None  # why it stays rank-local


def _custom_sampler(call: cst.Call) -> bool:
    return any(a.keyword is not None and a.keyword.value in ("sampler", "batch_sampler")
               for a in call.args)


def _returns_inside(ix, loop: cst.CSTNode) -> bool:
    return any(ix.function_of(r) is ix.function_of(loop) for r in ix.subtree(loop, cst.Return))


def _batch_count(ix, node: cst.CSTNode, loader_names: set[str]) -> bool:
    """``len(loader)`` of the loop's own loader: its number of batches on this rank."""
    if isinstance(node, cst.Call) and ix.call_qname(node) == "builtins.len" and node.args:
        inner = node.args[0].value
        return isinstance(inner, (cst.Name, cst.Attribute)) and ix.code(inner) in loader_names
    return False


_CONDITIONAL = (cst.IfExp, cst.BooleanOperation, cst.Lambda, cst.ListComp, cst.SetComp,
                cst.DictComp, cst.GeneratorExp)


def _always_reached(ix, node: cst.CSTNode, block: cst.CSTNode) -> bool:
    """``node`` runs whenever its block does: a simple statement of ``block``, outside
    conditional expressions, comprehensions and lambdas."""
    stmt = ix.statement(node)
    if not isinstance(stmt, cst.SimpleStatementLine) or ix.block_of(stmt) is not block:
        return False
    for a in ix.ancestors(node):
        if a is stmt:
            return True
        if isinstance(a, _CONDITIONAL):
            return False
    return False


_NUMBER_CALLS = {"builtins.len", "builtins.float", "builtins.int", "builtins.abs", "builtins.round"}


def _number(ix, node: cst.CSTNode, loop: cst.CSTNode, depth: int = 2) -> bool:
    """``node`` is a python number: ``t.item()``, ``len(x)``, ``t.size(0)``, ``math.log10(...)``,
    literals and arithmetic of those, or a name the loop sets only to such values."""
    if isinstance(node, (cst.Integer, cst.Float)):
        return True
    if isinstance(node, cst.Call):
        qname = ix.call_qname(node) or ""
        if qname in _NUMBER_CALLS or qname.startswith("math."):
            return True
        func = node.func
        if isinstance(func, cst.Attribute):
            if func.attr.value in ("item", "numel") and not node.args:
                return True
            if func.attr.value == "size" and len(node.args) == 1:
                return True
        return False
    if isinstance(node, cst.BinaryOperation) and not isinstance(node.operator, cst.MatrixMultiply):
        return _number(ix, node.left, loop, depth) and _number(ix, node.right, loop, depth)
    if isinstance(node, cst.UnaryOperation):
        return _number(ix, node.expression, loop, depth)
    if isinstance(node, cst.Name) and depth:
        values = []
        for a in ix.within(loop, ix.assigns):
            if isinstance(a, cst.Assign):
                if any(isinstance(t.target, cst.Name) and t.target.value == node.value
                       for t in a.targets):
                    values.append(a.value)
            elif isinstance(getattr(a, "target", None), cst.Name) and a.target.value == node.value:
                return False  # augmented or annotated: not followed
        return bool(values) and all(_number(ix, v, loop, depth - 1) for v in values)
    return False


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
            and any(is_wrapper_call(ctx, c) for c in ctx.ix.subtree(a.value, cst.Call))
        )
    return False


def _quoted_for(ix, node: cst.CSTNode, template: str) -> str:
    """``template`` with its string quotes swapped when ``node`` sits in an f-string written
    with the same quote (``f"{total / len(loader):.4f}"``): before Python 3.12 an f-string's
    expression cannot hold its own quote character."""
    for a in ix.ancestors(node):
        if isinstance(a, cst.FormattedString):
            quote = a.start.lstrip("rRbBfFuU")[:1]
            other = "'" if quote == '"' else '"'
            return template.replace(quote, other)
    return template
