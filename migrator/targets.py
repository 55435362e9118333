"""Targets as vocabularies: how each wrapper call is spelled; adding a target touches only this file."""

from __future__ import annotations

from dataclasses import dataclass, field

# Qualified names that construct a wrapper object of any target (to reuse one the file has).
WRAPPER_QNAMES = {
    "runtime.Runtime": "runtime",
    "lightning.fabric.Fabric": "fabric",
    "lightning.Fabric": "fabric",
    "lightning_fabric.Fabric": "fabric",
    "lightning.fabric.fabric.Fabric": "fabric",
    "accelerate.Accelerator": "accelerate",
    "accelerate.accelerator.Accelerator": "accelerate",
}

# Modules vocabulary templates may read (accelerate's ``torch.tensor(...)``, the precision
# default's ``torch.cuda.is_available()``), and the import that binds each when the file
# does not (``import torch.nn.functional as F`` alone binds no ``torch``).
TEMPLATE_IMPORTS: dict[str, str] = {"torch": "import torch"}
# Names a rule's generated code reads that no template holds: the rule adds them to its
# change's ``imports`` itself (a helper module's download lock in the module form, MIG405).
RULE_IMPORTS: dict[str, str] = {
    "os": "import os",
    "tempfile": "import tempfile",
    "time": "import time",
    "FileLock": "from filelock import FileLock",
}


@dataclass(frozen=True)
class Vocabulary:
    """How a target spells the wrapper API.

    Each entry is a format string over *code text* (``{rt}`` is the wrapper variable); rules
    render entries with ``PlanContext.expr`` / ``PlanContext.stmt``, which parse the result
    with libcst, so nothing is ever spliced into the file as raw text. Rules never look at
    ``name``: they read entries and capability flags.
    """

    name: str
    wrapper_module: str  # from <wrapper_module> import <wrapper_class>
    wrapper_class: str
    wrapper_var: str  # preferred variable name for a new wrapper object
    device: str = "{rt}.device"
    # This process's index among the processes on its machine (its GPU's index under the
    # launchers): what a script printing an integer device id (``device = 0``) printed.
    local_rank: str = "{rt}.local_rank"
    setup: str = "{rt}.setup({args})"
    setup_dataloaders: str = "{rt}.setup_dataloaders({loader})"
    # An evaluation loader: every sample seen exactly once in total (see eval_data_sharded).
    # None: the target keeps evaluation loaders as written (no sharding, batches keep their moves).
    setup_eval_dataloaders: str | None = "{rt}.setup_dataloaders({loader}, evaluation=True)"
    backward: str = "{rt}.backward({args})"
    no_backward_sync: str = "{rt}.no_backward_sync({model}, enabled={enabled})"
    clip_gradients: str = "{rt}.clip_gradients({model}, {optimizer}, {args})"
    # clip_grad_value_: ``{value}`` is the clip value's source text.
    clip_value_gradients: str = "{rt}.clip_gradients({model}, {optimizer}, clip_val={value})"
    # Keyword arguments added to clip_gradients so it matches torch's clip_grad_norm_ defaults.
    clip_defaults: tuple[tuple[str, str], ...] = ()
    mark_forward_method: str = '{model}.mark_forward_method("{method}")'
    print: str = "{rt}.print"
    save: str = "{rt}.save({path}, {obj})"
    # None: the target has no counterpart (the call stays as written; MIG403/MIG409 skip).
    load: str | None = "{rt}.load({path})"
    load_into: str = "{rt}.load({path}, {state})"
    unwrap: str = "{rt}.unwrap({model})"
    all_reduce_sum: str = '{rt}.all_reduce({value}, op="sum")'
    # A python int/float summed across ranks, coming back as the same python type (``{type}``
    # is ``type(x)`` or ``int``), so 1-process output is unchanged; ``all_reduce_sum`` is for
    # values that may be tensors (the runtime's all_reduce takes both and keeps the type).
    all_reduce_number: str = '{rt}.all_reduce({value}, op="sum")'
    reduce_boolean_decision: str = "{rt}.reduce_boolean_decision({flag}, all={all})"
    rank_zero_first: str = "{rt}.rank_zero_first()"
    is_global_zero: str = "{rt}.is_global_zero"
    barrier: str = "{rt}.barrier()"
    seed_everything: str | None = "{rt}.seed_everything({seed})"
    # An unseeded script's ranks draw different random numbers (torch seeds each process from
    # the OS): every rank takes rank 0's seed, so they draw the same ones (MIG408).
    share_seed: str = "{rt}.seed_everything({rt}.broadcast(torch.initial_seed() % 2**32))"
    # Capability flags (rules branch on these, never on the target name).
    # True: evaluation loaders are sharded without padding, so eval accumulators must be
    # summed across ranks. False: evaluation loaders are replicated (every rank sees the
    # whole eval set), so accumulators are already exact and must NOT be reduced.
    eval_data_sharded: bool = True
    # True: methods other than forward that run submodules must be registered after setup.
    needs_mark_forward_method: bool = False
    # False: the set-up model is the bare torch wrapper (DDP), which forwards neither the
    # model's own methods and attributes nor its state-dict keys: every use other than the
    # forward and plain nn.Module calls goes through ``unwrap`` (MIG210).
    wrapped_model_transparent: bool = True
    # True: the target's DDP gives every buffer default strides before wrapping (the runtime's
    # strategy does); False: torch's DDP broadcasts buffers as registered, and one with odd
    # strides (a transposed or expanded tensor) fails there: MIG213 registers a default-strided copy.
    ddp_buffers_default_strides: bool = False
    # Not None: the set-up optimizer's step(closure) returns None; this steps the underlying
    # optimizer, which returns the closure's loss (MIG211).
    closure_step: str | None = None
    launch_hint: str = "migrate run --devices N script.py"
    # The target's own method names -> the generic names the analysis uses (``prepare`` ->
    # ``setup``), so a migrated file is recognised as migrated (fixed point).
    method_names: tuple[tuple[str, str], ...] = ()
    # How the constructor spells the precision argument and the generic precision names.
    precision_arg: str = "precision"
    precision_names: tuple[tuple[str, str], ...] = ()
    # Statements that tear the process group down at the end of the script's main path
    # (None: the target does it at exit itself; the runtime registers an atexit teardown).
    teardown: str | None = None
    # Methods of the wrapper that every rank must call (they communicate or wait): never inside
    # a rank-zero-first block or a rank-0 branch (verify rejects such output).
    collectives: frozenset[str] = frozenset(
        {"setup", "setup_dataloaders", "backward", "barrier", "broadcast", "all_reduce",
         "all_gather", "gather_for_metrics", "reduce_boolean_decision", "rank_zero_first",
         "save", "load"}
    )
    extra: dict = field(default_factory=dict, compare=False)


