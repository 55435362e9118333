"""Needs-a-human rules (MIG9xx): scripts the migrator recognises but must not rewrite."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.rules.base import Rule

_DISTRIBUTED = {
    "torch.distributed.init_process_group": "initialises its own process group",
    "torch.nn.parallel.DistributedDataParallel": "wraps its model in DistributedDataParallel",
    "torch.nn.parallel.distributed.DistributedDataParallel": "wraps its model in DistributedDataParallel",
    "torch.utils.data.distributed.DistributedSampler": "shards its data with DistributedSampler",
    "torch.utils.data.DistributedSampler": "shards its data with DistributedSampler",
    "torch.multiprocessing.spawn": "starts its own processes with mp.spawn",
    "torch.multiprocessing.start_processes": "starts its own processes",
    "torch.distributed.fsdp.FullyShardedDataParallel": "shards its model with FSDP",
    "torch.distributed.fsdp.fully_shard": "shards its model with FSDP",
    "torch.distributed._composable.fsdp.fully_shard": "shards its model with FSDP",
    "deepspeed.initialize": "is set up by DeepSpeed",
    "accelerate.Accelerator": "already uses Accelerate",
}
# Namespaces whose every call needs a process group: DTensor / tensor parallelism, device
# meshes, composable DDP/FSDP, pipelining (``from torch.distributed.tensor.parallel import
# parallelize_module``, ``init_device_mesh(...)``).
_DISTRIBUTED_NAMESPACES = {
    "torch.distributed.tensor.parallel.": "parallelizes its model with tensor parallelism",
    "torch.distributed.device_mesh.": "builds its own device mesh",
    "torch.distributed.tensor.device_mesh.": "builds its own device mesh",
    "torch.distributed._tensor.device_mesh.": "builds its own device mesh",
    "torch.distributed.tensor.": "shards tensors over a device mesh (DTensor)",
    "torch.distributed._tensor.": "shards tensors over a device mesh (DTensor)",
    "torch.distributed._composable.": "wraps its model with composable DDP/FSDP",
    "torch.distributed.pipelining.": "splits its model into pipeline stages",
}
_PROCESSES = {"torch.multiprocessing.Process", "torch.multiprocessing.Pool"}
_CONTAINERS = {"torch.nn.ModuleList", "torch.nn.Sequential", "torch.nn.ModuleDict"}


class AlreadyDistributed(Rule):
    """Scripts that are already distributed are reported, not rewritten.

    **What**: a file that calls `init_process_group`, wraps a model in
    `DistributedDataParallel` or FSDP, shards data with `DistributedSampler`, starts
    processes with `mp.spawn`, builds a device mesh or parallelizes a model with tensor
    parallelism / DTensor (`init_device_mesh`, `parallelize_module`: any call into
    `torch.distributed.tensor`, `device_mesh`, `_composable`, `pipelining`), or uses
    DeepSpeed / Accelerate is left unchanged; each such
    call is reported (`fixed=False`) and `--check` fails. A module-level
    `accelerator = Accelerator()` is the file's wrapper object instead: reused by
    `--target accelerate`, reported by MIG904 for the other targets.

    **Why**: a second layer of wrapping (DDP inside the wrapper's DDP, two process groups,
    two samplers) hangs or silently trains on the wrong data. Porting such a script means
    removing its own distribution code, a decision for a person.

    **Before**: `dist.init_process_group("nccl")` ... `DDP(model)`  **After**: unchanged;
    finding: remove the script's own distribution code, then migrate it.
    """

    code = "MIG901"
    anchors = A.Ident(
        "init_process_group", "DistributedDataParallel", "DistributedSampler", "spawn",
        "start_processes", "FullyShardedDataParallel", "fully_shard", "initialize",
        "Accelerator", "distributed",  # torch.distributed.tensor / device_mesh / ... calls
    )
    name = "already-distributed"
    summary = "already distributed: remove its own DDP/process-group code by hand, then migrate"

    def plan(self, ctx) -> None:
        wrapper = ctx.facts.wrapper  # the file's own wrapper object: migrated (see MIG904)
        for call in ctx.ix.calls:
            qname = ctx.ix.call_qname(call) or ""
            why = _DISTRIBUTED.get(qname) or next(
                (f"{w} ({qname.rsplit('.', 1)[1]})" for ns, w in _DISTRIBUTED_NAMESPACES.items()
                 if qname.startswith(ns)),
                None,
            )
            if why is not None and (wrapper is None or call is not wrapper.call):
                ctx.finding(
                    self.code,
                    call,
                    f"not rewritten: this script {why}; "
                    "remove its own distribution code, then migrate",
                    fixed=False,
                )


class SharedMemoryTraining(Rule):
    """Hogwild / shared-memory multiprocessing training is reported, not rewritten.

    **What**: `model.share_memory()` and training in `torch.multiprocessing.Process` /
    `Pool` workers are reported (`fixed=False`); the file is left unchanged.

    **Why**: hogwild updates one model in shared memory from several processes without any
    gradient synchronisation. The wrapper's data parallelism is a different algorithm
    (replicas kept identical by all-reducing gradients); rewriting one into the other changes
    what the script computes.

    **Before**: `model.share_memory()`; `mp.Process(target=train, args=(model,))`
    **After**: unchanged; finding: port the workers to one process per rank by hand.
    """

    code = "MIG902"
    anchors = A.Ident("share_memory", "multiprocessing")
    name = "shared-memory-training"
    summary = "hogwild / shared-memory training: port to data parallelism by hand"

    def plan(self, ctx) -> None:
        for call in ctx.ix.calls:
            f = call.func
            shared = (
                isinstance(f, cst.Attribute) and f.attr.value == "share_memory" and not call.args
            )
            if shared or ctx.ix.call_qname(call) in _PROCESSES:
                ctx.finding(
                    self.code,
                    call,
                    "not rewritten: shared-memory (hogwild) multiprocessing "
                    "training; port it to one process per rank by hand",
                    fixed=False,
                )


class PlainListParameters(Rule):
    """Modules kept in plain Python lists with per-layer optimizers are reported, not rewritten.

    **What**: `layers = [nn.Linear(...) for ...]` (a list, not `nn.ModuleList`) whose
    layers get optimizers created in a loop or comprehension is reported (`fixed=False`);
    the file is left unchanged.

    **Why**: the wrapper sets up one model with its optimizers; parameters hidden in a plain
    list belong to no module, so they would not be wrapped or synchronised, and N separate
    optimizers do not map onto one `setup` call. Put the layers in an `nn.ModuleList` (or
    set up each layer with its own optimizer) by hand.

    The same holds for a module that builds its own optimizer over `self.parameters()` in
    its class (`self.opt = Adam(self.parameters())` in `__init__`, stepped by the module's
    own training method): setup wraps a model from outside and cannot rebind `self`.

    **Before**: `layers = [nn.Linear(8, 8) for _ in range(3)]`;
    `opts = [optim.Adam(l.parameters()) for l in layers]`  **After**: unchanged.
    """

    code = "MIG903"
    anchors = A.Ident("optim")
    name = "plain-list-parameters"
    summary = "per-layer optimizers (plain lists, optimizers built in the module): set up by hand"

    def plan(self, ctx) -> None:
        from migrator.rules._setup import own_optimizer

        ix, facts = ctx.ix, ctx.facts
        for m in facts.models:
            if m.manual or not own_optimizer(ctx, m):
                continue
            for o in m.optimizers:
                ctx.finding(
                    self.code,
                    o.call,
                    f"not rewritten: the module builds its own optimizer over "
                    f"{ix.code(m.expr)}.parameters() inside its class (a per-layer optimizer); "
                    f"setup wraps a model from outside and cannot rebind {ix.code(m.expr)}, so "
                    "the module would train unwrapped (ranks drift apart); build the optimizer "
                    "outside the class and set up each module with it by hand",
                    fixed=False,
                )
        per_layer = [
            o
            for o in facts.optimizers
            if any(
                isinstance(a, (cst.ListComp, cst.GeneratorExp, cst.DictComp, cst.For))
                for a in ix.ancestors(o.call)
            )
        ]
        if not per_layer:
            return
        for node in ix.assigns:
            if not isinstance(node, cst.Assign) or not _module_list(facts, node.value):
                continue
            target = node.targets[0].target
            from migrator.analysis.flow import binding_of

            b = binding_of(ix, target) if len(node.targets) == 1 else None
            wrapped = any(
                isinstance(ix.parent.get(r), cst.Arg)
                and ix.call_qname(ix.parent[ix.parent[r]]) in _CONTAINERS
                for r in facts.refs(b)
            )
            if not wrapped:
                ctx.finding(
                    self.code,
                    node.value,
                    "not rewritten: modules in a plain list with per-layer "
                    "optimizers; use nn.ModuleList (or set up each layer) by hand",
                    fixed=False,
                )


def _module_list(facts, value: cst.BaseExpression) -> bool:
    if isinstance(value, cst.ListComp):
        return facts.is_module_construction(value.elt)
    if isinstance(value, cst.List) and value.elements:
        return all(facts.is_module_construction(e.value) for e in value.elements)
    return False
