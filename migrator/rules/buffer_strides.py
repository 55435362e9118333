"""MIG213: buffers registered from transposed / permuted / expanded tensors get default strides."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.rules.base import Rule

# Tensor methods (and torch functions of the same name) whose result keeps the input's storage
# with reordered or zero strides: a buffer made from one is not laid out as DDP expects.
_STRIDE_OPS = frozenset({
    "transpose", "permute", "t", "swapaxes", "swapdims", "movedim", "moveaxis", "expand",
    "expand_as",
})
_STRIDE_ATTRS = frozenset({"T", "mT", "H", "mH"})  # x.T: a transpose without a call
_HOPS = 8  # local names followed back through their assignments, at most


class BufferStrides(Rule):
    """A buffer registered from a transposed, permuted or expanded tensor is registered with default strides.

    **What**: `self.register_buffer(name, value)` where `value` went through `transpose`,
    `permute`, `t`, `.T`, `swapaxes`/`swapdims`, `movedim`/`moveaxis` or `expand`/`expand_as`
    (directly, or through the assignments of a local name in the same function) registers
    `value.clone(memory_format=torch.contiguous_format)` instead: the same values, laid out with
    default strides. Targets whose own DDP gives buffers default strides before wrapping (the
    runtime) need no change. When the function uses a name of that chain again after the
    registration (an in-place update would reach the buffer through the shared storage, a copy
    would not), nothing is rewritten and the finding is reported unfixed.

    **Why**: DDP broadcasts rank 0's buffers to every rank when it wraps the model. A buffer
    whose strides are not the default ones (a size-1 dimension with a large stride, as
    `pe.unsqueeze(0).transpose(0, 1)` makes; the zero strides of `expand`) fails there with
    "some elements of the input tensor and the written-to tensor refer to a single memory
    location" (pytorch/pytorch#68407), so a script that trains on one GPU stops on two.
    `.contiguous()` does not help: a tensor whose odd stride sits on a size-1 dimension already
    counts as contiguous, and `contiguous()` returns it as it is.

    **Before**
    ```python
    pe = pe.unsqueeze(0).transpose(0, 1)
    self.register_buffer("pe", pe)
    ```
    **After**
    ```python
    pe = pe.unsqueeze(0).transpose(0, 1)
    self.register_buffer("pe", pe.clone(memory_format=torch.contiguous_format))
    ```
    """

    code = "MIG213"
    anchors = A.Call("register_buffer")
    name = "buffer-strides"
    summary = "Register buffers made by transpose/permute/expand with default strides for DDP"

    def plan(self, ctx) -> None:
        if ctx.vocab.ddp_buffers_default_strides:
            return  # the target's DDP lays buffers out itself
        ix = ctx.ix
        for call in ix.calls:
            func = call.func
            if not (isinstance(func, cst.Attribute) and func.attr.value == "register_buffer"):
                continue
            value = _tensor_arg(call)
            if value is None:
                continue
            names: set[str] = set()
            op = _stride_op(ix, value, call, names, _HOPS)
            if op is None:
                continue
            label = _name_arg(ix, call)
            if _used_after(ix, call, names):
                ctx.finding(
                    self.code, call,
                    f"buffer {label}comes from {op}: DDP fails to broadcast its strides; register "
                    "a copy with default strides (.clone(memory_format=torch.contiguous_format))",
                    fixed=False,
                )
                continue
            change = ctx.finding(
                self.code, call,
                f"buffer {label}comes from {op}: registered with default strides so DDP can "
                "broadcast it",
            )
            change.replace(value, change.expr("{value}.clone(memory_format=torch.contiguous_format)",
                                              value=value))


def _tensor_arg(call: cst.Call) -> cst.BaseExpression | None:
    """The ``tensor`` argument of ``register_buffer(name, tensor, persistent=...)``."""
    positional = [a for a in call.args if a.keyword is None and not a.star]
    for a in call.args:
        if a.keyword is not None and a.keyword.value == "tensor":
            return a.value
    if any(a.star for a in call.args):
        return None
    return positional[1].value if len(positional) >= 2 else None


def _name_arg(ix, call: cst.Call) -> str:
    """The buffer's name as written, and a space (empty when it cannot be found)."""
    for i, a in enumerate(call.args):
        if (a.keyword is None and i == 0 and not a.star) or (a.keyword is not None and a.keyword.value == "name"):
            return ix.code(a.value) + " "
    return ""


