"""Side-effect rules for checkpoints: torch.save / torch.load through the wrapper, whole-model pickles."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.analysis.flow import binding_of
from migrator.rules._util import find_arg as arg
from migrator.rules.base import Rule
from migrator.rules.side_effects_common import (
    bound_values,
    expression_statement,
    fill_call,
    guard_hoisted,
    guard_run,
    hoistable_args,
    in_rank_zero_guard,
)

SAVE = {"torch.save", "torch.serialization.save"}
LOAD = {"torch.load", "torch.serialization.load"}
_IN_MEMORY = {"io.BytesIO", "builtins.open"}
_DICT_CTORS = {"builtins.dict", "collections.OrderedDict"}


def _is_file_object(ctx, expr: cst.BaseExpression) -> bool:
    """``io.BytesIO()``, ``open(...)`` or a name bound to one: not a path, leave the call alone."""
    values = bound_values(ctx, expr) if isinstance(expr, cst.Name) else [expr]
    return any(isinstance(v, cst.Call) and ctx.ix.call_qname(v) in _IN_MEMORY for v in values)


def _is_state(ctx, expr: cst.BaseExpression, depth: int = 2) -> bool:
    """A dict the wrapper's save accepts: a literal, ``x.state_dict()``, ``dict(...)``, or a name bound to one."""
    if isinstance(expr, (cst.Dict, cst.DictComp)):
        return True
    if isinstance(expr, cst.Call):
        f = expr.func
        return (isinstance(f, cst.Attribute) and f.attr.value == "state_dict") or (
            ctx.ix.call_qname(expr) in _DICT_CTORS
        )
    if isinstance(expr, cst.Name) and depth:
        values = bound_values(ctx, expr)
        return bool(values) and all(_is_state(ctx, v, depth - 1) for v in values)
    return False


def _model(ctx, expr: cst.BaseExpression):
    """(is a module, the wrapped model fact or None) for ``torch.save(<expr>, path)``."""
    facts = ctx.facts
    fact = facts.model_of(expr) if isinstance(expr, (cst.Name, cst.Attribute)) else None
    if fact is not None:
        return True, fact
    if isinstance(expr, cst.Name):
        return any(facts.is_module_construction(v) for v in bound_values(ctx, expr)), None
    return False, None


def saves(ctx, handles: bool = False):
    """(call, obj, path) for each ``torch.save(obj, path)`` outside rank-0 guards.

    Saves into a file object (``io.BytesIO``, an open handle) come only with ``handles``.
    """
    for call in ctx.ix.calls:
        if ctx.ix.call_qname(call) not in SAVE or len(call.args) != 2:
            continue
        obj, path = arg(call, 0, "obj"), arg(call, 1, "f")
        if obj is None or path is None or in_rank_zero_guard(ctx, call):
            continue
        if handles or not _is_file_object(ctx, path.value):
            yield call, obj, path


class SaveThroughWrapper(Rule):
    """`torch.save` goes through the wrapper's save: written once, by rank 0, without wrapper prefixes.

    **What**: `torch.save(state, path)` becomes `rt.save(path, state)` (Fabric:
    `fabric.save(path, state)`) when `state` is a dict: a literal, `model.state_dict()`,
    `dict(...)` or a name bound to one. The file keeps the exact format of the original, so
    the original script (and anything downstream) still loads it. Other objects (a tensor, a
    list) are saved by `torch.save` under `if rt.is_global_zero:`. Saves into an in-memory
    buffer (`io.BytesIO`) are not file writes and stay. Whole models: MIG404.

    **Why**: every rank runs the save, so N processes write the same path at once. The
    wrapper writes on rank 0 atomically and gathers sharded state (FSDP, DeepSpeed). Its save
    is called on every rank (Fabric's waits for the others), so it stays where it was, never
    inside a rank-0 branch.

    **Before**
    ```python
    torch.save(model.state_dict(), "mnist_cnn.pt")
    ```
    **After**
    ```python
    rt.save("mnist_cnn.pt", model.state_dict())
    ```
    """

    code = "MIG402"
    anchors = A.Call("save")
    name = "save-through-wrapper"
    summary = "save checkpoints with the wrapper so they are written once"

    def plan(self, ctx) -> None:
        taken: set[str] = set()
        for call, obj, path in saves(ctx):
            if _model(ctx, obj.value)[0]:
                continue  # MIG404
            if _is_state(ctx, obj.value):
                change = ctx.finding(
                    self.code, call, "save through the wrapper: written once, by rank 0"
                )
                change.uses_wrapper = True  # the template is rendered later, inside the replacement
                i_obj, i_path = call.args.index(obj), call.args.index(path)
                change.replace(
                    call,
                    lambda up, c=change, o=i_obj, p=i_path: fill_call(
                        c, c.ctx.vocab.save, up, {"path": p, "obj": o}
                    ),
                )
                continue
            stmt = expression_statement(ctx, call)
            if stmt is None:
                continue
            change = ctx.finding(self.code, call, "not a state dict: saved by rank 0 only")
            hoist = hoistable_args(ctx, call)
            if hoist:
                guard_hoisted(change, stmt, hoist, taken)
            else:
                guard_run(change, stmt, stmt)


