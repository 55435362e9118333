"""Turn a recognised loop shape into the module class and the Trainer call (jinja2, black, libcst)."""

from __future__ import annotations

import importlib.resources
import textwrap
from dataclasses import dataclass

import libcst as cst

from migrator.analysis import Facts
from migrator.analysis.writes import writes_file
from migrator.module_form.names import rename, usage
from migrator.module_form.shape import NoFit, Phase, Shape
from migrator.targets import ModuleVocabulary

_PARTS = ("on_train_epoch_start", "training_step", "on_validation_epoch_start", "validation_step", "hook_end",
          "after_scheduler_step")


@dataclass(frozen=True)
class Rendered:
    """Code text ready to be parsed: the class (module level) and the statements replacing the loop."""

    class_name: str
    class_code: str
    fit_code: str
    trainer_var: str


def render(facts: Facts, shape: Shape, vocab: ModuleVocabulary) -> Rendered:
    """Build the class and the fit call for ``shape`` in ``vocab``'s spelling."""
    ix = facts.ix
    _scheduler_order(shape, vocab)
    parts = _parts(shape, split=not vocab.epoch_scheduler_before_validation)
    # analysed in the epoch loop's names: a helper function's parameters become its arguments
    uses = {k: usage([rename(_without(ix, st, shape.removed), params) for st, params in v]) for k, v in parts.items()}
    where: dict[str, set[str]] = {}
    for part, u in uses.items():
        for name in set(u.loads) | set(u.stores):
            where.setdefault(name, set()).add(part)
    stored = {n for u in uses.values() for n in u.stores}
    step_locals = _targets(shape.train) | _targets(shape.val)
    # A name one hook reads before binding it, and another hook binds, is shared state
    # (accumulators, per-epoch values): it lives on the module. Names every hook binds
    # before reading stay local variables.
    shared = {
        n for part, u in uses.items() for n in _free_reads(u)
        if n in stored and n not in step_locals and any(n in v.stores for p, v in uses.items() if p != part)
    }
    free = {n for u in uses.values() for n in _free_reads(u)}
    owned = {shape.model, shape.optimizer, shape.scheduler, shape.epoch_var, *shape.models}
    owned |= {name for name, _, _ in shape.optimizers + shape.schedulers}
    # A name bound before the loop that a hook reads and then re-binds (a best metric) is
    # tracked across epochs: module state, starting from the script's value.
    tracked = {n for u in uses.values() for n in _free_reads(u) & set(u.stores)} & _function_locals(ix, shape)
    tracked -= step_locals | owned
    shared |= tracked
    # configure_optimizers builds the optimizers (and schedulers): what they read, a warm-up
    # lambda included, is handed to the module like what the hooks read
    built = usage([call for _, _, call in shape.optimizers + shape.schedulers] if shape.manual
                  else [c for c in (shape.optimizer_call, shape.scheduler_call) if c is not None])
    _opaque([*uses.values(), built])
    built_reads = _function_locals(ix, shape) & set(built.loads) - owned
    if built_reads & ((stored - tracked) | step_locals):
        name = min(built_reads & ((stored - tracked) | step_locals))
        raise NoFit("MIG505", shape.epoch_loop, f"the optimizer or scheduler construction reads `{name}`, "
                    "which the training loop re-binds: configure_optimizers cannot see the loop's value")
    captured = sorted(_function_locals(ix, shape) & (free | built_reads) - (stored - tracked) - step_locals - owned)
    # the script's device variable inside the module is the module's own device (the Trainer's)
    devices = {d.target.value for d in facts.devices if isinstance(d.target, cst.Name)} & free - stored
    captured = [c for c in captured if c not in devices]
    attr = {n: _attr(n) for n in shared | set(captured)}
    mapping: dict[str, cst.BaseExpression] = {n: cst.parse_expression(f"self.{a}") for n, a in attr.items()}
    mapping.update({n: cst.parse_expression("self.device") for n in devices})
    # the model(s): (script name, attribute); the single model is ``self.model``
    models = [(m, m if m == "model" else _attr(m)) for m in shape.models] if shape.manual else [(shape.model, "model")]
    mapping.update({m: cst.parse_expression(f"self.{a}") for m, a in models})
    if shape.manual:  # outside training_step: the optimizers and schedulers by position
        for getter, group in (("optimizers", shape.optimizers), ("lr_schedulers", shape.schedulers)):
            for k, (n, _, _) in enumerate(group):
                mapping[n] = cst.parse_expression(f"self.{getter}()" + (f"[{k}]" if len(group) > 1 else ""))
    else:
        mapping[shape.optimizer] = cst.parse_expression("self.optimizers()")
        if shape.scheduler:
            mapping[shape.scheduler] = cst.parse_expression("self.lr_schedulers()")
    if shape.epoch_var:
        epoch = "self.current_epoch" if shape.epoch_start == "0" else f"(self.current_epoch + {shape.epoch_start})"
        mapping[shape.epoch_var] = cst.parse_expression(epoch)
    mapping["print"] = cst.parse_expression("self.print")

    hooks = []
    if shape.moved:
        moves = "".join(f"{ix.code(rename(cst.Name(n), mapping))}.to(self.device)\n" for n in shape.moved)
        hooks.append(("on_fit_start", (), "# used by the steps, not trained: on this process's device (modes kept)\n" + moves))
    start = _code(ix, parts["on_train_epoch_start"], mapping)
    if start:
        hooks.append(("on_train_epoch_start", (), start))
    step = (_manual_step if shape.manual else _training_step)(facts, shape, parts["training_step"], mapping)
    hooks.append(("training_step", ("batch", "batch_idx"), step))
    after_step = _code(ix, parts["after_scheduler_step"], mapping)
    def summed(part: str) -> list[str]:
        # shared names a step adds to: per-process partial sums until reduced
        return sorted(n for n in shared if any(k == "augstore" and name == n for k, name, _ in uses[part].events))

    accumulators = summed("validation_step")
    read_at_end = set(uses["hook_end"].loads) | set(uses["after_scheduler_step"].loads)
    # training sums the evaluation start reads (an epoch-average print): reduced there
    early = sorted(n for n in summed("training_step") if n in set(uses["on_validation_epoch_start"].loads)) if shape.val else []
    reduced = sorted({n for n in summed("training_step") + accumulators if n in read_at_end} - set(early) | set(accumulators))
    reduce = "".join(f"self.{attr[n]} = {vocab.sum_across_processes.format(value=f'self.{attr[n]}')}\n" for n in reduced)
    # ``if <cond>: ...; break`` ending the epoch: the Trainer stops after it; any process's
    # stop stops every process (the condition may read values of one process's shard)
    swap = {shape.epoch_stop: cst.parse_statement("self.trainer.should_stop = True\n")} if shape.epoch_stop else {}
    if shape.epoch_stop is not None and any(ix.inside(shape.epoch_stop, st) for st, _ in parts["after_scheduler_step"]):
        raise NoFit("MIG503", shape.epoch_stop, f"the epoch loop stops after `{shape.scheduler}.step()`, "
                    f"which {vocab.trainer} runs in lr_scheduler_step")
    agree = (f"self.trainer.should_stop = {vocab.sum_across_processes.format(value='int(self.trainer.should_stop)')} > 0\n"
             if swap else "")
    hook_end = _code(ix, parts["hook_end"], mapping, swap=swap) + agree
    if shape.val is not None:
        vstart = "".join(f"self.{attr[n]} = {vocab.sum_across_processes.format(value=f'self.{attr[n]}')}\n" for n in early)
        vstart += _code(ix, parts["on_validation_epoch_start"], mapping)
        if vstart:
            hooks.append(("on_validation_epoch_start", (), vstart))
        body = _unpack(shape.val, mapping) + _code(ix, parts["validation_step"], _with_index(mapping, shape.val), shape.removed)
        hooks.append(("validation_step", ("batch", "batch_idx"), body))
        logs = "".join(f'self.log("{n}", self.{attr[n]}, sync_dist=True)\n' for n in accumulators)
        end = reduce + hook_end + logs
        if end:
            hooks.append(("on_validation_epoch_end", (), end))
    else:
        end = (reduce if hook_end or after_step else "") + hook_end
        if end:
            hooks.append(("on_train_epoch_end", (), end))
    if after_step:  # the epoch's statements after ``scheduler.step()`` see the stepped scheduler
        hooks.append(("lr_scheduler_step", ("scheduler", "metric"), "super().lr_scheduler_step(scheduler, metric)\n" + after_step))

    opt_mapping = {m: mapping[m] for m, _ in models} | {n: mapping[n] for n in [*captured, *devices]}
    optimizer = scheduler = configure = None
    if shape.manual:
        configure = _configure_manual(ix, shape, opt_mapping)
    else:
        optimizer = ix.code(rename(shape.optimizer_call, opt_mapping))
    if shape.scheduler_call is not None:
        sched_call = shape.scheduler_call.with_changes(
            args=[shape.scheduler_call.args[0].with_changes(value=cst.Name("optimizer")), *shape.scheduler_call.args[1:]]
        )
        scheduler = ix.code(rename(sched_call, opt_mapping))
    name = facts.free_name(f"{shape.model_class}Module" if shape.model_class else "TrainingModule")
    helpers = "\n".join(h for h in (_with_state(vocab.helpers, sorted(attr[n] for n in tracked)),
                                     vocab.sum_helper if reduced or early or swap else "") if h)
    class_code = _template("module_class.py.j2").render(
        name=name, base=vocab.base_class, captured=[(c, attr[c]) for c in captured],
        models=models if shape.manual else [("model", "model")],
        manual=shape.manual, configure=configure,
        doc=f"The training loop of this script as a {vocab.base_class.split('.')[-1]} (generated by migrate --form module).",
        hooks=[{"name": h, "params": p, "body": b.rstrip("\n")} for h, p, b in hooks],
        optimizer=optimizer, scheduler=scheduler, interval=shape.interval, helpers=helpers.rstrip("\n"),
    )
    loaders = [ix.code(rename(p.loader, p.params)) for p in (shape.train, shape.val) if p is not None]
    for text in loaders:
        if set(usage([cst.parse_expression(text)]).loads) & stored:
            raise NoFit("MIG502", shape.epoch_loop, f"the loader `{text}` is rebuilt inside the epoch loop")
    for n in shape.read_after:
        if n not in tracked:
            raise NoFit("MIG506", shape.epoch_loop, f"`{n}` is computed by the loop and used after it, "
                        "but no epoch hook reads and re-binds it (it would not be module state)")
    trainer_var = facts.free_name("trainer")
    module_var = facts.free_name("module") if shape.read_after else None
    fit_code = _template("fit_call.py.j2").render(
        trainer_var=trainer_var, trainer=vocab.trainer, max_epochs=shape.max_epochs,
        clip=shape.clip, checkpoint=vocab.checkpoint, loaders=loaders,
        extra=[*shape.trainer_args, *vocab.trainer_extra, *(vocab.manual_trainer_extra if shape.manual else ())],
        module_call=f"{name}({', '.join([*(m for m, _ in models), *captured])})",
        module_var=module_var, read_back=[(n, attr[n]) for n in shape.read_after],
    )
    return Rendered(name, _black(class_code), _black(fit_code), trainer_var)


