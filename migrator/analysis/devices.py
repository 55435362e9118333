"""Facts about devices: device-selection bindings, where devices flow, and `.to/.cuda/.cpu` moves."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import libcst as cst

from migrator.analysis import names as N
from migrator.analysis.flow import binding_of, param_for
from migrator.analysis.training import TrainingFacts
from migrator.codefilter import DEVICE_STRING


@dataclass(frozen=True)
class DeviceFact:
    """A device selection: ``device = torch.device(...)`` or an if/elif chain choosing one."""

    stmt: cst.CSTNode  # the block-level statement to rewrite (simple line or ``if``), or the
    # ``torch.device(...)`` call itself when it is passed straight into an in-file function
    assign: cst.Assign | None  # the assignment when ``stmt`` is a simple line
    target: cst.BaseExpression | None  # None for the inline-argument form


@dataclass(frozen=True)
class CudaFlagFact:
    """PyTorch-GAN style ``cuda = True if torch.cuda.is_available() else False`` feeding tensor types."""

    assign: cst.Assign
    target: cst.Name


class DeviceFacts(TrainingFacts):
    def is_device_value(self, expr: cst.BaseExpression) -> bool:
        """An expression that *chooses* a device (not the wrapper's ``.device``)."""
        if isinstance(expr, cst.Call):
            q = self.ix.call_qname(expr)
            return q == N.DEVICE_CTOR or q in N.ACCELERATOR
        if isinstance(expr, cst.SimpleString):
            value = expr.evaluated_value
            return isinstance(value, str) and DEVICE_STRING.fullmatch(value) is not None  # b"..." is bytes
        if isinstance(expr, cst.IfExp):
            return self.is_device_value(expr.body) and self.is_device_value(expr.orelse)
        return False

    @cached_property
    def devices(self) -> tuple[DeviceFact, ...]:
        out = []
        chained: set[cst.CSTNode] = set()
        for node in self.ix.ifs:
            target = self._device_chain(node)
            if node not in chained and target is not None:
                out.append(DeviceFact(node, None, target))
                chained.update(n for n in [*self.ix.assigns, *self.ix.ifs] if self.ix.inside(n, node))
        for node in self.ix.assigns:
            if not isinstance(node, cst.Assign) or len(node.targets) != 1 or node in chained:
                continue
            target = node.targets[0].target
            if not isinstance(target, (cst.Name, cst.Attribute)):
                continue
            v = node.value
            parts = (v.body, v.orelse) if isinstance(v, cst.IfExp) else (v,)
            chooses = self.is_device_value(v) and any(isinstance(p, cst.Call) for p in parts)
            literal = isinstance(v, cst.Integer) or (self.is_device_value(v) and not chooses)
            # a bare "cuda" / 0 is a device only where the value is used as one
            if chooses or (literal and self._used_as_device(target)):
                out.append(DeviceFact(self.ix.statement(node), node, target))
        for call in self.ix.calls:
            arg = self.ix.parent.get(call)
            outer = self.ix.parent.get(arg)
            if (
                isinstance(arg, cst.Arg) and isinstance(outer, cst.Call)
                and self.ix.call_qname(call) == N.DEVICE_CTOR and self.funcs.callee(outer) is not None
            ):
                out.append(DeviceFact(call, None, None))
        return tuple(sorted(out, key=lambda d: self.ix.order(d.stmt)))

    def _device_chain(self, node: cst.If) -> cst.BaseExpression | None:
        """``if cuda: device = ... elif mps: device = ... else: device = ...`` -> the target."""
        target = None
        cur: cst.CSTNode = node
        while True:
            t = self._single_device_assign(cur.body)
            if t is None or (target is not None and not t.deep_equals(target)):
                return None
            target = t
            if isinstance(cur, cst.Else):
                return target
            if cur.orelse is None:
                return None  # no else: the name may stay unbound on some path
            cur = cur.orelse

    def _single_device_assign(self, body: cst.BaseSuite) -> cst.BaseExpression | None:
        stmts = body.body if isinstance(body, cst.IndentedBlock) else ()
        if len(stmts) != 1 or not isinstance(stmts[0], cst.SimpleStatementLine):
            return None
        small = stmts[0].body
        if len(small) != 1 or not isinstance(small[0], cst.Assign) or len(small[0].targets) != 1:
            return None
        return small[0].targets[0].target if self.is_device_value(small[0].value) else None

    def _used_as_device(self, target: cst.BaseExpression) -> bool:
        return any(self._device_use(r) for r in self.refs(binding_of(self.ix, target)))

    def _device_use(self, ref: cst.CSTNode) -> bool:
        arg = self.ix.parent.get(ref)
        if not isinstance(arg, cst.Arg):
            return False
        if arg.keyword is not None and arg.keyword.value == "device":
            return True
        call = self.ix.parent.get(arg)
        if not isinstance(call, cst.Call):
            return False
        if self.ix.call_qname(call) in N.SET_DEVICE or self.ix.call_qname(call) == N.DEVICE_CTOR:
            return True
        return isinstance(call.func, cst.Attribute) and call.func.attr.value in ("to", "cuda")

    @cached_property
    def device_refs(self) -> frozenset[cst.CSTNode]:
        """Every load of a device-selection value, through params, ``self.`` and globals."""
        out: set[cst.CSTNode] = set()
        for d in self.devices:
            if d.target is not None:
                out.update(self.refs(binding_of(self.ix, d.target)))
                continue
            arg = self.ix.parent[d.stmt]
            call = self.ix.parent[arg]
            fn, offset = self.funcs.callee(call)
            param = param_for(fn, offset, call, arg)
            if param is not None:
                out.update(self.refs(binding_of(self.ix, param.name)))
        return frozenset(out)

    def is_device_expr(self, expr: cst.BaseExpression) -> bool:
        """An expression that names a device where a device is expected (``.to(x)``, ``device=x``)."""
        if expr in self.device_refs or self.is_device_value(expr):
            return True
        if isinstance(expr, cst.Attribute) and expr.attr.value == "device":
            return True  # rt.device, args.device, self.device, tensor.device
        return isinstance(expr, cst.Name) and expr.value == "device"

    def move_kind(self, call: cst.Call) -> str | None:
        """``"to"`` / ``"cuda"`` / ``"cpu"`` when ``call`` only moves its receiver to a device."""
        f = call.func
        if not isinstance(f, cst.Attribute) or f.attr.value not in N.MOVE_METHODS:
            return None
        if self.ix.imported_qname(f) is not None:
            return None  # a module function such as torch.cuda(...)
        kind = f.attr.value
        if kind == "to":
            positional = [a for a in call.args if a.keyword is None]
            named = {a.keyword.value: a for a in call.args if a.keyword is not None}
            if set(named) - {"device", "non_blocking"} or len(positional) > 1:
                return None
            dev = positional[0].value if positional else named.get("device")
            dev = dev.value if isinstance(dev, cst.Arg) else dev
            return kind if dev is not None and self.is_device_expr(dev) else None
        return kind

    @cached_property
    def moves(self) -> tuple[cst.Call, ...]:
        return tuple(c for c in self.ix.calls if self.move_kind(c) is not None)

    @cached_property
    def cuda_flags(self) -> tuple[CudaFlagFact, ...]:
        out = []
        for node in self.ix.assigns:
            if not isinstance(node, cst.Assign) or len(node.targets) != 1:
                continue
            t = node.targets[0].target
            v = node.value
            if isinstance(v, cst.IfExp):
                v = v.test
            if not (isinstance(t, cst.Name) and isinstance(v, cst.Call)):
                continue
            if self.ix.call_qname(v) != "torch.cuda.is_available":
                continue
            for ref in self.refs(binding_of(self.ix, t)):
                ifexp = self.ix.parent.get(ref)
                if isinstance(ifexp, cst.IfExp) and ifexp.test is ref:
                    q = self.ix.imported_qname(ifexp.body) or ""
                    if q.startswith("torch.cuda.") and q.endswith("Tensor"):
                        out.append(CudaFlagFact(node, t))
                        break
        return tuple(out)
