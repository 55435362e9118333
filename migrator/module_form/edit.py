"""Splice the generated class and Trainer call into the file; every other line stays byte-identical."""

from __future__ import annotations

import libcst as cst

from migrator.analysis import Facts
from migrator.module_form.render import render
from migrator.module_form.shape import Shape
from migrator.targets import ModuleVocabulary


class _Splice(cst.CSTTransformer):
    """Replace / remove original statements (keyed by identity) and insert imports."""

    def __init__(self, replace: dict[int, list[cst.BaseStatement]], remove: set[int]) -> None:
        self.replace, self.remove = replace, remove

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode):
        if id(original) in self.remove:
            return cst.RemoveFromParent()
        new = self.replace.get(id(original))
        if new is not None:
            return cst.FlattenSentinel(new)
        return updated


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
    replace: dict[int, list[cst.BaseStatement]] = {id(loop): fit}
    if shape.anchor is loop:
        replace[id(loop)] = [*klass, *fit]
    else:
        replace[id(shape.anchor)] = [*klass, shape.anchor]
    remove = {id(shape.optimizer_stmt)} | ({id(shape.scheduler_stmt)} if shape.scheduler_stmt is not None else set())
    imports = [cst.parse_statement(line + "\n") for line in vocab.imports]
    if "torch.tensor(" in rendered.class_code and not _imports_torch(ix):
        imports.insert(0, cst.parse_statement("import torch\n"))
    last_import = None
    for stmt in ix.module.body:
        if isinstance(stmt, cst.SimpleStatementLine) and all(isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body):
            last_import = stmt
    if last_import is None:
        raise_at = ix.module.body[0] if ix.module.body else None
        if raise_at is None:
            from migrator.module_form.shape import NoFit

            raise NoFit("MIG502", ix.module, "empty file")
        replace.setdefault(id(raise_at), [raise_at])
        replace[id(raise_at)] = [*imports, *replace[id(raise_at)]]
    else:
        existing = replace.get(id(last_import), [last_import])
        replace[id(last_import)] = [*existing, *imports]
    out = ix.module.visit(_Splice(replace, remove))
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