def _with_state(helpers: str, attrs: list[str]) -> str:
    """``helpers`` whose checkpoint hooks also save and restore the values tracked across
    epochs (a best metric), so that a resumed run goes on from them."""
    if not attrs:
        return helpers
    values = ", ".join(f'"{a}": self.{a}' for a in attrs)
    hooks = {
        "def on_save_checkpoint(self, checkpoint):\n":
            f"    # values the loop tracks across epochs\n    checkpoint[\"loop_state\"] = {{{values}}}\n",
        "def on_load_checkpoint(self, checkpoint):\n":
            "".join(f'    self.{a} = checkpoint.get("loop_state", {{}}).get("{a}", self.{a})\n' for a in attrs),
    }
    for head, body in hooks.items():
        if head in helpers:
            helpers = helpers.replace(head, head + body, 1)
        else:
            helpers = (helpers + "\n" if helpers else "") + head + body
    return helpers


# Attributes the module base classes own (Lightning's `device` has no setter): a loop value
# with one of these names is stored under the name with a trailing underscore.
_RESERVED = {
    "device", "dtype", "trainer", "model", "log", "log_dict", "print", "optimizers", "lr_schedulers",
    "current_epoch", "global_step", "training", "logger", "loggers", "hparams", "forward", "fabric",
    "automatic_optimization", "example_input_array", "on_gpu", "strict_loading", "local_rank", "global_rank",
}


