"""The port `migrate verify` runs: SCRIPT migrated as one program with the .py files of its folder,
as `migrate DIR` would (a helper function that needs the wrapper borrows the entry's), and of
those only the files the script imports (directly or through each other) rewritten in the copies:
the others never run. No torch here."""

from __future__ import annotations

import ast
from pathlib import Path, PurePath

from migrator.batch import Job, _with_roles, migrate_one, prepare
from migrator.fileio import Decoded
from migrator.files import discover
from migrator.options import Options
from migrator.program import _module_names
from migrator.results import Status


def imported(script: str, sources: dict[str, Decoded]) -> list[str]:
    """``script`` and the files of ``sources`` (display path -> decoded) it imports, transitively,
    script first."""
    modules = _module_names(sources)
    out, todo = [script], [script]
    while todo:
        path = todo.pop()
        try:
            tree = ast.parse(sources[path].text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for name in _imports(tree, PurePath(path)):
            found = modules.get(name)
            if found is not None and found not in out:
                out.append(found)
                todo.append(found)
    return out


def _imports(tree: ast.Module, path: PurePath) -> set[str]:
    """Dotted names an import of ``tree`` may load (over-inclusive: every prefix, every
    ``from M import x`` as ``M`` and ``M.x``; relative imports from ``path``'s folder)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            heads = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = path.parent.parts[:len(path.parent.parts) - (node.level - 1)] if node.level > 1 \
                    else path.parent.parts
                base = ".".join([*package[-1:], *([base] if base else [])]) if package else base
            heads = [base, *(f"{base}.{a.name}" if base else a.name for a in node.names)]
        else:
            continue
        for head in filter(None, heads):
            parts = head.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            names.update(".".join(parts[i:]) for i in range(1, len(parts)))
    return names


def migrate_program(script: Path, target: str, form: str) -> tuple[dict[str, str] | None, str]:
    """{path relative to the script's folder: migrated text} (None when SCRIPT fails or is
    refused) and a one-line message (more lines: the refusals)."""
    folder = script.parent
    job = Job(options=Options(target=target, form=form), keep_output=True)
    todo, entry = [], None
    for cand in discover([str(script), str(folder)], root=folder):
        prepared = prepare(cand, job)
        if cand.explicit:
            entry = (cand, prepared)
        if isinstance(prepared, Decoded):
            todo.append((len(todo), cand, prepared))
    assert entry is not None
    cand, prepared = entry
    if not isinstance(prepared, Decoded):  # skipped (no torch) or unreadable
        if prepared.status is Status.FAILED:
            return None, prepared.reason or "failed"
        return {}, f"unchanged ({prepared.reason})"
    run = imported(cand.display, {c.display: d for _, c, d in todo})
    roles = {c.display: (c, d, role) for _, c, d, role in _with_roles(todo, job) if c.display in run}
    texts, helpers = {}, []
    for display in run:
        c, d, role = roles[display]
        outcome = migrate_one(c, d, job, role)
        rel = Path(c.path).relative_to(folder).as_posix()
        if display == cand.display:
            result = outcome
        elif outcome.status is Status.CHANGED:
            helpers.append(rel)
        if outcome.status is Status.CHANGED and outcome.output is not None:
            texts[rel] = outcome.output
    if result.status is Status.FAILED:
        return None, (result.reason or "failed") + ("\n" + result.traceback if result.traceback else "")
    if result.status is Status.SKIPPED:
        return None, f"skipped: {result.reason}"
    refusals = [f for f in result.findings if f.code.startswith("MIG9")]
    if refusals and result.status is Status.UNCHANGED:  # needs a human: running the untouched script on N processes proves nothing
        lines = [f"{script.name}:{f.line}:{f.col}: {f.code} {f.message}" for f in refusals]
        return None, f"refused ({len(refusals)} MIG9xx finding(s)): {lines[0]}\n" + "\n".join(lines)
    with_helpers = f", with {', '.join(helpers)}" if helpers else ""
    return texts, f"migrated to --target {target} ({result.status.value}{with_helpers})"
