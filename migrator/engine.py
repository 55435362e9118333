"""Entry point for one source text: parse, analyse, plan, apply, verify, and return a result value."""

from __future__ import annotations

from typing import TYPE_CHECKING

from migrator import suppressions
from migrator.options import Options
from migrator.results import FileResult, Status

if TYPE_CHECKING:
    import ast

# Cheap text prefilter: a file that never mentions torch has nothing to migrate.
_RELEVANT = ("torch",)


def migrate_source(
    source: str, path: str = "<string>", options: Options = Options(), *, rewrite: bool = True  # noqa: B008
) -> FileResult:
    """Migrate ``source`` (the text of ``path``) and return the result; never raises.

    ``rewrite=False`` (``--check`` without a diff or a write) plans and reports only: the
    status says whether migrating would change the file, ``output`` stays the source, and
    the rewrite is neither built nor verified (nothing is written that could be broken).

    Bad input (syntax error, ...) returns ``Status.FAILED`` with ``reason``; a bug in the
    migrator returns ``Status.FAILED`` with ``internal_error=True`` and a ``traceback``.
    """
    try:
        return _migrate(source, path, options, rewrite)
    except Exception as exc:  # noqa: BLE001 - any bug becomes a value, the CLI decides
        import traceback

        return FileResult(
            path=path, source=source, output=source, status=Status.FAILED,
            reason=f"internal error: {type(exc).__name__}: {exc}",
            traceback=traceback.format_exc(), internal_error=True,
        )


def _migrate(source: str, path: str, options: Options, rewrite: bool = True) -> FileResult:
    sup = suppressions.parse(source)
    if sup.skip_file:
        return _result(path, source, Status.SKIPPED, reason="skip-file comment")
    if not any(word in source for word in _RELEVANT):
        return _result(path, source, Status.SKIPPED, reason="does not use torch")
    codes = None
    if options.form != "module":
        from migrator.prefilter import rules_to_run

        codes = rules_to_run(source, options)
        tree, problem = python_ast(source, path)  # a broken file must say so in any case
        if problem:
            return _result(path, source, Status.FAILED, reason=problem)
        if options.role is None:
            options = _alone(options, tree)
        if options.role.pass_wrapper:
            codes = None  # calls that must pass the wrapper are no rule's anchors
        elif not codes:  # no enabled rule's anchor text is here: provably nothing to do
            return _result(path, source, Status.UNCHANGED, reason="no rule applies (text prefilter)")
        from migrator.codefilter import code_rules

        codes = code_rules(tree, codes) if codes is not None else None
        if codes is not None and not codes:  # anchors only in comments, docstrings, strings, defs
            return _result(path, source, Status.UNCHANGED, reason="no rule applies (code prefilter)")
    import libcst as cst  # only files that pass the prefilter pay for libcst (~140 ms)

    from migrator.analysis.tree import parse_module

    try:
        module = parse_module(source)
    except cst.ParserSyntaxError as exc:
        return _result(path, source, Status.FAILED, reason=f"syntax error: {exc.message} (line {exc.raw_line})")
    if codes is None:  # (module form: not compiled above)
        tree, problem = python_ast(source, path)
        if problem:  # libcst parses newer syntax than this Python compiles: verify would call it a bug
            return _result(path, source, Status.FAILED, reason=problem)
    if options.form == "module":  # structured-module form (falls back to the wrapper form itself)
        from migrator.module_form import migrate_module

        if options.role is None:
            options = _alone(options, tree, module_form=True)

        return migrate_module(module, source, path, options, sup.suppressed)
    from migrator.apply import apply_edits
    from migrator.verify import verify

    edits, findings, _, ix = _plan(module, options, sup.suppressed, codes)
    if not edits:
        return _result(path, source, Status.UNCHANGED, findings=tuple(findings))
    if not rewrite:  # --check: applying and verifying (a third of the time) would show no one
        return _result(path, source, Status.CHANGED, findings=tuple(findings))
    output = apply_edits(module, edits, ix.parent).code
    out_sup = suppressions.parse(output)

    def replan(out_module):
        out_codes = None if codes is None else rules_to_run(output, options)
        again, _, bare, _ = _plan(out_module, options, out_sup.suppressed, out_codes)
        return again, bare

    verify(output, path, replan, source=source)
    return _result(path, source, Status.CHANGED, output=output, findings=tuple(findings))


def _alone(options: Options, tree: ast.Module, module_form: bool = False) -> Options:
    """A file migrated alone: a helper module when importing it does no work; a script that
    trains, or one that neither trains nor iterates data (``migrator.program``). In the module
    form a helper module has no wrapper to borrow (none exists before ``fit``): its downloads
    run under a file lock (``Role.locks_downloads``)."""
    from dataclasses import replace

    from migrator.program import Role, is_library, trains

    library = is_library(tree)
    role = Role(library=library, trains=trains(tree), locks_downloads=module_form and library)
    return replace(options, role=role)


def wrapper_needs(source: str, path: str, options: Options = Options()) -> dict[str, set[str]]:  # noqa: B008
    """Per top-level function of a helper module: the codes of its findings, for the
    functions whose rewrite uses the wrapper (``migrator.program.resolve`` asks this)."""
    from dataclasses import replace

    from migrator.program import Role

    tree = python_ast(source, path)[0]
    if tree is None:
        return {}
    functions = {s.name: s for s in tree.body if type(s).__name__ in ("FunctionDef", "AsyncFunctionDef")}
    role = Role(library=True, threaded=frozenset(functions))
    result = migrate_source(source, path, replace(options, role=role), rewrite=False)
    needs: dict[str, set[str]] = {}
    takes = {f.line for f in result.findings if f.code == "MIG212"}
    for name, fn in functions.items():
        if any(fn.lineno <= line <= fn.end_lineno for line in takes):
            needs[name] = {f.code for f in result.findings if fn.lineno <= f.line <= fn.end_lineno}
    return needs


def python_ast(source: str, path: str) -> tuple[ast.Module | None, str | None]:
    """(CPython's ast of ``source``, None), or (None, why this interpreter cannot compile it):
    parser level, ~3 ms per 1,000 lines. libcst also parses syntax this Python rejects, so a
    file must pass both; the tree feeds the code prefilter (``migrator.codefilter``)."""
    import ast
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes etc. are the user's business
            tree = compile(source, path, "exec", flags=ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        return None, f"syntax error: {exc.msg} (line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes, absurd nesting
        return None, f"cannot parse: {exc}"
    return tree, None


def _plan(module, options: Options, suppressed, codes=None):
    """Analyse + plan; also list bare backward lines the user did not opt out of (and the index)."""
    from migrator.analysis import analyse
    from migrator.plan import plan
    from migrator.targets import vocabulary

    facts = analyse(module)
    edits, findings = plan(facts, vocabulary(options.target), options, suppressed, codes)
    bare = []
    if options.wants("MIG204"):
        facts.ix.positions(b.call for b in facts.backwards)
        for b in facts.backwards:
            line = facts.ix.pos(b.call)[0]
            if not suppressed("MIG204", line):
                bare.append(line)
    return edits, findings, bare, facts.ix


def _result(path, source, status, *, output=None, findings=(), reason=None) -> FileResult:
    return FileResult(
        path=path, source=source, output=source if output is None else output,
        status=status, findings=findings, reason=reason,
    )