def _attr(name: str) -> str:
    return f"{name}_" if name in _RESERVED else name


def _scheduler_order(shape: Shape, vocab: ModuleVocabulary) -> None:
    """The statements that run on the other side of the epoch scheduler's step than in the
    script must not read the optimizer or the scheduler (they would see another learning rate).
    Lightning steps before validation; the runtime after the epoch, and the statements after the
    script's step at the end of the epoch move into ``lr_scheduler_step``."""
    step = shape.scheduler_step
    if step is None:  # (manual optimization: the schedulers step where the script steps them)
        return
    train, val = shape.train, shape.val
    seq = [(s, train.params) for s in train.post] + [(s, {}) for s in shape.epoch_mid]
    if val is not None:
        seq += [(s, val.params) for s in [*val.pre, *val.loop.body.body, *val.post]]
    seq += [(s, {}) for s in shape.epoch_post]
    cut = next(i for i, (s, _) in enumerate(seq) if s is step)
    if vocab.epoch_scheduler_before_validation:
        moved, side, when = seq[:cut], "before", "before the epoch's validation"
    elif step in shape.epoch_post:
        return
    else:
        moved, side, when = seq[cut + 1:], "after", "after the epoch's validation"
    names = {shape.optimizer, shape.scheduler}
    for s, params in moved:
        if s not in shape.dropped and set(usage([rename(s, params)]).loads) & names:
            raise NoFit("MIG502", s, f"reads the optimizer or scheduler {side} `{shape.scheduler}.step()`, "
                        f"but {vocab.trainer} steps epoch schedulers {when}")


