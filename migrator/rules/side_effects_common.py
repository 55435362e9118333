"""Helpers the side-effect rules share: rank-0 guards, safe-call checks, statement runs, hoisting."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import libcst as cst

# Method names that only read or format values: calling them on rank 0 alone runs no forward
# pass and no collective (``out.write``, ``loss.item()``, ``", ".join``).
# fmt: off
SAFE_METHODS = frozenset({
    "write", "writelines", "flush", "close", "item", "tolist", "numpy", "detach", "cpu",
    "clone", "float", "int", "long", "format", "join", "split", "strip", "replace", "items",
    "keys", "values", "get", "append", "extend", "mean", "sum", "max", "min", "argmax", "size",
    "view", "reshape", "squeeze", "unsqueeze", "permute", "add_row", "writerow", "writerows",
    "dump", "dumps", "savefig",
})
# fmt: on
# Imported namespaces whose functions may be collectives or run a model.
UNSAFE_PREFIXES = ("torch.distributed", "runtime", "lightning", "accelerate")


def rank_zero_text(ctx) -> str:
    """``rt.is_global_zero`` spelled for this target and wrapper variable."""
    return ctx.vocab.is_global_zero.format(rt=ctx.rt)


def in_rank_zero_guard(ctx, node: cst.CSTNode) -> bool:
    """True inside ``if rt.is_global_zero:`` or ``with rt.rank_zero_first():`` (already migrated)."""
    ix = ctx.ix
    guard = rank_zero_text(ctx)
    first = ctx.vocab.rank_zero_first.format(rt=ctx.rt)
    for a in ix.ancestors(node):
        if isinstance(a, cst.If) and ix.code(a.test).strip() == guard:
            return True
        if isinstance(a, cst.With) and any(ix.code(i.item).strip() == first for i in a.items):
            return True
    return False


def is_wrapper_call(ctx, call: cst.Call) -> bool:
    """A call on the wrapper object (``rt.print``, ``fabric.strategy.reduce_boolean_decision``)."""
    func = call.func
    while isinstance(func, cst.Attribute):
        func = func.value
    return isinstance(func, cst.Name) and func.value == ctx.rt


def call_is_safe(ctx, call: cst.Call, handles: Iterable[str] = ()) -> bool:
    """True when ``call`` cannot run a forward pass or a collective (so rank 0 may run it alone).

    Safe: builtins and library functions (except distributed / wrapper namespaces), methods on
    ``handles`` (open file objects), and read/format methods in ``SAFE_METHODS``. Anything
    else (a model, a parameter holding a model, an in-file function) is assumed unsafe.
    """
    if is_wrapper_call(ctx, call):
        return False
    q = ctx.ix.call_qname(call)
    if q is not None:
        return not q.startswith(UNSAFE_PREFIXES)
    func = call.func
    if isinstance(func, cst.Attribute):
        base = func.value
        if isinstance(base, cst.Name) and base.value in set(handles):
            return True
        if func.attr.value in SAFE_METHODS:
            return isinstance(base, (cst.Name, cst.Attribute, cst.Subscript, cst.BaseString)) or (
                isinstance(base, cst.Call) and call_is_safe(ctx, base, handles)
            )
    return False


def unsafe_calls(ctx, node: cst.CSTNode, handles: Iterable[str] = ()) -> list[cst.Call]:
    """Calls inside ``node`` that could run a forward pass or a collective."""
    handles = tuple(handles)
    return [c for c in ctx.ix.subtree(node, cst.Call) if not call_is_safe(ctx, c, handles)]


def expression_statement(ctx, call: cst.Call) -> cst.SimpleStatementLine | None:
    """The statement line when ``call`` is the whole statement (``save_image(...)``)."""
    small = ctx.ix.parent.get(call)
    line = ctx.ix.parent.get(small)
    single = isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1
    return line if isinstance(small, cst.Expr) and single else None


def runs(ctx, stmts: Iterable[cst.CSTNode]) -> Iterator[tuple[cst.CSTNode, cst.CSTNode]]:
    """Group statements into maximal runs of consecutive siblings: (first, last) per run."""
    ix = ctx.ix
    ordered = sorted(set(stmts), key=ix.order)
    chosen = set(ordered)
    seen: set[cst.CSTNode] = set()
    for stmt in ordered:
        if stmt in seen:
            continue
        body = list(ix.block_of(stmt).body)
        i = body.index(stmt)
        j = i
        while j + 1 < len(body) and body[j + 1] in chosen:
            j += 1
        seen.update(body[i : j + 1])
        yield body[i], body[j]


def free_temp(ctx, base: str, taken: set[str]) -> str:
    """A name for a hoisted value that the file does not use yet."""
    name = ctx.facts.free_name(base) if hasattr(ctx.facts, "free_name") else base
    i = 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def guard_run(change, first: cst.CSTNode, last: cst.CSTNode) -> None:
    """Put the sibling statements ``first``..``last`` under ``if <rank zero>:``."""
    test = change.expr(change.ctx.vocab.is_global_zero)
    change.edits.wrap[first] = (last, cst.If(test=test, body=cst.IndentedBlock(body=[])))


def guard_hoisted(change, stmt: cst.CSTNode, hoist: list[cst.Arg], taken: set[str]) -> None:
    """Guard ``stmt`` alone; the values of ``hoist`` are computed first, on every rank.

    This keeps a forward pass or a collective that feeds the write (``save_image(G(z), p)``)
    out of the rank-0 branch, where it would leave the other ranks waiting.
    """
    ctx = change.ctx
    hoisted = []
    for a in hoist:
        name = free_temp(ctx, "to_write", taken)
        target = cst.AssignTarget(target=cst.Name(name))
        hoisted.append(cst.SimpleStatementLine(body=[cst.Assign(targets=[target], value=a.value)]))
        change.replace(a.value, cst.Name(name))
    hoisted[0] = hoisted[0].with_changes(leading_lines=stmt.leading_lines)
    change.insert_before(stmt, *hoisted)
    test = change.expr(ctx.vocab.is_global_zero)

    def build(updated: cst.CSTNode) -> cst.CSTNode:
        body = cst.IndentedBlock(body=[updated.with_changes(leading_lines=[])])
        return cst.If(test=test, body=body)

    change.replace(stmt, build)


def hoistable_args(ctx, call: cst.Call, skip: int = -1) -> list[cst.Arg]:
    """Arguments of ``call`` whose evaluation may run a forward pass or a collective."""
    return [a for i, a in enumerate(call.args) if i != skip and unsafe_calls(ctx, a.value)]


def fill_call(
    change, template: str, updated: cst.Call, order: dict[str, int], extra=()
) -> cst.Call:
    """Render a vocabulary call template around ``updated``'s own argument nodes.

    ``order`` maps template placeholders to argument positions of ``updated`` (``{"path": 1,
    "obj": 0}`` swaps ``torch.save(obj, path)``); each slot keeps the original slot's comma and
    line breaks, so a multi-line call stays laid out as it was. ``extra`` arguments of
    ``updated`` (by position) are appended after the template's.
    """
    sentinels = {k: f"__migrate_arg_{i}__" for k, i in order.items()}
    parsed = change.expr(template, **sentinels)
    by_sentinel = {f"__migrate_arg_{i}__": updated.args[i] for i in order.values()}
    new_args = []
    for slot, targ in enumerate(parsed.args):
        src = by_sentinel.get(targ.value.value) if isinstance(targ.value, cst.Name) else None
        value = src.value if src is not None else targ.value
        shape = updated.args[slot] if slot < len(updated.args) else targ
        new_args.append(targ.with_changes(value=value, comma=shape.comma))
    new_args.extend(updated.args[i] for i in extra)
    last = updated.args[-1].comma if updated.args else cst.MaybeSentinel.DEFAULT
    fixed = [
        a
        if a.comma is not cst.MaybeSentinel.DEFAULT
        else a.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        for a in new_args[:-1]
    ]
    fixed.append(
        new_args[-1].with_changes(comma=last if _trailing(last) else cst.MaybeSentinel.DEFAULT)
    )
    return updated.with_changes(func=parsed.func, args=fixed)


def _trailing(comma) -> bool:
    """A trailing comma worth keeping: the call's closing paren sits on its own line."""
    return isinstance(comma, cst.Comma) and isinstance(
        comma.whitespace_after, cst.ParenthesizedWhitespace
    )


