"""Manual gradient accumulation (``if (i + 1) % K == 0: optimizer.step()``) becomes ``accumulate_grad_batches=K``."""

from __future__ import annotations

import libcst as cst

from migrator.analysis import Facts
from migrator.analysis import names as N
from migrator.module_form.names import usage
from migrator.module_form.shape import NoFit, Shape

_TENSORS = {"torch.randn", "torch.rand", "torch.zeros", "torch.ones", "torch.empty"}


def accumulation(facts: Facts, shape: Shape, back) -> None:
    """Recognise ``loss = <E> / K`` before ``loss.backward()`` and an ``if (i + 1) % K == 0:``
    statement of the batch loop holding the optimizer's step and then its ``zero_grad()`` (and a
    clipping call before the step, a per-step ``scheduler.step()`` after it). Both Trainers
    divide the returned loss by K themselves, so the step returns ``<E>`` and the script's
    ``loss`` keeps its divided value for what the step prints. Only when the batches per epoch
    are a multiple of K, known from the file: the script carries a partial window's gradients
    into the next epoch, Lightning steps it at the end of the epoch, the runtime counts windows
    across epochs; the three agree on full windows only."""
    ix = facts.ix
    body = shape.train.loop.body
    guard = _guard(ix, body, shape.train.index if shape.train.start is None else None)
    if guard is None:
        return
    k_expr = guard.test.left.right  # (i + 1) % K
    k = ix.code(k_expr)
    inner = list(guard.body.body)
    calls = [_call(s) for s in inner]
    names = [(ix.code(c.func.value), c.func.attr.value) if c is not None and isinstance(c.func, cst.Attribute) else None
             for c in calls]
    opt_steps = [j for j, n in enumerate(names) if n is not None and n[1] == "step" and not calls[j].args]
    zeros = [j for j, n in enumerate(names) if n is not None and n[1] == "zero_grad"]
    if not opt_steps or not zeros:
        raise NoFit("MIG503", guard, "an `if` on the batch index without both the optimizer's step and zero_grad: "
                    "not a gradient accumulation the Trainer's accumulate_grad_batches can express")
    step = opt_steps[0]
    opt = names[step][0]
    if names[zeros[0]][0] != opt or zeros[0] < step:
        raise NoFit("MIG503", guard, "the accumulation `if` does not zero the optimizer's gradients after its step: "
                    "accumulate_grad_batches zeroes them right after each real step")
    for j, stmt in enumerate(inner):
        q = (ix.call_qname(calls[j]) or "") if calls[j] is not None else ""
        if j in (step, zeros[0]) or (q in N.CLIP and j < step) or (
                names[j] is not None and names[j][1] == "step" and not calls[j].args and j > step):
            continue  # (a clipping call and a scheduler.step() are checked where clipping/schedulers are)
        raise NoFit("MIG503", stmt, f"`{ix.code(stmt).strip()}` runs at the script's optimizer step: per-step work "
                    "in the accumulation `if` cannot be placed at the Trainer's optimizer step yet")
    div = _division(ix, body, back, k)
    _nothing_reads_the_step_after(facts, body, guard, opt)
    batches, why = _batches(facts, shape.train.loader)
    kval = _const(ix, k_expr)
    if batches is None or kval is None:
        missing = why if batches is None else f"the accumulation count `{k}` is not a constant of the file"
        raise NoFit("MIG503", guard, f"gradient accumulation every `{k}` batches: {missing}, so whether an epoch "
                    "ends inside a window is unknown (the script carries that window's gradients into the next epoch, "
                    "Lightning steps it at epoch end, the runtime counts windows across epochs)")
    if batches % kval:
        raise NoFit("MIG503", guard, f"gradient accumulation every {kval} batches with {batches} batches per epoch: "
                    "the script carries the last partial window's gradients into the next epoch, which "
                    "accumulate_grad_batches does not (Lightning steps it at epoch end, the runtime counts across epochs)")
    shape.accumulate = (k, guard, div)
    shape.trainer_args.append(("accumulate_grad_batches", k))
    shape.dropped.add(guard)


def _nothing_reads_the_step_after(facts: Facts, body: cst.IndentedBlock, guard: cst.If, opt: str) -> None:
    """The Trainer steps after training_step returns: statements after the ``if`` in the batch
    loop must not read what the step changes (the model, the optimizer, its scheduler)."""
    ix = facts.ix
    watched = {opt} | {m.value for o in facts.optimizers for m in o.models if isinstance(m, cst.Name)}
    watched |= {a.targets[0].target.value for a in ix.assigns if isinstance(a, cst.Assign) and len(a.targets) == 1
                and isinstance(a.targets[0].target, cst.Name) and isinstance(a.value, cst.Call) and a.value.args
                and ix.code(a.value.args[0].value) == opt}
    stmts = list(body.body)
    for stmt in stmts[stmts.index(guard) + 1:]:
        read = watched & set(usage([stmt]).loads)
        if read:
            raise NoFit("MIG503", stmt, f"reads `{min(read)}` after the accumulation step, which the Trainer "
                        "runs after training_step returns: move it before the `if`")


