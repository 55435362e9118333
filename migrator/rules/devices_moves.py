"""MIG102/MIG103/MIG104: model and batch moves removed; other hard-coded CUDA uses follow the wrapper."""

from __future__ import annotations

import libcst as cst

from migrator.analysis import names as N
from migrator.analysis.flow import binding_of
from migrator.plan import PlanContext
from migrator.rules._setup import batch_names, model_moves
from migrator.rules.base import Rule


def _strip(updated: cst.Call) -> cst.BaseExpression:
    return updated.func.value


def _root(expr: cst.BaseExpression) -> cst.BaseExpression:
    while isinstance(expr, (cst.Attribute, cst.Subscript)):
        expr = expr.value
    return expr


def will_set_up(ctx, loader) -> bool:
    """The loader goes through the wrapper for this target (some keep evaluation loaders as written)."""
    return not loader.evaluation or ctx.vocab.setup_eval_dataloaders is not None


def batch_moves(ctx) -> dict[cst.CSTNode, cst.CSTNode]:
    """Moves of batches from loaders that go through setup (which moves them): call -> loop.
    A ``{k: v.to(device) for k, v in batch.items()}`` comprehension maps to itself."""
    out: dict[cst.CSTNode, cst.CSTNode] = {}
    ix = ctx.ix
    for loader in ctx.facts.loaders:
        if not loader.set_up and (loader.target is None or not will_set_up(ctx, loader)):
            continue
        for loop in loader.loops:
            names = batch_names(ctx, loop)
            for call in ctx.facts.moves:
                if ctx.facts.move_kind(call) == "cpu" or not ix.inside(call, loop.body):
                    continue
                root = _root(call.func.value)
                if isinstance(root, cst.Name) and binding_of(ix, root) in names:
                    out[call] = loop
                comp = _dict_comp(ix, call)
                if comp is not None and binding_of(ix, comp.for_in.iter.func.value) in names:
                    out[comp] = loop
    return out


def _dict_comp(ix, call: cst.Call) -> cst.DictComp | None:
    """``{k: v.to(d) for k, v in batch.items()}`` when ``call`` is that ``v.to(d)``."""
    comp = ix.parent.get(call)
    if not isinstance(comp, cst.DictComp) or comp.value is not call or comp.for_in.inner_for_in:
        return None
    t, it = comp.for_in.target, comp.for_in.iter
    if not (isinstance(t, cst.Tuple) and len(t.elements) == 2 and isinstance(it, cst.Call)):
        return None
    ok_iter = isinstance(it.func, cst.Attribute) and it.func.attr.value == "items" and not it.args
    key, val = (e.value for e in t.elements)
    same = comp.key.deep_equals(key) and call.func.value.deep_equals(val)
    return comp if ok_iter and same and isinstance(it.func.value, cst.Name) else None


class ModelMoveRule(Rule):
    """Remove device moves of models that go through setup.

    **What**: `model = Net().to(device)` becomes `model = Net()`; `model.cuda()`,
    `model.to(device)` and `model = model.to(device)` before the setup point are removed
    (an `if cuda:` block left empty goes too).

    **Why**: setup moves the model to the right device for each process.

    **Before**: `model = Net().to(device)`  **After**: `model = Net()`
    """

    code = "MIG102"
    name = "model-move"
    summary = "Remove .to(device)/.cuda() on models: setup moves them"

    def plan(self, ctx: PlanContext) -> None:
        for call, m in model_moves(ctx).items():
            change = ctx.finding(self.code, call, f"remove the move of {ctx.ix.code(m.expr)}: setup moves the model")
            small = ctx.ix.small_statement(call)
            if isinstance(small, cst.Expr) and small.value is call:
                change.remove(small)
            else:
                change.replace(call, _strip)


