"""Hand-written AMP in the loop (autocast blocks, a GradScaler) becomes the Trainer's ``precision``."""

from __future__ import annotations

from collections.abc import Callable

import libcst as cst

from migrator.analysis import Facts
from migrator.analysis import names as N
from migrator.module_form.names import usage
from migrator.module_form.shape import NoFit
from migrator.rules._util import find_arg

_PLAIN = '"32-true"'


def uses_amp(facts: Facts) -> bool:
    return any((facts.ix.call_qname(c) or "") in N.AUTOCAST or (facts.ix.call_qname(c) or "") in N.GRAD_SCALER
               for c in facts.ix.calls)


def strip_amp(facts: Facts) -> tuple[cst.Module, str | None]:
    """The file without its AMP (autocast blocks of the batch loops dedented, the GradScaler's
    construction, ``update()`` and ``unscale_(opt)`` removed, ``scaler.scale(loss).backward()``
    -> ``loss.backward()``, ``scaler.step(opt)`` -> ``opt.step()``) and the Trainer's
    ``precision`` code: what MIG205 records for the wrapper form, and for ``enabled=<expr>``
    ``"16-mixed" if <expr> ... else "32-true"`` when ``<expr>`` keeps its value over the loop.
    ``None`` when the autocast is always off. Anything else raises ``NoFit`` (MIG507)."""
    ix = facts.ix
    unwrap: set[int] = set()
    precisions: dict[str, cst.CSTNode] = {}
    handled: set[int] = set()
    for w in ix.withs:
        amp = [i.item for i in w.items if isinstance(i.item, cst.Call) and (ix.call_qname(i.item) or "") in N.AUTOCAST]
        if not amp:
            continue
        if len(w.items) != 1 or w.items[0].asname is not None:
            raise NoFit("MIG507", w, "an autocast block that also enters other contexts or binds a name: "
                        "the Trainer's precision cannot replace it")
        loops = ix.loops_around(w)
        if not loops or not isinstance(loops[0], cst.For) or not isinstance(ix.parent.get(ix.parent.get(w)), cst.For):
            raise NoFit("MIG507", w, "an autocast block that is not a statement of a batch loop's body: "
                        "the Trainer's precision covers the training and validation steps only")
        precisions.setdefault(_precision(facts, amp[0]), w)
        unwrap.add(id(w))
        handled.add(id(amp[0]))
    removed: set[int] = set()
    replaced: dict[int, Callable] = {}
    for b, assign in facts.scaler_bindings.items():
        stmt = ix.statement(assign)
        if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1):
            raise NoFit("MIG507", assign, "the GradScaler is not created by a statement of its own")
        removed.add(id(stmt))
        handled.add(id(assign.value))
        for ref in facts.refs(b):
            attr, call = ix.parent.get(ref), ix.parent.get(ix.parent.get(ref))
            method = attr.attr.value if isinstance(attr, cst.Attribute) and attr.value is ref else None
            if not (isinstance(call, cst.Call) and call.func is attr):
                raise NoFit("MIG507", ref, "the GradScaler is used other than through scale/step/update/unscale_ "
                            "calls (e.g. saved in a checkpoint): the Trainer's precision owns the scaler")
            small = ix.small_statement(call)
            alone = isinstance(small, cst.Expr) and small.value is call and len(ix.statement(call).body) == 1
            if method == "scale" and any(bk.scaled and bk.call.func.value is call for bk in facts.backwards):
                replaced[id(call)] = lambda new: new.args[0].value
            elif method == "step" and len(call.args) == 1 and alone:
                replaced[id(call)] = lambda new: cst.Call(func=cst.Attribute(new.args[0].value, cst.Name("step")))
            elif method in ("update", "unscale_") and alone:
                removed.add(id(ix.statement(call)))
            elif method in ("state_dict", "load_state_dict"):
                raise NoFit("MIG507", call, f"`{ix.code(call)}`: the script saves/restores the GradScaler in its own "
                            "checkpoint/resume code, which the Trainer's checkpoints (ckpt_path=\"last\") replace: "
                            "port that code to the Trainer by hand")
            else:
                raise NoFit("MIG507", call, f"`{ix.code(call)}`: the Trainer's precision has no equivalent "
                            "(only scale(loss).backward(), step(opt), update() and unscale_(opt) before clipping convert)")
    for call in ix.calls:
        if id(call) not in handled and (ix.call_qname(call) or "") in (*N.AUTOCAST, *N.GRAD_SCALER):
            raise NoFit("MIG507", call, f"`{ix.code(call)}` outside an autocast block or a GradScaler assignment: "
                        "it cannot become the Trainer's precision")
    if len(precisions) > 1:
        raise NoFit("MIG507", list(precisions.values())[1], "autocast blocks with different precisions: "
                    "the Trainer has one precision")
    precision = next(iter(precisions), None)
    if precision is not None:
        _computable(facts, precisions[precision], precision)
    module = ix.module.visit(_Strip(unwrap, removed, replaced))
    return module, (None if precision == _PLAIN else precision)


