"""Planning: every enabled rule turns facts + the target vocabulary into findings that carry edits."""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

from migrator.analysis import Facts
from migrator.edits import Edits
from migrator.options import Options
from migrator.results import Finding
from migrator.targets import Vocabulary


@dataclass
class Change:
    """One finding of one rule and the edits that fix it (dropped together when suppressed)."""

    code: str
    node: cst.CSTNode
    message: str
    fixed: bool
    ctx: PlanContext
    edits: Edits = field(default_factory=Edits)
    uses_wrapper: bool = False
    # Everything else the change contributes travels with it, so suppressing its finding
    # drops all of it: wrapper constructor defaults, the original nodes that must be edited
    # by other kept changes for this one to be right, and whether it reports a finding.
    wrapper_args: dict[str, str] = field(default_factory=dict)
    needs: list[cst.CSTNode] = field(default_factory=list)
    fallback_for: Change | None = None
    report: bool = True
    imports: set[str] = field(default_factory=set)  # module names the rendered code reads

    # --- rendering target vocabulary -------------------------------------------------
    def code_text(self, template: str, **parts: object) -> str:
        """Fill a vocabulary template: nodes become their source text, ``{rt}`` the wrapper."""
        if "{rt}" in template:
            self.uses_wrapper = True
        self._reads_modules(template)
        filled = {k: self.ctx.ix.code(v) if isinstance(v, cst.CSTNode) else str(v) for k, v in parts.items()}
        return template.format(rt=self.ctx.rt, **filled)

    def expr(self, template: str, **parts: object) -> cst.BaseExpression:
        return cst.parse_expression(self.code_text(template, **parts))

    def stmt(self, template: str, **parts: object) -> cst.BaseStatement:
        return cst.parse_statement(self.code_text(template, **parts))

    # --- edits (all keyed by original nodes) ---------------------------------------------
    def replace(self, node: cst.CSTNode, new) -> Change:
        self.edits.replace[node] = new
        return self

    def remove(self, stmt: cst.CSTNode) -> Change:
        self.edits.remove.add(stmt)
        return self

    def insert_before(self, stmt: cst.CSTNode, *new: cst.CSTNode) -> Change:
        self.edits.before.setdefault(stmt, []).extend(new)
        return self

    def insert_after(self, stmt: cst.CSTNode, *new: cst.CSTNode) -> Change:
        self.edits.after.setdefault(stmt, []).extend(new)
        return self

    def wrap_with(self, first: cst.CSTNode, last: cst.CSTNode, header: str, **parts) -> Change:
        """Put the statements ``first``..``last`` (one block) inside ``with <header>:``."""
        item = self.expr(header, **parts)
        node = cst.With(items=[cst.WithItem(item=item)], body=cst.IndentedBlock(body=[]))
        self.edits.wrap[first] = (last, node)
        return self

    def wrap_if(self, stmt: cst.CSTNode, test: str, **parts) -> Change:
        """Put ``stmt`` inside ``if <test>:`` (a one-statement wrap)."""
        node = cst.If(test=self.expr(test, **parts), body=cst.IndentedBlock(body=[]))
        self.edits.wrap[stmt] = (stmt, node)  # _wrapped keeps any compound header's body slot
        return self

    def unwrap(self, compound: cst.CSTNode) -> Change:
        """Replace a ``with``/``if`` statement by its body (dedented)."""
        self.edits.unwrap.add(compound)
        return self

    def drop_import(self, alias: cst.ImportAlias) -> Change:
        self.edits.drop_aliases.add(alias)
        return self

    # --- what the change depends on / contributes beyond its edits ------------------------
    def set_wrapper_arg(self, name: str, code: str) -> Change:
        """A constructor default for a new wrapper object (``precision=...``), used only
        while this change is kept."""
        self.wrapper_args.setdefault(name, code)
        self._reads_modules(code)
        return self

    def renders(self, template: str) -> Change:
        """Declare a template a replacement function renders later (at apply time): what it
        needs, the wrapper object and the modules it reads, is known now."""
        if "{rt}" in template:
            self.uses_wrapper = True
        self._reads_modules(template)
        return self

    def _reads_modules(self, code: str) -> None:
        """Note the modules generated code reads (``torch.tensor``): the file must bind them."""
        import re

        from migrator.targets import TEMPLATE_IMPORTS

        self.imports.update(n for n in TEMPLATE_IMPORTS if re.search(rf"\b{n}\.", code))

    def require(self, *nodes: cst.CSTNode) -> Change:
        """Keep this change only while every one of ``nodes`` (original nodes) is edited by a
        kept change: another rule's rewrite this one relies on (a removed scaler, a rewritten
        backward). A suppressed or deselected dependency drops this change too."""
        self.needs.extend(nodes)
        return self