class WholeModelPickle(Rule):
    """Whole-model pickles (`torch.save(model, path)`) save the unwrapped module, from rank 0.

    **What**: `torch.save(model, path)` on a set-up model becomes
    `if rt.is_global_zero: torch.save(rt.unwrap(model), path)` (Fabric: `model.module`, the
    original module). A module that is not set up is only guarded.

    **Why**: pickling the wrapper (a DDP or Fabric object) fails, or writes a file whose
    class is the wrapper, which separate inference scripts cannot load. Unwrapping gives the
    original class, as in the single-GPU script; rank 0 writes it once.

    **Before**
    ```python
    torch.save(model, "model_full.pt")
    ```
    **After**
    ```python
    if rt.is_global_zero:
        torch.save(rt.unwrap(model), "model_full.pt")
    ```
    """

    code = "MIG404"
    anchors = A.Call("save")
    name = "whole-model-pickle"
    summary = "pickle the unwrapped module on rank 0"

    def plan(self, ctx) -> None:
        for call, obj, path in saves(ctx, handles=True):
            is_module, fact = _model(ctx, obj.value)
            stmt = expression_statement(ctx, call)
            if not is_module or stmt is None:
                continue
            to_file = not _is_file_object(ctx, path.value)
            if not to_file and fact is None:
                continue  # an unwrapped module into a buffer / handle: nothing to do
            change = ctx.finding(self.code, call, "pickle the unwrapped module, on rank 0 only")
            if fact is not None:
                change.replace(obj.value, change.expr(ctx.vocab.unwrap, model=obj.value))
            if to_file:  # a handle comes from `with open(...)`, guarded as a whole by MIG406
                guard_run(change, stmt, stmt)


_CPU = {
    '"cpu"',
    "'cpu'",
    'torch.device("cpu")',
    "torch.device('cpu')",
    "lambda storage, loc: storage",
}


