"""Shared by the setup, device-move and forward-method rules: where `setup` goes, which moves die."""

from __future__ import annotations

import libcst as cst

from migrator.analysis.facts import ModelFact, strip_chain
from migrator.analysis.flow import binding_of
from migrator.analysis.index import STATEMENT


def lift(ix, stmts: list[cst.CSTNode]) -> cst.CSTNode | None:
    """The latest statement, in the innermost block holding all ``stmts``, that contains one of them.

    Optimizers built in both branches of an ``if`` lift to the ``if`` itself.
    """
    chains = []
    for s in stmts:
        chain = [s, *(a for a in ix.ancestors(s) if isinstance(a, STATEMENT))]
        chains.append(chain)
    if any(ix.function_of(c[0]) is not ix.function_of(chains[0][0]) for c in chains):
        return None
    for candidate in chains[0]:
        block = ix.parent.get(candidate)
        if all(any(ix.parent.get(x) is block for x in c) for c in chains):
            tops = [next(x for x in c if ix.parent.get(x) is block) for c in chains]
            return max(tops, key=ix.order)
    return None


def setup_anchor(ctx, m: ModelFact) -> cst.CSTNode | None:
    """Statement after which ``model, *opts = rt.setup(model, *opts)`` goes (None: cannot)."""
    ix = ctx.ix
    if m.manual:
        if m.construction is None:
            return None
        return lift(ix, [ix.statement(m.construction)])
    if any(o.target is None or len(o.models) != 1 for o in m.optimizers):
        return None
    return lift(ix, [o.stmt for o in m.optimizers])


def skipped_branches(ctx, m: ModelFact) -> list[tuple[cst.If, bool]] | None:
    """The ``if`` statements around the setup anchor that the model outlives.

    ``if args.use_optimizer: optimizer = AdamW(model.parameters())`` with a model built (or
    handed in) before the ``if``: the paths that skip the branch still train the model
    (manual SGD), so the model must be set up alone there too. Each item is ``(if statement,
    True when the optimizer is built in its body / False in its ``else``)``, innermost first;
    ``[]`` when the setup anchor runs on every path the model lives on; None for a shape not
    handled (an ``elif`` chain, a one-line branch): set up by hand.
    """
    ix = ctx.ix
    anchor = setup_anchor(ctx, m)
    if anchor is None or m.manual:
        return []
    home = ix.statement(m.construction) if m.construction is not None else None
    out: list[tuple[cst.If, bool]] = []
    node = anchor
    while True:
        block = ix.parent.get(node)
        owner = ix.parent.get(block)
        if isinstance(owner, cst.If) and block is owner.body:
            stmt, in_body = owner, True
        elif isinstance(owner, cst.Else) and isinstance(ix.parent.get(owner), cst.If):
            stmt, in_body = ix.parent[owner], False
        else:
            return out
        if home is not None and ix.inside(home, stmt):
            return out  # built in the same branch: the model lives on that path only
        other = stmt.orelse.body if in_body and stmt.orelse is not None else stmt.body
        if (
            isinstance(ix.parent.get(stmt), cst.If)  # an elif
            or isinstance(stmt.orelse, cst.If)  # has elifs
            or (not isinstance(other, cst.IndentedBlock) and not (in_body and stmt.orelse is None))
        ):
            return None
        out.append((stmt, in_body))
        node = stmt


def set_up_everywhere(ctx, m: ModelFact) -> cst.CSTNode | None:
    """The statement after which the model is set up on every path (None: cannot say)."""
    branches = skipped_branches(ctx, m)
    if branches is None:
        return None
    return branches[-1][0] if branches else setup_anchor(ctx, m)


def own_optimizer(ctx, m: ModelFact) -> bool:
    """The model is a module's ``self``: an optimizer built over ``self.parameters()`` in
    the module's own class (a per-layer optimizer). ``self`` cannot be rebound by setup."""
    expr = m.expr
    if not isinstance(expr, cst.Name):
        return False
    fn = ctx.ix.function_of(expr)
    in_class = fn is not None and isinstance(ctx.ix.parent.get(ctx.ix.parent.get(fn)), cst.ClassDef)
    if not in_class or not fn.params.params:
        return False
    plain = not any(
        isinstance(d.decorator, cst.Name) and d.decorator.value in ("staticmethod", "classmethod")
        for d in fn.decorators
    )
    return plain and fn.params.params[0].name.value == expr.value


def model_text(ctx, m: ModelFact) -> str:
    if m.manual and m.construction is not None:
        return ctx.ix.code(m.construction.targets[0].target)
    return ctx.ix.code(m.expr)


def already_set_up(ctx, m: ModelFact) -> bool:
    text = model_text(ctx, m)
    return any(
        meth == "setup" and call.args and ctx.ix.code(call.args[0].value) == text
        for meth, call in ctx.facts.wrapper_calls
    )


def chain_moves(ctx, expr: cst.BaseExpression) -> list[cst.Call]:
    """Device moves inside a construction chain: ``Net().to(device).eval()`` -> [.to(device)]."""
    out = []
    while isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute):
        if ctx.facts.move_kind(expr) is not None:
            out.append(expr)
        expr = expr.func.value
    return out


def model_moves(ctx) -> dict[cst.Call, ModelFact]:
    """Moves of set-up models that setup makes redundant: in the construction chain, or a
    standalone ``model.to(device)`` / ``model = model.cuda()`` before the setup point."""
    out: dict[cst.Call, ModelFact] = {}
    ix = ctx.ix
    for m in ctx.facts.models:
        anchor = setup_anchor(ctx, m)
        if anchor is None or already_set_up(ctx, m) and m.construction is None:
            continue
        fn = ix.function_of(anchor)
        stores = [a for a in ctx.facts.assignments_of(m.binding) if ix.order(a) < ix.order(anchor)]
        for assign in {*stores, *([m.construction] if m.construction is not None else [])}:
            if assign is m.construction or ix.function_of(assign) is fn:
                for call in chain_moves(ctx, assign.value):
                    out[call] = m
        for ref in m.refs:
            attr = ix.parent.get(ref)
            call = ix.parent.get(attr)
            if not (isinstance(attr, cst.Attribute) and isinstance(call, cst.Call) and call.func is attr):
                continue
            if ctx.facts.move_kind(call) is None or ix.function_of(call) is not fn:
                continue
            if ix.order(call) < ix.order(anchor) or ix.inside(call, anchor):
                out[call] = m
    return out


def is_model_ctor_target(ctx, assign: cst.Assign) -> bool:
    return ctx.facts.is_module_construction(strip_chain(assign.value))


def batch_names(ctx, loop: cst.For) -> set:
    """Bindings of the names a loop over a loader binds (``for i, (x, y) in enumerate(...)``)."""
    out = set()
    todo = [loop.target]
    while todo:
        t = todo.pop()
        if isinstance(t, cst.Name):
            b = binding_of(ctx.ix, t)
            if b is not None:
                out.add(b)
        elif isinstance(t, (cst.Tuple, cst.List)):
            todo.extend(e.value for e in t.elements)
    return out
