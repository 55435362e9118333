"""Verification of a migrated text: it parses, compiles, reads no name the input left undefined,
runs no collective on rank 0 alone, keeps no bare backward, and is a fixed point."""

from __future__ import annotations

import ast
import builtins
import collections
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
    new = collections.Counter(rank_zero_collectives(output)) - collections.Counter(
        rank_zero_collectives(source)
    )
    if new:
        where = ", ".join(f"{call} (line {line})" for line, call in sorted(new))
        raise VerifyError(f"collective call(s) inside a rank-zero block (deadlock): {where}")
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
    lines = [
        n.lineno for n in ast.walk(ast.parse(text))
        if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)
    ]
    return min(lines, default=0)


# Guards that only rank 0 enters first or alone: ``with X.rank_zero_first():`` (accelerate:
# ``main_process_first``) and ``if X.is_global_zero:`` / ``X.is_main_process`` /
# ``X.local_rank == 0`` and the like.
_FIRST = {"rank_zero_first", "main_process_first", "local_main_process_first"}
_ZERO_FLAGS = {"is_global_zero", "is_main_process", "is_local_main_process"}
_RANKS = {"global_rank", "local_rank", "process_index", "local_process_index", "node_rank"}


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _guarded(node: ast.AST) -> str | None:
    """The wrapper variable whose rank-zero guard ``node`` is, else None."""
    if isinstance(node, ast.With):
        for item in node.items:
            e = item.context_expr
            if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and e.func.attr in _FIRST:
                return _root(e.func.value)
    elif isinstance(node, ast.If):
        t = node.test
        if isinstance(t, ast.Attribute) and t.attr in _ZERO_FLAGS:
            return _root(t.value)
        if (
            isinstance(t, ast.Compare) and isinstance(t.left, ast.Attribute)
            and t.left.attr in _RANKS and isinstance(t.ops[0], ast.Eq)
            and isinstance(t.comparators[0], ast.Constant) and t.comparators[0].value == 0
        ):
            return _root(t.left.value)
    return None


def rank_zero_collectives(text: str) -> list[tuple[int, str]]:
    """(line, call) of every wrapper call that communicates (the target's ``collectives``)
    inside a rank-zero-first block or a rank-0 branch of that wrapper: rank 0 waits there for
    peers that wait elsewhere (a deadlock). The wrapper's target comes from its constructor;
    a wrapper the file does not construct (a parameter) counts those collective on any target
    but save/load."""
    from migrator.targets import VOCABULARIES, WRAPPER_QNAMES

    tree = ast.parse(text)
    kinds = {q.rsplit(".", 1)[1]: t for q, t in WRAPPER_QNAMES.items()}
    target: dict[str, str] = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call) and len(n.targets) == 1:
            f = n.value.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in kinds and isinstance(n.targets[0], ast.Name):
                target[n.targets[0].id] = kinds[name]
    # save/load communicate on runtime and fabric but not on accelerate: left out when unsure.
    anywhere = frozenset().union(*(v.collectives for v in VOCABULARIES.values())) - {"save", "load"}
    found: list[tuple[int, str]] = []
    for guard in ast.walk(tree):
        rt = _guarded(guard)
        if rt is None:
            continue
        vocab = VOCABULARIES.get(target.get(rt, ""))
        collective = vocab.collectives if vocab else anywhere
        for stmt in guard.body:
            for n in ast.walk(stmt):
                if (
                    isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and n.func.attr in collective and _root(n.func.value) == rt
                ):
                    found.append((n.lineno, f"{ast.unparse(n.func)}(...)"))
    return found