class PlanContext:
    """What a rule sees: facts, the index, the vocabulary, and a way to open findings."""

    def __init__(self, facts: Facts, vocab: Vocabulary, options: Options) -> None:
        self.facts = facts
        self.ix = facts.ix
        self.vocab = vocab
        self.options = options
        self.changes: list[Change] = []
        existing = facts.wrapper
        # Reuse the file's wrapper only when it is this target's (incremental use).
        reuse = existing is not None and existing.target == vocab.name
        self.rt = existing.name if reuse else facts.free_name(vocab.wrapper_var)
        if options.role is not None and options.role.library:  # borrowed: a parameter
            self.rt = vocab.wrapper_var

    def finding(self, code: str, node: cst.CSTNode, message: str, fixed: bool = True) -> Change:
        change = Change(code=code, node=node, message=message, fixed=fixed, ctx=self)
        self.changes.append(change)
        return change

    def part(self, code: str, node: cst.CSTNode) -> Change:
        """Edits no single finding owns (an import several findings leave unused): reported
        by none, obeying ``code``'s selection and suppression on ``node``'s line, and kept
        only while what it ``require``s is."""
        change = self.finding(code, node, "", fixed=True)
        change.report = False
        return change

    def fallback(self, primary: Change) -> Change:
        """The rewrite to use instead of ``primary`` when a change ``primary`` requires is
        dropped (``rt.backward(scaler.scale(loss))`` when the user keeps the GradScaler)."""
        change = self.finding(primary.code, primary.node, primary.message, primary.fixed)
        change.fallback_for = primary
        return change


def plan(
    facts: Facts, vocab: Vocabulary, options: Options, suppressed, codes: frozenset[str] | None = None
) -> tuple[Edits, list[Finding]]:
    """Run the enabled rules; keep the changes that are neither deselected nor suppressed.

    ``codes`` (from ``migrator.prefilter``) limits the run to rules whose anchors are in the
    text: the others provably find nothing, and skipping them skips the facts they need.
    """
    from migrator.rules.base import all_rules

    ctx = PlanContext(facts, vocab, options)
    rules = [r for r in all_rules() if hasattr(r, "plan") and (codes is None or r.code in codes)]
    for rule in sorted(rules, key=lambda r: (getattr(r, "order", 0), r.code)):
        rule().plan(ctx)
    role = options.role
    if role is not None and (role.library or role.pass_wrapper or not role.trains):
        from migrator.rules.helper_modules import borrow

        borrow(ctx)  # a helper module borrows the entry's wrapper; calls pass it
    from migrator.rules.wrapper_object import create_wrapper, missing_imports, wrapper_anchor

    anchor = wrapper_anchor(ctx)
    # one codegen pass for every position asked below
    facts.ix.positions([c.node for c in ctx.changes] + [anchor])
    wanted = [
        c for c in ctx.changes
        if options.wants(c.code) and not suppressed(c.code, facts.ix.pos(c.node)[0])
    ]
    kept = [(c, c.report) for c in _resolve(wanted)]  # (change, report its finding)
    if any(c.code.startswith("MIG9") for c, _ in kept):  # needs a human: no partial rewrite
        kept = [(c, s) for c, s in kept if c.code.startswith("MIG9")]
    reuse = facts.wrapper is not None and facts.wrapper.target == vocab.name
    library = role is not None and (role.library or not role.trains)
    if not reuse and not library and any(c.uses_wrapper for c, _ in kept):
        # Always applied when something needs it; only its finding obeys select/suppress.
        args: dict[str, str] = {}
        for c, _ in kept:  # only kept changes' defaults: a suppressed autocast sets nothing
            for k, v in c.wrapper_args.items():
                args.setdefault(k, v)
        wrapper = create_wrapper(ctx, anchor, args)
        line = facts.ix.pos(anchor)[0]
        shown = options.wants(wrapper.code) and not suppressed(wrapper.code, line)
        kept.insert(0, (wrapper, shown))
    imports = missing_imports(ctx, [c for c, _ in kept], anchor)
    if imports is not None:  # goes first: `import torch` above the wrapper's lines
        kept.insert(0, (imports, False))
    edits = Edits()
    findings: list[Finding] = []
    for change, shown in kept:
        edits.merge(change.edits)
        if shown:
            line, col = facts.ix.pos(change.node)
            findings.append(Finding(line, col, change.code, change.message, change.fixed))
    return edits, sorted(findings)


def _resolve(wanted: list[Change]) -> list[Change]:
    """The wanted changes whose requirements hold, then the fallbacks of those that lost one.

    Dropping a change can break another's requirement, so this runs to a fixed point (each
    round only removes). A fallback replaces its primary only when the primary was wanted
    and lost a requirement; its own suppression is its primary's (same code, same node).
    """
    primaries = [c for c in wanted if c.fallback_for is None]
    kept = primaries
    while True:
        edited = {id(n) for c in kept for n in c.edits.nodes()}
        now = [c for c in kept if all(id(n) in edited for n in c.needs)]
        if len(now) == len(kept):
            break
        kept = now
    alive = {id(c) for c in kept}
    dropped = {id(c) for c in primaries if id(c) not in alive}
    order = {id(c): i for i, c in enumerate(wanted)}
    kept += [c for c in wanted if c.fallback_for is not None and id(c.fallback_for) in dropped]
    return sorted(kept, key=lambda c: order[id(c)])