def _parts(shape: Shape, split: bool) -> dict[str, list[tuple[cst.CSTNode, dict]]]:
    """Statements of each hook, with the parameter bindings of the helper function they come from."""

    def keep(stmts, phase: Phase | None = None) -> list:
        params = phase.params if phase is not None else {}
        return [(s, params) for s in stmts if s not in shape.dropped and not _is_batch_move(s)]

    train, val = shape.train, shape.val
    parts = {
        "on_train_epoch_start": keep(shape.epoch_pre) + keep(train.pre, train),
        "training_step": keep(train.loop.body.body, train),
        "on_validation_epoch_start": [],
        "validation_step": keep(val.loop.body.body, val) if val else [],
        "hook_end": keep(shape.epoch_post),
        "after_scheduler_step": [],
    }
    if split and shape.scheduler_step in shape.epoch_post:  # runs after the Trainer steps the scheduler
        cut = shape.epoch_post.index(shape.scheduler_step)
        parts["hook_end"] = keep(shape.epoch_post[:cut])
        parts["after_scheduler_step"] = keep(shape.epoch_post[cut + 1:])
    if val is not None:  # the training function's tail runs before validation starts
        parts["on_validation_epoch_start"] = keep(train.post, train) + keep(shape.epoch_mid) + keep(val.pre, val)
        parts["hook_end"] = keep(val.post, val) + parts["hook_end"]
    else:
        parts["hook_end"] = keep(train.post, train) + parts["hook_end"]
    return parts


def _compose(params: dict, mapping: dict) -> dict:
    """Rename a helper function's parameter straight to what its argument becomes."""
    return {**mapping, **{k: rename(v, mapping) for k, v in params.items()}} if params else mapping


def _opaque(usages) -> None:
    """Names that cannot follow the moved code into the module: fall back, saying which."""
    for kind, name, node in (o for u in usages for o in u.opaque):
        if kind == "nonlocal":
            raise NoFit("MIG503", node, f"the nested function `{node.name.value}` re-binds the enclosing `{name}` "
                        "(nonlocal): inside the module it would re-bind a copy the script never reads")
        raise NoFit("MIG503", node, f"the class `{name}` is defined in code that moves into the module: "
                    "its body is not renamed into the module's names")


def _free_reads(u) -> set[str]:
    bound: set[str] = set()
    out: set[str] = set()
    for kind, name, _ in u.events:
        if kind == "load" and name not in bound:
            out.add(name)
        elif kind == "store":
            bound.add(name)
    return out


