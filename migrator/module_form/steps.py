"""The module form of a loop that does not iterate a DataLoader: one pass of the loop is one step.

Full-batch epochs (a graph), episodes of a reinforcement-learning agent, synthetic batches
drawn until a loss is small, LBFGS steps with a closure, parameters updated by hand: none has
a DataLoader to shard, so the Trainer cannot drive a ``training_step`` per batch. Here the
*training loop* (the innermost ``for`` loop whose passes run every backward, directly or
through the file's functions) becomes a manual-optimization module:

    class PolicyModule(L.LightningModule):
        def __init__(self, policy, optimizers): ...        # the script's model and optimizers
        def training_step(self, batch, batch_idx):
            nonlocal running_reward                         # the loop's own scope, kept
            i_episode = batch                               # the loop target
            <the loop body>                                 # print -> self.print,
                                                            # backward -> manual_backward,
                                                            # break -> should_stop, writes on rank 0
    trainer.fit(PolicyModule(policy, [optimizer]), count(1))   # the loop's own iterable

The class is defined where the loop was, so the body keeps reading and re-binding the names of
its scope (``global``/``nonlocal`` declarations say which). Every process runs every pass:
there is nothing to shard, the passes are the same on every process (same seed, same data),
and DDP averages equal gradients, so N processes compute what one does. No checkpoint is
written (the loop's state lives in the script's variables, which a checkpoint would not hold).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libcst as cst

from migrator.analysis import Facts
from migrator.analysis.writes import writes_file
from migrator.module_form.shape import NoFit
from migrator.targets import ModuleVocabulary

_STEP_PARAMS = ("batch", "batch_idx")


@dataclass
class Steps:
    """The training loop and what the conversion needs about it (original nodes)."""

    loop: cst.For
    function: cst.FunctionDef | None  # holding the loop (None: module level)
    models: list[str]  # script names of the trained models (submodules of the module)
    optimizers: list[str]  # script names of their optimizers
    declared: list[str]  # names the body binds in the loop's scope: global / nonlocal
    helpers: list[cst.FunctionDef] = field(default_factory=list)  # file functions the body calls
    params: tuple[str, str] = _STEP_PARAMS

    @property
    def epoch_loop(self) -> cst.For:  # the statement the Trainer call replaces (edit.py's name)
        return self.loop


def analyse_steps(facts: Facts) -> Steps:
    """The training loop as steps, or NoFit saying why it cannot be one."""
    ix = facts.ix
    if not facts.backwards:
        raise NoFit("MIG502", ix.module, "no `loss.backward()` found: there is no training loop to turn into a training_step")
    loop = _training_loop(facts)
    if loop.orelse is not None:
        raise NoFit("MIG503", loop, "`for ... else` on the training loop")
    if ix.class_of(loop) is not None:
        raise NoFit("MIG502", loop, "the training loop is a method's (a class-based trainer): its `self` is not the module's")
    function = ix.function_of(loop)
    # (inside an outer loop, or in a function called in one (word_language_model's train()
    # per epoch): one fit per pass of the outer loop, each with its own Trainer)
    _body_hazards(ix, loop)
    if loop in facts.loader_loops():
        # the Trainer would shard the DataLoader's batches across processes while the code
        # around the steps (running sums, prints, stops) still ran as if it saw them all:
        # that is the batch-loop form's job, whose misfit stands
        raise NoFit("MIG502", loop, "the loop iterates a DataLoader (the batch-loop form applies)")
    from migrator.rules.side_effects_exits import draws_unseeded

    if draws_unseeded(ix):
        # no process group exists before fit to share a seed: each process would draw its
        # own data (its own targets), and DDP would average gradients of different problems
        raise NoFit("MIG502", loop, "the script draws random numbers without a seed, and every process runs every "
                    "pass of the loop: seed it (torch.manual_seed) so the processes draw the same data")
    params = _STEP_PARAMS
    names = {n.value for n in ix.subtree(loop, cst.Name)}
    if "self" in names:
        raise NoFit("MIG502", loop, "the training loop uses `self`: a method's loop cannot become another class's step")
    if set(params) & names:
        params = ("step_batch", "step_batch_idx")
        if set(params) & names:
            raise NoFit("MIG502", loop, "the training loop uses the names of the step's parameters")
    models, optimizers = _trained(facts, loop)
    declared = _declared(ix, loop, function)
    return Steps(loop, function, models, optimizers, declared, _helpers(facts, loop), params)


def _training_loop(facts: Facts) -> cst.For:
    """The innermost ``for`` loop running every backward (directly or through file functions)."""
    ix = facts.ix
    candidates = [lp for lp in ix.loops if isinstance(lp, cst.For) and facts.has_backward(lp.body, depth=3)]
    if not candidates:
        back = facts.backwards[0].call
        raise NoFit("MIG502", back, "`backward()` runs outside any `for` loop: there is no loop to make the steps of")
    inner = [lp for lp in candidates if not any(o is not lp and _reaches(facts, lp, o) for o in candidates)]
    if len(inner) != 1:
        raise NoFit("MIG502", inner[-1] if inner else candidates[0],
                    "backward passes in several loops: no single loop whose passes are the training steps")
    loop = inner[0]
    for b in facts.backwards:  # every backward must run in that loop's passes
        if not (ix.inside(b.call, loop) or _function_reached(facts, loop, ix.function_of(b.call))):
            raise NoFit("MIG502", b.call, "a `backward()` outside the training loop")
    return loop


def _reaches(facts: Facts, outer: cst.For, inner: cst.For) -> bool:
    """``inner`` runs inside a pass of ``outer`` (nested, or in a function ``outer`` calls)."""
    ix = facts.ix
    if ix.inside(inner, outer.body):
        return True
    return _function_reached(facts, outer, ix.function_of(inner))


def _function_reached(facts: Facts, loop: cst.For, fn: cst.FunctionDef | None, depth: int = 3) -> bool:
    if fn is None:
        return False
    return fn in _called_functions(facts, loop.body, depth)


def _called_functions(facts: Facts, node: cst.CSTNode, depth: int = 3) -> list[cst.FunctionDef]:
    """The file's functions ``node`` calls, transitively (``depth`` levels), in first-call order."""
    out: list[cst.FunctionDef] = []
    todo = [(node, depth)]
    while todo:
        cur, d = todo.pop(0)
        for call in facts.ix.subtree(cur, cst.Call):
            found = facts.funcs.callee(call)
            if found is None or found[0] in out or found[0] is cur:
                continue
            out.append(found[0])
            if d > 1:
                todo.append((found[0], d - 1))
    return out


