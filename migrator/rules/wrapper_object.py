"""MIG201: create the wrapper object once at module level (or reuse the one the file has)."""

from __future__ import annotations

import libcst as cst

from migrator.plan import Change, PlanContext
from migrator.rules.base import Rule

_STOP = (cst.FunctionDef, cst.ClassDef, cst.If, cst.For, cst.While, cst.With, cst.Try)


class WrapperObjectRule(Rule):
    """Create the runtime object once, right after the imports.

    **What**: adds `from runtime import Runtime` and `rt = Runtime()` (fabric:
    `from lightning.fabric import Fabric` / `fabric = Fabric()`) after the last import of the
    file's import block. A file that already has such an object at module level reuses it.
    Rewrites that need it (setup, backward, device, ...) create it; it is never created
    for nothing. Precision found in the script (AMP) becomes the constructor default; the
    launcher (`migrate run --precision`, `fabric run --precision`) may override it.
    Targets whose process group outlives the script get their teardown at the end of the
    main path (after `main()` in the `if __name__ == "__main__":` block, else at the end of
    the module; before a final `sys.exit`): `accelerator.end_training()`, Fabric:
    `fabric.barrier()` and `torch.distributed.destroy_process_group()`. The runtime tears
    down at exit itself.

    **Why**: one object owns the device, the strategy and the precision for the whole script;
    module level means functions, classes and globals all see the same one.

    **Before**: `import torch`  **After**: `import torch` / `from runtime import Runtime` /
    `rt = Runtime()`
    """

    code = "MIG201"
    name = "wrapper-object"
    summary = "Create the wrapper object once after the imports (reused when already present)"


def wrapper_anchor(ctx: PlanContext) -> cst.CSTNode:
    """The statement the wrapper goes after: the last import of the leading import block
    (or the first statement, when the file starts without imports)."""
    body = ctx.ix.module.body
    anchor = None
    for stmt in body:
        if isinstance(stmt, _STOP):
            break
        if _is_import_line(stmt):
            anchor = stmt
    return anchor if anchor is not None else body[0]


def create_wrapper(ctx: PlanContext, node: cst.CSTNode, wrapper_args: dict[str, str]) -> Change:
    """The change that adds the import and the module-level wrapper object after ``node``
    (``wrapper_anchor``), with the constructor defaults the kept changes recorded."""
    v = ctx.vocab
    body = ctx.ix.module.body
    change = Change(
        code=WrapperObjectRule.code, node=node, ctx=ctx, fixed=True,
        message=f"create the {v.wrapper_class} object once after the imports "
        f"({ctx.rt} = {v.wrapper_class}()); launch with: {v.launch_hint}",
    )
    args = ", ".join(f"{_spelled(v, k)}={_spelled(v, val)}" for k, val in sorted(wrapper_args.items()))
    new = [
        cst.parse_statement(f"from {v.wrapper_module} import {v.wrapper_class}\n"),
        cst.parse_statement(f"{ctx.rt} = {v.wrapper_class}({args})\n").with_changes(
            leading_lines=[cst.EmptyLine()]
        ),
    ]
    if _imports_class(ctx):
        new = new[1:]
    _place(change, node, body, new)
    if v.teardown is not None:
        _teardown(change, body)
    return change


def _teardown(change: Change, body) -> None:
    """The target's teardown after the last statement of the main path: the end of the
    ``if __name__ == "__main__":`` block, else of the module. A script whose main path ends in
    ``sys.exit(main())`` gets it before that statement's exit, around the call."""
    ctx = change.ctx
    last = body[-1]
    for stmt in body:
        if isinstance(stmt, cst.If) and _is_main_test(stmt.test):
            last = stmt.body.body[-1]
    code = change.code_text(ctx.vocab.teardown)
    new = list(cst.parse_module(code).body)
    new[0] = new[0].with_changes(leading_lines=[])
    exit_call = _exit_call(ctx, last)
    if exit_call is None:
        change.insert_after(last, *new)
        return
    # sys.exit(main()): the value is computed first, the group torn down, then the exit.
    value = exit_call.args[0].value if exit_call.args else None
    if value is None or isinstance(value, (cst.Integer, cst.SimpleString, cst.Name)):
        change.insert_before(last, *new)
        return
    name = ctx.facts.free_name("exit_code")
    change.insert_before(last, cst.parse_statement(f"{name} = {ctx.ix.code(value)}\n"), *new)
    change.replace(exit_call.args[0], exit_call.args[0].with_changes(value=cst.Name(name)))


