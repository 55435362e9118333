"""MIG102/MIG103/MIG104: model and batch moves removed; other hard-coded CUDA uses follow the wrapper."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.analysis import names as N
from migrator.analysis.facts import ModelFact
from migrator.analysis.flow import binding_of
from migrator.plan import PlanContext
from migrator.rules._setup import already_set_up, batch_names, model_moves, setup_anchor
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


# Uses of a model that neither run it nor need it on a device: the model may stay on the CPU
# until setup moves it. Anything else between a move and the setup point (a call, an
# evaluation function it is passed to) runs it, on data already on the device.
_HARMLESS_METHODS = {
    "parameters", "named_parameters", "buffers", "named_buffers", "modules", "named_modules",
    "children", "named_children", "train", "eval", "load_state_dict", "state_dict", "apply",
    "to", "cuda", "cpu", "zero_grad", "requires_grad_", "register_buffer", "float", "double",
    "half", "bfloat16", "share_memory",
}
_HARMLESS_CALLS = {"print", "len", "isinstance", "id", "type", "repr", "str", "hasattr"}


def removable_model_moves(ctx) -> dict[cst.Call, object]:
    """The model moves setup makes redundant, less those the model needs before setup runs:
    ``model = Net().to(device)`` then ``if args.evaluate: test(model, ...); return`` before the
    optimizer is built keeps its move (the evaluation would run a CPU model on device batches)."""
    out = {}
    for call, m in model_moves(ctx).items():
        anchor = setup_anchor(ctx, m)
        if anchor is None or not _used_before_setup(ctx, m, call, anchor):
            out[call] = m
    return out


def _used_before_setup(ctx, m, move: cst.Call, anchor: cst.CSTNode) -> bool:
    ix = ctx.ix
    fn = ix.function_of(anchor)
    optimizers = [o.stmt for o in m.optimizers]
    for ref in m.refs:
        if ix.function_of(ref) is not fn or not ix.order(move) < ix.order(ref) < ix.order(anchor):
            continue
        if ix.inside(ref, ix.statement(move)) or any(ix.inside(ref, o) for o in optimizers):
            continue
        if not _harmless_use(ctx, ref):
            return True
    return False


def _harmless_use(ctx, ref: cst.CSTNode) -> bool:
    ix = ctx.ix
    parent = ix.parent.get(ref)
    if isinstance(parent, cst.Attribute) and parent.value is ref:
        call = ix.parent.get(parent)
        return isinstance(call, cst.Call) and call.func is parent and parent.attr.value in _HARMLESS_METHODS
    if isinstance(parent, cst.Arg):
        call = ix.parent.get(parent)
        f = call.func if isinstance(call, cst.Call) else None
        if f is not None and ix.call_qname(call) in N.DATA_PARALLEL:  # MIG208 removes the wrap
            return True
        builtin = isinstance(f, cst.Name) and ix.imported_qname(f) in (None, f"builtins.{f.value}")
        return builtin and f.value in _HARMLESS_CALLS
    return False


class ModelMoveRule(Rule):
    """Remove device moves of models that go through setup.

    **What**: `model = Net().to(device)` becomes `model = Net()`; `model.cuda()`,
    `model.to(device)` and `model = model.to(device)` before the setup point are removed
    (an `if cuda:` block left empty goes too).

    A move the model needs before setup runs stays (`model = Net().to(device)` followed by
    `if args.evaluate: test(model, test_loader); return` ahead of the optimizer: that path
    evaluates on device batches). A CPU tensor the script makes and feeds to the set-up model
    (`state = torch.tensor(obs).unsqueeze(0); probs = policy(state)`) moves to the device
    with it: `policy(state.to(rt.device))`. So does one handed to a loss beside the model's
    output (`F.smooth_l1_loss(value, torch.tensor([R], device=rt.device))`, `criterion(out,
    target.to(rt.device))`), found through closures, globals and what the file's own functions
    return (`x, y = get_batch()`); and a tensor the model's `forward` makes without a device
    takes its input's (`h = torch.zeros(input.size(0), 51, device=input.device)`). The model's
    output reaches numpy through the CPU: `pred.detach().cpu().numpy()`.

    **Why**: setup moves the model to the right device for each process; its inputs must be
    there too (the original ran on the CPU, or DataParallel copied its inputs).

    **Before**: `model = Net().to(device)`  **After**: `model = Net()`
    """

    code = "MIG102"
    anchors = A.MODELS
    name = "model-move"
    summary = "Remove .to(device)/.cuda() on models: setup moves them"

    def plan(self, ctx: PlanContext) -> None:
        for call, m in removable_model_moves(ctx).items():
            change = ctx.finding(self.code, call, f"remove the move of {ctx.ix.code(m.expr)}: setup moves the model")
            small = ctx.ix.small_statement(call)
            if isinstance(small, cst.Expr) and small.value is call:
                change.remove(small)
            else:
                change.replace(call, _strip)
        pending = pending_setups(ctx)
        for arg, anchor, fed in model_inputs(ctx, pending):
            change = ctx.finding(self.code, arg, "")
            dev = change.code_text(ctx.vocab.device)
            change.replace(arg, _on_device(ctx, arg, dev))
            change.require(anchor)  # the set-up model is on the device only where setup runs
            change.message = (
                f"make the CPU tensor fed to {fed} on its device: "
                + (f"device={dev}" if _takes_device(ctx, arg) else f"{ctx.ix.code(arg)}.to({dev})")
            )
        for call, anchor in output_to_numpy(ctx, pending):
            change = ctx.finding(
                self.code, call,
                f"bring the set-up model's output to the CPU first: "
                f"{ctx.ix.code(call.func.value)}.cpu().numpy() (numpy() of a GPU tensor raises)",
            )
            change.replace(call, _cpu_then_numpy)
            change.require(anchor)
        for call, tensor, anchor in forward_factories(ctx, pending):
            dev = f"{tensor}.device"
            change = ctx.finding(
                self.code, call,
                f"make the tensor forward() creates on its input's device (device={dev}): "
                "the set-up model runs on the process's device",
            )
            change.replace(call, _on_device(ctx, call, dev))
            change.require(anchor)


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
    anchors = A.LOADER
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
    # text: "cuda" anywhere; code: .cuda(), set_device, "cuda..." literals, torch.device(<cuda>)
    anchors = A.Custom(
        text=A.text("cuda"),
        code=A.Any(A.Call("cuda", "set_device"), A.Str("cuda"), A.All(A.Call("device"), A.Part("cuda"))),
    )
    name = "hard-coded-device"
    summary = "Use the wrapper's device instead of hard-coded CUDA devices"

    def plan(self, ctx: PlanContext) -> None:
        ix, facts = ctx.ix, ctx.facts
        handled = set(removable_model_moves(ctx)) | set(batch_moves(ctx))
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


# torch factories that make a CPU tensor unless given ``device=`` (``from_numpy`` always does)
_FACTORIES = {
    f"torch.{n}" for n in (
        "tensor", "as_tensor", "from_numpy", "Tensor", "FloatTensor", "DoubleTensor", "LongTensor",
        "IntTensor", "BoolTensor", "ByteTensor", "zeros", "ones", "rand", "randn", "randint", "full",
        "arange", "empty", "linspace", "eye",
    )
}
# methods whose result stays on the receiver's device
_SAME_DEVICE = {
    "unsqueeze", "squeeze", "view", "reshape", "float", "double", "long", "int", "half", "bool",
    "flatten", "permute", "transpose", "t", "contiguous", "clone", "detach", "expand", "repeat", "cpu",
}


_DEVICE_KEYWORD = _FACTORIES - {f"torch.{n}" for n in ("from_numpy", "Tensor")} - {
    q for q in _FACTORIES if q.endswith("Tensor")
}


def _takes_device(ctx, expr: cst.BaseExpression) -> bool:
    """A factory call that accepts ``device=`` (``torch.ones(1, 2)``)."""
    return isinstance(expr, cst.Call) and ctx.ix.call_qname(expr) in _DEVICE_KEYWORD


def _on_device(ctx, original: cst.BaseExpression, dev: str):
    """``torch.ones(1, 2)`` -> ``torch.ones(1, 2, device=<dev>)``; ``x`` -> ``x.to(<dev>)``."""
    device = cst.parse_expression(dev)

    def render(updated):
        if _takes_device(ctx, original):
            args = list(updated.args)
            if args:
                args[-1] = args[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
            tight = cst.AssignEqual(
                whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
            )
            return updated.with_changes(args=[*args, cst.Arg(device, keyword=cst.Name("device"), equal=tight)])
        return cst.Call(func=cst.Attribute(value=updated, attr=cst.Name("to")), args=[cst.Arg(device)])

    return render


def pending_setups(ctx) -> list[tuple[ModelFact, cst.CSTNode]]:
    """Each model the migration sets up (not set up already, and with a place for its setup),
    with that setup anchor: what the device planners below start from."""
    out = []
    for m in ctx.facts.models:
        if not already_set_up(ctx, m):
            anchor = setup_anchor(ctx, m)
            if anchor is not None:
                out.append((m, anchor))
    return out


def model_inputs(ctx, pending) -> list[tuple[cst.BaseExpression, cst.CSTNode, str]]:
    """Arguments of calls to a set-up model that are CPU tensors the script made (``state =
    torch.tensor(obs).unsqueeze(0); probs = policy(state)``), each with its model's setup
    anchor. The original model ran on the CPU (a script that never chose a device) or
    received them under DataParallel; the set-up model sits on the process's device."""
    ix = ctx.ix
    out = []
    for m, anchor in pending:
        fn = ix.function_of(anchor)
        for ref in m.refs:
            call = ix.parent.get(ref)
            if not (isinstance(call, cst.Call) and call.func is ref):
                continue
            if ix.function_of(call) is fn and ix.order(call) < ix.order(anchor):
                continue  # runs before setup: the model is where the script put it
            for arg in call.args:
                if not arg.star and _cpu_tensor(ctx, arg.value, call, 0):
                    out.append((arg.value, anchor, "the set-up model"))
    if pending:
        anchor = pending[0][1]
        seen = {id(arg) for arg, _, _ in out}
        out += [(arg, anchor, "a loss beside the set-up model's output")
                for arg in loss_inputs(ctx, anchor) if id(arg) not in seen]
    return out


