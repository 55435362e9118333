"""Facts about devices: device-selection bindings, where devices flow, and `.to/.cuda/.cpu` moves."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import libcst as cst

from migrator.analysis import names as N
from migrator.analysis.flow import Binding, binding_of, lookup, param_for
from migrator.analysis.training import TrainingFacts
from migrator.anchors_spec import DEVICE_STRING


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
            literal = (
                isinstance(v, cst.Integer) or self._int_or_device(v) or (self.is_device_value(v) and not chooses)
            )
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

    def _int_or_device(self, v: cst.BaseExpression) -> bool:
        """``0 if torch.cuda.is_available() else "cpu"``: a GPU id or a device string."""
        if not isinstance(v, cst.IfExp):
            return False
        parts = (v.body, v.orelse)
        ok = all(isinstance(p, cst.Integer) or self.is_device_value(p) or self._int_or_device(p) for p in parts)
        return ok and not self.is_device_value(v)

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

    def refs_of_device(self, d: DeviceFact) -> tuple[cst.CSTNode, ...]:
        """Every load of one device selection's value, through params, ``self.`` and globals."""
        if d.target is not None:
            return self.refs(binding_of(self.ix, d.target))
        arg = self.ix.parent[d.stmt]
        call = self.ix.parent[arg]
        fn, offset = self.funcs.callee(call)
        param = param_for(fn, offset, call, arg)
        return self.refs(binding_of(self.ix, param.name)) if param is not None else ()

    @cached_property
    def device_refs(self) -> frozenset[cst.CSTNode]:
        """Every load of a device-selection value, through params, ``self.`` and globals."""
        out: set[cst.CSTNode] = set()
        for d in self.devices:
            out.update(self.refs_of_device(d))
        return frozenset(out)

    # --- what a printed device showed ------------------------------------------------------
    def printed_kind(self, d: DeviceFact) -> str | None:
        """What printing the selected device showed, when the wrapper's device prints otherwise:
        ``"type"`` (``"cuda"``, ``torch.device("cuda" if c else "cpu")``,
        ``torch.accelerator.current_accelerator()``: no index),
        ``"index"`` (``device = 0``), ``"mixed"`` (``0 if c else "cpu"``); None: keep as is."""
        if d.assign is not None:
            leaves = [d.assign.value]
        elif isinstance(d.stmt, cst.If):
            leaves, cur = [], d.stmt
            while cur is not None:  # _device_chain checked the shape: one assignment a branch
                leaves.append(cur.body.body[0].body[0].value)
                cur = cur.orelse if isinstance(cur, cst.If) else None
        else:
            return None
        kinds: set[str | None] = set()
        for leaf in leaves:
            kinds |= self._leaf_kinds(leaf)
        if kinds == {"type"}:
            return "type"
        if kinds == {"index"}:
            return "index"
        return "mixed" if kinds == {"type", "index"} else None

    def _leaf_kinds(self, v: cst.BaseExpression) -> set[str | None]:
        if isinstance(v, cst.IfExp):
            return self._leaf_kinds(v.body) | self._leaf_kinds(v.orelse)
        if isinstance(v, cst.Integer):
            return {"index"}
        if isinstance(v, cst.SimpleString):
            value = v.evaluated_value
            if isinstance(value, str) and DEVICE_STRING.fullmatch(value) is not None:
                return {"type"} if ":" not in value else {None}
            return {None}
        if isinstance(v, cst.Call) and self.ix.call_qname(v) in N.ACCELERATOR:
            return {"type"}  # torch.accelerator.current_accelerator(): device(type='cuda')
        if isinstance(v, cst.Call) and self.ix.call_qname(v) == N.DEVICE_CTOR:
            if len(v.args) == 1 and v.args[0].keyword is None and not isinstance(v.args[0].value, cst.Integer):
                return self._leaf_kinds(v.args[0].value)
        return {None}

    def printed_refs(self, d: DeviceFact) -> list[cst.CSTNode]:
        """Loads of the device that are printed or formatted into text (``f"{device}"``,
        ``print(device)``, ``"{}".format(device)``, ``"%s" % device``, ``str(device)``), each
        holding nothing but this device on every path (checked through every call site)."""
        refs = self.refs_of_device(d)
        if not refs:
            return []
        origin = binding_of(self.ix, d.target) if d.target is not None else None
        ref_set = set(refs)
        return [r for r in refs if self._is_text_use(r) and self._only_device(r, ref_set, origin)]

    def _is_text_use(self, ref: cst.CSTNode) -> bool:
        parent = self.ix.parent.get(ref)
        if isinstance(parent, cst.FormattedStringExpression):
            return parent.expression is ref and parent.conversion in (None, "s") and parent.format_spec is None
        if isinstance(parent, cst.Arg):
            call = self.ix.parent.get(parent)
            if parent.keyword is not None or parent.star or not isinstance(call, cst.Call):
                return False
            f = call.func
            if isinstance(f, cst.Name) and f.value in ("print", "str"):
                return self.ix.imported_qname(f) in (None, f"builtins.{f.value}")
            return isinstance(f, cst.Attribute) and f.attr.value == "format" and isinstance(
                f.value, (cst.SimpleString, cst.ConcatenatedString)
            )
        if isinstance(parent, cst.Element):
            parent = self.ix.parent.get(self.ix.parent.get(ref))
            parent = self.ix.parent.get(parent) if isinstance(parent, cst.Tuple) else None
        return (
            isinstance(parent, cst.BinaryOperation) and isinstance(parent.operator, cst.Modulo)
            and isinstance(parent.left, (cst.SimpleString, cst.ConcatenatedString))
        )

    def _only_device(self, ref: cst.CSTNode, refs: set, origin: Binding | None) -> bool:
        """Every value ``ref``'s binding can hold comes from the device (no other caller's
        argument, no default, no other assignment)."""
        seen: set[Binding] = set()
        todo = [binding_of(self.ix, ref)]
        while todo:
            b = todo.pop()
            if b is None:
                return False
            if b in seen or b == origin:
                continue
            seen.add(b)
            if b.kind == "attr":
                stores = [a for a in self.ix.self_attrs if a.attr.value == b.name and self.ix.class_of(a) is b.owner
                          and isinstance(self.ix.parent.get(a), cst.AssignTarget)]
                values = [self.ix.parent[self.ix.parent[a]] for a in stores]
                if not stores or not all(isinstance(v, cst.Assign) and len(v.targets) == 1 and v.value in refs
                                         for v in values):
                    return False
                todo.extend(binding_of(self.ix, v.value) for v in values)
                continue
            sources = list(lookup(b.owner.assignments, b.name))
            if not sources:
                return False
            for a in sources:
                node = a.node
                if isinstance(node, cst.Param):
                    fn = self.ix.function_of(node)
                    values = self._arguments_for(fn, node) if fn is not None else None
                    if values is None or node.default is not None and len(values) < self._calls_to(fn):
                        return False
                    if not values or not all(v in refs for v in values):
                        return False
                    todo.extend(binding_of(self.ix, v) for v in values)
                    continue
                assign = self.ix.parent.get(self.ix.parent.get(node))
                if not (isinstance(assign, cst.Assign) and len(assign.targets) == 1 and assign.value in refs):
                    return False
                todo.append(binding_of(self.ix, assign.value))
        return True

    @cached_property
    def _calls_by_function(self) -> dict[cst.FunctionDef, list[tuple[cst.Call, int]]]:
        out: dict[cst.FunctionDef, list[tuple[cst.Call, int]]] = {}
        for call in self.ix.calls:
            found = self.funcs.callee(call)
            if found is not None:
                out.setdefault(found[0], []).append((call, found[1]))
        return out

    def _calls_to(self, fn: cst.FunctionDef) -> int:
        return len(self._calls_by_function.get(fn, ()))

    def _arguments_for(self, fn: cst.FunctionDef, param: cst.Param) -> list[cst.BaseExpression] | None:
        """What every in-file call of ``fn`` passes to ``param`` (None: a call passes ``*args``
        or cannot be matched; the function may also be called from elsewhere)."""
        out = []
        for call, offset in self._calls_by_function.get(fn, ()):
            if any(a.star for a in call.args):
                return None
            for arg in call.args:
                if param_for(fn, offset, call, arg) is param:
                    out.append(arg.value)
        return out

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
