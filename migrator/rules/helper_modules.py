"""MIG212 / MIG908, helper modules: keep what borrows the entry's wrapper, refuse what is unsafe.

The roles come from ``migrator.program``. In a library file (importing it does no work) the
rules plan as usual, with the wrapper spelled as a parameter; this step then keeps the
changes inside the functions that take the wrapper (adding the parameter), turns the unsafe
ones elsewhere into one MIG908 per function, keeps reported hazards and fixes that need no
wrapper (``os.makedirs(..., exist_ok=True)``), and drops the rest (prints, data loads, moves:
noise or the entry's business). An inference or data script keeps only MIG9xx. In every
file, calls of functions that take the wrapper pass it (MIG212).
"""

from __future__ import annotations

import libcst as cst

from migrator.plan import Change, PlanContext
from migrator.program import HARMLESS, SAFE_ALONE
from migrator.rules.base import Rule


class PassWrapperRule(Rule):
    """Pass the entry script's wrapper to the helper functions that need it.

    **What**: when several files are migrated as one program (`migrate train.py engine.py`,
    or a directory), a top-level function of a helper module that needs the wrapper (a
    backward, a save, a rank-0 print) takes it as its first parameter
    (`def train_one_epoch(rt, model, loader, optimizer, device)`; fabric: `fabric`,
    accelerate: `accelerator`), and every call in the program passes it
    (`train_one_epoch(rt, model, train_loader, optimizer, device)`).

    **Why**: importing a helper module must do no work: a wrapper object of its own would be a
    second strategy and precision per process (a second GradScaler, a DeepSpeed engine that
    never saw the loss), and would start a process group in every script that imports it.
    The entry script owns the one wrapper; the helpers borrow it, as human Fabric and
    Accelerate ports write `train(fabric, model, ...)`.

    **Before**: `train_one_epoch(model, loader, optimizer, device)`
    **After**: `train_one_epoch(rt, model, loader, optimizer, device)`
    """

    code = "MIG212"
    name = "pass-wrapper"
    summary = "Pass the entry script's wrapper to helper functions that need it"


class HelperModuleRule(Rule):
    """A helper module does something unsafe on N processes that needs the entry's wrapper.

    **What**: reported (nothing rewritten in that file) when a module that does no work at
    import time (only definitions, imports and values) backs up, saves, downloads, picks a
    device or sets up training objects in a function that cannot take the wrapper: the
    script calling it is not migrated with it, the function is used other than by a direct
    call (stored, passed as a callback), or it is a method. Prints and data loads in helper
    modules are not reported: they are harmless on N processes.

    **Why**: a helper module must not create a wrapper of its own (see MIG212), and a
    rewrite that names a wrapper the function cannot reach would be a `NameError`.

    **Fix**: migrate the helper with the script that calls it (`migrate train.py engine.py`,
    or the directory); or pass the wrapper in yourself and call its methods.
    """

    code = "MIG908"
    name = "helper-module-needs-wrapper"
    summary = "A helper module needs the entry script's wrapper: migrate it with its caller"


def borrow(ctx: PlanContext) -> None:
    """Rewrite ``ctx.changes`` for the file's role (see the module docstring)."""
    role = ctx.options.role
    for call in ctx.ix.calls if role.pass_wrapper else ():  # (codegen per call: only when needed)
        spelled = ctx.ix.code(call.func)
        if spelled in role.pass_wrapper and not _passes(call, ctx.rt):
            change = ctx.finding(
                PassWrapperRule.code, call,
                f"pass the wrapper to the helper that needs it: {spelled}({ctx.rt}, ...)",
            )
            change.replace(call, lambda new, rt=ctx.rt: new.with_changes(
                args=[cst.Arg(cst.Name(rt)), *new.args]))
            change.uses_wrapper = True
    if not role.library and not role.trains:  # an inference or data script: nothing to port
        ctx.changes[:] = [c for c in ctx.changes if c.code.startswith("MIG9")]
        return
    if not role.library:
        return
    kept: list[Change] = []
    params: dict[cst.FunctionDef, Change] = {}
    refused: dict[str | None, Change] = {}
    for change in list(ctx.changes):  # taking the wrapper and refusing add findings
        fn = _top_function(ctx, change.node)
        name = fn.name.value if fn is not None else None
        if change.code.startswith("MIG9"):
            kept.append(change)
        elif change.code.startswith("MIG3"):
            continue  # the entry decides how data is sharded; a loader parameter is its loader
        elif fn is not None and (name in role.threaded or _has_param(fn, ctx.rt)):
            kept.append(change)
            if change.uses_wrapper and not _has_param(fn, ctx.rt):
                if fn not in params:
                    params[fn] = _take_wrapper(ctx, fn)
                change.require(fn.params)
        elif change.uses_wrapper and change.code not in HARMLESS:
            refused.setdefault(name, change)
        elif change.code in SAFE_ALONE or (not change.fixed and change.code not in HARMLESS):
            kept.append(change)  # a hazard reported, or fixed without the wrapper (exist_ok=True)
    for name, first in refused.items():
        where = f"{name}()" if name else "its module-level code"
        kept.append(ctx.finding(
            HelperModuleRule.code, first.node,
            f"helper module: {where} needs the wrapper the entry script owns ({first.code}) "
            f"and cannot take it ({role.why_blocked(name)}); migrate it together with the "
            "script that calls it, which passes the wrapper in",
            fixed=False,
        ))
    ctx.changes[:] = [*params.values(), *kept]


def _take_wrapper(ctx: PlanContext, fn: cst.FunctionDef) -> Change:
    change = ctx.finding(
        PassWrapperRule.code, fn.name,
        f"{fn.name.value}() takes the wrapper from its caller: def {fn.name.value}({ctx.rt}, ...)",
    )

    def add(params: cst.Parameters, rt: str = ctx.rt) -> cst.Parameters:
        first = cst.Param(cst.Name(rt))
        if params.posonly_params:
            return params.with_changes(posonly_params=[first, *params.posonly_params])
        return params.with_changes(params=[first, *params.params])

    return change.replace(fn.params, add)


def _top_function(ctx: PlanContext, node: cst.CSTNode) -> cst.FunctionDef | None:
    """The module-level function holding ``node`` (None: module level, or inside a class)."""
    top = node
    for parent in ctx.ix.ancestors(node):
        if isinstance(parent, cst.Module):
            break
        top = parent
    return top if isinstance(top, cst.FunctionDef) else None


def _has_param(fn: cst.FunctionDef, name: str) -> bool:
    p = fn.params
    return any(param.name.value == name for param in (*p.posonly_params, *p.params))


def _passes(call: cst.Call, rt: str) -> bool:
    first = call.args[0] if call.args else None
    return (
        first is not None and first.keyword is None and first.star == ""
        and isinstance(first.value, cst.Name) and first.value.value == rt
    )