_LOSS_FUNCTIONS = {
    "cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "kl_div", "poisson_nll_loss", "gaussian_nll_loss", "ctc_loss", "hinge_embedding_loss",
}


def _is_loss(ctx, call: cst.Call) -> bool:
    """``F.smooth_l1_loss(...)``, ``F.cross_entropy(...)`` or ``criterion(...)`` with
    ``criterion = nn.MSELoss()`` (found through the scopes that can see it)."""
    q = ctx.ix.call_qname(call) or ""
    if q.startswith("torch.nn.functional."):
        name = q.rsplit(".", 1)[1]
        return name.endswith("_loss") or name in _LOSS_FUNCTIONS
    if isinstance(call.func, cst.Name):
        assign = _reaching_assign(ctx, call.func, call, outer=True)
        if assign is not None and isinstance(assign.value, cst.Call):
            made = ctx.ix.call_qname(assign.value) or ""
            return made.startswith("torch.nn.") and made.endswith("Loss")
    return False


def loss_inputs(ctx, anchor: cst.CSTNode) -> list[cst.BaseExpression]:
    """CPU tensors the script makes and hands to a loss beside the set-up model's output
    (``F.smooth_l1_loss(value, torch.tensor([R]))``, ``criterion(out, target)`` with ``target =
    torch.from_numpy(...)``): the original ran on the CPU; the output is now on the device.
    A loss all of whose tensors are the script's CPU tensors is left alone."""
    ix = ctx.ix
    out = []
    fn = ix.function_of(anchor)
    for call in ix.calls:
        if not call.args or not _is_loss(ctx, call):
            continue
        if ix.function_of(call) is fn and ix.order(call) < ix.order(anchor):
            continue  # runs before setup: the model is where the script put it
        values = [a.value for a in call.args if not a.star and a.keyword is None]
        cpu = [v for v in values if _cpu_tensor(ctx, v, call, 0)]
        if cpu and len(cpu) < len(values):
            out.extend(cpu)
    return out