def _precision(facts: Facts, call: cst.Call) -> str:
    """The Trainer's precision for one autocast call (MIG205's choice, plus ``enabled=<expr>``)."""
    from migrator.rules.precision_amp import autocast_precision, enabled_on_cuda_only

    ix = facts.ix
    enabled = find_arg(call, 99, "enabled")
    text = ix.code(enabled.value) if enabled is not None else "True"
    if text == "False":
        return _PLAIN
    if text == "True" or enabled_on_cuda_only(ix, facts, enabled.value):
        always = call
    else:
        always = call.with_changes(args=[a for a in call.args if a is not enabled])
    mixed, _ = autocast_precision(ix, facts, always)
    if always is call:
        return mixed
    cond = text if isinstance(enabled.value, (cst.Name, cst.Attribute)) else f"({text})"
    if " if " not in mixed:  # a literal: autocast on the CPU
        return f"{mixed} if {cond} else {_PLAIN}"
    value, _, rest = mixed.partition(" if ")
    cuda, _, _ = rest.partition(" else ")
    return f"{value} if {cond} and {cuda} else {_PLAIN}"


def _computable(facts: Facts, block: cst.With, precision: str) -> None:
    """The precision's names must have their value before the loop: bound outside it, in the
    function holding the loop (not in a helper function the loop calls)."""
    ix = facts.ix
    loads = set(usage([cst.parse_expression(precision)]).loads) - {"torch"}
    if not loads:
        return
    epoch = ix.loops_around(block)[-1]
    if ix.function_of(block) is not ix.function_of(epoch):
        raise NoFit("MIG507", block, f"the autocast switch ({', '.join(sorted(loads))}) is read in a helper function: "
                    "it cannot be evaluated where the Trainer is created")
    changed = loads & set(usage([epoch]).stores)
    if changed:
        raise NoFit("MIG507", block, f"the autocast switch reads {', '.join(sorted(changed))}, which the loop changes: "
                    "the Trainer's precision is fixed when it is created")


class _Strip(cst.CSTTransformer):
    """Dedent the autocast blocks, remove the scaler's statements, unwrap its calls (by identity)."""

    def __init__(self, unwrap: set[int], removed: set[int], replaced: dict[int, Callable]) -> None:
        self.unwrap, self.removed, self.replaced = unwrap, removed, replaced

    def on_leave(self, original: cst.CSTNode, updated: cst.CSTNode):
        key = id(original)
        if key in self.removed:
            return cst.RemoveFromParent()
        if key in self.unwrap:
            body = list(updated.body.body)
            body[0] = body[0].with_changes(leading_lines=[*updated.leading_lines, *body[0].leading_lines])
            return cst.FlattenSentinel(body)
        if key in self.replaced:
            return self.replaced[key](updated)
        return updated
