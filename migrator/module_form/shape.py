"""Recognise the loop shape the module form can express (epoch loop, batch loops, optimizer) or say why not."""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst
import libcst.matchers as matchers

from migrator.analysis import Facts
from migrator.analysis import names as N
from migrator.module_form.names import rename, usage
from migrator.module_form.phases import attach_function, call_phase, loop_holder


@dataclass(frozen=True)
class Misfit:
    """Why the script cannot become a module: a MIG5xx code, the node it is about, the reason."""

    code: str
    node: cst.CSTNode
    reason: str


class NoFit(Exception):
    def __init__(self, code: str, node: cst.CSTNode, reason: str) -> None:
        super().__init__(reason)
        self.misfit = Misfit(code, node, reason)


@dataclass
class Phase:
    """One batch loop written inline in the epoch loop: ``for [i,] <target> in [enumerate(]loader[)]``."""

    loop: cst.For
    holder: cst.BaseCompoundStatement  # the epoch-loop statement holding it (the loop, or a ``with``)
    loader: cst.BaseExpression
    index: str | None
    target: cst.BaseExpression
    # set when the loop is the body of a helper function called from the epoch loop
    function: cst.FunctionDef | None = None
    call_stmt: cst.SimpleStatementLine | None = None
    params: dict[str, cst.BaseExpression] = field(default_factory=dict)  # parameter -> argument
    pre: list[cst.BaseStatement] = field(default_factory=list)  # the function's statements around the loop
    post: list[cst.BaseStatement] = field(default_factory=list)
    removable: bool = False  # the function is used by that call only
    # ``if <flag>: break`` ending the loop body (or ending ``if i % n == 0:`` bodies ending it):
    # one batch per epoch when the flag holds, i.e. the Trainer's ``limit_*_batches``
    stop: cst.If | None = None
    # ``enumerate(loader, <start>)`` with a start other than 0: the index is ``batch_idx + start``
    start: str | None = None

    @property
    def in_epoch(self) -> cst.CSTNode:
        """The epoch-loop statement that runs this phase."""
        return self.call_stmt if self.call_stmt is not None else self.holder

    def aliases(self, name: str) -> set[str]:
        """``name`` (an epoch-scope variable) and the parameters it is passed as."""
        return {name} | {p for p, a in self.params.items() if isinstance(a, cst.Name) and a.value == name}


@dataclass
class Shape:
    """Everything the rendering needs, as original nodes."""

    epoch_loop: cst.For
    epoch_var: str | None
    epoch_start: str  # code of range()'s start ("0" when absent)
    max_epochs: str  # code
    train: Phase
    val: Phase | None
    epoch_pre: list[cst.BaseStatement]
    epoch_mid: list[cst.BaseStatement]  # between the training and the evaluation loop
    epoch_post: list[cst.BaseStatement]
    model: str
    model_class: str | None
    optimizer: str
    optimizer_stmt: cst.SimpleStatementLine
    optimizer_call: cst.Call
    scheduler: str | None = None
    scheduler_stmt: cst.SimpleStatementLine | None = None
    scheduler_call: cst.Call | None = None
    interval: str = "epoch"
    loss: cst.BaseExpression | None = None
    dropped: set[cst.CSTNode] = field(default_factory=set)  # statements the Trainer now does
    clip: str | None = None  # gradient_clip_val code
    trainer_args: list[tuple[str, str]] = field(default_factory=list)  # Trainer keyword -> code
    removed: set[cst.CSTNode] = field(default_factory=set)  # statements cut out of kept statements
    scheduler_step: cst.CSTNode | None = None  # the epoch-interval ``scheduler.step()`` statement
    anchor: cst.CSTNode | None = None  # top-level statement the class goes before
    scope: cst.FunctionDef | None = None  # function holding the epoch loop (None: module level)
    # manual optimization (several optimizers or backward passes per batch): the step keeps the
    # script's zero_grad/step calls and turns each ``loss.backward()`` into manual_backward
    manual: bool = False
    models: list[str] = field(default_factory=list)  # the optimized models, in optimizer order
    optimizers: list[tuple[str, cst.SimpleStatementLine, cst.Call]] = field(default_factory=list)
    schedulers: list[tuple[str, cst.SimpleStatementLine, cst.Call]] = field(default_factory=list)
    backward_stmts: dict[cst.CSTNode, cst.BaseExpression] = field(default_factory=dict)  # statement -> loss
    # modules the steps use but do not train, moved to the script's device before the loop
    # (a frozen feature network in the loss): the module moves them to its own device
    moved: list[str] = field(default_factory=list)
    # names bound before the loop, re-bound by it and read after it: read back from the module
    read_after: list[str] = field(default_factory=list)
    # ``break`` ending the ``if`` that ends the epoch loop (a stop on the epoch's loss): the
    # Trainer's should_stop, decided alike on every process
    epoch_stop: cst.SimpleStatementLine | None = None
    # manual accumulation: (K code, the ``if (i + 1) % K == 0:`` statement, ``loss = <E> / K``)
    accumulate: tuple[str, cst.If, cst.SimpleStatementLine] | None = None

    def in_accumulation(self, ix, node: cst.CSTNode) -> bool:
        """``node`` sits in the accumulation ``if`` (the Trainer's optimizer step now)."""
        return self.accumulate is not None and ix.inside(node, self.accumulate[1])