def _guard(ix, body: cst.IndentedBlock, index: str | None) -> cst.If | None:
    """The ``if (<index> + 1) % K == 0:`` statement (no ``else``) of the loop body that steps:
    one that calls no ``step()`` / ``zero_grad()`` is a periodic block (a log line every K
    batches, a checkpoint), which stays in the training step as it is."""
    for stmt in body.body:
        if not (isinstance(stmt, cst.If) and stmt.orelse is None and index is not None):
            continue
        if not any(isinstance(c.func, cst.Attribute) and c.func.attr.value in ("step", "zero_grad")
                   for c in ix.subtree(stmt, cst.Call)):
            continue
        t = stmt.test
        if (isinstance(t, cst.Comparison) and len(t.comparisons) == 1 and isinstance(t.comparisons[0].operator, cst.Equal)
                and ix.code(t.comparisons[0].comparator) == "0" and isinstance(t.left, cst.BinaryOperation)
                and isinstance(t.left.operator, cst.Modulo)
                and ix.code(t.left.left).replace(" ", "").strip("()") == f"{index}+1"):
            return stmt
    return None


def _call(stmt: cst.CSTNode) -> cst.Call | None:
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
        small = stmt.body[0]
        value = small.value if isinstance(small, (cst.Expr, cst.Assign)) else None
        return value if isinstance(value, cst.Call) else None
    return None


def _division(ix, body: cst.IndentedBlock, back, k: str) -> cst.SimpleStatementLine:
    """``loss = <E> / K``: the last binding of the backward's loss before it, in the loop body."""
    loss = back.loss
    stmts = list(body.body)
    before = stmts[: stmts.index(ix.statement(back.call))]
    binding = None
    for stmt in before:
        if isinstance(loss, cst.Name) and loss.value in usage([stmt]).stores:
            binding = stmt
    value = binding.body[0].value if (binding is not None and isinstance(binding, cst.SimpleStatementLine)
                                      and len(binding.body) == 1 and isinstance(binding.body[0], cst.Assign)
                                      and len(binding.body[0].targets) == 1) else None
    if not (isinstance(value, cst.BinaryOperation) and isinstance(value.operator, cst.Divide) and ix.code(value.right) == k):
        raise NoFit("MIG503", back.call, f"the loss is not divided by `{k}` in `loss = ... / {k}` right before its "
                    "backward: accumulate_grad_batches divides the step's loss itself")
    return binding


def _const(ix, expr: cst.BaseExpression) -> int | None:
    """An integer literal, or a name bound once in the file, at module level, to one."""
    if isinstance(expr, cst.Integer):
        return int(expr.value)
    if not isinstance(expr, cst.Name):
        return None
    values = [a.value for a in ix.assigns if isinstance(a, cst.Assign)
              and any(isinstance(t.target, cst.Name) and t.target.value == expr.value for t in a.targets)]
    augmented = any(isinstance(a.target, cst.Name) and a.target.value == expr.value for a in ix.subtree(ix.module, cst.AugAssign))
    if len(values) != 1 or augmented or ix.function_of(values[0]) is not None:
        return None
    return int(values[0].value) if isinstance(values[0], cst.Integer) else None


def _batches(facts: Facts, loader: cst.BaseExpression) -> tuple[int | None, str]:
    """Batches per epoch of ``DataLoader(TensorDataset(torch.randn(N, ...), ...), batch_size=B)``
    with constant N and B (and a literal ``drop_last``) on one process; else None and why."""
    ix = facts.ix
    fact = next((ld for ld in facts.loaders if ld.call is loader or any(r is loader for r in (ld.refs or ()))), None)
    why = f"the batches per epoch of `{ix.code(loader)}` are not known from the file"
    if fact is None:
        return None, why
    args = {a.keyword.value: a.value for a in fact.call.args if a.keyword is not None}
    positional = [a.value for a in fact.call.args if a.keyword is None]
    dataset = positional[0] if positional else args.get("dataset")
    size = positional[1] if len(positional) > 1 else args.get("batch_size", cst.Integer("1"))
    drop = ix.code(args["drop_last"]) if "drop_last" in args else "False"
    dataset = _follow(ix, dataset)
    n = None
    if isinstance(dataset, cst.Call) and (ix.call_qname(dataset) or "").endswith("TensorDataset") and dataset.args:
        first = _follow(ix, dataset.args[0].value)
        if isinstance(first, cst.Call) and (ix.call_qname(first) or "") in _TENSORS and first.args:
            n = _const(ix, first.args[0].value)
    b = _const(ix, size)
    if n is None or b is None or drop not in ("True", "False"):
        return None, why
    return (n // b if drop == "True" else -(-n // b)), ""


def _follow(ix, expr):
    """``expr`` itself unless it is a name; a name's value when exactly one plain assignment
    in the file binds it (and nothing else stores it), else None."""
    if not isinstance(expr, cst.Name):
        return expr
    stores = [n for n in ix.subtree(ix.module, cst.Name) if n.value == expr.value
              and isinstance(ix.parent.get(n), (cst.AssignTarget, cst.Element, cst.AnnAssign, cst.AugAssign, cst.For))]
    bound = [a.value for a in ix.assigns if isinstance(a, cst.Assign) and len(a.targets) == 1
             and isinstance(a.targets[0].target, cst.Name) and a.targets[0].target.value == expr.value]
    return bound[0] if len(bound) == 1 and len(stores) == 1 else None
