"""The one generic transformer: carries out planned edits; untouched code stays byte-identical."""

from __future__ import annotations

from collections.abc import Mapping

import libcst as cst

from migrator.edits import Edits

_PASS = cst.SimpleStatementLine(body=[cst.Pass()])


def apply_edits(
    module: cst.Module, edits: Edits, parent: Mapping[cst.CSTNode, cst.CSTNode] | None = None
) -> cst.Module:
    """Return ``module`` with ``edits`` applied (``module`` itself when there are none).

    With ``parent`` (the index's child -> parent map), subtrees that hold no edited node are
    not walked: they come back as the very same objects, and a libcst traversal rebuilds every
    node it enters, so this skips most of the tree's cost.
    """
    if not edits:
        return module
    hot = None
    if parent is not None:
        hot = set()
        for node in edits.nodes():
            while node is not None and node not in hot:
                hot.add(node)
                node = parent.get(node)
    return module.visit(_Applier(edits, hot))


def _is_identity(assign: cst.Assign) -> bool:
    """``x = x`` / ``a, b = a, b``: what is left when a rewrite strips a move from both sides."""
    if len(assign.targets) != 1:
        return False
    target, value = assign.targets[0].target, assign.value
    if isinstance(target, cst.Tuple) and isinstance(value, cst.Tuple):
        if len(target.elements) != len(value.elements):
            return False
        return all(t.value.deep_equals(v.value) for t, v in zip(target.elements, value.elements))
    return target.deep_equals(value)


class _Applier(cst.CSTTransformer):
    def __init__(self, edits: Edits, hot: set[cst.CSTNode] | None = None) -> None:
        super().__init__()
        self.e = edits
        self.hot = hot  # edited nodes and their ancestors (None: walk everything)
        self.dead: set[cst.CSTNode] = set()  # original statements that vanished
        self.emptied: set[cst.CSTNode] = set()  # original blocks left with nothing

    def on_visit(self, node: cst.CSTNode) -> bool:
        return self.hot is None or node in self.hot

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode):
        e = self.e
        if updated is original and self.hot is not None and original not in self.hot:
            return updated  # an untouched subtree: nothing below it changed
        if isinstance(original, (cst.SimpleStatementLine, cst.SimpleStatementSuite)):
            updated = self._small(original, updated)
        elif isinstance(original, (cst.IndentedBlock, cst.Module)):
            updated = self._block(original, updated)
        elif isinstance(original, cst.Assign):
            if updated is not original and not updated.deep_equals(original) and _is_identity(updated):
                self.dead.add(original)
        elif isinstance(original, cst.If):
            if original.body in self.emptied and original.orelse is None:
                self.dead.add(original)
        elif isinstance(original, (cst.Import, cst.ImportFrom)) and e.drop_aliases:
            updated = self._imports(original, updated)
        rep = e.replace.get(original)
        if rep is not None:
            updated = rep(updated) if callable(rep) else rep
        return updated

    def _imports(self, original, updated):
        if isinstance(original.names, cst.ImportStar):
            return updated
        keep = [u for o, u in zip(original.names, updated.names) if o not in self.e.drop_aliases]
        if not keep:
            self.dead.add(original)
            return updated
        if len(keep) == len(original.names):
            return updated
        keep[-1] = keep[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
        return updated.with_changes(names=keep)

    def _gone(self, original: cst.CSTNode) -> bool:
        return original in self.e.remove or original in self.dead

    def _small(self, original, updated):
        keep = [u for o, u in zip(original.body, updated.body) if not self._gone(o)]
        if len(keep) == len(original.body):
            return updated
        if keep:
            keep[-1] = keep[-1].with_changes(semicolon=cst.MaybeSentinel.DEFAULT)
            return updated.with_changes(body=keep)
        if isinstance(original, cst.SimpleStatementSuite):
            self.emptied.add(original)
            return updated.with_changes(body=[cst.Pass()])
        self.dead.add(original)
        return updated

    def _block(self, original, updated):
        e = self.e
        out: list[cst.CSTNode] = []
        carry: list[cst.EmptyLine] = []  # comments above a removed statement move down
        pending: list[cst.CSTNode] | None = None  # statements collected for a `with` wrap
        outside: tuple[list, list] = ([], [])  # inserted statements around the wrapped range
        wrap_end = wrap_with = None
        for o, u in zip(original.body, updated.body):
            if o in e.wrap:
                wrap_end, wrap_with = e.wrap[o]
                pending = []
            # Statements inserted around a wrapped statement (set-up, collectives) stay out of
            # the `with rank_zero_first()` / `if is_global_zero:` block: rank 0 alone would run
            # a collective there while the others wait in the barrier (a deadlock).
            inserted = (outside[0], outside[1]) if pending is not None else None
            items: list[cst.CSTNode] = []
            (inserted[0] if inserted else items).extend(e.before.get(o, ()))
            if self._gone(o):
                carry.extend(u.leading_lines)
            else:
                if o in e.unwrap:
                    body = list(u.body.body)
                    body[0] = body[0].with_changes(
                        leading_lines=[*u.leading_lines, *body[0].leading_lines]
                    )
                    items.extend(body)
                else:
                    items.append(u)
            (inserted[1] if inserted else items).extend(e.after.get(o, ()))
            if carry and items:
                first = items[0]
                own = list(first.leading_lines)
                lines = [*carry, *own] if any(x.comment for x in carry) or not own else own
                items[0] = first.with_changes(leading_lines=lines)
                carry = []
            if pending is not None:
                pending.extend(items)
                if o is wrap_end:
                    out.extend(self._around(wrap_with, pending, outside))
                    pending, outside = None, ([], [])
                continue
            out.extend(items)
        if pending or any(outside):
            out.extend(self._around(wrap_with, pending or [], outside))
        if not out:
            if isinstance(original, cst.Module):
                return updated.with_changes(body=[])
            self.emptied.add(original)
            out = [_PASS]
        return updated.with_changes(body=out)

    def _around(self, with_node, stmts: list[cst.CSTNode], outside: tuple[list, list]) -> list:
        """The wrapped block with the statements inserted before and after its range."""
        if not stmts:
            return [*outside[0], *outside[1]]
        block = self._wrapped(with_node, stmts)
        if outside[0]:
            outside[0][0] = outside[0][0].with_changes(leading_lines=block.leading_lines)
            block = block.with_changes(leading_lines=[])
        return [*outside[0], block, *outside[1]]

    @staticmethod
    def _wrapped(with_node: cst.With, stmts: list[cst.CSTNode]) -> cst.With:
        lead = stmts[0].leading_lines
        stmts[0] = stmts[0].with_changes(leading_lines=[])
        return with_node.with_changes(body=cst.IndentedBlock(body=stmts), leading_lines=lead)