_DROP_METHODS = {"train", "eval", "zero_grad", "step"}


def analyse_shape(facts: Facts) -> Shape:
    """The module-form shape of the file, or raise ``NoFit`` naming the first obstacle."""
    ix = facts.ix
    _hazards(facts)
    backs = facts.backwards
    if not backs:
        raise NoFit("MIG502", ix.module, "no `loss.backward()` found: there is no training loop to turn into a training_step")
    manual = len(backs) > 1 or len(facts.optimizers) > 1
    back = backs[0]
    loops = [lp for lp in ix.loops_around(back.call)]
    batch = next((lp for lp in loops if isinstance(lp, cst.For)), None)
    if batch is None or not isinstance(loops[0], cst.For):
        raise NoFit("MIG502", back.call, "`backward()` is not directly inside a `for` loop over a DataLoader")
    train = loader_phase(facts, batch, "training")
    _carried_state(train)
    epoch = next(iter(ix.loops_around(batch)), None)
    if epoch is None:
        epoch = attach_function(facts, train, "training")
        if train.function is not None and not train.removable:
            raise NoFit("MIG506", train.function, f"`{train.function.name.value}()` is also used outside the epoch loop")
    if epoch is None:
        raise NoFit("MIG502", batch, "the batch loop is not written inside an epoch loop (`for epoch in range(...)`) of the same function")
    if not isinstance(epoch, cst.For) or not _is_range(ix, epoch.iter):
        raise NoFit("MIG502", epoch, "the epoch loop is not `for epoch in range(...)`: the Trainer needs a number of epochs")
    if ix.loops_around(epoch):
        raise NoFit("MIG502", epoch, "the epoch loop is itself inside a loop")
    shape = _epoch_parts(facts, epoch, train)
    if manual:
        _manual(facts, shape)
    else:
        from migrator.module_form.accumulation import accumulation

        accumulation(facts, shape, back)
        _training_body(facts, shape, back)
        _optimizer(facts, shape)
    _escapes(facts, shape)
    _limits(facts, shape)
    _moved_helpers(facts, shape)
    return shape


def _moved_helpers(facts: Facts, shape: Shape) -> None:
    """Names bound to ``<module>.to(device)`` (or ``.cuda()``) in the loop's scope before it,
    other than the trained models, that the loop region reads: the epoch loop, its helper
    functions and the module-level functions they call. On N processes the script's ``device``
    is the same for all of them; the module moves these to its own device when fit starts."""
    ix = facts.ix
    devices = {d.target.value for d in facts.devices if isinstance(d.target, cst.Name)}
    functions = {f.name.value: f for f in ix.module.body if isinstance(f, cst.FunctionDef)}
    region = [shape.epoch_loop] + [p.function for p in (shape.train, shape.val) if p is not None and p.function is not None]
    reads: set[str] = set()
    todo, seen = list(region), set()
    while todo:
        node = todo.pop()
        for n in ix.subtree(node, cst.Name):
            parent = ix.parent.get(n)
            if isinstance(parent, cst.Attribute) and parent.attr is n:
                continue
            reads.add(n.value)
            if n.value in functions and n.value not in seen:
                seen.add(n.value)
                todo.append(functions[n.value])
    for assign in ix.assigns:
        v = assign.value
        if not (isinstance(assign, cst.Assign) and len(assign.targets) == 1 and isinstance(assign.targets[0].target, cst.Name)
                and isinstance(v, cst.Call) and isinstance(v.func, cst.Attribute)):
            continue
        name = assign.targets[0].target.value
        moves = v.func.attr.value == "cuda" or (
            v.func.attr.value == "to" and len(v.args) == 1 and isinstance(v.args[0].value, cst.Name)
            and v.args[0].value.value in devices)
        stmt = ix.statement(assign)
        if (moves and _builds_module(ix, v.func.value) and name in reads and name not in shape.models and name not in shape.moved
                and ix.function_of(stmt) is shape.scope and ix.order(stmt) < ix.order(shape.epoch_loop)
                and not ix.inside(stmt, shape.epoch_loop)):
            shape.moved.append(name)