def _owned(ix, node: cst.CSTNode, loop: cst.For) -> bool:
    """``node`` (break / continue / return) belongs to ``loop``: no inner loop or def between."""
    for a in ix.ancestors(node):
        if a is loop:
            return True
        if isinstance(a, (cst.For, cst.While, cst.FunctionDef, cst.Lambda, cst.ClassDef)):
            return False
    return False


def _body_hazards(ix, loop: cst.For) -> None:
    for node in ix.subtree(loop.body, (cst.Return, cst.Yield, cst.Global, cst.Nonlocal, cst.Await)):
        if isinstance(node, (cst.Global, cst.Nonlocal)):
            if ix.function_of(node) is ix.function_of(loop):
                raise NoFit("MIG502", node, "a `global`/`nonlocal` statement in the training loop")
            continue
        if isinstance(node, cst.Return) and not _owned(ix, node, loop):
            continue
        if isinstance(node, (cst.Yield, cst.Await)) and ix.function_of(node) is not ix.function_of(loop):
            continue
        word = {cst.Return: "return", cst.Yield: "yield", cst.Await: "await"}[type(node)]
        raise NoFit("MIG503", node, f"`{word}` in the training loop: a training step cannot end the function holding the loop")


def _trained(facts: Facts, loop: cst.For) -> tuple[list[str], list[str]]:
    """Names of the models the loop trains and of their optimizers, visible where the loop is."""
    ix = facts.ix
    models = models_of(facts, loop, ix)
    optimizers: list[str] = []
    for o in facts.optimizers:
        if not isinstance(o.target, cst.Name):
            raise NoFit("MIG502", o.call, "an optimizer is not assigned to a plain variable")
        if _conditional(ix, o.stmt):
            # (`if args.use_optimizer: optimizer = ...`): it may not exist; the module does
            # not hold the script's optimizers then (the step uses them as the script does)
            return models, []
        if o.target.value not in optimizers:
            optimizers.append(o.target.value)
    return models, optimizers