class LoadThroughWrapper(Rule):
    """`torch.load` of a checkpoint file goes through the wrapper's load.

    **What**: `torch.load(path)` becomes `rt.load(path)` (Fabric: `fabric.load(path)`),
    keeping `weights_only=`. A `map_location` to the CPU is dropped (the wrapper loads onto
    the CPU; `load_state_dict` copies onto the model's device); a load mapped to a device is
    left to the device rules. Loads from buffers or open file handles stay. A load with
    `weights_only=False` is reported: it unpickles arbitrary code, so load only trusted files.
    A checkpoint or a whole pickled model (a loaded value that is called, or whose `.eval()`,
    `.parameters()`, ... is used) that stays on `torch.load` (a file handle, accelerate, a
    pickle) and names no `map_location` gets `map_location={"cuda:0": str(rt.device)}`:
    tensors saved from the GPU come back on the process's own GPU, not on GPU 0 on every
    rank; tensors saved from the CPU stay there, as in the script.

    Only checkpoints go through the wrapper: a load whose result reaches a
    `load_state_dict(...)` (directly, or a checkpoint dict's entries). Data saved with
    `torch.save` (a pickled array, a Dataset's tensor files, a whole pickled model) keeps the
    script's own `torch.load` and its semantics (the wrapper's load is `weights_only=True`).

    **Why**: the wrapper's load restores sharded checkpoints (FSDP, DeepSpeed) and reads the
    files its save wrote; on one process it returns what `torch.load` returns.

    **Before**
    ```python
    state = torch.load("ckpt.pt", map_location="cpu")
    ```
    **After**
    ```python
    state = rt.load("ckpt.pt")
    ```
    """

    code = "MIG403"
    anchors = A.Call("load")
    name = "load-through-wrapper"
    summary = "load checkpoints with the wrapper"

    def plan(self, ctx) -> None:
        ix = ctx.ix
        writes = any(ix.call_qname(c) in SAVE for c in ix.calls)
        for call in ix.calls:
            if ix.call_qname(call) not in LOAD or not call.args or call.args[0].keyword is not None:
                continue
            if in_rank_zero_guard(ctx, call):
                continue
            restores = _restores_state(ctx, call)
            if restores:
                change = self._rewrite(ctx, call)
            else:  # a data file, a whole pickle: the script's own torch.load stays
                change = self._report_unsafe(ctx, call)
                if ctx.ix.class_of(call) is not None:
                    continue  # a Dataset reading its files (DataLoader workers: no barrier)
            if (change is None or not change.fixed) and (restores or _loads_module(ctx, call)):
                self._map_to_device(ctx, call)
            anchor = _read_anchor(ctx, call)
            if writes and not _after_barrier(ctx, anchor):
                # the script writes checkpoints: rank 0 may still be writing this very file
                if change is None or not change.fixed:  # (a report of an unsafe load stays one)
                    change = ctx.finding(self.code, call, "wait for rank 0's write before reading")
                change.insert_before(anchor, change.stmt(ctx.vocab.barrier))

    def _map_to_device(self, ctx, call: cst.Call) -> None:
        """A checkpoint or a whole model kept on ``torch.load`` without a ``map_location``:
        tensors saved from ``cuda:0`` (the single-GPU script's GPU; rank 0's, in the port) come
        back on this process's device instead of GPU 0 on every rank. Tensors saved from the
        CPU stay on the CPU, as in the script."""
        if ctx.ix.class_of(call) is not None or any(
            a.star or (a.keyword is not None and a.keyword.value == "map_location")
            for a in call.args
        ):
            return
        if any(a.keyword is None for a in call.args[1:]):
            return  # map_location given by position
        change = ctx.finding(
            self.code, call,
            "without map_location every rank loads the tensors saved from GPU 0 onto GPU 0:"
            " map them to this process's device",
        )
        mapping = change.expr('{{"cuda:0": str(%s)}}' % ctx.vocab.device)
        equal = cst.AssignEqual(
            whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
        )
        extra = cst.Arg(keyword=cst.Name("map_location"), value=mapping, equal=equal)

        def add(updated: cst.Call) -> cst.Call:
            args = list(updated.args)
            last = args[-1]
            if isinstance(last.comma, cst.Comma) and isinstance(
                last.comma.whitespace_after, cst.ParenthesizedWhitespace
            ):  # one argument a line, a trailing comma: the new one goes on its own line
                return updated.with_changes(
                    args=[*args, extra.with_changes(comma=last.comma)]
                )
            args[-1] = last.with_changes(
                comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
            )
            return updated.with_changes(args=[*args, extra])

        change.replace(call, add)

    def _report_unsafe(self, ctx, call: cst.Call):
        weights = [a for a in call.args if a.keyword is not None and a.keyword.value == "weights_only"]
        if weights and ctx.ix.code(weights[0].value).strip() == "False":  # keyword-only in torch.load
            return ctx.finding(
                self.code, call,
                "weights_only=False unpickles arbitrary code: load only files you trust",
                fixed=False,
            )
        return None

    def _rewrite(self, ctx, call: cst.Call):
        ix = ctx.ix
        if ctx.vocab.load is None or _is_file_object(ctx, call.args[0].value):
            return None
        kw = {a.keyword.value: i for i, a in enumerate(call.args) if a.keyword is not None}
        if set(kw) - {"map_location", "weights_only"} or len(call.args) - len(kw) != 1:
            return None
        if (
            "map_location" in kw
            and ix.code(call.args[kw["map_location"]].value).strip() not in _CPU
        ):
            return None  # loaded onto a device: MIG1xx points it at the wrapper's device
        message = "load through the wrapper"
        weights = call.args[kw["weights_only"]] if "weights_only" in kw else None
        if weights is not None and ix.code(weights.value).strip() == "False":
            message += "; weights_only=False unpickles arbitrary code: load only files you trust"
        change = ctx.finding(self.code, call, message)
        change.uses_wrapper = True  # the template is rendered later, inside the replacement
        extra = (kw["weights_only"],) if weights is not None else ()
        change.replace(
            call, lambda up, c=change, e=extra: fill_call(c, c.ctx.vocab.load, up, {"path": 0}, e)
        )
        return change


