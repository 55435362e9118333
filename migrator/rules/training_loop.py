"""MIG206/MIG207/MIG208: no-sync on accumulation steps, wrapper clipping, DataParallel removal."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.analysis import names as N
from migrator.analysis.flow import binding_of
from migrator.plan import PlanContext
from migrator.rules._util import arg_text, bare, find_arg
from migrator.rules.base import Rule

# nn.Module methods a model method may call on itself without running a submodule.
_MODULE_METHODS = frozenset(
    ["parameters", "named_parameters", "modules", "children", "train", "eval", "to", "buffers", "state_dict", "apply", "register_buffer"]
)


def _steps(ctx, node) -> list[cst.BaseExpression]:
    """Optimizer expressions stepped inside ``node`` (``opt.step()``, ``scaler.step(opt)``)."""
    out = []
    for call in ctx.ix.subtree(node, cst.Call):
        f = call.func
        if isinstance(f, cst.Attribute) and f.attr.value == "step":
            if ctx.facts.is_scaler(f.value) and call.args:
                out.append(call.args[0].value)
            elif not ctx.facts.is_scaler(f.value):
                out.append(f.value)
    return out


def _model_for_optimizer(ctx, opt_expr) -> object:
    for m in ctx.facts.models:
        for o in m.optimizers:
            if o.target is not None and (opt_expr in ctx.facts.refs(binding_of(ctx.ix, o.target)) or o.target.deep_equals(opt_expr)):
                return m
    return None


def _local_text(ctx, m, node) -> str | None:
    """How the model is spelled in the function holding ``node``."""
    fn = ctx.ix.function_of(node)
    for ref in (*m.refs, m.expr):
        if ctx.ix.function_of(ref) is fn:
            return ctx.ix.code(ref)
    return None


class AccumulationRule(Rule):
    """Skip gradient sync on the non-boundary steps of manual accumulation.

    **What**: a loop that runs backward every step but steps the optimizer under
    `if (i + 1) % k == 0:` keeps its accumulation; the forward and backward of each step go
    inside `with rt.no_backward_sync(model, enabled=not (<boundary test>)):`.

    **Why**: without it every micro-step all-reduces gradients: correct but slow. The test
    only reads the step counter, so evaluating it before the forward gives the same answer.

    **Before**: `loss = model(x) / k; loss.backward(); if (i + 1) % k == 0: opt.step()`
    **After**: `with rt.no_backward_sync(model, enabled=not ((i + 1) % k == 0)):` around the
    forward and backward.
    """

    code = "MIG206"
    anchors = A.BACKWARD
    name = "accumulation-no-sync"
    summary = "Wrap non-boundary accumulation steps in rt.no_backward_sync(model, ...)"

    def plan(self, ctx: PlanContext) -> None:
        ix = ctx.ix
        for b in ctx.facts.backwards:
            if self._inside_no_sync(ctx, b.call):
                continue
            found = self._boundary(ctx, b.call)
            if found is None:
                continue
            stmt, guard = found
            opts = _steps(ctx, guard.body)
            m = _model_for_optimizer(ctx, opts[0]) if opts else None
            if m is None:
                continue
            block = ix.parent[stmt].body
            start = self._first_forward(ctx, m, block, stmt)
            span = block[block.index(start): block.index(guard)]
            if self._reassigned(ctx, guard.test, span):
                ctx.finding(self.code, guard, "accumulation boundary depends on values changed in the step: add no_backward_sync by hand", fixed=False)
                continue
            model = _local_text(ctx, m, stmt)
            if model is None:
                continue
            change = ctx.finding(self.code, guard, "")
            enabled = f"not ({bare(ix, guard.test)})"
            change.wrap_with(start, stmt, ctx.vocab.no_backward_sync, model=model, enabled=enabled)
            change.message = "skip gradient sync on non-boundary accumulation steps: " + change.code_text(
                ctx.vocab.no_backward_sync, model=model, enabled=enabled
            )

    @staticmethod
    def _inside_no_sync(ctx, node) -> bool:
        for a in ctx.ix.ancestors(node):
            if isinstance(a, cst.With):
                for item in a.items:
                    # accelerate: `with no_sync(m) if not boundary else accumulate(m):`
                    cm = item.item.body if isinstance(item.item, cst.IfExp) else item.item
                    if isinstance(cm, cst.Call) and ctx.facts.wrapper_method(cm) == "no_backward_sync":
                        return True
        return False

    @staticmethod
    def _boundary(ctx, call):
        """(statement holding the backward, following ``if ... % ...:`` that steps) or None."""
        ix = ctx.ix
        loops = ix.loops_around(call)
        if not loops:
            return None
        stmt = ix.statement(call)
        while stmt is not loops[0]:
            block = ix.parent.get(stmt)
            if isinstance(block, cst.IndentedBlock):
                after = block.body[block.body.index(stmt) + 1:]
                for s in after:
                    if isinstance(s, cst.If) and "%" in ix.code(s.test) and _steps(ctx, s.body):
                        return stmt, s
            stmt = ix.statement(ix.parent[block]) if block in ix.parent else loops[0]
        return None

    @staticmethod
    def _first_forward(ctx, m, block, stmt):
        for s in block[: block.index(stmt) + 1]:
            if any(ctx.ix.inside(r, s) and isinstance(ctx.ix.parent.get(r), cst.Call) and ctx.ix.parent[r].func is r for r in m.refs):
                return s
        return stmt

    @staticmethod
    def _reassigned(ctx, test, span) -> bool:
        names = {n.value for n in ctx.ix.subtree(test, cst.Name)}
        for s in span:
            for node in ctx.ix.subtree(s, (cst.AssignTarget, cst.AugAssign)):
                t = node.target
                if isinstance(t, cst.Name) and t.value in names:
                    return True
        return False


class ClippingRule(Rule):
    """Clip gradients through the wrapper.

    **What**: `torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)` becomes
    `rt.clip_gradients(model, optimizer, max_norm=max_norm)`; `clip_grad_value_` becomes
    `clip_val=`. The returned total norm is kept. A preceding `scaler.unscale_(optimizer)`
    goes (MIG205): the wrapper unscales. Models without an optimizer keep torch's call, and
    so does a clip reached on paths that build no optimizer (`if args.use_optimizer:
    optimizer = ...`, manual SGD otherwise) where the target clips through the optimizer
    (a warning: right under DDP, by hand under mixed precision or sharding).

    **Why**: under mixed precision gradients must be unscaled first, and sharded strategies
    (FSDP, DeepSpeed) compute the norm across shards.

    **Before**: `clip_grad_norm_(model.parameters(), 1.0)`
    **After**: `rt.clip_gradients(model, optimizer, max_norm=1.0)`
    """

    code = "MIG207"
    anchors = A.Part("clip_grad_")  # clip_grad_norm(_), clip_grad_value_
    name = "clip-gradients"
    summary = "Clip through the wrapper: rt.clip_gradients(model, optimizer, max_norm=...)"

    def plan(self, ctx: PlanContext) -> None:
        ix = ctx.ix
        for call in ix.calls:
            kind = N.CLIP.get(ix.call_qname(call) or "")
            first = find_arg(call, 0, "parameters")
            if kind is None or first is None or not isinstance(first.value, cst.Call):
                continue
            f = first.value.func
            if not (isinstance(f, cst.Attribute) and f.attr.value == "parameters"):
                continue
            m = ctx.facts.model_of(f.value)
            if m is None or m.manual:
                continue
            opt = self._optimizer_text(ctx, m, call)
            if opt is None:
                continue
            value = find_arg(call, 1, "max_norm" if kind == "max_norm" else "clip_value")
            if value is None:
                continue
            vocab = ctx.vocab
            template = vocab.clip_gradients if kind == "max_norm" else vocab.clip_value_gradients
            if "{optimizer}" in template and self._maybe_unbound(ctx, m, call):
                ctx.finding(
                    self.code, call,
                    f"torch's clipping stays: {opt} is built on some paths only (not on every "
                    "path to this call), and the wrapper clips through an optimizer; it is "
                    "right under DDP (gradients are averaged in backward), clip by hand under "
                    "mixed precision or sharded strategies",
                    fixed=False,
                )
                continue
            model, change = ix.code(f.value), None
            if kind == "clip_val":
                change = ctx.finding(self.code, call, "")
                new = change.expr(ctx.vocab.clip_value_gradients, model=model, optimizer=opt, value=value.value)
                change.replace(call, new)
                change.message = f"clip through the wrapper: {ix.code(new)}"
                continue
            args = [f"{kind}={ix.code(value.value)}"]
            rest = [a for a in call.args if a.keyword is not None and a.keyword.value in ("norm_type", "error_if_nonfinite")]
            norm = find_arg(call, 2, "norm_type")
            if norm is not None and norm.keyword is None:
                args.append(f"norm_type={ix.code(norm.value)}")
            args += [arg_text(ix, a) for a in rest]
            given = {a.split("=")[0] for a in args}
            args += [f"{k}={v}" for k, v in ctx.vocab.clip_defaults if k not in given]
            change = ctx.finding(self.code, call, "")
            new = change.expr(ctx.vocab.clip_gradients, model=model, optimizer=opt, args=", ".join(args))
            change.replace(call, new)
            change.message = f"clip through the wrapper: {ix.code(new)}"

    @staticmethod
    def _maybe_unbound(ctx, m, call) -> bool:
        """The model's optimizers are built inside an ``if`` that does not hold ``call``."""
        from migrator.rules._setup import setup_anchor, skipped_branches

        branches = skipped_branches(ctx, m)
        if branches is None:  # an elif chain or a one-line branch: its innermost ``if``
            anchor = setup_anchor(ctx, m)
            around = next((a for a in ctx.ix.ancestors(anchor) if isinstance(a, cst.If)), None)
            return around is not None and not ctx.ix.inside(call, around)
        return any(not ctx.ix.inside(call, stmt) for stmt, _ in branches)

    @staticmethod
    def _optimizer_text(ctx, m, call) -> str | None:
        fn = ctx.ix.function_of(call)
        for o in m.optimizers:
            if o.target is None:
                continue
            for r in (o.target, *ctx.facts.refs(binding_of(ctx.ix, o.target))):
                if ctx.ix.function_of(r) is fn:
                    return ctx.ix.code(r)
        return None