def _carried_state(phase: Phase) -> None:
    """A name the batch loop re-binds from its own previous value (an RNN hidden state)."""
    u = usage(phase.loop.body.body)
    bound = set(usage([cst.Expr(phase.target)]).loads) | ({phase.index} if phase.index else set())
    for kind, name, node in u.events:
        if kind == "load" and name not in bound and name in u.assigned:
            raise NoFit("MIG505", node, f"`{name}` is carried from one batch to the next: a training step sees one batch only")
        if kind != "load":
            bound.add(name)


def _hazards(facts: Facts) -> None:
    ix = facts.ix
    for m in facts.models:
        if m.manual:
            raise NoFit("MIG504", m.expr, "parameters are updated by hand (no optimizer): configure_optimizers has nothing to return")
    for call in ix.calls:
        f = call.func
        if isinstance(f, cst.Attribute) and f.attr.value == "step" and call.args and any(
            o.target is not None and o.target.deep_equals(f.value) for o in facts.optimizers
        ):
            raise NoFit("MIG503", call, "`optimizer.step(closure)` (LBFGS-style): the Trainer steps without a closure")
        q = ix.call_qname(call) or ""
        if q in N.AUTOCAST or q in N.GRAD_SCALER:
            raise NoFit("MIG507", call, "autocast / GradScaler the precision conversion did not remove")


def _is_range(ix, expr: cst.BaseExpression) -> bool:
    return isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name) and expr.func.value == "range" and 1 <= len(expr.args) <= 2


def loader_phase(facts: Facts, loop: cst.For, what: str) -> Phase:
    ix = facts.ix
    it, index, target, start = loop.iter, None, loop.target, None
    if isinstance(it, cst.Call) and ix.call_qname(it) == "builtins.enumerate" and 1 <= len(it.args) <= 2:
        if not (isinstance(target, cst.Tuple) and len(target.elements) == 2 and isinstance(target.elements[0].value, cst.Name)):
            raise NoFit("MIG502", loop, f"the {what} loop's `enumerate` target is not `i, batch`")
        if len(it.args) == 2:  # ``enumerate(loader, 1)``: the index is batch_idx + start
            arg = it.args[1]
            if arg.star or (arg.keyword is not None and arg.keyword.value != "start") or not isinstance(arg.value, cst.Integer):
                raise NoFit("MIG502", loop, f"the {what} loop's `enumerate` start is not a number")
            start = None if int(arg.value.value, 0) == 0 else arg.value.value
        index, target, it = target.elements[0].value.value, target.elements[1].value, it.args[0].value
    if not any(ix.inside(r, it) or r is it for ld in facts.loaders for r in (ld.refs or ())) and not any(
        ix.inside(ld.call, it) for ld in facts.loaders
    ):
        raise NoFit("MIG502", loop, f"the {what} loop does not iterate a DataLoader")
    names = {n.value for n in ix.subtree(target, cst.Name)} if not isinstance(target, cst.Name) else {target.value}
    if "batch" in names and not isinstance(target, cst.Name) or "batch_idx" in names:
        raise NoFit("MIG502", loop, f"the {what} loop's target uses the names batch/batch_idx of the step's parameters")
    stop = None
    for node in ix.subtree(loop.body, (cst.Break, cst.Continue, cst.Return, cst.Yield)):
        if ix.function_of(node) is not ix.function_of(loop):
            continue  # ends a function defined in the step, not the step
        inner = [lp for lp in ix.loops_around(node) if ix.inside(lp, loop.body)]
        if isinstance(node, (cst.Break, cst.Continue)) and inner:
            continue  # leaves a loop nested in the step
        if isinstance(node, cst.Break) and stop is None:  # (``i % n == 0`` is true at batch 0 when i starts at 0)
            stop = _trailing_stop(ix, loop, node, index if start is None else None, target)
            if stop is not None:
                continue
        if isinstance(node, cst.Continue):
            raise NoFit("MIG503", node, f"`continue` inside the {what} loop: a step that skips its batch returns "
                        "None, which a Trainer supports on one process only (under DDP the other processes "
                        "wait for this one's gradients and hang)")
        word = type(node).__name__.lower()
        raise NoFit("MIG503", node, f"`{word}` inside the {what} loop: a {what} step cannot end its epoch early")
    if loop.orelse is not None:
        raise NoFit("MIG503", loop, f"`for ... else` on the {what} loop")
    return Phase(loop, loop_holder(ix, loop), it, index, target, stop=stop, start=start)