class BatchMoveRule(Rule):
    """Remove device moves of batches that come from a set-up loader.

    **What**: in a loop over a loader that goes through `setup_dataloaders`,
    `data, target = data.to(device), target.to(device)` disappears, `x = batch[0].cuda()`
    becomes `x = batch[0]` and `{k: v.to(device) for k, v in batch.items()}` becomes `batch`.
    Moves of other tensors are kept (they follow `device`, now the wrapper's device).

    **Why**: the set-up loader already yields batches on the process's device.

    **Before**: `data, target = data.to(device), target.to(device)`  **After**: (removed)
    """

    code = "MIG103"
    name = "batch-move"
    summary = "Remove .to(device) on batches from a set-up loader: it moves them"

    def plan(self, ctx: PlanContext) -> None:
        for node in batch_moves(ctx):
            change = ctx.finding(self.code, node, "remove the batch move: the set-up loader yields batches on the device")
            if isinstance(node, cst.DictComp):
                change.replace(node, cst.parse_expression(ctx.ix.code(node.for_in.iter.func.value)))
            else:
                change.replace(node, _strip)


class HardCodedDeviceRule(Rule):
    """Point hard-coded CUDA uses at the wrapper's device.

    **What**: `.cuda()` on tensors and helper modules that are not set up becomes
    `.to(rt.device)`; `device="cuda"` / `.to("cuda:0")` literals become `rt.device`;
    `torch.cuda.set_device(...)` is removed (the launcher assigns devices).

    **Why**: with N processes, `"cuda"` means GPU 0 for every process.

    **Before**: `vgg = VGG().cuda()`  **After**: `vgg = VGG().to(rt.device)`
    """

    code = "MIG104"
    name = "hard-coded-device"
    summary = "Use the wrapper's device instead of hard-coded CUDA devices"

    def plan(self, ctx: PlanContext) -> None:
        ix, facts = ctx.ix, ctx.facts
        handled = set(model_moves(ctx)) | set(batch_moves(ctx))
        for call in facts.moves:
            if call in handled or facts.move_kind(call) != "cuda":
                continue
            change = ctx.finding(self.code, call, "")
            dev = change.code_text(ctx.vocab.device)
            change.replace(call, lambda u, dev=dev: _cuda_to(u, dev))
            change.message = f"use the wrapper's device: .to({dev}) instead of .cuda()"
        for call in ix.calls:
            for arg in call.args:
                if self._literal_device(arg, call, facts) and call not in handled:
                    change = ctx.finding(self.code, arg.value, "")
                    dev = change.code_text(ctx.vocab.device)
                    change.replace(arg.value, cst.parse_expression(dev))
                    change.message = f"use the wrapper's device ({dev}) instead of a hard-coded one"
            if ix.call_qname(call) in N.SET_DEVICE:
                small = ix.small_statement(call)
                if isinstance(small, cst.Expr) and small.value is call:
                    ctx.finding(self.code, call, "remove torch.cuda.set_device: the launcher assigns each process its device").remove(small)

    @staticmethod
    def _literal_device(arg: cst.Arg, call: cst.Call, facts) -> bool:
        v = arg.value
        literal = isinstance(v, cst.SimpleString) or (isinstance(v, cst.Call) and facts.ix.call_qname(v) == N.DEVICE_CTOR)
        if not literal or not facts.is_device_value(v) or "cuda" not in facts.ix.code(v):
            return False  # an explicit "cpu" is deliberate (CPU-side buffers, map_location)
        if arg.keyword is not None:
            return arg.keyword.value == "device" and facts.ix.call_qname(call) != N.DEVICE_CTOR
        f = call.func
        return isinstance(f, cst.Attribute) and f.attr.value == "to" and call.args[0] is arg and facts.ix.imported_qname(f) is None


def _cuda_to(updated: cst.Call, device: str) -> cst.Call:
    """``x.cuda(0, non_blocking=True)`` -> ``x.to(<device>, non_blocking=True)``."""
    keep = [a for a in updated.args if a.keyword is not None and a.keyword.value == "non_blocking"]
    args = [cst.Arg(cst.parse_expression(device)), *keep]
    args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    if len(args) > 1:
        args[0] = args[0].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    return updated.with_changes(func=updated.func.with_changes(attr=cst.Name("to")), args=args)
