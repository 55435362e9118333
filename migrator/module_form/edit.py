"""Splice the generated class and Trainer call into the file; every other line stays byte-identical."""

from __future__ import annotations

import libcst as cst

from migrator.analysis import Facts
from migrator.module_form.render import render
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
    if "torch." in rendered.class_code and not _imports_torch(ix):
        imports.insert(0, cst.parse_statement("import torch\n"))
    last_import = None
    for stmt in ix.module.body:
        if isinstance(stmt, cst.SimpleStatementLine) and all(isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body):
            last_import = stmt
    if last_import is not None:
        after[id(last_import)] = imports
    else:  # no imports at all: they go first (after a module docstring would be nicer; rare)
        first = ix.module.body[0]
        before[id(first)] = [*imports, *before.get(id(first), ())]
    out = ix.module.visit(_Splice(replace, remove, before, after))
    return out.code, rendered.class_name


def _imports_torch(ix) -> bool:
    for stmt in ix.module.body:
        if isinstance(stmt, cst.SimpleStatementLine):
            for s in stmt.body:
                if isinstance(s, cst.Import) and any(
                    a.asname is None and ix.code(a.name) == "torch" for a in s.names
                ):
                    return True
    return False