def _trailing_stop(ix, loop: cst.For, brk: cst.Break, index: str | None, target) -> cst.If | None:
    """The ``if <flag>: break`` holding ``brk`` when it ends the batch after its first when the
    flag holds and never otherwise: the ``if`` (no ``else``) is the loop body's last statement,
    or the last statement of ``if <i> % n == 0:`` / ``if <i> == 0:`` bodies (true at batch 0) that
    end the loop body; the flag calls nothing and reads no name the loop binds."""
    holder = ix.parent.get(brk)
    if isinstance(holder, cst.SimpleStatementSuite) and len(holder.body) == 1:
        guard = ix.parent.get(holder)
    elif isinstance(holder, cst.SimpleStatementLine) and len(holder.body) == 1 and len(ix.parent[holder].body) == 1:
        guard = ix.parent.get(ix.parent[holder])
    else:
        return None
    if not isinstance(guard, cst.If) or guard.orelse is not None:
        return None
    cur = guard
    while True:
        block = ix.parent.get(cur)
        if not isinstance(block, cst.IndentedBlock) or block.body[-1] is not cur:
            return None
        owner = ix.parent.get(block)
        if owner is loop:
            break
        if not (isinstance(owner, cst.If) and owner.orelse is None and len(block.body) > 1
                and _true_at_first_batch(owner.test, index)):
            return None
        cur = owner
    if ix.subtree(guard.test, (cst.Call, cst.Lambda, cst.NamedExpr, cst.Await, cst.Yield)):
        return None
    bound = set(usage([loop]).stores) | set(usage([cst.Expr(target)]).loads) | ({index} if index else set())
    if set(usage([guard.test]).loads) & bound:
        return None
    return guard


def _true_at_first_batch(test: cst.BaseExpression, index: str | None) -> bool:
    """``<index> % n == 0`` or ``<index> == 0`` (parenthesised or not), or an ``or`` with one of
    them on either side and no call anywhere (``i == 0 or (i + 1) % n == 0``: the first batch
    and every n-th)."""
    if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.Or):
        if matchers.findall(test, matchers.Call() | matchers.NamedExpr() | matchers.Await() | matchers.Yield()):
            return False
        return _true_at_first_batch(test.left, index) or _true_at_first_batch(test.right, index)
    if index is None or not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1):
        return False
    comp = test.comparisons[0]
    if not (isinstance(comp.operator, cst.Equal) and isinstance(comp.comparator, cst.Integer) and comp.comparator.value == "0"):
        return False
    left = test.left
    if isinstance(left, cst.BinaryOperation) and isinstance(left.operator, cst.Modulo):
        left = left.left
    return isinstance(left, cst.Name) and left.value == index


def _limits(facts: Facts, shape: Shape) -> None:
    """A phase's trailing ``if <flag>: break`` becomes ``limit_*_batches=1 if <flag> else None``
    when the flag has the same value at every batch: no name or attribute the epoch loop (or
    the helper function) assigns."""
    ix = facts.ix
    for phase, key in ((shape.train, "limit_train_batches"), (shape.val, "limit_val_batches")):
        if phase is None or phase.stop is None:
            continue
        test = phase.stop.test
        region = [shape.epoch_loop] + ([phase.function] if phase.function is not None else [])
        local = set(usage(phase.function.body.body).stores) if phase.function is not None else set()
        flag = rename(test, phase.params)
        names = set(usage([flag]).loads)
        if set(usage([test]).loads) & local or names & set(usage([shape.epoch_loop]).stores) or _assigns_into(ix, region, names):
            raise NoFit("MIG503", phase.stop, f"`break` inside the {'training' if key == 'limit_train_batches' else 'evaluation'} "
                        "loop on a condition the loop changes: a step cannot end its epoch early")
        code = ix.code(flag)
        if isinstance(flag, (cst.IfExp, cst.Lambda)) and not flag.lpar:
            code = f"({code})"
        shape.trainer_args.append((key, f"1 if {code} else None"))
        if ix.block_of(phase.stop) is phase.loop.body:
            shape.dropped.add(phase.stop)
        else:
            shape.removed.add(phase.stop)


def _assigns_into(ix, region: list, names: set[str]) -> bool:
    """Some statement in ``region`` assigns an attribute or item of one of ``names``."""
    for node in region:
        for t in ix.subtree(node, (cst.AssignTarget, cst.AugAssign, cst.AnnAssign)):
            target = t.target
            while isinstance(target, (cst.Attribute, cst.Subscript)):
                target = target.value
                if isinstance(target, cst.Name) and target.value in names:
                    return True
    return False