def bound_values(ctx, name: cst.Name) -> list[cst.CSTNode]:
    """Values assigned to the binding ``name`` reads (``x = <value>``; ``with ... as x`` gives the item)."""
    from migrator.analysis.flow import binding_of

    ix = ctx.ix
    b = binding_of(ix, name)
    out: list[cst.CSTNode] = []
    if b is None:
        return out
    for node in ix.assigns:
        if isinstance(node, cst.Assign) and len(node.targets) == 1:
            t = node.targets[0].target
            if isinstance(t, cst.Name) and t.value == name.value and binding_of(ix, t) == b:
                out.append(node.value)
    for w in ix.withs:
        for item in w.items:
            alias = item.asname.name if item.asname is not None else None
            if (
                isinstance(alias, cst.Name)
                and alias.value == name.value
                and binding_of(ix, alias) == b
            ):
                out.append(item.item)
    return out


def trains(ctx, node: cst.CSTNode, depth: int = 2) -> bool:
    """``node`` runs a backward: bare, or already through the wrapper (a migrated file), directly
    or through in-file functions it calls."""
    facts, ix = ctx.facts, ctx.ix
    if facts.has_backward(node):
        return True
    if any(m == "backward" and ix.inside(c, node) for m, c in facts.wrapper_calls):
        return True
    if depth:
        for call in ix.subtree(node, cst.Call):
            found = facts.funcs.callee(call)
            if found is not None and found[0] is not node and trains(ctx, found[0], depth - 1):
                return True
    return False
