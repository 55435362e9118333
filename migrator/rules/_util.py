"""Small helpers the MIG1xx-3xx rules share (argument text, statement lookups)."""

from __future__ import annotations

import libcst as cst


def arg_text(ix, arg: cst.Arg) -> str:
    """``arg`` as source text without its trailing comma (``max_norm=1.0``, ``*xs``)."""
    value = ix.code(arg.value)
    if arg.keyword is not None:
        return f"{arg.keyword.value}={value}"
    return f"{arg.star}{value}"


def bare(ix, expr: cst.BaseExpression) -> str:
    """Source text of ``expr`` without redundant outer parentheses."""
    if getattr(expr, "lpar", None):
        expr = expr.with_changes(lpar=[], rpar=[])
    return ix.module.code_for_node(expr)


def find_arg(call: cst.Call, pos: int, keyword: str) -> cst.Arg | None:
    """The argument at position ``pos`` or passed as ``keyword``."""
    for a in call.args:
        if a.keyword is not None and a.keyword.value == keyword:
            return a
    positional = [a for a in call.args if a.keyword is None and not a.star]
    return positional[pos] if pos < len(positional) else None