def _epoch_parts(facts: Facts, epoch: cst.For, train: Phase) -> Shape:
    ix = facts.ix
    body = list(epoch.body.body)
    holder = _direct_child(ix, train.in_epoch, epoch)
    if holder is not train.in_epoch:
        raise NoFit("MIG502", train.loop, "the training loop is nested in other statements of the epoch loop")
    val = None
    rest: list[cst.BaseStatement] = []
    for stmt in body[body.index(holder) + 1:]:
        loop = stmt if isinstance(stmt, cst.For) else (
            stmt.body.body[0] if isinstance(stmt, cst.With) and len(stmt.body.body) == 1 and isinstance(stmt.body.body[0], cst.For) else None)
        if val is None and loop is not None and any(loop in ld.loops for ld in facts.loaders):
            val = loader_phase(facts, loop, "evaluation")
            continue
        if val is None and (called := call_phase(facts, stmt, "evaluation")) is not None:
            val = called
            continue
        rest.append(stmt)
    if val is not None:
        mid = body[body.index(holder) + 1: body.index(val.in_epoch)]
        rest = [s for s in rest if s not in mid]
        # statements between the loops that only reset accumulators go before validation
        epoch_mid = mid
    else:
        epoch_mid = []
    target = epoch.target
    if not isinstance(target, cst.Name):
        raise NoFit("MIG502", epoch, "the epoch loop variable is not a plain name")
    rng = epoch.iter
    args = [a.value for a in rng.args]
    start, stop = (args[0], args[1]) if len(args) == 2 else (None, args[0])
    start_code = ix.code(start) if start is not None else "0"
    stop_code = ix.code(stop)
    if start is None or start_code == "0":
        max_epochs = stop_code
    elif isinstance(stop, cst.BinaryOperation) and isinstance(stop.operator, cst.Add) and ix.code(stop.right) == start_code:
        max_epochs = ix.code(stop.left)
    else:
        max_epochs = f"{stop_code} - {start_code}"
    scope = ix.function_of(epoch)
    anchor = epoch
    for a in ix.ancestors(epoch):
        if not isinstance(a, cst.Module):
            anchor = a
    shape = Shape(
        epoch_loop=epoch, epoch_var=target.value, epoch_start=start_code, max_epochs=max_epochs,
        train=train, val=val, epoch_pre=body[: body.index(holder)], epoch_mid=epoch_mid, epoch_post=rest,
        model="", model_class=None, optimizer="", optimizer_stmt=None, optimizer_call=None,  # type: ignore[arg-type]
        anchor=ix.statement(anchor) if anchor is not epoch else epoch, scope=scope,
    )
    for stmt in body:
        for node in ix.subtree(stmt, (cst.Break, cst.Continue, cst.Return)):
            if ix.function_of(node) is not ix.function_of(epoch):
                continue  # ends a function defined in the loop
            if not any(ix.inside(lp, epoch.body) for lp in ix.loops_around(node)):
                if _stops_after_epoch(ix, epoch, node) and stmt in rest:
                    shape.epoch_stop = ix.statement(node)
                    continue
                raise NoFit("MIG503", node, "the epoch loop ends early (`break`/`return` other than a `break` ending "
                            "an `if` that ends the epoch, after training): use an EarlyStopping callback by hand")
    return shape


def _stops_after_epoch(ix, epoch: cst.For, node: cst.CSTNode) -> bool:
    """``if <cond>: ...; break`` (no ``else``) is the epoch loop's last statement and the
    ``break`` its body's last: the run stops after this epoch (the Trainer's ``should_stop``)."""
    stmt = ix.statement(node)
    block = ix.block_of(stmt)
    owner = ix.parent.get(block)
    return (isinstance(node, cst.Break) and isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1
            and isinstance(owner, cst.If) and owner.orelse is None and block.body[-1] is stmt
            and epoch.body.body[-1] is owner and epoch.orelse is None)


def _direct_child(ix, node: cst.CSTNode, loop: cst.For) -> cst.CSTNode | None:
    for stmt in loop.body.body:
        if stmt is node or ix.inside(node, stmt):
            return stmt
    return None