def output_to_numpy(ctx, pending) -> list[tuple[cst.Call, cst.CSTNode]]:
    """``.numpy()`` of the set-up model's output with no ``.cpu()`` before it (``y =
    pred.detach().numpy()`` with ``pred = seq(x)``), each with the model's setup anchor: fine
    where the model ran on the CPU, a TypeError on a GPU."""
    ix = ctx.ix
    calls = {}
    for m, anchor in pending:
        for ref in m.refs:
            call = ix.parent.get(ref)
            if isinstance(call, cst.Call) and call.func is ref:
                calls[call] = anchor
    out = []
    if not calls:
        return out
    fn_of = ix.function_of
    for call in ix.calls:
        f = call.func
        if not (isinstance(f, cst.Attribute) and f.attr.value == "numpy" and not call.args):
            continue
        made = _model_call(ctx, f.value, call, calls, 0)
        if made is None:
            continue
        anchor = calls[made]
        if fn_of(call) is fn_of(anchor) and ix.order(call) < ix.order(anchor):
            continue  # before setup: the model is where the script put it
        out.append((call, anchor))
    return out


def _model_call(ctx, expr, at, calls: dict, depth: int) -> cst.Call | None:
    """The set-up model's call ``expr`` is the output of (through tensor methods other than
    ``.cpu()``, subscripts and a plain assignment in the same function), None otherwise."""
    if depth > 6:
        return None
    if isinstance(expr, cst.Call):
        if expr in calls:
            return expr
        f = expr.func
        if isinstance(f, cst.Attribute) and f.attr.value in _TENSOR_METHODS - {"cpu"}:
            return _model_call(ctx, f.value, at, calls, depth + 1)
        return None
    if isinstance(expr, cst.Subscript):
        return _model_call(ctx, expr.value, at, calls, depth + 1)
    if isinstance(expr, cst.Name):
        assign = _reaching_assign(ctx, expr, at)
        if assign is not None and isinstance(assign.targets[0].target, cst.Name):
            return _model_call(ctx, assign.value, assign, calls, depth + 1)
    return None