RUNTIME = Vocabulary(name="runtime", wrapper_module="runtime", wrapper_class="Runtime", wrapper_var="rt",
                     ddp_buffers_default_strides=True)

FABRIC = Vocabulary(
    name="fabric",
    wrapper_module="lightning.fabric",
    wrapper_class="Fabric",
    wrapper_var="fabric",
    # Fabric's DistributedSampler pads (11 samples -> 12 on 2 ranks): evaluation loaders keep
    # their own sampler instead, every rank evaluates the whole set and metrics stay exact.
    setup_eval_dataloaders="{rt}.setup_dataloaders({loader}, use_distributed_sampler=False)",
    # torch's clip_grad_norm_ tolerates non-finite norms (AMP's first steps); Fabric raises.
    clip_defaults=(("error_if_nonfinite", "False"),),
    unwrap="{model}.module",
    all_reduce_sum='{rt}.all_reduce({value}, reduce_op="sum")',
    # fabric.all_reduce turns a python float into a float32 tensor (even on 1 process).
    all_reduce_number=(
        '{type}({rt}.all_reduce(torch.tensor({value}, dtype=torch.float64, device={rt}.device), '
        'reduce_op="sum").item())'
    ),
    reduce_boolean_decision="{rt}.strategy.reduce_boolean_decision({flag}, all={all})",
    # Fabric.seed_everything defaults to workers=True: DataLoader workers then get Lightning's
    # seeds (seed, worker id and rank mixed), so a dataset drawing from `random` in
    # __getitem__ (siamese_network) yields other samples than the original on one process.
    # workers=False keeps torch's own worker seeding, as the original has.
    seed_everything="{rt}.seed_everything({seed}, workers=False)",
    share_seed="{rt}.seed_everything({rt}.broadcast(torch.initial_seed() % 2**32), workers=False)",
    eval_data_sharded=False,
    needs_mark_forward_method=True,
    launch_hint="fabric run --accelerator cpu --devices N script.py (do not call fabric.launch())",
    # Fabric has no public teardown; its atexit hook runs too late for gloo (a rank exiting
    # while a peer still tears its pairs down aborts that peer: "terminate called ...").
    teardown=(
        "{rt}.barrier()\n"
        "if torch.distributed.is_initialized():\n"
        "    torch.distributed.destroy_process_group()\n"
    ),
    collectives=frozenset(
        {"setup", "setup_module", "setup_optimizers", "setup_dataloaders", "backward", "barrier",
         "broadcast", "all_reduce", "all_gather", "reduce_boolean_decision", "rank_zero_first",
         "save", "load"}
    ),
)