def _training_body(facts: Facts, shape: Shape, back) -> None:
    ix = facts.ix
    shape.loss = back.loss
    stmt = ix.statement(back.call)
    if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Expr)):
        raise NoFit("MIG502", back.call, "`backward()` is not a statement of its own")
    if ix.block_of(stmt) is not shape.train.loop.body:
        raise NoFit("MIG503", back.call, "`backward()` runs conditionally inside the training loop")
    shape.dropped.add(stmt)
    for call in ix.subtree(shape.train.loop.body, cst.Call):
        q = ix.call_qname(call) or ""
        if q in N.CLIP:
            s = ix.statement(call)
            if N.CLIP[q] != "max_norm" or len(call.args) != 2 or (
                    ix.block_of(s) is not shape.train.loop.body and not shape.in_accumulation(ix, s)):
                raise NoFit("MIG502", call, "gradient clipping other than `clip_grad_norm_(params, max_norm)` in the loop body")
            shape.clip = ix.code(rename(call.args[1].value, shape.train.params))
            shape.dropped.add(s)


def _optimizer(facts: Facts, shape: Shape) -> None:
    ix = facts.ix
    opt = facts.optimizers[0] if facts.optimizers else None
    if opt is None or not isinstance(opt.target, cst.Name) or len(opt.models) != 1 or not isinstance(opt.models[0], cst.Name):
        raise NoFit("MIG502", shape.train.loop, "no `optimizer = Optimizer(model.parameters(), ...)` assignment for the trained model")
    _made_before_loop(ix, shape, opt, "optimizer")
    shape.optimizer, shape.optimizer_stmt, shape.optimizer_call = opt.target.value, opt.stmt, opt.call
    shape.model = opt.models[0].value
    model = facts.model_of(opt.models[0])
    if model is not None and model.class_def is not None:
        shape.model_class = model.class_def.name.value
    shape.models = [shape.model]
    _drop_trainer_calls(facts, shape, shape.train.aliases(shape.optimizer))
    for call in ix.subtree(shape.train.loop.body, cst.Call):
        f = call.func
        if (isinstance(f, cst.Attribute) and isinstance(f.value, cst.Name) and f.attr.value in ("step", "zero_grad")
                and f.value.value in shape.train.aliases(shape.optimizer) and ix.statement(call) not in shape.dropped
                and not shape.in_accumulation(ix, call)):
            raise NoFit("MIG503", call, "the optimizer steps conditionally, not as `if (i + 1) % K == 0: optimizer.step(); optimizer.zero_grad()` (which becomes accumulate_grad_batches=K): the Trainer steps every batch")
    for assign in ix.assigns:
        v = assign.value
        if (isinstance(v, cst.Call) and v.args and isinstance(v.args[0].value, cst.Name)
                and v.args[0].value.value == shape.optimizer and len(assign.targets) == 1
                and isinstance(assign.targets[0].target, cst.Name)
                and ix.block_of(ix.statement(assign)) is ix.block_of(shape.epoch_loop)):
            shape.scheduler, shape.scheduler_call = assign.targets[0].target.value, v
            shape.scheduler_stmt = ix.statement(assign)
    if shape.scheduler is None:
        return
    for call in ix.subtree(shape.epoch_loop, cst.Call):
        f = call.func
        if isinstance(f, cst.Attribute) and isinstance(f.value, cst.Name) and f.value.value == shape.scheduler and f.attr.value == "step":
            s = ix.statement(call)
            if call.args or not (isinstance(s, cst.SimpleStatementLine) and len(s.body) == 1):
                raise NoFit("MIG502", call, "the scheduler is stepped with a metric or inside an expression")
            if ix.block_of(s) is shape.train.loop.body or shape.in_accumulation(ix, s):
                shape.interval = "step"  # (accumulating: at each real optimizer step)
            elif ix.block_of(s) is not shape.epoch_loop.body:
                raise NoFit("MIG502", call, "the scheduler is stepped conditionally")
            elif s in shape.epoch_pre:
                raise NoFit("MIG502", call, "the scheduler is stepped before the epoch's training: the Trainer steps it after")
            else:
                shape.scheduler_step = s  # what follows it in the epoch runs after the Trainer's step
            shape.dropped.add(s)