def _cpu_then_numpy(updated: cst.Call) -> cst.Call:
    """``x.numpy()`` -> ``x.cpu().numpy()``."""
    inner = updated.func.value
    moved = cst.Call(func=cst.Attribute(value=inner, attr=cst.Name("cpu")))
    return updated.with_changes(func=updated.func.with_changes(value=moved))


_TENSOR_USES = {"size", "shape", "split", "dim", "view", "reshape", "unsqueeze", "dtype", "device", "chunk"}


def forward_factories(ctx, pending) -> list[tuple[cst.Call, str, cst.CSTNode]]:
    """Tensors a set-up model's ``forward`` makes without a device (``h_t = torch.zeros(
    input.size(0), 51)``), each with the forward parameter whose device they must share and
    the model's setup anchor. The original model ran on the CPU; the set-up one runs on the
    process's device."""
    ix = ctx.ix
    out = []
    for m, anchor in pending:
        if m.class_def is None:
            continue
        for stmt in m.class_def.body.body:
            if not (isinstance(stmt, cst.FunctionDef) and stmt.name.value == "forward"):
                continue
            tensor = _tensor_param(ix, stmt)
            if tensor is None:
                continue
            for call in ix.subtree(stmt, cst.Call):
                if (ix.call_qname(call) in _DEVICE_KEYWORD and ix.function_of(call) is stmt
                        and not any(a.keyword is not None and a.keyword.value == "device" for a in call.args)):
                    out.append((call, tensor, anchor))
    return out


def _tensor_param(ix, fn: cst.FunctionDef) -> str | None:
    """The first parameter of ``forward`` (after self) that its body uses as a tensor
    (``input.size(0)``, ``x.shape``, ``input.split(1, dim=1)``) and never rebinds."""
    params = [p.name.value for p in fn.params.params[1:]]
    stored = set()
    for node in ix.within(fn, ix.assigns):
        stored |= _stored_names(node)
    for loop in ix.loops:
        if ix.inside(loop, fn):
            stored |= _stored_names(loop)
    for name in params:
        if name in stored:
            continue
        for attr in ix.subtree(fn, cst.Attribute):
            if (isinstance(attr.value, cst.Name) and attr.value.value == name
                    and attr.attr.value in _TENSOR_USES):
                return name
    return None


