"""MIG205: autocast and GradScaler removed; the precision they enabled becomes the wrapper's default."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.analysis import names as N
from migrator.analysis.flow import lookup
from migrator.plan import PlanContext
from migrator.rules._util import find_arg
from migrator.rules.base import Rule

_SCALER_DROP = {"update", "unscale_"}


class AmpRule(Rule):
    """Replace hand-written AMP with the wrapper's precision.

    **What**: `with torch.autocast(...)` / `torch.cuda.amp.autocast()` / `torch.amp.autocast`
    blocks are dedented (the set-up model runs its forward under the wrapper's autocast);
    `scaler = GradScaler()` is removed with `scaler.update()` / `scaler.unscale_(opt)`;
    `scaler.step(opt)` becomes `opt.step()`; `scaler.scale(loss).backward()` becomes
    `rt.backward(loss)` (MIG204). The precision becomes the wrapper's default:
    `Runtime(precision="16-mixed" if torch.cuda.is_available() else "32-true")` when autocast
    only ran on CUDA, so a CPU run prints what it printed before. An `enabled=<expr>` switch
    cannot be evaluated at import time: the wrapper stays at 32-true and the finding says to
    pass `--precision 16-mixed` to the launcher instead. What a `# migrate: ignore[MIG205]`
    keeps stays whole: a suppressed autocast sets no precision and keeps its import; a kept
    GradScaler keeps the loss scaled (`rt.backward(scaler.scale(loss))`, MIG204).

    **Why**: scaling twice (a GradScaler plus the wrapper's) corrupts gradients; autocast must
    match the strategy's precision plugin.

    **Before**: `with torch.autocast("cuda"): loss = model(x)`  **After**: `loss = model(x)`
    """

    code = "MIG205"
    anchors = A.Ident("autocast", "GradScaler")
    name = "amp"
    summary = "Remove autocast/GradScaler: the wrapper's precision does it (no double scaling)"

    def plan(self, ctx: PlanContext) -> None:
        # (subtree that disappears, the node whose edit removes it): for the import usage check
        dead: list[tuple[cst.CSTNode, cst.CSTNode]] = []
        for w in ctx.ix.withs:
            calls = [i.item for i in w.items if isinstance(i.item, cst.Call)]
            amp = [c for c in calls if ctx.ix.call_qname(c) in N.AUTOCAST]
            if not amp or len(w.items) != 1:
                continue
            precision, note = autocast_precision(ctx.ix, ctx.facts, amp[0])
            change = ctx.finding(self.code, w, f"remove autocast: the wrapper's precision applies it{note}")
            change.unwrap(w)
            if precision is not None:
                change.set_wrapper_arg("precision", precision)
            dead.append((w.items[0], w))
        for b, assign in ctx.facts.scaler_bindings.items():
            self._scaler(ctx, b, assign, dead)
        if dead:
            self._drop_imports(ctx, dead)

    def _scaler(self, ctx, binding, assign: cst.Assign, dead: list) -> None:
        ix = ctx.ix
        edits = []
        scaled = []  # backwards MIG204 rewrites without the scaler: this removal needs them
        for ref in ctx.facts.refs(binding):
            attr = ix.parent.get(ref)
            call = ix.parent.get(attr)
            if not (isinstance(attr, cst.Attribute) and isinstance(call, cst.Call) and call.func is attr):
                msg = "GradScaler used in a way the wrapper cannot replace: port it by hand"
                ctx.finding(self.code, ref, msg, fixed=False)
                return
            method = attr.attr.value
            small = ix.small_statement(call)
            backward = next((b.call for b in ctx.facts.backwards if b.call.func.value is call), None)
            if method == "scale" and backward is not None:
                scaled.append(backward)
                continue
            if method in _SCALER_DROP | {"load_state_dict"} and isinstance(small, cst.Expr) and small.value is call:
                edits.append(("remove", small))
            elif method == "state_dict" and not call.args:
                edits.append(("replace", call, cst.parse_expression("{}")))
            elif method == "step" and len(call.args) == 1:
                opt = ix.code(call.args[0].value)
                edits.append(("replace", call, cst.parse_expression(f"{opt}.step()")))
            else:
                ctx.finding(self.code, call, f"scaler.{method}(...) has no wrapper equivalent: port it by hand", fixed=False)
                return
        change = ctx.finding(self.code, assign, "remove the GradScaler: the wrapper's precision scales the loss")
        change.remove(assign)
        change.require(*scaled)
        dead.append((assign, assign))
        for e in edits:
            if e[0] == "remove":
                change.remove(e[1])
            else:
                change.replace(e[1], e[2])

    def _drop_imports(self, ctx, dead: list) -> None:
        """Drop an AMP import once every use of it vanishes, and only while the changes that
        remove those uses are kept (a suppressed autocast keeps its import)."""
        ix = ctx.ix
        module_scope = ix.scopes.get(ix.module)
        for node in ix.imports:
            if not isinstance(node, cst.ImportFrom) or isinstance(node.names, cst.ImportStar):
                continue
            if node.module is None:  # `from . import x`: never torch's AMP
                continue
            for alias in node.names:
                name = alias.evaluated_alias or alias.evaluated_name
                if ix.imported_qname(alias.name) not in (*N.AUTOCAST, *N.GRAD_SCALER) and not (
                    f"{ix.code(node.module)}.{alias.evaluated_name}" in (*N.AUTOCAST, *N.GRAD_SCALER)
                ):
                    continue
                refs = [
                    r.node
                    for a in lookup(module_scope.assignments, name)
                    for r in a.references
                ]
                owners = [next((e for d, e in dead if ix.inside(r, d)), None) for r in refs]
                if None in owners:
                    continue
                # an import nothing uses goes with the rule's rewrites, all of them
                ctx.part(self.code, alias).drop_import(alias).require(*(owners or [e for _, e in dead]))


def autocast_precision(ix, facts, call: cst.Call) -> tuple[str | None, str]:
    """The precision MIG205 records for one autocast call (None: keep 32-true) and a note."""
    q = ix.call_qname(call)
    enabled = find_arg(call, 99, "enabled")
    if enabled is not None and ix.code(enabled.value) == "False":
        return None, ""
    if enabled is not None and ix.code(enabled.value) != "True" and not enabled_on_cuda_only(ix, facts, enabled.value):
        switch = ix.code(enabled.value)
        return None, f"; it was switched by {switch}: launch with --precision 16-mixed when that is on"
    dtype_arg = find_arg(call, 99, "dtype")
    dtype = ix.imported_qname(dtype_arg.value) if dtype_arg is not None else None
    dev_arg = find_arg(call, 0, "device_type") if N.AUTOCAST[q] is None else None
    device = N.AUTOCAST[q] or (
        dev_arg.value.evaluated_value
        if dev_arg is not None and isinstance(dev_arg.value, cst.SimpleString)
        else "cuda"
    )
    if dtype == "torch.bfloat16" or (dtype is None and device == "cpu"):
        mixed = "bf16-mixed"
    else:
        mixed = "16-mixed"
    if device == "cpu":
        return f'"{mixed}"', f" ({mixed})"
    return f'"{mixed}" if torch.cuda.is_available() else "32-true"', f" ({mixed} on CUDA)"


def enabled_on_cuda_only(ix, facts, expr) -> bool:
    """``enabled=use_amp`` where ``use_amp = device.type == "cuda"`` (or is_available())."""
    from migrator.analysis.flow import binding_of

    if not isinstance(expr, cst.Name):
        return False
    assigns = facts.assignments_of(binding_of(ix, expr))
    if len(assigns) != 1:
        return False
    text = ix.code(assigns[0].value)
    return text.replace("'", '"').endswith('.type == "cuda"') or text == "torch.cuda.is_available()"
