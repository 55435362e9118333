"""Splice the generated class and Trainer call into the file; every other line stays byte-identical."""

from __future__ import annotations

import re

import libcst as cst

from migrator.analysis import Facts
from migrator.module_form.render import render, writes
from migrator.module_form.shape import Shape
from migrator.targets import ModuleVocabulary


class _Splice(cst.CSTTransformer):
    """Replace / remove original statements (keyed by identity), insert statements around others."""

    def __init__(self, replace: dict[int, list], remove: set[int], before: dict[int, list], after: dict[int, list]) -> None:
        self.replace, self.remove, self.before, self.after = replace, remove, before, after

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode):
        key = id(original)
        if key in self.remove:
            return cst.RemoveFromParent()
        if key not in self.replace and key not in self.before and key not in self.after:
            return updated
        return cst.FlattenSentinel([*self.before.get(key, ()), *self.replace.get(key, [updated]), *self.after.get(key, ())])


def convert(facts: Facts, shape: Shape, vocab: ModuleVocabulary) -> tuple[str, str]:
    """The converted file text and the generated class name."""
    ix = facts.ix
    rendered = render(facts, shape, vocab)
    blank = [cst.EmptyLine(), cst.EmptyLine()]
    klass = list(cst.parse_module(rendered.class_code).body)
    klass[0] = klass[0].with_changes(leading_lines=blank)
    fit = list(cst.parse_module(rendered.fit_code).body)
    loop = shape.epoch_loop
    comments = [ln for ln in loop.leading_lines if ln.comment is not None]
    lead = (blank if shape.anchor is loop else list(loop.leading_lines[: len(loop.leading_lines) - len(comments)]))
    fit[0] = fit[0].with_changes(leading_lines=[*lead, *comments, *fit[0].leading_lines])
    replace: dict[int, list] = {id(loop): fit}
    before: dict[int, list] = {id(shape.anchor): klass}
    after: dict[int, list] = {}
    remove = {id(shape.optimizer_stmt)} | ({id(shape.scheduler_stmt)} if shape.scheduler_stmt is not None else set())
    if shape.train.function is not None:  # its loop is the training_step now (used by that call only)
        remove.add(id(shape.train.function))
    imports = [cst.parse_statement(line + "\n") for line in vocab.imports]
    for name in ("torch", "os"):  # the generated code may use them
        if re.search(rf"\b{name}\.", rendered.class_code + rendered.fit_code) and not _imports(ix, name):
            imports.insert(0, cst.parse_statement(f"import {name}\n"))
    last_import = None
    for stmt in ix.module.body:
        if isinstance(stmt, cst.SimpleStatementLine) and all(isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body):
            last_import = stmt
    if last_import is not None:
        after[id(last_import)] = imports
    else:  # no imports at all: they go first (after a module docstring would be nicer; rare)
        first = ix.module.body[0]
        before[id(first)] = [*imports, *before.get(id(first), ())]
    _after_fit(ix, shape, vocab, rendered.trainer_var, replace, after)
    imports.extend(lock_downloads_before_fit(ix, shape, replace, last_import))
    if _before_fit(ix, shape, vocab, replace, last_import):
        imports.append(cst.parse_statement(vocab.rank_zero_import + "\n"))
    out = ix.module.visit(_Splice(replace, remove, before, after))
    return out.code, rendered.class_name


def _imports(ix, module: str) -> bool:
    """``import <module>`` at the top level of the file."""
    for stmt in ix.module.body:
        if isinstance(stmt, cst.SimpleStatementLine):
            for s in stmt.body:
                if isinstance(s, cst.Import) and any(
                    a.asname is None and ix.code(a.name) == module for a in s.names
                ):
                    return True
    return False


# One process at a time runs a download before fit: the first fetches the files, the others
# find them there. No process group exists yet to run it on rank 0 first (the wrapper form's
# rank_zero_first); filelock comes with torch. The lock lives in the temporary folder, shared
# by the processes of one machine (not across machines: see docs/module-form.md).
_DOWNLOAD_LOCK = 'with FileLock(os.path.join(tempfile.gettempdir(), "torch-migrate-download.lock")):\n    pass\n'


def _pre_fit_statements(ix, shape: Shape) -> list[cst.CSTNode]:
    """Statements every process runs before ``fit``: those before the epoch loop in its block
    and, when the loop sits in a function or under ``if __name__ == "__main__":``, the
    script's top level."""
    block = list(ix.block_of(shape.epoch_loop).body)
    candidates = block[: block.index(shape.epoch_loop)]
    if ix.block_of(shape.epoch_loop) is not ix.module:
        candidates += [s for s in ix.module.body if not ix.inside(shape.epoch_loop, s)]
    return candidates