def _made_before_loop(ix, shape: Shape, made, what: str) -> None:
    """``made`` (an optimizer fact) is created before the epoch loop, in its block or in a block
    holding it through ``if`` statements only (a module-level optimizer and an
    ``if __name__ == "__main__":`` loop), and nothing but the loop region reads it: the epoch loop
    and the helper functions it calls (configure_optimizers creates it now)."""
    block = ix.block_of(made.stmt)
    loop = shape.epoch_loop
    if ix.order(made.stmt) > ix.order(loop) or not ix.inside(loop, block):
        raise NoFit("MIG502", made.call, f"the {what} is not created before the epoch loop in the same block "
                    "(or in a block holding it through `if` statements only)")
    between = [a for a in ix.ancestors(loop) if ix.inside(a, block) and a is not block]
    if not all(isinstance(a, (cst.If, cst.IndentedBlock)) for a in between):
        raise NoFit("MIG502", made.call, f"the {what} is created outside the function or loop holding the epoch loop")
    if block is ix.block_of(loop) or not isinstance(made.target, cst.Name):
        return  # the same block: _escapes checks the statements around the loop
    name = made.target.value
    region = [loop] + [p.function for p in (shape.train, shape.val) if p is not None and p.function is not None]
    for node in ix.subtree(ix.module, cst.Name):
        if node.value != name or ix.inside(node, made.stmt) or any(ix.inside(node, r) for r in region):
            continue
        parent = ix.parent.get(node)
        if isinstance(parent, cst.Attribute) and parent.attr is node or isinstance(parent, cst.Arg) and parent.keyword is node:
            continue
        raise NoFit("MIG506", node, f"`{name}` is used outside the epoch loop and its helper functions: "
                    "configure_optimizers creates it now")


def _builds_module(ix, expr: cst.BaseExpression) -> bool:
    """``Net(...)`` of a class of the file or ``nn.Linear(...)``: ``.to()`` moves it in place
    (a tensor's ``.to()`` makes a copy, which the module could not move)."""
    if not isinstance(expr, cst.Call):
        return False
    if isinstance(expr.func, cst.Name) and any(c.name.value == expr.func.value for c in ix.classes):
        return True
    q = ix.call_qname(expr) or ""
    return q.startswith("torch.nn.") and q.rsplit(".", 1)[-1][:1].isupper()


def _drop_trainer_calls(facts: Facts, shape: Shape, optimizers: set[str]) -> None:
    """Drop what the Trainer now does: ``model.train()`` / ``model.eval()`` statements of the
    epoch loop (and its helper functions), and ``optimizer.step()`` / ``zero_grad()``
    statements of the loops for the ``optimizers`` (none under manual optimization)."""
    ix = facts.ix
    loops = (shape.train.loop.body, shape.epoch_loop.body)
    phases = [p for p in (shape.train, shape.val) if p is not None]
    models = set().union(*(p.aliases(m) for p in phases for m in shape.models))
    for call in ix.calls:
        f = call.func
        if not (isinstance(f, cst.Attribute) and isinstance(f.value, cst.Name)):
            continue
        s = ix.statement(call)
        is_stmt = isinstance(s, cst.SimpleStatementLine) and len(s.body) == 1 and isinstance(s.body[0], cst.Expr) and s.body[0].value is call
        in_loop = any(ix.block_of(s) is b for b in loops)
        in_phase = ix.inside(s, shape.epoch_loop) or any(
            p.function is not None and ix.inside(s, p.function) for p in phases)
        drop_model = f.value.value in models and f.attr.value in ("train", "eval") and in_phase
        drop_opt = f.value.value in optimizers and f.attr.value in ("step", "zero_grad") and in_loop
        if is_stmt and (drop_model or drop_opt):
            shape.dropped.add(s)


