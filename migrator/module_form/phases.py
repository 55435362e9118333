"""Batch loops written in helper functions (``train(args, model, loader, optimizer, epoch)``) called from the epoch loop."""

from __future__ import annotations

import libcst as cst

from migrator.analysis import Facts


def _nofit(code: str, node: cst.CSTNode, reason: str):
    from migrator.module_form.shape import NoFit

    return NoFit(code, node, reason)


def loop_holder(ix, loop: cst.For) -> cst.BaseCompoundStatement:
    """The statement holding ``loop`` in its block: the loop, or a ``with`` holding only it."""
    owner = ix.parent.get(ix.parent.get(loop))
    if isinstance(owner, cst.With) and len(owner.body.body) == 1:
        return owner  # ``with torch.no_grad(): for ...``: the Trainer sets no_grad itself
    return loop


def attach_function(facts: Facts, phase, what: str) -> cst.For | None:
    """When ``phase``'s loop is the body of a module-level function called once, as a statement,
    inside a ``for`` loop: record the function, its call and its parameters on ``phase`` and
    return that loop (the epoch loop). None when the loop is not in such a function."""
    ix = facts.ix
    fn = ix.function_of(phase.loop)
    if fn is None or ix.class_of(fn) is not None or ix.function_of(fn) is not None:
        return None
    body = list(fn.body.body)
    if phase.holder not in body:
        raise _nofit("MIG502", phase.loop, f"the {what} loop is nested in other statements of `{fn.name.value}()`")
    uses = _references(ix, fn)
    calls = [c for c in ix.calls if isinstance(c.func, cst.Name) and c.func in uses]
    if len(calls) < 1:
        return None
    epoch_calls = [c for c in calls if ix.loops_around(c)]
    if len(epoch_calls) != 1:
        raise _nofit("MIG502", fn, f"`{fn.name.value}()` is not called from exactly one epoch loop")
    call = epoch_calls[0]
    stmt = ix.statement(call)
    result = _result_name(stmt, call)
    if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1
            and isinstance(stmt.body[0], cst.Expr) and stmt.body[0].value is call) and result is None:
        raise _nofit("MIG506", call, f"the result of `{fn.name.value}()` is used by the epoch loop "
                     "other than bound to a name (`value = f(...)`)")
    tail = body[-1] if body else None
    returns = isinstance(tail, cst.SimpleStatementLine) and len(tail.body) == 1 and isinstance(tail.body[0], cst.Return)
    for node in ix.subtree(fn.body, cst.Return):
        if ix.function_of(node) is fn and not (result is not None and returns and node is tail.body[0] and node.value is not None):
            raise _nofit("MIG506", node, f"`{fn.name.value}()` returns early, or returns a value the epoch loop "
                         "does not bind to a name")
    if result is not None and not returns:
        raise _nofit("MIG506", call, f"the result of `{fn.name.value}()` is used by the epoch loop, "
                     "but the function does not end with `return <value>`")
    phase.function, phase.call_stmt = fn, stmt
    phase.params = _bind(fn, call)
    start = 1 if body and _is_docstring(body[0]) else 0
    phase.pre = body[start: body.index(phase.holder)]
    phase.post = body[body.index(phase.holder) + 1:]
    if result is not None:  # ``value = f(...)``: the function's ``return <expr>`` binds ``value`` at its end
        phase.post[-1] = cst.SimpleStatementLine(body=[cst.Assign(
            targets=[cst.AssignTarget(cst.Name(result))], value=tail.body[0].value)])
    phase.removable = len(uses) == 1
    return ix.loops_around(call)[0]


def _references(ix, fn: cst.FunctionDef) -> list[cst.Name]:
    """The names that refer to the module-level function ``fn``, resolved through scopes: not
    ``model.train()``, not the keyword of ``MNIST(train=True)``, not a local of that name."""
    scope = ix.scope_of(fn)
    if scope is None:
        return []
    return [
        access.node
        for assignment in scope.assignments[fn.name.value]
        if getattr(assignment, "node", None) is fn
        for access in assignment.references
        if isinstance(access.node, cst.Name)
    ]


def _result_name(stmt: cst.CSTNode, call: cst.Call) -> str | None:
    """``name = f(...)``: the name the call's result is bound to, else None."""
    if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Assign):
        assign = stmt.body[0]
        if assign.value is call and len(assign.targets) == 1 and isinstance(assign.targets[0].target, cst.Name):
            return assign.targets[0].target.value
    return None


def call_phase(facts: Facts, stmt: cst.CSTNode, what: str):
    """The evaluation phase of ``test(model, device, test_loader)`` (a statement of the epoch loop)."""
    from migrator.module_form.shape import Phase, loader_phase

    ix = facts.ix
    if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], (cst.Expr, cst.Assign))):
        return None
    call = stmt.body[0].value
    if not (isinstance(call, cst.Call) and isinstance(call.func, cst.Name)):
        return None
    fn = next((f for f in ix.functions if f.name.value == call.func.value and ix.function_of(f) is None
               and ix.class_of(f) is None), None)
    if fn is None:
        return None
    loops = [lp for ld in facts.loaders for lp in ld.loops if ix.function_of(lp) is fn and not ix.loops_around(lp)]
    if len(loops) != 1 or facts.has_backward(fn):
        return None
    phase: Phase = loader_phase(facts, loops[0], what)
    if attach_function(facts, phase, what) is None or phase.call_stmt is not stmt:
        return None
    return phase


def _bind(fn: cst.FunctionDef, call: cst.Call) -> dict[str, cst.BaseExpression]:
    """Parameter name -> the caller's argument expression (defaults for the rest)."""
    p = fn.params
    if not isinstance(p.star_arg, cst.MaybeSentinel) or p.star_kwarg is not None:
        raise _nofit("MIG502", fn, f"`{fn.name.value}()` takes *args/**kwargs")
    params = [*p.posonly_params, *p.params, *p.kwonly_params]
    out: dict[str, cst.BaseExpression] = {}
    positional = [a for a in call.args if a.keyword is None]
    if any(a.star for a in call.args):
        raise _nofit("MIG502", call, f"`{fn.name.value}()` is called with *args/**kwargs")
    for param, arg in zip(params, positional):
        out[param.name.value] = arg.value
    for a in call.args:
        if a.keyword is not None:
            out[a.keyword.value] = a.value
    for param in params:
        if param.name.value not in out:
            if param.default is None:
                raise _nofit("MIG502", call, f"`{fn.name.value}()` misses the argument `{param.name.value}`")
            out[param.name.value] = param.default
    return out


def _is_docstring(stmt: cst.CSTNode) -> bool:
    return (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1
            and isinstance(stmt.body[0], cst.Expr) and isinstance(stmt.body[0].value, cst.SimpleString))