def _is_main_test(test: cst.BaseExpression) -> bool:
    return (
        isinstance(test, cst.Comparison)
        and isinstance(test.left, cst.Name) and test.left.value == "__name__"
        and len(test.comparisons) == 1 and isinstance(test.comparisons[0].operator, cst.Equal)
        and isinstance(test.comparisons[0].comparator, cst.SimpleString)
        and test.comparisons[0].comparator.evaluated_value == "__main__"
    )


def _exit_call(ctx: PlanContext, stmt: cst.CSTNode) -> cst.Call | None:
    """The ``sys.exit(...)`` / ``exit(...)`` call that ``stmt`` is, if any."""
    if not (isinstance(stmt, cst.SimpleStatementLine) and isinstance(stmt.body[-1], cst.Expr)):
        return None
    call = stmt.body[-1].value
    if not isinstance(call, cst.Call):
        return None
    q = ctx.ix.call_qname(call)
    if q in ("sys.exit", "builtins.exit", "builtins.quit", "exit", "quit"):
        return call
    return None


def missing_imports(ctx: PlanContext, changes: list[Change], node: cst.CSTNode) -> Change | None:
    """``import torch`` (no finding of its own) where kept rewrites read a module that the
    file does not bind at module level, placed like the wrapper (after ``node``); also the
    names a rule asked for itself (``RULE_IMPORTS``: the module form's download lock)."""
    from migrator.targets import RULE_IMPORTS, TEMPLATE_IMPORTS

    lines = {**RULE_IMPORTS, **TEMPLATE_IMPORTS}
    scope = ctx.ix.scopes.get(ctx.ix.module)
    names = sorted({n for c in changes for n in c.imports}, key=lambda n: (lines[n].startswith("from "), n))
    missing = [n for n in names if scope is None or n not in scope.assignments]
    if not missing:
        return None
    change = Change(code=WrapperObjectRule.code, node=node, ctx=ctx, fixed=True, message="")
    change.report = False
    new = [cst.parse_statement(f"{lines[n]}\n") for n in missing]
    _place(change, node, ctx.ix.module.body, new)
    return change


def _place(change: Change, node: cst.CSTNode, body, new: list[cst.CSTNode]) -> None:
    """After the import block's last import; else after a docstring; else first."""
    if node is not body[0] or _is_import_line(node):
        change.insert_after(node, *new)
    elif _is_docstring(body[0]):
        change.insert_after(body[0], *new)
    else:
        change.insert_before(body[0], *new)


def _spelled(v, code: str) -> str:
    """Generic constructor names (``precision``, ``"16-mixed"``) in the target's spelling."""
    if code == "precision":
        return v.precision_arg
    for generic, own in v.precision_names:
        code = code.replace(f'"{generic}"', f'"{own}"')
    return code


def _is_import_line(stmt: cst.CSTNode) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and any(
        isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body
    )


def _is_docstring(stmt: cst.CSTNode) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and isinstance(stmt.body[0], cst.Expr)
        and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def _imports_class(ctx: PlanContext) -> bool:
    v = ctx.vocab
    for node in ctx.ix.imports:
        if isinstance(node, cst.ImportFrom) and not isinstance(node.names, cst.ImportStar):
            mod = ctx.ix.code(node.module) if node.module is not None else ""
            if mod == v.wrapper_module and any(a.name.value == v.wrapper_class for a in node.names):
                return True
    return False