ACCELERATE = Vocabulary(
    name="accelerate",
    wrapper_module="accelerate",
    wrapper_class="Accelerator",
    wrapper_var="accelerator",
    # Every fact below was checked against accelerate 1.15 on 2 CPU processes (gloo).
    # One `prepare` for models, optimizers and loaders. Schedulers are never prepared: a
    # prepared per-epoch scheduler steps once per process (the LR decays N times too fast).
    setup="{rt}.prepare({args})",
    local_rank="{rt}.local_process_index",
    setup_dataloaders="{rt}.prepare({loader})",
    # A prepared loader pads the last batches with duplicates (even_batches); sums over the
    # data set cannot drop them (only gather_for_metrics on per-sample tensors can). So
    # evaluation loaders stay as written: their batches keep their moves to `device` (the
    # accelerator's device), every rank evaluates the whole set, and the accumulators are
    # exact without any reduction (as for fabric).
    setup_eval_dataloaders=None,
    eval_data_sharded=False,
    # `no_sync(model)` has no `enabled=` switch: on boundary steps `accumulate(model)` runs
    # instead, which keeps the sync at the default gradient_accumulation_steps=1.
    no_backward_sync="{rt}.no_sync({model}) if {enabled} else {rt}.accumulate({model})",
    clip_gradients="{rt}.clip_grad_norm_({model}.parameters(), {args})",
    clip_value_gradients="{rt}.clip_grad_value_({model}.parameters(), {value})",
    print="{rt}.print",
    # accelerator.save(obj, f): written by the main process only.
    save="{rt}.save({obj}, {path})",
    # No load counterpart: torch.load stays (every rank reads the file).
    load=None,
    load_into="{rt}.unwrap_model({model}).load_state_dict({state})",
    unwrap="{rt}.unwrap_model({model})",
    # accelerator.reduce works on tensors only: a Python number is wrapped and unwrapped.
    all_reduce_sum='{rt}.reduce({value}, reduction="sum")',
    all_reduce_number=(
        '{type}({rt}.reduce(torch.tensor({value}, dtype=torch.float64, device={rt}.device), '
        'reduction="sum").item())'
    ),
    # {reduce} is "all" (stop once every rank wants to) or "any" (go on while any rank does).
    reduce_boolean_decision="{rt}.gather(torch.tensor([{flag}], device={rt}.device)).{reduce}()",
    rank_zero_first="{rt}.main_process_first()",
    is_global_zero="{rt}.is_main_process",
    barrier="{rt}.wait_for_everyone()",
    # accelerate.utils.set_seed needs an import the wrapper does not bring: the script's own
    # torch.manual_seed stays (same seed on every rank; DDP broadcasts the initial weights).
    seed_everything=None,
    share_seed=(
        "torch.manual_seed(int({rt}.gather(torch.tensor([torch.initial_seed() % 2**32], "
        "device={rt}.device))[0]))"
    ),
    wrapped_model_transparent=False,
    # AcceleratedOptimizer.step(closure) has no `return`; `.optimizer` is the torch optimizer.
    closure_step="{optimizer}.optimizer.step({closure})",
    # accelerator.save writes on the main process alone: not a collective.
    collectives=frozenset(
        {"prepare", "prepare_model", "prepare_optimizer", "prepare_data_loader", "backward",
         "wait_for_everyone", "gather", "gather_for_metrics", "reduce", "pad_across_processes",
         "main_process_first", "save_state", "load_state"}
    ),
    # Stops trackers and destroys the process group.
    teardown="{rt}.end_training()\n",
    precision_arg="mixed_precision",
    precision_names=(("16-mixed", "fp16"), ("bf16-mixed", "bf16"), ("32-true", "no")),
    # `accelerate launch --cpu` starts ONE process whatever --num_processes says; on CPUs
    # use torchrun (or `accelerate launch --multi_gpu`) with ACCELERATE_USE_CPU=true.
    launch_hint=(
        "accelerate launch --multi_gpu --num_processes N script.py "
        "(CPU: ACCELERATE_USE_CPU=true torchrun --nproc_per_node N script.py)"
    ),
    method_names=(
        ("prepare", "setup"),
        ("no_sync", "no_backward_sync"),
        ("accumulate", "no_backward_sync"),
        ("clip_grad_norm_", "clip_gradients"),
        ("clip_grad_value_", "clip_gradients"),
        ("unwrap_model", "unwrap"),
        ("main_process_first", "rank_zero_first"),
        ("wait_for_everyone", "barrier"),
        ("gather", "reduce_boolean_decision"),
    ),
)