def _default_strided_clone(ix, call: cst.Call) -> bool:
    return any(
        a.keyword is not None and a.keyword.value == "memory_format"
        and ix.code(a.value).split(".")[-1] == "contiguous_format"
        for a in call.args
    )


def _stride_op(ix, expr: cst.BaseExpression, before: cst.CSTNode, names: set[str],
               hops: int) -> str | None:
    """The stride-changing op ``expr`` went through (``.transpose()``, ``.T``), walking its method
    chain back to its base and a local name back to its assignment before ``before``; None when
    there is none, or a default-strided clone comes after it. ``names`` collects the local
    names the chain goes through (the buffer shares their storage)."""
    op, cur = None, expr
    while True:
        if isinstance(cur, cst.Call):
            func = cur.func
            if not isinstance(func, cst.Attribute):
                return op
            method = func.attr.value
            if op is None and method == "clone" and _default_strided_clone(ix, cur):
                return None  # laid out afresh: what this rule writes
            if op is None and method in _STRIDE_OPS:
                op = f"{method}()"  # x.transpose(...) or torch.transpose(x, ...)
            if ix.call_qname(cur) is not None:  # a function: torch.zeros(...), torch.movedim(x, ...)
                if method in _STRIDE_OPS and cur.args and cur.args[0].keyword is None:
                    cur = cur.args[0].value  # torch.transpose(x, ...): a view of x
                    continue
                return op  # a fresh tensor: the chain starts here
            cur = func.value
            continue
        if isinstance(cur, cst.Attribute):
            if op is None and cur.attr.value in _STRIDE_ATTRS:
                op = f".{cur.attr.value}"
                cur = cur.value
                continue
            return op
        if isinstance(cur, cst.Name) and hops > 0:
            names.add(cur.value)
            assigned = _assigned_before(ix, cur.value, before)
            if assigned is None:
                return op
            before, cur, hops = assigned, assigned.value, hops - 1
            continue
        return op


def _assigned_before(ix, name: str, node: cst.CSTNode) -> cst.Assign | None:
    """The last plain ``name = value`` before ``node`` in its function (or module), when that is
    surely the value ``node`` sees: no other kind of binding of ``name`` there, and the
    assignment's block encloses ``node`` (not one branch of an ``if``)."""
    scope = ix.function_of(node) or ix.module
    found = None
    for a in ix.within(scope, ix.assigns):
        if ix.order(a) >= ix.order(node) or ix.function_of(a) is not ix.function_of(node):
            continue
        if isinstance(a, cst.Assign):
            if any(_binds(t.target, name) for t in a.targets):
                if len(a.targets) != 1 or not isinstance(a.targets[0].target, cst.Name):
                    return None  # a, b = ... / a = b = ...: not followed
                found = a
        elif _binds(a.target, name):
            return None  # x += ..., x: T = ...: not followed
    if found is None or not ix.inside(node, ix.block_of(ix.statement(found))):
        return None
    return found


def _binds(target: cst.CSTNode, name: str) -> bool:
    if isinstance(target, cst.Name):
        return target.value == name
    if isinstance(target, (cst.Tuple, cst.List)):
        return any(_binds(e.value, name) for e in target.elements)
    if isinstance(target, cst.StarredElement):
        return _binds(target.value, name)
    return False


def _used_after(ix, call: cst.Call, names: set[str]) -> bool:
    """A name of the chain is read again after the registration in the same function."""
    if not names:
        return False
    scope = ix.function_of(call) or ix.module
    stmt = ix.statement(call)
    end = ix.order(stmt)
    for node in ix.subtree(scope, cst.Name):
        if node.value not in names or ix.order(node) <= end or ix.inside(node, stmt):
            continue
        parent = ix.parent.get(node)
        if (isinstance(parent, cst.Attribute) and parent.attr is node) or (
                isinstance(parent, cst.Arg) and parent.keyword is node):
            continue  # self.pe, f(pe=...): another name
        return True
    return False