class DataParallelRule(Rule):
    """Remove `nn.DataParallel`: setup distributes the model.

    **What**: `model = nn.DataParallel(model)` (also under `if torch.cuda.device_count() > 1:`)
    is removed; `nn.DataParallel(Net())` becomes `Net()`. `model.module` keeps working: the
    set-up model's `.module` is the original module.

    **Why**: DataParallel inside a distributed process would split each process's batch over
    all GPUs again.

    The functional form inside a forward, `nn.parallel.data_parallel(self.main, x,
    range(self.ngpu))`, becomes the module's own call `self.main(x)`.

    **Before**: `model = nn.DataParallel(model)`  **After**: (removed)
    """

    code = "MIG208"
    anchors = A.Ident("DataParallel", "data_parallel")
    name = "data-parallel"
    summary = "Remove nn.DataParallel: setup distributes the model (model.module still works)"

    def plan(self, ctx: PlanContext) -> None:
        ix = ctx.ix
        for call in ix.calls:
            if ix.call_qname(call) in N.DATA_PARALLEL_FN:
                self._functional(ctx, call)
                continue
            if ix.call_qname(call) not in N.DATA_PARALLEL or not call.args:
                continue
            assign = ix.parent.get(call)
            while isinstance(assign, (cst.Attribute, cst.Call)):
                assign = ix.parent.get(assign)
            target = assign.targets[0].target if isinstance(assign, cst.Assign) and len(assign.targets) == 1 else None
            if target is None or ctx.facts.model_of(target) is None:
                continue
            change = ctx.finding(self.code, call, "remove DataParallel: setup distributes the model (model.module keeps working)")
            inner = call.args[0].value
            if inner.deep_equals(target) and ix.small_statement(call) is assign:
                change.remove(assign)
            else:
                change.replace(call, lambda u: u.args[0].value)
            self._strip_module_before_setup(ctx, change, ctx.facts.model_of(target), call)

    def _functional(self, ctx, call: cst.Call) -> None:
        """``data_parallel(module, inputs, device_ids, ...)`` -> ``module(inputs)``: every
        process would split its own batch over all GPUs again."""
        message = (
            "data_parallel splits each process's batch over all GPUs again: call the module "
            "directly (setup distributes the model)"
        )
        keys = [a.keyword.value if a.keyword else i for i, a in enumerate(call.args)]
        known = {0, 1, 2, 3, 4, "module", "inputs", "device_ids", "output_device", "dim"}
        if any(a.star for a in call.args) or not set(keys) <= known or not (
            {0, "module"} & set(keys) and {1, "inputs"} & set(keys)
        ):
            ctx.finding(self.code, call, message, fixed=False)  # module_kwargs, *args: by hand
            return

        def direct(u: cst.Call) -> cst.Call:
            args = {k: a.value for k, a in zip(keys, u.args)}
            module, inputs = args.get(0, args.get("module")), args.get(1, args.get("inputs"))
            values = [e.value for e in inputs.elements] if isinstance(inputs, cst.Tuple) else [inputs]
            stars = [isinstance(e, cst.StarredElement) for e in inputs.elements] if isinstance(inputs, cst.Tuple) else [False]
            comma = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
            new = [
                cst.Arg(v, star="*" if s else "", comma=comma if i < len(values) - 1 else cst.MaybeSentinel.DEFAULT)
                for i, (v, s) in enumerate(zip(values, stars))
            ]
            return cst.Call(func=module, args=new)

        ctx.finding(self.code, call, message).replace(call, direct)

    @staticmethod
    def _strip_module_before_setup(ctx, change, m, call) -> None:
        """``model.module.fc`` before setup (optimizer param groups) -> ``model.fc``: only the
        set-up model has ``.module``."""
        from migrator.rules._setup import setup_anchor

        ix = ctx.ix
        anchor = setup_anchor(ctx, m)
        if anchor is None:
            return
        for ref in m.refs:
            attr = ix.parent.get(ref)
            if not (isinstance(attr, cst.Attribute) and attr.value is ref and attr.attr.value == "module"):
                continue
            if ix.order(ref) > ix.order(call) and (ix.order(ref) < ix.order(anchor) or ix.inside(ref, anchor)):
                change.replace(attr, lambda u: u.value)