def lock_downloads_before_fit(ix, shape, replace: dict, last_import) -> list[cst.SimpleStatementLine]:
    """Lock the downloads before fit (``_downloads_before_fit``); the imports that needs."""
    waited: list = []
    if not _downloads_before_fit(ix, shape, replace, last_import, waited):
        return []
    needed = ["import tempfile", "from filelock import FileLock"]
    if not _imports(ix, "os"):
        needed.insert(0, "import os")
    if waited and not _imports(ix, "time"):
        needed.insert(0, "import time")
    return [cst.parse_statement(line + "\n") for line in needed]


def _downloads_before_fit(ix, shape: Shape, replace: dict, last_import, waited: list | None = None) -> bool:
    """Statements before ``fit`` that download or unpack data (MIG405's calls) run under a
    file lock, one process at a time. Whether any statement was locked."""
    from migrator.rules.side_effects_data import download_calls, files_there, wait_for_files

    calls = download_calls(ix)
    waited = [] if waited is None else waited
    locked = False
    for stmt in _pre_fit_statements(ix, shape):
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)) or id(stmt) in replace:
            continue
        if last_import is not None and ix.order(stmt) < ix.order(last_import):
            continue
        if not any(ix.inside(c, stmt) for c in calls):
            continue
        lock = cst.parse_statement(_DOWNLOAD_LOCK)
        inner = stmt.with_changes(leading_lines=[])
        locked_stmt = lock.with_changes(body=lock.body.with_changes(body=[inner]), leading_lines=stmt.leading_lines)
        there = files_there(ix, [stmt])
        if there is None:
            replace[id(stmt)] = [locked_stmt]
        else:  # (`if <files there>: ... else: <download>`): local rank 0 fetches, the others wait for it
            wait = cst.parse_statement(wait_for_files(ix, there)).with_changes(leading_lines=stmt.leading_lines)
            replace[id(stmt)] = [wait, locked_stmt.with_changes(leading_lines=[])]
            waited.append(stmt)
        locked = True
    return locked


def _before_fit(ix, shape: Shape, vocab: ModuleVocabulary, replace: dict, last_import) -> bool:
    """Lines that only print or write a file (``save_image(real_batch, "sample.png")``), run by
    every process before ``fit`` (at the script's top level, or before the epoch loop in its
    function), run on rank 0 only: the rank comes from the launcher's environment, as no
    Trainer exists yet. No process waits for the write: ``fit`` starts by joining every
    process into one group, which rank 0 reaches after writing. Whether any line was guarded."""
    guarded = False
    for stmt in _pre_fit_statements(ix, shape):
        if id(stmt) in replace:
            continue
        if last_import is not None and ix.order(stmt) < ix.order(last_import):
            continue  # the rank test's import comes after the file's last import
        if not (isinstance(stmt, cst.SimpleStatementLine) and stmt.body and all(
            isinstance(small, cst.Expr) and isinstance(small.value, cst.Call)
            and (ix.call_qname(small.value) == "builtins.print" or writes(ix, small))
            for small in stmt.body
        )):
            continue
        guard = cst.parse_statement(f"if {vocab.rank_zero_test}:\n    pass\n")
        inner = stmt.with_changes(leading_lines=[])
        replace[id(stmt)] = [guard.with_changes(body=guard.body.with_changes(body=[inner]),
                                                leading_lines=stmt.leading_lines)]
        guarded = True
    return guarded


def _after_fit(ix, shape: Shape, vocab: ModuleVocabulary, trainer: str, replace: dict, after: dict) -> None:
    """Code after ``trainer.fit`` runs on every process: its prints and file writes go to rank 0,
    and every process waits for a write before going on (a later load must find the file)."""
    block = list(ix.block_of(shape.epoch_loop).body)
    for stmt in block[block.index(shape.epoch_loop) + 1:]:
        wrote = writes(ix, stmt)
        prints = any(isinstance(c.func, cst.Name) and c.func.value == "print" for c in ix.subtree(stmt, cst.Call))
        if not (wrote or prints) or isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            continue
        guard = cst.parse_statement(f"if {trainer}.is_global_zero:\n    pass\n")
        inner = stmt.with_changes(leading_lines=[])
        guarded = guard.with_changes(body=guard.body.with_changes(body=[inner]), leading_lines=stmt.leading_lines)
        replace[id(stmt)] = [guarded]
        if wrote:
            after[id(stmt)] = [cst.parse_statement(vocab.barrier.format(trainer=trainer) + "\n")]