def _targets(phase: Phase | None) -> set[str]:
    if phase is None:
        return set()
    names = set(usage([cst.Expr(phase.target)]).loads)
    return names | ({phase.index} if phase.index else set())


def _function_locals(ix, shape: Shape) -> set[str]:
    """Names local to the function holding the epoch loop (they must be handed to the module)."""
    fn = shape.scope
    if fn is None:
        return set()
    params = {p.name.value for p in ix.subtree(fn.params, cst.Param)}
    outside = [s for s in fn.body.body if s is not shape.epoch_loop]
    return params | set(usage(outside).stores)


def _with_index(mapping: dict, phase: Phase) -> dict:
    out = dict(mapping)
    if phase.index:
        out[phase.index] = cst.parse_expression(f"(batch_idx + {phase.start})" if phase.start else "batch_idx")
    return out


def _unpack(phase: Phase, mapping: dict) -> str:
    if isinstance(phase.target, cst.Name) and phase.target.value == "batch":
        return ""
    target = rename(phase.target, mapping)
    text = cst.Module(body=[]).code_for_node(target)
    if isinstance(phase.target, cst.Tuple) and phase.target.lpar:
        text = text.strip("()")
    return f"{text} = batch\n"


def _training_step(facts: Facts, shape: Shape, stmts: list, mapping: dict) -> str:
    ix = facts.ix
    loss = shape.loss
    back_stmt = ix.statement(next(b.call for b in facts.backwards))
    body = list(shape.train.loop.body.body)
    after = body[body.index(back_stmt) + 1:]
    rebound = isinstance(loss, cst.Name) and loss.value in usage(after).stores
    step_map = _compose(shape.train.params, _with_index(mapping, shape.train))
    text = _unpack(shape.train, mapping)
    kept = [st for st, _ in stmts]
    accumulated = shape.accumulate[2] if shape.accumulate is not None else None
    for stmt in body:
        if stmt is accumulated:  # the Trainer divides the returned loss by K itself
            value = stmt.body[0].value
            text += f"step_loss = {ix.code(rename(value.left, step_map))}\n"
            divided = stmt.with_changes(body=[stmt.body[0].with_changes(value=value.with_changes(left=cst.Name("step_loss")))])
            text += _code(ix, [(divided, {})], step_map, shape.removed)
            continue
        if stmt is back_stmt:
            if accumulated is not None:
                continue
            if rebound or not isinstance(loss, cst.Name):
                # the loop rebinds the loss after backward (e.g. to loss.item()): keep the tensor
                text += f"step_loss = {ix.code(rename(loss, step_map))}\n"
            continue
        if stmt not in kept:
            continue
        text += _code(ix, [(stmt, {})], step_map, shape.removed)
    result = "step_loss" if rebound or accumulated is not None or not isinstance(loss, cst.Name) else ix.code(rename(loss, step_map))
    return text + f"return {result}\n"


def _manual_step(facts: Facts, shape: Shape, stmts: list, mapping: dict) -> str:
    """The loop body under manual optimization: the script's optimizer names are bound from
    ``self.optimizers()`` (and ``self.lr_schedulers()``); ``loss.backward()`` becomes
    ``self.manual_backward(loss)``; zero_grad/step stay where they are."""
    ix = facts.ix
    local = {n for n, _, _ in shape.optimizers + shape.schedulers}
    step_map = _compose(shape.train.params, {k: v for k, v in _with_index(mapping, shape.train).items() if k not in local})
    text = ""
    kept = [st for st, _ in stmts]
    for stmt in shape.train.loop.body.body:
        if stmt not in kept:
            continue
        loss = shape.backward_stmts.get(stmt)
        if loss is not None:
            call = cst.Call(func=cst.parse_expression("self.manual_backward"), args=[cst.Arg(rename(loss, step_map))])
            node = stmt.with_changes(body=[stmt.body[0].with_changes(value=call)])
            text += cst.Module(body=[]).code_for_node(node)
            continue
        text += _code(ix, [(stmt, {})], step_map, shape.removed)
    reads = set(usage([cst.parse_module(textwrap.dedent(text))]).loads)
    head = _unpack(shape.train, mapping)
    for getter, group in (("optimizers", shape.optimizers), ("lr_schedulers", shape.schedulers)):
        if reads & {n for n, _, _ in group}:
            head += f"{', '.join(n for n, _, _ in group)} = self.{getter}()\n"
    return head + textwrap.dedent(text)