def models_of(facts: Facts, loop: cst.For, ix) -> list[str]:
    models: list[str] = []
    for m in facts.models:
        if not isinstance(m.expr, cst.Name):
            raise NoFit("MIG502", m.expr, f"the trained model `{ix.code(m.expr)}` is not a plain variable")
        if not _visible(ix, m.binding, loop):
            raise NoFit("MIG502", m.expr, f"the trained model `{m.expr.value}` is not a variable of the loop's scope")
        if m.expr.value not in models:
            models.append(m.expr.value)
    if not models:
        raise NoFit("MIG502", loop, "no trained model found (no optimizer over a model's parameters, no manual update)")
    return models


def _conditional(ix, stmt: cst.CSTNode) -> bool:
    """``stmt`` runs only under a condition or in a loop (a ``__main__`` guard does not count)."""
    for a in ix.ancestors(stmt):
        if isinstance(a, (cst.FunctionDef, cst.ClassDef)):
            return False
        if isinstance(a, cst.If) and "__name__" not in ix.code(a.test):
            return True
        if isinstance(a, (cst.For, cst.While, cst.Try, cst.With)) and a is not stmt:
            return True
    return False


def _visible(ix, binding, loop: cst.For) -> bool:
    scope = ix.scope_of(loop)
    return binding is not None and binding.kind == "name" and binding.owner in (scope, getattr(scope, "globals", None))


def _declared(ix, loop: cst.For, function: cst.FunctionDef | None) -> list[str]:
    """Names the loop binds in its scope (its target included): the step declares them
    ``global`` (module level) or ``nonlocal`` (in a function), so the body re-binds the
    script's variables as the loop did."""
    scope = ix.scope_of(loop)
    inside: list[str] = []
    elsewhere: set[str] = set()
    for a in scope.assignments:
        node = getattr(a, "node", None)
        name = a.name
        if node is not None and ix.inside(node, loop):
            if name not in inside:
                inside.append(name)
        else:
            elsewhere.add(name)
    if function is None:
        return inside
    declared = [n for n in inside if n in elsewhere]
    for n in inside:
        if n in elsewhere:
            continue
        # bound only by the loop: a step local, unless the function reads it outside the loop
        for access in scope.accesses[n]:
            if not ix.inside(access.node, loop):
                raise NoFit("MIG506", access.node, f"`{n}` is bound only inside the training loop and read after it: "
                            "bind it before the loop so the step can re-bind it (nonlocal)")
    return declared


def _fit_points(facts: Facts, loop: cst.For) -> list[cst.CSTNode]:
    """Where a fit runs: the loop, and the statements calling the function that holds it."""
    ix = facts.ix
    points: list[cst.CSTNode] = [loop]
    function = ix.function_of(loop)
    if function is not None:
        points += [ix.statement(c) for c in ix.calls
                   if (found := facts.funcs.callee(c)) is not None and found[0] is function]
    return points