def _restores_state(ctx, call: cst.Call) -> bool:
    """The load restores state into objects (``model.load_state_dict(torch.load(p))``, or a
    checkpoint dict whose entries reach a ``load_state_dict``): a checkpoint, which the
    wrapper's load reads. Data saved with ``torch.save`` (a pickled array, a tensor file in a
    Dataset) keeps the script's own ``torch.load`` and its semantics."""
    if _feeds_load_state_dict(ctx, call):
        return True
    target = ctx.facts.assign_target(call)
    binding = binding_of(ctx.ix, target) if isinstance(target, cst.Name) else None
    return any(_feeds_load_state_dict(ctx, ref) for ref in ctx.facts.refs(binding))


# What only a module answers: a loaded value used this way is a whole pickled model.
_MODULE_USES = frozenset({
    "eval", "train", "parameters", "named_parameters", "state_dict", "load_state_dict", "forward",
    "modules", "named_modules", "children", "buffers", "zero_grad", "requires_grad_",
})


def _loads_module(ctx, call: cst.Call) -> bool:
    """``net = torch.load(f)`` then ``net.eval()`` / ``net(x)``: a whole pickled model."""
    target = ctx.facts.assign_target(call)
    binding = binding_of(ctx.ix, target) if isinstance(target, cst.Name) else None
    for ref in ctx.facts.refs(binding):
        parent = ctx.ix.parent.get(ref)
        if isinstance(parent, cst.Call) and parent.func is ref:
            return True
        if (
            isinstance(parent, cst.Attribute) and parent.value is ref
            and parent.attr.value in _MODULE_USES
        ):
            return True
    return False


def _feeds_load_state_dict(ctx, node: cst.CSTNode) -> bool:
    for a in ctx.ix.ancestors(node):
        if isinstance(a, cst.Call) and isinstance(a.func, cst.Attribute) and a.func.attr.value == "load_state_dict":
            return True
        if isinstance(a, (cst.SimpleStatementLine, cst.BaseCompoundStatement)):
            return False
    return False


def _read_anchor(ctx, call: cst.Call) -> cst.CSTNode:
    """The statement to put a barrier before: the load's, or the ``with open(...)`` around it."""
    ix = ctx.ix
    for a in ix.ancestors(call):
        if isinstance(a, (cst.FunctionDef, cst.ClassDef)):
            break
        if isinstance(a, cst.With) and any(
            isinstance(i.item, cst.Call) and ix.call_qname(i.item) == "builtins.open"
            for i in a.items
        ):
            return a
    return ix.statement(call)


def _after_barrier(ctx, stmt: cst.CSTNode) -> bool:
    body = list(ctx.ix.block_of(stmt).body)
    i = body.index(stmt)
    barrier = ctx.vocab.barrier.format(rt=ctx.rt)
    return i > 0 and ctx.ix.code(body[i - 1]).strip() == barrier