def _manual(facts: Facts, shape: Shape) -> None:
    """Several optimizers or backward passes per batch: manual optimization. Every backward and
    every optimizer call of the training loop is a statement of its body (they run at each
    batch, in the script's order: no accumulation); the step keeps them, each ``loss.backward()``
    becoming ``self.manual_backward(loss)``. Schedulers are stepped where the script steps them."""
    ix = facts.ix
    shape.manual = True
    body = shape.train.loop.body
    for b in facts.backwards:
        stmt = ix.statement(b.call)
        if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1
                and isinstance(stmt.body[0], cst.Expr) and stmt.body[0].value is b.call):
            raise NoFit("MIG502", b.call, "`backward()` is not a statement of its own")
        if not ix.inside(stmt, body):
            raise NoFit("MIG504", b.call, "a `backward()` outside the training loop (several backward passes): "
                        "manual optimization runs them in training_step only")
        if ix.block_of(stmt) is not body:
            raise NoFit("MIG503", b.call, "a `backward()` runs conditionally or in a nested loop of the training loop: "
                        "manual optimization keeps every pass of each batch unconditional only")
        if b.call.args:
            raise NoFit("MIG504", b.call, "`backward(...)` with arguments (retain_graph, gradient): "
                        "manual optimization's manual_backward(loss) takes the loss only")
        shape.backward_stmts[stmt] = b.loss
    epoch_block = ix.block_of(shape.epoch_loop)
    for o in facts.optimizers:
        if not (isinstance(o.target, cst.Name) and o.models and all(isinstance(m, cst.Name) for m in o.models)):
            raise NoFit("MIG502", o.call, "an optimizer is not `name = Optimizer(model.parameters(), ...)` for a model of the script")
        _made_before_loop(ix, shape, o, "optimizer")
        if any(name == o.target.value for name, _, _ in shape.optimizers):
            raise NoFit("MIG502", o.call, f"`{o.target.value}` names two optimizers")
        shape.optimizers.append((o.target.value, o.stmt, o.call))
        shape.models += [m.value for m in o.models if m.value not in shape.models]
    if not shape.optimizers:
        raise NoFit("MIG502", shape.train.loop, "no `optimizer = Optimizer(model.parameters(), ...)` assignment for the trained models")
    names = {name for name, _, _ in shape.optimizers}
    aliases = set().union(*(shape.train.aliases(n) for n in names))
    for call in ix.subtree(body, cst.Call):
        f = call.func
        if (isinstance(f, cst.Attribute) and isinstance(f.value, cst.Name) and f.value.value in aliases
                and f.attr.value in ("step", "zero_grad")):
            s = ix.statement(call)
            if ix.block_of(s) is not body or not (len(s.body) == 1 and isinstance(s.body[0], cst.Expr) and s.body[0].value is call):
                raise NoFit("MIG503", call, "an optimizer steps or zeroes its gradients conditionally (gradient accumulation?): "
                            "manual optimization is generated for one unconditional step per optimizer and batch only")
    for assign in ix.assigns:
        v = assign.value
        stmt = ix.statement(assign)
        if (isinstance(v, cst.Call) and v.args and isinstance(v.args[0].value, cst.Name) and v.args[0].value.value in names
                and len(assign.targets) == 1 and isinstance(assign.targets[0].target, cst.Name) and ix.block_of(stmt) is epoch_block):
            if ix.order(stmt) > ix.order(shape.epoch_loop):
                raise NoFit("MIG502", v, "the scheduler is not created before the epoch loop")
            shape.schedulers.append((assign.targets[0].target.value, stmt, v))
    classes = []
    for name in shape.models:
        node = next(m for o in facts.optimizers for m in o.models if m.value == name)
        model = facts.model_of(node)
        classes.append(model.class_def.name.value if model is not None and model.class_def is not None else None)
    shape.model = shape.models[0]
    shape.model_class = "".join(classes) if all(classes) else None  # type: ignore[arg-type]
    _drop_trainer_calls(facts, shape, set())


def _escapes(facts: Facts, shape: Shape) -> None:
    """Values the loop region computes must not be needed after it (they now live in the module)."""
    ix = facts.ix
    block = ix.block_of(shape.epoch_loop)
    body = list(block.body)
    after = body[body.index(shape.epoch_loop) + 1:]
    before = body[: body.index(shape.epoch_loop)]
    bound = set(usage([shape.epoch_loop]).stores)
    seen: set[str] = set()
    used_after = set()
    for kind, name, _ in usage(after).events:  # a load before any new binding after the loop
        if kind == "load" and name not in seen:
            used_after.add(name)
        elif kind != "load":
            seen.add(name)
    initial = set(usage(before).stores)
    for name in sorted(bound & used_after):
        if name not in initial:
            raise NoFit("MIG506", shape.epoch_loop, f"`{name}` is computed by the loop and used after it "
                        "(without a value bound before the loop)")
        shape.read_after.append(name)  # module state if the hooks track it (render checks)
    gone = {shape.optimizer} | ({shape.scheduler} if shape.scheduler else set())
    own = [shape.optimizer_stmt, shape.scheduler_stmt]
    if shape.manual:
        gone = {name for name, _, _ in shape.optimizers + shape.schedulers}
        own = [stmt for _, stmt, _ in shape.optimizers + shape.schedulers]
    # the helper functions holding the batch loops move into the module with the loops
    moved = [p.function for p in (shape.train, shape.val) if p is not None and p.function is not None]
    elsewhere = [s for s in before + after if not any(s is o for o in own + moved)]
    for name in sorted(gone & set(usage(elsewhere).loads)):
        raise NoFit("MIG506", shape.epoch_loop, f"`{name}` is used outside the loop: configure_optimizers creates it now")
    if shape.scope is not None:
        for fn in ix.functions:
            if fn is not shape.scope and ix.inside(fn, shape.scope):
                raise NoFit("MIG502", fn, "a nested function in the function holding the loop")