class ForwardMethodRule(Rule):
    """Register methods other than `forward` that run the model from outside.

    **What**: (targets that need it, e.g. fabric) when a set-up model's own method that calls
    its submodules (`model.decode(z)`, `model.generate(...)`) is called from outside, adds
    `model.mark_forward_method("decode")` after setup. Methods that only read parameters
    (`init_hidden`) need nothing.

    **Why**: Fabric raises on such calls under multi-device strategies unless registered.
    """

    code = "MIG209"
    anchors = A.MODELS
    name = "forward-methods"
    summary = 'Register non-forward methods: model.mark_forward_method("decode")'

    def plan(self, ctx: PlanContext) -> None:
        from migrator.rules._setup import model_text, set_up_everywhere

        if not ctx.vocab.needs_mark_forward_method:
            return
        ix = ctx.ix
        for m in ctx.facts.models:
            if m.class_def is None:
                continue
            anchor = set_up_everywhere(ctx, m)  # after the ``if`` when set up in both branches
            if anchor is None:
                continue
            runs = self._forward_methods(ctx, m.class_def)
            called = []
            for ref in m.refs:
                attr = ix.parent.get(ref)
                call = ix.parent.get(attr)
                is_call = isinstance(attr, cst.Attribute) and isinstance(call, cst.Call) and call.func is attr
                if is_call and attr.attr.value in runs and attr.attr.value not in called:
                    called.append(attr.attr.value)
            done = {
                c.args[0].value.evaluated_value
                for c in ix.calls
                if isinstance(c.func, cst.Attribute) and c.func.attr.value == "mark_forward_method"
                and c.args and isinstance(c.args[0].value, cst.SimpleString)
            }
            name = model_text(ctx, m)
            for method in called:
                if method in done:
                    continue
                change = ctx.finding(self.code, anchor, "")
                stmt = change.stmt(ctx.vocab.mark_forward_method, model=name, method=method)
                change.insert_after(anchor, stmt)
                change.message = f"{name}.{method}() runs submodules from outside forward: register it ({ix.code(stmt).strip()})"

    @staticmethod
    def _forward_methods(ctx, cls: cst.ClassDef) -> set[str]:
        """Methods (not forward) whose body calls a submodule (``self.decoder(...)``) or ``self(...)``."""
        ix = ctx.ix
        methods = {f.name.value: f for f in cls.body.body if isinstance(f, cst.FunctionDef)}
        out = set()
        for name, fn in methods.items():
            if name.startswith("__") or name == "forward":
                continue
            for call in ix.subtree(fn, cst.Call):
                f = call.func
                if isinstance(f, cst.Name) and f.value == "self":
                    out.add(name)
                elif (
                    isinstance(f, cst.Attribute) and isinstance(f.value, cst.Name) and f.value.value == "self"
                    and f.attr.value not in methods and f.attr.value not in _MODULE_METHODS
                ):
                    out.add(name)  # self.<submodule>(...)
        return out