VOCABULARIES: dict[str, Vocabulary] = {v.name: v for v in (RUNTIME, FABRIC, ACCELERATE)}


def generic_method(target: str, method: str) -> str:
    """``prepare`` on an Accelerator -> ``setup``: the analysis speaks one set of method names."""
    vocab = VOCABULARIES.get(target)
    return dict(vocab.method_names).get(method, method) if vocab is not None else method


def vocabulary(target: str) -> Vocabulary:
    """The vocabulary of ``target``; unknown names list the valid ones."""
    try:
        return VOCABULARIES[target]
    except KeyError:
        valid = ", ".join(sorted(VOCABULARIES))
        raise ValueError(f"no wrapper-form vocabulary for target {target!r}; valid: {valid}") from None


# ---- module form (structured LightningModule-style output) ------------------------------------


@dataclass(frozen=True)
class ModuleVocabulary:
    """How a target spells the module form: the base class, the trainer and their imports.

    Entries are code text used by ``migrator.module_form`` (rendered through its jinja2
    templates and parsed with libcst before anything is written).
    """

    name: str
    imports: tuple[str, ...]  # import statements the generated code needs
    base_class: str  # the generated module subclasses this
    base_qnames: tuple[str, ...]  # qualified names of the base (a file using one is migrated)
    trainer: str  # the trainer class as spelled after ``imports``
    checkpoint: str  # callback writing checkpoints/last.ckpt (resume with ckpt_path="last")
    # ``{value}`` is a Python number accumulated on this process; the result is the sum over
    # every process, of the same Python type (the evaluation data is sharded).
    sum_across_processes: str
    sum_helper: str = ""  # extra method ``sum_across_processes`` needs
    # methods always generated: (lightning) the RNG state travels with checkpoints so that a
    # resumed run shuffles and drops out exactly as the uninterrupted one (the runtime does it).
    helpers: str = ""
    trainer_extra: tuple[tuple[str, str], ...] = ()  # Trainer keyword arguments always passed
    barrier: str = "{trainer}.runtime.barrier()"  # every process waits (after rank 0 wrote a file)
    # before the Trainer exists (prints at the top of the script): this process is rank 0,
    # read from the launcher's environment
    rank_zero_import: str = "from runtime import is_global_zero"
    rank_zero_test: str = "is_global_zero()"
    fallback_target: str = "runtime"  # wrapper-form target used when the script does not fit
    launch_hint: str = "migrate run --devices N script.py"
    # where the Trainer steps an epoch-interval scheduler (no monitor): after the epoch's
    # validation and on_train_epoch_end (runtime), or after the last training batch, before
    # validation (Lightning 2.x); the module form keeps the script's order around its step
    epoch_scheduler_before_validation: bool = False
    # Trainer keyword arguments of manual optimization (several backward passes per batch, some
    # reaching only part of the parameters: DDP must look for unused parameters)
    manual_trainer_extra: tuple[tuple[str, str], ...] = ()