_COMBINE = {"torch.cat", "torch.stack", "torch.hstack", "torch.vstack"}
_TENSOR_METHODS = _SAME_DEVICE | {"mm", "matmul", "pow", "sin", "cos", "exp", "log", "abs", "sum", "mean"}


def _cpu_tensor(ctx, expr: cst.BaseExpression, at: cst.CSTNode, depth: int, call=None) -> bool:
    """``expr`` (read at ``at``) is a tensor the script made on the CPU: a torch factory, an
    op or method of such tensors, or what a function of this file returns from them. ``call``
    is the call of the function ``at`` is in, when it was entered from one (its parameters are
    that call's arguments)."""
    ix = ctx.ix
    if depth > 20:
        return False
    if isinstance(expr, cst.Call):
        q = ix.call_qname(expr)
        if q in _FACTORIES:
            return not any(a.keyword is not None and a.keyword.value == "device" for a in expr.args)
        if q in _COMBINE and expr.args:
            parts = expr.args[0].value
            if isinstance(parts, (cst.List, cst.Tuple)) and parts.elements:
                return all(_cpu_tensor(ctx, e.value, at, depth + 1, call) for e in parts.elements)
            if isinstance(parts, cst.ListComp):
                return _cpu_tensor(ctx, parts.elt, at, depth + 1, call)
            return False
        f = expr.func
        if isinstance(f, cst.Attribute) and f.attr.value in _TENSOR_METHODS:
            return _cpu_tensor(ctx, f.value, at, depth + 1, call)
        ret = _returned(ctx, expr)
        return ret is not None and _cpu_tensor(ctx, ret, ret, depth + 1, expr)
    if isinstance(expr, cst.BinaryOperation):
        return _cpu_tensor(ctx, expr.left, at, depth + 1, call) or (
            isinstance(expr.left, (cst.Integer, cst.Float)) and _cpu_tensor(ctx, expr.right, at, depth + 1, call))
    if isinstance(expr, cst.Subscript):
        return _cpu_tensor(ctx, expr.value, at, depth + 1, call)
    if isinstance(expr, cst.Name):
        assign = _reaching_assign(ctx, expr, at, outer=True)
        if assign is None:
            arg = _argument(ctx, expr, at, call)
            return arg is not None and _cpu_tensor(ctx, arg, call, depth + 1)
        value = assign.value
        target = assign.targets[0].target
        if isinstance(target, cst.Tuple):  # ``x, y = get_batch()``: the matching returned value
            ret = _returned(ctx, value, whole=True) if isinstance(value, cst.Call) else None
            pos = [i for i, e in enumerate(target.elements) if isinstance(e.value, cst.Name) and e.value.value == expr.value]
            if not (isinstance(ret, cst.Tuple) and len(ret.elements) == len(target.elements) and pos):
                return False
            return _cpu_tensor(ctx, ret.elements[pos[0]].value, ret, depth + 1, value)
        return _cpu_tensor(ctx, value, assign, depth + 1, call if ix.function_of(assign) is ix.function_of(at) else None)
    return False


def _local_function(ctx, call: cst.Call) -> cst.FunctionDef | None:
    """The module-level function of this file that ``call`` calls by name."""
    if not isinstance(call.func, cst.Name):
        return None
    found = [f for f in ctx.ix.functions
             if f.name.value == call.func.value and ctx.ix.parent.get(f) is ctx.ix.module]
    return found[0] if len(found) == 1 else None


def _returned(ctx, call: cst.Call, whole: bool = False) -> cst.BaseExpression | None:
    """The one value a local function returns (its only ``return``), None otherwise; a tuple
    only when ``whole``."""
    fn = _local_function(ctx, call)
    if fn is None:
        return None
    rets = [r for r in ctx.ix.subtree(fn, cst.Return) if ctx.ix.function_of(r) is fn]
    if len(rets) != 1 or rets[0].value is None:
        return None
    value = rets[0].value
    return value if whole or not isinstance(value, cst.Tuple) else None


