"""Verification of a migrated text: it parses, compiles, reads no name the input left undefined,
keeps no bare backward, and is a fixed point."""

from __future__ import annotations

import builtins
import symtable

import libcst as cst

# Names every module has without binding them (``if __name__ == "__main__":``).
_MODULE_NAMES = frozenset(
    {"__name__", "__file__", "__doc__", "__spec__", "__loader__", "__package__", "__builtins__",
     "__annotations__", "__path__", "__cached__", "__dict__"}
)
_KNOWN = frozenset(dir(builtins)) | _MODULE_NAMES


class VerifyError(Exception):
    """The migrated output is broken: an internal error of the migrator, never written out."""


def verify(output: str, path: str, replan, *, source: str) -> None:
    """Raise ``VerifyError`` unless ``output`` compiles, reads no global name that ``source``
    (the input) did not already leave undefined, and ``replan(module)`` plans no edit.

    ``replan`` runs analysis + planning on the parsed output and returns
    ``(edits, bare_backward_lines)``; bare backward lines are those not suppressed by the user.
    """
    try:
        module = cst.parse_module(output)
    except cst.ParserSyntaxError as exc:
        raise VerifyError(f"migrated output does not parse: {exc}") from exc
    try:
        compile(output, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise VerifyError(f"migrated output does not compile: {exc}") from exc
    new = undefined_names(output, path) - undefined_names(source, path)
    if new:
        where = ", ".join(f"{name} (line {_first_read(output, name)})" for name in sorted(new))
        raise VerifyError(f"migrated output reads undefined name(s): {where}")
    edits, bare = replan(module)
    if bare:
        raise VerifyError(f"bare .backward() left on line(s) {', '.join(map(str, bare))}")
    if edits:
        raise VerifyError("migrating the output again would change it (not a fixed point)")


def undefined_names(text: str, path: str = "<string>") -> set[str]:
    """Global names ``text`` reads (at module level or from any function, class, lambda or
    comprehension) that nothing in the module binds and that are not builtins.

    CPython's own symbol tables (``symtable``) resolve the scopes exactly as the interpreter
    will, at about the cost of a compile. A name counts as bound when the module assigns,
    imports, defines it, or a function assigns it under ``global``; where it is bound (a branch,
    after the read) is not checked, so this finds only names that can never be defined.
    Names a star import may bring are unknowable: compare with the input's own set.
    """
    bound: set[str] = set()
    read: set[str] = set()
    todo = [symtable.symtable(text, path, "exec")]
    while todo:
        table = todo.pop()
        top = table.get_type() == "module"
        for sym in table.get_symbols():
            name = sym.get_name()
            if top and (sym.is_assigned() or sym.is_imported() or sym.is_namespace()):
                bound.add(name)
            elif sym.is_declared_global() and sym.is_assigned():
                bound.add(name)
            if sym.is_referenced() and sym.is_global():
                read.add(name)
        todo.extend(table.get_children())
    return read - bound - _KNOWN


def _first_read(text: str, name: str) -> int:
    """Line of the first load of ``name`` (only on the failure path)."""
    import ast

    lines = [
        n.lineno for n in ast.walk(ast.parse(text))
        if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)
    ]
    return min(lines, default=0)