RUNTIME_MODULE = ModuleVocabulary(
    name="runtime",
    imports=("from runtime import ModelCheckpoint, TrainModule, Trainer",),
    base_class="TrainModule",
    base_qnames=("runtime.TrainModule", "runtime.module.TrainModule"),
    trainer="Trainer",
    checkpoint='ModelCheckpoint(dirpath="checkpoints", save_last=True)',
    # Runtime.all_reduce keeps Python ints ints and floats floats.
    sum_across_processes='self.trainer.runtime.all_reduce({value}, op="sum")',
    manual_trainer_extra=(("find_unused_parameters", "True"),),
)

LIGHTNING_MODULE = ModuleVocabulary(
    name="lightning",
    imports=("import lightning as L", "from lightning.pytorch.callbacks import ModelCheckpoint"),
    base_class="L.LightningModule",
    base_qnames=(
        "lightning.LightningModule",
        "lightning.pytorch.LightningModule",
        "lightning.pytorch.core.module.LightningModule",
        "pytorch_lightning.LightningModule",
    ),
    trainer="L.Trainer",
    checkpoint='ModelCheckpoint(dirpath="checkpoints", save_last=True)',
    # strategy.reduce works on tensors only (a Python number passes through unreduced).
    sum_across_processes="self._sum_across_processes({value})",
    helpers=(
        "def on_save_checkpoint(self, checkpoint):\n"
        "    # resume continues the random stream (shuffling, dropout) of the interrupted run\n"
        '    checkpoint["torch_rng_state"] = torch.get_rng_state()\n'
        "\n"
        "def on_load_checkpoint(self, checkpoint):\n"
        '    if "torch_rng_state" in checkpoint:\n'
        '        torch.set_rng_state(checkpoint["torch_rng_state"])\n'
    ),
    sum_helper=(
        "def _sum_across_processes(self, value):\n"
        "    # each process summed over its own shard of the data\n"
        "    total = self.trainer.strategy.reduce(\n"
        "        torch.tensor(value, dtype=torch.float64, device=self.device), reduce_op=\"sum\"\n"
        "    )\n"
        "    return type(value)(total.item())\n"
    ),
    # The sanity validation run would draw from the global RNG before training (every
    # DataLoader iterator does), shifting the shuffling and dropout of the original script.
    # Lightning's progress bar writes to stdout: the script's own prints are its progress,
    # and its stdout stays what the original printed (docs/targets.md).
    trainer_extra=(("num_sanity_val_steps", "0"), ("enable_progress_bar", "False")),
    barrier="{trainer}.strategy.barrier()",
    fallback_target="fabric",
    rank_zero_import="from lightning.pytorch.utilities import rank_zero_only",
    rank_zero_test="rank_zero_only.rank == 0",
    epoch_scheduler_before_validation=True,
    # DDP only when there are several processes (torchrun sets WORLD_SIZE; Lightning spawns
    # on every GPU): a 1-process DDP run would shuffle through a DistributedSampler instead of
    # the script's own sampler, so it would no longer reproduce the script's batches.
    manual_trainer_extra=((
        "strategy",
        '"ddp_find_unused_parameters_true" if int(os.environ.get("WORLD_SIZE", torch.cuda.device_count())) > 1 else "auto"',
    ),),
    # Lightning reads PL_TRAINER_DEVICES; under torchrun it must equal --nproc-per-node.
    launch_hint="python script.py (spawns on GPUs) or PL_TRAINER_DEVICES=N torchrun --nproc-per-node N script.py",
)

MODULE_VOCABULARIES: dict[str, ModuleVocabulary] = {v.name: v for v in (RUNTIME_MODULE, LIGHTNING_MODULE)}