def _after_fit_region(facts: Facts, loop: cst.For) -> list[cst.BaseStatement]:
    """Statements that run after a fit: those after the loop in its block and every enclosing
    block up to the function (or the module), every statement of an enclosing loop's body
    (the next pass follows this fit), and the same from each call of the function holding the
    loop (one level up)."""
    ix = facts.ix
    starts = _fit_points(facts, loop)
    region: list[cst.BaseStatement] = []
    for start in starts:
        cur = start
        while True:
            block = ix.block_of(cur)
            siblings = list(block.body)
            if cur not in siblings:
                break
            owner = None if isinstance(block, cst.Module) else ix.parent.get(block)
            k = siblings.index(cur)
            picked = siblings if isinstance(owner, (cst.For, cst.While)) else siblings[k + 1:]
            region += [st for st in picked if st is not cur and not ix.inside(start, st)]
            if owner is None or isinstance(owner, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
                break
            # the statement holding this block (through else / except / finally clauses)
            cur = owner
            while cur is not None and not isinstance(ix.parent.get(cur), (cst.Module, cst.IndentedBlock)):
                cur = ix.parent.get(cur)
            if cur is None or isinstance(cur, (cst.FunctionDef, cst.ClassDef)):
                break
    out: list[cst.BaseStatement] = []
    for st in region:
        if st not in out and not isinstance(st, (cst.FunctionDef, cst.ClassDef)):
            out.append(st)
    return out


def _helpers(facts: Facts, loop: cst.For) -> list[cst.FunctionDef]:
    ix = facts.ix
    return [fn for fn in _called_functions(facts, loop.body) if ix.class_of(fn) is None]


def _writes(ix, stmt) -> bool:
    from migrator.module_form.render import writes

    return writes(ix, stmt)


# --- rendering ---------------------------------------------------------------------------------


class _StepBody(cst.CSTTransformer):
    """The loop body as the step's: prints on global rank 0, backward through the module,
    ``break`` as a stop, ``continue`` as the end of the step, file writes on rank 0 followed by
    a barrier."""

    def __init__(self, facts: Facts, steps: Steps, vocab: ModuleVocabulary) -> None:
        self.ix, self.facts, self.steps, self.vocab = facts.ix, facts, steps, vocab
        self.backwards = {id(b.call): b for b in facts.backwards if facts.ix.inside(b.call, steps.loop)}
        self.writes = 0

    def on_leave(self, original, updated):
        ix = self.ix
        if isinstance(original, cst.Call):
            if id(original) in self.backwards:
                b = self.backwards[id(original)]
                loss = updated.func.value if isinstance(updated.func, cst.Attribute) else b.loss
                return cst.Call(cst.parse_expression("self.manual_backward"), [cst.Arg(loss), *updated.args])
            if isinstance(original.func, cst.Name) and ix.call_qname(original) == "builtins.print":
                return updated.with_changes(func=cst.parse_expression("self.print"))
        if isinstance(original, cst.SimpleStatementLine):
            return self._line(original, updated)
        return updated

    def _line(self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine):
        ix, loop = self.ix, self.steps.loop
        out: list[cst.BaseStatement] = []
        small: list[cst.BaseSmallStatement] = []
        ended = False
        for orig, new in zip(original.body, updated.body):
            if isinstance(orig, (cst.Break, cst.Continue)) and _owned(ix, orig, loop):
                if isinstance(orig, cst.Break):  # the Trainer stops after this step
                    small.append(cst.parse_statement("self.trainer.should_stop = True\n").body[0])
                small.append(cst.Return())
                ended = True
                break
            small.append(new)
        if not ended and _writes(ix, original):
            self.writes += 1
            guard = cst.parse_statement(f"if self.trainer.is_global_zero:\n    pass\n")
            inner = updated.with_changes(leading_lines=[])
            guarded = guard.with_changes(body=guard.body.with_changes(body=[inner]), leading_lines=updated.leading_lines)
            # every process waits for the file (a later read on another process finds it)
            return cst.FlattenSentinel([guarded, cst.parse_statement(self.vocab.barrier.format(trainer="self.trainer") + "\n")])
        if not ended:
            return updated
        lines = [updated.with_changes(body=[s]) if k == 0 else cst.SimpleStatementLine([s]) for k, s in enumerate(small)]
        out.extend(lines)
        return cst.FlattenSentinel(out)


class _RankZero(cst.CSTTransformer):
    """In the file's functions the step calls: prints and file writes on global rank 0 (no
    ``self`` there: the rank test of code outside a module)."""

    def __init__(self, facts: Facts, functions: list[cst.FunctionDef], vocab: ModuleVocabulary,
                 writes: bool = True) -> None:
        self.ix, self.vocab, self.with_writes = facts.ix, vocab, writes
        self.keys = {id(f) for f in functions}
        self.depth = 0
        self.guarded = 0

    def visit_FunctionDef(self, node):
        if id(node) in self.keys:
            self.depth += 1
        return True

    def leave_FunctionDef(self, original, updated):
        if id(original) in self.keys:
            self.depth -= 1
        return updated

    def leave_SimpleStatementLine(self, original, updated):
        if not self.depth and None not in self.keys:
            return updated
        ix = self.ix
        hit = any(
            isinstance(s, cst.Expr) and isinstance(s.value, cst.Call)
            and (ix.call_qname(s.value) == "builtins.print" or (self.with_writes and writes_file(ix, s.value)))
            for s in original.body
        )
        if not hit:
            return updated
        self.guarded += 1
        guard = cst.parse_statement(f"if {self.vocab.rank_zero_test}:\n    pass\n")
        inner = updated.with_changes(leading_lines=[])
        return guard.with_changes(body=guard.body.with_changes(body=[inner]), leading_lines=updated.leading_lines)


def render_steps(facts: Facts, steps: Steps, vocab: ModuleVocabulary) -> tuple[cst.ClassDef, list[cst.BaseStatement], str]:
    """The module class (to stand before the loop), the statements replacing the loop, the class name."""
    from migrator.module_form.render import _attr, _black

    ix = facts.ix
    loop = steps.loop
    model_class = None
    for m in facts.models:
        if m.class_def is not None:
            model_class = m.class_def.name.value
            break
    name = facts.free_name(f"{model_class}Module" if model_class else "TrainingModule")
    batch, batch_idx = steps.params
    body = loop.body.visit(_StepBody(facts, steps, vocab))
    if not isinstance(body, cst.IndentedBlock):
        raise NoFit("MIG502", loop, "the training loop's body is on the line of its `for`")
    lines = []
    if steps.declared:
        lines.append(f"{'nonlocal' if steps.function is not None else 'global'} {', '.join(steps.declared)}\n")
    lines.append(f"{ix.code(loop.target)} = {batch}\n")
    attrs = [(m, _attr(m)) for m in steps.models]
    init = "".join(f"self.{a} = {m}\n" for m, a in attrs)
    optimizers = "optimizers" if steps.optimizers else None
    header = (
        f"class {name}({vocab.base_class}):\n"
        f'    """One pass of the loop `for {ix.code(loop.target)} in ...` per training step (generated by migrate --form module)."""\n\n'
        f"    def __init__(self, {', '.join(m for m, _ in attrs)}{', optimizers' if optimizers else ''}):\n"
        f"        super().__init__()\n"
        + _indent(init, 8)
        + "        self.automatic_optimization = False  # the step updates the parameters itself\n"
        + (f"        self.script_optimizers = optimizers\n" if optimizers else "")
        + "\n    def configure_optimizers(self):\n"
        + f"        return {'self.script_optimizers' if optimizers else 'None'}\n\n"
        + f"    def training_step(self, {batch}, {batch_idx}):\n"
    )
    # the class header is generated; the step's body is the loop's own statements, untouched
    klass = cst.parse_statement(_black(header + "        pass\n"))
    decls = [cst.parse_statement(line) for line in lines]
    klass = klass.visit(_FillStep(decls + list(body.body)))
    blank = [cst.EmptyLine(indent=False)] * (2 if facts.ix.block_of(loop) is facts.ix.module else 1)
    comments = [ln for ln in loop.leading_lines if ln.comment is not None]
    klass = klass.with_changes(leading_lines=[*blank, *comments])
    module_args = [m for m, _ in attrs] + ([f"[{', '.join(steps.optimizers)}]"] if optimizers else [])
    trainer = facts.free_name("trainer")
    extra = [("max_epochs", "1"), ("enable_checkpointing", "False"), ("logger", "False"),
             *vocab.trainer_extra, *vocab.manual_trainer_extra]
    if vocab.name == "lightning":
        extra.append(("enable_model_summary", "False"))
    if not _places_on_devices(facts):
        # the script computes on the CPU: so does every process (on a GPU machine the
        # Trainer would move the model there, away from the script's CPU tensors)
        extra.append(("accelerator", '"cpu"'))
    fit = (
        f"{trainer} = {vocab.trainer}({', '.join(f'{k}={v}' for k, v in extra)})\n"
        "# one training step per pass of the loop; every process runs every pass (nothing to shard)\n"
        f"{trainer}.fit({name}({', '.join(module_args)}), {ix.code(loop.iter)})\n"
    )
    if vocab.name == "lightning" and _places_on_devices(facts):
        # Lightning's teardown leaves the model on the CPU; the code after fit uses it
        # with the script's tensors, on this process's device
        fit += "".join(f"{m}.to({trainer}.strategy.root_device)\n" for m in steps.models)
    fit_stmts = list(cst.parse_module(_black(fit)).body)
    fit_stmts[0] = fit_stmts[0].with_changes(leading_lines=blank)
    return klass, fit_stmts, name


def _places_on_devices(facts: Facts) -> bool:
    """The script selects a device (``device = torch.device(...)``) or calls ``.cuda()``."""
    return bool(facts.devices) or any(
        isinstance(c.func, cst.Attribute) and c.func.attr.value == "cuda" for c in facts.ix.calls
    )


_SET_DEVICE = (
    "if torch.cuda.is_available():  # the script's \"cuda\" is this process's GPU (LOCAL_RANK, set by the launcher)\n"
    "    torch.cuda.set_device(int(os.environ.get(\"LOCAL_RANK\", \"0\")))\n"
)


class _FillStep(cst.CSTTransformer):
    def __init__(self, stmts: list) -> None:
        self.stmts = stmts

    def leave_FunctionDef(self, original, updated):
        if updated.name.value != "training_step":
            return updated
        return updated.with_changes(body=updated.body.with_changes(body=self.stmts))


_BARRIER = "if torch.distributed.is_initialized():\n    torch.distributed.barrier()\n"


class _AfterFit(cst.CSTTransformer):
    """In the statements after a fit: print-only lines, and the innermost statement that
    writes a file (a ``with open(path, "wb") as f:`` block, a ``torch.save(...)`` line), run on
    rank 0; every process waits after a write (a later read finds the whole file)."""

    def __init__(self, facts: Facts, vocab: ModuleVocabulary) -> None:
        self.ix, self.vocab = facts.ix, vocab
        self.guarded = 0

    def _guard(self, original, updated, barrier: bool):
        self.guarded += 1
        guard = cst.parse_statement(f"if {self.vocab.rank_zero_test}:\n    pass\n")
        inner = updated.with_changes(leading_lines=[])
        out = guard.with_changes(body=guard.body.with_changes(body=[inner]), leading_lines=updated.leading_lines)
        return cst.FlattenSentinel([out, cst.parse_statement(_BARRIER)]) if barrier else out

    def visit_FunctionDef(self, node):
        return False

    def visit_ClassDef(self, node):
        return False

    def visit_With(self, node):
        return not self._opens_for_write(node)

    def _opens_for_write(self, node: cst.With) -> bool:
        from migrator.analysis.writes import opens_for_write

        return any(isinstance(i.item, cst.Call) and opens_for_write(self.ix, i.item) for i in node.items)

    def leave_With(self, original, updated):
        if self._opens_for_write(original):
            return self._guard(original, updated, barrier=True)
        return updated

    def leave_SimpleStatementLine(self, original, updated):
        ix = self.ix
        if any(isinstance(a, cst.With) and self._opens_for_write(a) for a in ix.ancestors(original)):
            return updated  # the whole block is guarded
        if _writes(ix, original):
            return self._guard(original, updated, barrier=True)
        if original.body and all(isinstance(s, cst.Expr) and isinstance(s.value, cst.Call)
                                 and ix.call_qname(s.value) == "builtins.print" for s in original.body):
            return self._guard(original, updated, barrier=False)
        return updated


def convert_steps(facts: Facts, steps: Steps, vocab: ModuleVocabulary) -> tuple[str, str]:
    """The converted file text and the generated class name."""
    import re

    from migrator.module_form.edit import _before_fit, _imports, _Splice, lock_downloads_before_fit

    ix = facts.ix
    klass, fit, name = render_steps(facts, steps, vocab)
    loop = steps.loop
    replace: dict[int, list] = {id(loop): fit}
    before: dict[int, list] = {id(loop): [klass]}
    after: dict[int, list] = {}
    rank_zero = False
    for fn in steps.helpers:
        guard = _RankZero(facts, [fn], vocab)
        new = fn.visit(guard)
        if guard.guarded:
            replace[id(fn)] = [new]
            rank_zero = True
    # functions the code before fit calls (a dataset loader saying "already downloaded"):
    # their prints on rank 0; their writes stay on every process (the download lock orders
    # them, and every process needs the files)
    from migrator.module_form.edit import _pre_fit_statements

    for stmt in _pre_fit_statements(ix, steps):
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            continue
        for fn in _called_functions(facts, stmt):
            if id(fn) in replace or ix.class_of(fn) is not None or ix.inside(loop, fn):
                continue
            guard = _RankZero(facts, [fn], vocab, writes=False)
            new = fn.visit(guard)
            if guard.guarded:
                replace[id(fn)] = [new]
                rank_zero = True
    imports = [cst.parse_statement(line + "\n") for line in vocab.imports if "ModelCheckpoint" not in line or "," in line]
    imports = [_without_checkpoint(st) for st in imports]
    fit_code = "".join(cst.Module(body=fit).code)
    for mod in ("torch", "os"):
        if re.search(rf"\b{mod}\.", fit_code) and not _imports(ix, mod):
            imports.insert(0, cst.parse_statement(f"import {mod}\n"))
    last_import = None
    for stmt in ix.module.body:
        if isinstance(stmt, cst.SimpleStatementLine) and all(isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body):
            last_import = stmt
    for stmt in _after_fit_region(facts, loop):
        if id(stmt) in replace:
            continue
        guard = _AfterFit(facts, vocab)
        new = stmt.visit(guard)
        if guard.guarded:
            replace[id(stmt)] = list(new.nodes) if isinstance(new, cst.FlattenSentinel) else [new]
            rank_zero = True
    imports.extend(lock_downloads_before_fit(ix, steps, replace, last_import))
    guarded_before = _before_fit(ix, steps, vocab, replace, last_import)
    # prints inside compound statements before fit (`if <downloaded>: print(...) else: ...`)
    fits = _fit_points(facts, loop)
    first = min(ix.order(f) for f in fits)
    for stmt in _pre_fit_statements(ix, steps):
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef, cst.SimpleStatementLine)):
            continue
        if ix.order(stmt) > first or any(ix.inside(f, stmt) for f in fits):
            continue  # runs a fit, or after one: the after-fit guards apply
        if last_import is not None and ix.order(stmt) < ix.order(last_import):
            continue
        guard = _RankZero(facts, [], vocab, writes=False)
        guard.keys = {None}  # every line of the statement
        new = [st.visit(guard) for st in replace.get(id(stmt), [stmt])]
        if guard.guarded:
            replace[id(stmt)] = new
            rank_zero = True
    if guarded_before or rank_zero:
        imports.append(cst.parse_statement(vocab.rank_zero_import + "\n"))
    tail = []
    if _places_on_devices(facts):
        # before the script picks its device: "cuda" then means this process's GPU, so
        # tensors made before fit are where the Trainer puts this process's model
        tail = [cst.parse_statement(_SET_DEVICE).with_changes(leading_lines=[cst.EmptyLine(indent=False)])]
        for mod in ("os", "torch"):
            if not _imports(ix, mod) and not any(f"import {mod}\n" == cst.Module(body=[i]).code for i in imports):
                imports.insert(0, cst.parse_statement(f"import {mod}\n"))
    if last_import is not None:
        after[id(last_import)] = [*after.get(id(last_import), ()), *imports, *tail]
    else:
        first = ix.module.body[0]
        before[id(first)] = [*imports, *before.get(id(first), ())]
    out = ix.module.visit(_Splice(replace, set(), before, after))
    return out.code, name


def _without_checkpoint(stmt: cst.SimpleStatementLine) -> cst.SimpleStatementLine:
    """The target's imports without ModelCheckpoint: the steps write no checkpoint."""
    small = stmt.body[0]
    if isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
        names = [a for a in small.names if getattr(a.name, "value", None) != "ModelCheckpoint"]
        if len(names) != len(small.names):
            names[-1] = names[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
            return stmt.with_changes(body=[small.with_changes(names=names)])
    return stmt


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "".join(pad + ln if ln.strip() else ln for ln in text.splitlines(keepends=True))