def _configure_manual(ix, shape: Shape, mapping: dict) -> str:
    """``configure_optimizers`` of manual optimization: the script's optimizer and scheduler
    constructions in its order, returning the optimizers (and the schedulers) in that order."""
    made = sorted(shape.optimizers + shape.schedulers, key=lambda item: ix.order(item[1]))
    text = "".join(f"{n} = {ix.code(rename(call, mapping))}\n" for n, _, call in made)
    optimizers = ", ".join(n for n, _, _ in shape.optimizers)
    if shape.schedulers:
        return text + f"return [{optimizers}], [{', '.join(n for n, _, _ in shape.schedulers)}]\n"
    return text + f"return {optimizers}\n" if len(shape.optimizers) == 1 else text + f"return [{optimizers}]\n"


def _is_batch_move(stmt: cst.CSTNode) -> bool:
    """``x, y = x.to(device), y.to(device)``: the Trainer moves batches itself."""
    if not (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Assign)):
        return False
    assign = stmt.body[0]
    if len(assign.targets) != 1:
        return False
    target, value = assign.targets[0].target, assign.value
    pairs = (
        list(zip((e.value for e in target.elements), (e.value for e in value.elements)))
        if isinstance(target, cst.Tuple) and isinstance(value, cst.Tuple) and len(target.elements) == len(value.elements)
        else [(target, value)]
    )
    for t, v in pairs:
        if not (isinstance(t, cst.Name) and isinstance(v, cst.Call) and isinstance(v.func, cst.Attribute)
                and v.func.attr.value in ("to", "cuda") and isinstance(v.func.value, cst.Name)
                and v.func.value.value == t.value):
            return False
    return True


def writes(ix, stmt: cst.CSTNode, seen: frozenset = frozenset()) -> bool:
    """The statement writes a file (what MIG406 guards, checkpoints too: ``torch.save``,
    ``open(path, "w")``, ``save_image``, ``plt.savefig``, ``np.savez``, ``torch.onnx.export``),
    directly or through a module-level function of the file that does (``save_pgm(...)``):
    in a hook it runs on every process, so it goes under ``is_global_zero``."""
    for call in ix.subtree(stmt, cst.Call):
        f = call.func
        if writes_file(ix, call, checkpoints=True):
            return True
        if isinstance(f, cst.Name) and f.value not in seen:
            fn = next((d for d in ix.module.body if isinstance(d, cst.FunctionDef) and d.name.value == f.value), None)
            if fn is not None and writes(ix, fn.body, seen | {f.value}):
                return True
    return False


def _without(ix, stmt: cst.CSTNode, removed) -> cst.CSTNode:
    """``stmt`` without the statements in ``removed`` nested in it (a trailing ``if flag: break``)."""
    for node in removed:
        if ix.inside(node, stmt):
            stmt = stmt.deep_remove(node)
    return stmt


def _code(ix, stmts, mapping, removed=frozenset(), swap=None) -> str:
    """The statements renamed into the module's names, without ``removed``, with each statement
    of ``swap`` nested in them replaced by its value."""
    text = ""
    for s, params in stmts:
        kept = _without(ix, s, removed)
        for old, new in (swap or {}).items():
            if ix.inside(old, s):
                kept = kept.deep_replace(old, new)
        code = cst.Module(body=[]).code_for_node(rename(kept, _compose(params, mapping)))
        if writes(ix, s):  # rank 0 writes; every process keeps computing
            code = "if self.trainer.is_global_zero:\n" + textwrap.indent(textwrap.dedent(code), "    ")
        text += code
    return textwrap.dedent(text)


def _template(name: str):
    import jinja2  # only the module form needs it (the wrapper form's hot path stays light)

    text = importlib.resources.files("migrator.templates").joinpath(name).read_text()
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=False, keep_trailing_newline=True, autoescape=False)
    return env.from_string(text)


def _black(code: str) -> str:
    import black  # only the module form formats whole generated code

    return black.format_str(code, mode=black.Mode())