def _argument(ctx, name: cst.Name, at: cst.CSTNode, call) -> cst.BaseExpression | None:
    """The argument ``call`` passes for parameter ``name`` of the function ``at`` is in."""
    if call is None:
        return None
    fn = ctx.ix.function_of(at)
    if fn is None or _local_function(ctx, call) is not fn:
        return None
    params = [p.name.value for p in fn.params.params]
    if name.value not in params:
        return None
    i = params.index(name.value)
    positional = [a for a in call.args if a.keyword is None and not a.star]
    if i < len(positional):
        return positional[i].value
    named = [a.value for a in call.args if a.keyword is not None and a.keyword.value == name.value]
    return named[0] if named else None


def _reaching_assign(ctx, name: cst.Name, at: cst.CSTNode, outer: bool = False) -> cst.Assign | None:
    """The last ``name = ...`` before ``at`` in its function, on every path to it (its block
    holds ``at``), with no other store of the name in between. With ``outer``, a name the
    function never binds is looked up where the function is defined (a closure or a global):
    the one assignment there, made before the function is."""
    ix = ctx.ix
    fn = ix.function_of(at)
    if outer and fn is not None and not _binds(ix, fn, name.value):
        return _only_assign(ctx, name, fn)
    best = None
    for node in ix.assigns:
        if ix.function_of(node) is not fn or ix.order(node) >= ix.order(at) or ix.inside(at, node):
            continue
        targets = _stored_names(node)
        if name.value not in targets:
            continue
        best = node if best is None or ix.order(node) > ix.order(best) else best
    plain = isinstance(best, cst.Assign) and len(best.targets) == 1
    if not (plain and isinstance(best.targets[0].target, (cst.Name, cst.Tuple))):
        return None
    if not ix.inside(at, ix.block_of(ix.statement(best))):
        return None
    for loop in ix.loops:  # a loop target rebinding the name between the two
        between = ix.function_of(loop) is fn and ix.order(best) < ix.order(loop) < ix.order(at)
        if between and name.value in _stored_names(loop):
            return None
    return best


def _binds(ix, fn: cst.FunctionDef, name: str) -> bool:
    if name in {p.name.value for p in (*fn.params.params, *fn.params.kwonly_params, *fn.params.posonly_params)}:
        return True
    if any(ix.function_of(n) is fn and name in _stored_names(n) for n in ix.within(fn, ix.assigns)):
        return True
    return any(ix.function_of(n) is fn and name in _stored_names(n) for n in ix.loops if ix.inside(n, fn))


def _only_assign(ctx, name: cst.Name, fn: cst.FunctionDef) -> cst.Assign | None:
    """The single plain ``name = ...`` of the scope that defines ``fn``, before ``fn``."""
    ix = ctx.ix
    home = ix.function_of(fn)
    stores = [n for n in ix.assigns if ix.function_of(n) is home and name.value in _stored_names(n)]
    loops = [n for n in ix.loops if ix.function_of(n) is home and name.value in _stored_names(n)]
    if len(stores) != 1 or loops:
        return None
    only = stores[0]
    if not (isinstance(only, cst.Assign) and len(only.targets) == 1 and ix.order(only) < ix.order(fn)):
        return None
    return only if isinstance(only.targets[0].target, (cst.Name, cst.Tuple)) else None


def _stored_names(node: cst.CSTNode) -> set[str]:
    targets = []
    if isinstance(node, cst.Assign):
        targets = [t.target for t in node.targets]
    elif isinstance(node, (cst.AugAssign, cst.AnnAssign, cst.For)):
        targets = [node.target]
    out = set()
    while targets:
        t = targets.pop()
        if isinstance(t, cst.Name):
            out.add(t.value)
        elif isinstance(t, (cst.Tuple, cst.List)):
            targets.extend(e.value for e in t.elements)
        elif isinstance(t, cst.StarredElement):
            targets.append(t.value)
    return out


def _cuda_to(updated: cst.Call, device: str) -> cst.Call:
    """``x.cuda(0, non_blocking=True)`` -> ``x.to(<device>, non_blocking=True)``."""
    keep = [a for a in updated.args if a.keyword is not None and a.keyword.value == "non_blocking"]
    args = [cst.Arg(cst.parse_expression(device)), *keep]
    args[-1] = args[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    if len(args) > 1:
        args[0] = args[0].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    return updated.with_changes(func=updated.func.with_changes(attr=cst.Name("to")), args=args)
