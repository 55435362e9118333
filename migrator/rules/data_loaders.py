"""MIG301/MIG302/MIG303: loaders go through setup_dataloaders; other training data is reported replicated."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.plan import PlanContext
from migrator.rules.base import Rule


class _LoaderRule(Rule):
    evaluation = False

    def plan(self, ctx: PlanContext) -> None:
        v = ctx.vocab
        template = v.setup_eval_dataloaders if self.evaluation else v.setup_dataloaders
        if template is None:
            return  # this target keeps such loaders as written (see targets.py)
        for ld in ctx.facts.loaders:
            if ld.set_up or ld.evaluation != self.evaluation:
                continue
            if self.evaluation and _handed_to_another_file(ctx, ld):
                continue  # its sums are made there: every rank evaluates it all (exact numbers)
            change = ctx.finding(self.code, ld.call, "")
            if ld.target is not None:
                name = ctx.ix.code(ld.target)
                call = change.code_text(template, loader=name)
                change.insert_after(ld.stmt, cst.parse_statement(f"{name} = {call}\n"))
            else:
                shown = ld.call if "\n" not in ctx.ix.code(ld.call) else f"{ctx.ix.code(ld.call.func)}(...)"
                call = change.code_text(template, loader=shown)
                change.replace(ld.call, lambda u, t=template, c=change: cst.parse_expression(
                    c.code_text(t, loader=cst.Module(body=[]).code_for_node(u))
                ))
            change.message = self.message(call)

    def message(self, call: str) -> str:
        raise NotImplementedError


def _handed_to_another_file(ctx: PlanContext, ld) -> bool:
    """The loader is an argument of a call of a function in another file of the program,
    whose evaluation sums this file cannot see to reduce across ranks (migrator.program): a
    call the program names, or (this file alone) an imported function given the wrapper."""
    role = ctx.options.role
    program_calls = role.program_calls if role is not None else frozenset()
    for ref in ld.refs:
        arg = ctx.ix.parent.get(ref)
        call = ctx.ix.parent.get(arg) if isinstance(arg, cst.Arg) else None
        if not isinstance(call, cst.Call):
            continue
        if ctx.ix.code(call.func) in program_calls:
            return True
        first = call.args[0].value if call.args else None
        borrows = isinstance(first, cst.Name) and first.value == ctx.rt and call.args[0].keyword is None
        if borrows and ctx.facts.funcs.callee(call) is None:
            return True
    return False


class TrainLoaderRule(_LoaderRule):
    """Shard training DataLoaders across processes.

    **What**: after `train_loader = DataLoader(...)` the migrator inserts
    `train_loader = rt.setup_dataloaders(train_loader)`; an inline `DataLoader(...)` is
    wrapped in place. Batches from it arrive on the device (MIG103 removes their moves).

    **Why**: each process must see a different shard (a DistributedSampler, re-seeded each
    epoch). The batch size stays per process, so the global batch grows N-fold on N
    processes: scale the learning rate or divide `batch_size` by N if that matters.

    **Before**: `loader = DataLoader(ds, batch_size=64, shuffle=True)`
    **After**: the same, then `loader = rt.setup_dataloaders(loader)`
    """

    code = "MIG301"
    anchors = A.LOADER
    name = "setup-dataloaders"
    summary = "Shard training loaders: loader = rt.setup_dataloaders(loader)"

    def message(self, call: str) -> str:
        return (
            f"shard the training data: {call}; batch_size is now per process, "
            "so the global batch grows N-fold on N processes"
        )


class EvalLoaderRule(_LoaderRule):
    """Set up evaluation DataLoaders so every sample is evaluated exactly once.

    **What**: a loader iterated only by loops without backward (test / validation) is set up
    as an evaluation loader: runtime `rt.setup_dataloaders(loader, evaluation=True)` (sharded,
    no padding: sums are reduced across ranks, MIG407); fabric
    `fabric.setup_dataloaders(loader, use_distributed_sampler=False)` (Fabric's sampler would
    pad 11 samples to 12: every rank evaluates the whole set instead, so metrics are exact).

    **Why**: a padded or duplicated sample changes accuracy and loss.

    A loader handed to a function of another file migrated with this one (`evaluate(model,
    test_loader)` from `engine.py`) is kept as written: its sums are made in that file, so
    every process evaluates all of it and the numbers stay exact.

    **Before**: `test_loader = DataLoader(test_ds, batch_size=1000)`
    **After**: the same, then `test_loader = rt.setup_dataloaders(test_loader, evaluation=True)`
    """

    code = "MIG302"
    anchors = A.LOADER
    name = "setup-eval-dataloaders"
    summary = "Set up evaluation loaders without padding (every sample counted once)"
    evaluation = True

    def message(self, call: str) -> str:
        return f"evaluation data, every sample counted once: {call}"


class ReplicatedDataRule(Rule):
    """Report training loops whose data is not a DataLoader.

    **What**: a loop that runs backward but iterates something other than a DataLoader
    (batchified tensors, `range` with `get_batch`, synthetic batches, an environment) is
    reported; nothing is rewritten.

    **Why**: only DataLoaders can be sharded by setup. Every process now trains on the same
    data: gradients are averaged over identical batches, so N processes do the work of one.
    Shard by hand (e.g. slice by `rt.global_rank` / `rt.world_size`) if that matters.
    """

    code = "MIG303"
    anchors = A.BACKWARD
    name = "replicated-data"
    summary = "Training data is not a DataLoader: it is replicated on every process"

    def plan(self, ctx: PlanContext) -> None:
        loader_loops = {loop for ld in ctx.facts.loaders for loop in ld.loops}
        reads_loader = _loader_reader(ctx)
        seen = set()
        for b in ctx.facts.backwards:
            loops = ctx.ix.loops_around(b.call)
            fn = ctx.ix.function_of(b.call)
            if not loops and fn is not None:
                loops = ctx.ix.loops_around(fn)  # an optimizer closure defined inside the loop
            if not loops and fn is not None:
                # a step function (``finish_episode()``) called from the training loop
                callers = [c for c in ctx.ix.calls if (ctx.facts.funcs.callee(c) or (None,))[0] is fn]
                loops = next((ctx.ix.loops_around(c) for c in callers if ctx.ix.loops_around(c)), [])
            if not loops or loops[0] in seen:
                continue
            seen.add(loops[0])
            if any(loop in loader_loops or reads_loader(loop) for loop in loops):
                continue  # set up as a DataLoader (MIG301): an inline loader, next(iter(loader))
            ctx.finding(
                self.code, loops[0],
                "training data here is not a DataLoader: every process trains on the same "
                "(replicated) data; shard it by rank by hand if needed",
                fixed=False,
            )


_ITERATORS = {"iter", "cycle", "islice", "enumerate", "zip", "tqdm"}


def _len_of(ix, node: cst.CSTNode) -> bool:
    """``len(loader)``: a count, not the data."""
    arg = ix.parent.get(node)
    call = ix.parent.get(arg) if isinstance(arg, cst.Arg) else None
    return isinstance(call, cst.Call) and isinstance(call.func, cst.Name) and call.func.value == "len"


def _loader_reader(ctx: PlanContext):
    """A test: does a loop hold a DataLoader (an inline ``DataLoader(...)``, a reference to
    one) or a name bound from one (``it = iter(loader)`` read by ``next(it)``)?"""
    ix = ctx.ix
    nodes = [n for ld in ctx.facts.loaders for n in (ld.call, *ld.refs) if not _len_of(ix, n)]
    derived: set[str] = set()
    for node in nodes:
        arg = ix.parent.get(node)
        call = ix.parent.get(arg) if isinstance(arg, cst.Arg) else None
        assign = ix.parent.get(call) if isinstance(call, cst.Call) else None
        name = call.func.attr if isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute) else (
            call.func if isinstance(call, cst.Call) else None
        )
        if isinstance(assign, cst.Assign) and isinstance(name, cst.Name) and name.value in _ITERATORS:
            derived.update(t.target.value for t in assign.targets if isinstance(t.target, cst.Name))

    def reads(loop: cst.CSTNode) -> bool:
        return any(ix.inside(n, loop) for n in nodes) or any(
            n.value in derived for n in ix.subtree(loop, cst.Name)
        )

    return reads
