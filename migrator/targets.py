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
    load: str = "{rt}.load({path})"
    load_into: str = "{rt}.load({path}, {state})"
    unwrap: str = "{rt}.unwrap({model})"
    all_reduce_sum: str = '{rt}.all_reduce({value}, op="sum")'
    reduce_boolean_decision: str = "{rt}.reduce_boolean_decision({flag}, all={all})"
    rank_zero_first: str = "{rt}.rank_zero_first()"
    is_global_zero: str = "{rt}.is_global_zero"
    barrier: str = "{rt}.barrier()"
    seed_everything: str = "{rt}.seed_everything({seed})"
    # Capability flags (rules branch on these, never on the target name).
    # True: evaluation loaders are sharded without padding, so eval accumulators must be
    # summed across ranks. False: evaluation loaders are replicated (every rank sees the
    # whole eval set), so accumulators are already exact and must NOT be reduced.
    eval_data_sharded: bool = True
    # True: methods other than forward that run submodules must be registered after setup.
    needs_mark_forward_method: bool = False
    launch_hint: str = "migrate run --devices N script.py"
    # The target's own method names -> the generic names the analysis uses (``prepare`` ->
    # ``setup``), so a migrated file is recognised as migrated (fixed point).
    method_names: tuple[tuple[str, str], ...] = ()
    extra: dict = field(default_factory=dict, compare=False)


RUNTIME = Vocabulary(name="runtime", wrapper_module="runtime", wrapper_class="Runtime", wrapper_var="rt")

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
    reduce_boolean_decision="{rt}.strategy.reduce_boolean_decision({flag}, all={all})",
    eval_data_sharded=False,
    needs_mark_forward_method=True,
    launch_hint="fabric run --accelerator cpu --devices N script.py (do not call fabric.launch())",
)

ACCELERATE = Vocabulary(
    name="accelerate",
    wrapper_module="accelerate",
    wrapper_class="Accelerator",
    wrapper_var="accelerator",
    # One `prepare` for models, optimizers and loaders. Schedulers are never prepared: a
    # prepared per-epoch scheduler steps once per process (the LR decays N times too fast).
    setup="{rt}.prepare({args})",
    setup_dataloaders="{rt}.prepare({loader})",
    # A prepared evaluation loader pads the last batches with duplicates, which sums over the
    # data set cannot drop: evaluation loaders stay as written (their batches keep their moves
    # to `device`, the accelerator's device), every rank evaluates the whole set, and
    # accumulators are exact without any reduction (as for fabric).
    setup_eval_dataloaders=None,
    # No `enabled=` switch: sync is skipped with `no_sync` and kept with `accumulate`, which
    # syncs on every step at the default gradient_accumulation_steps=1.
    no_backward_sync="{rt}.no_sync({model}) if {enabled} else {rt}.accumulate({model})",
    clip_gradients="{rt}.clip_grad_norm_({model}.parameters(), {args})",
    clip_value_gradients="{rt}.clip_grad_value_({model}.parameters(), {value})",
    save="{rt}.save({obj}, {path})",
    load="torch.load({path})",
    load_into="{rt}.unwrap_model({model}).load_state_dict(torch.load({path}))",
    unwrap="{rt}.unwrap_model({model})",
    all_reduce_sum='{rt}.reduce({value}, reduction="sum")',
    reduce_boolean_decision="{rt}.reduce_boolean_decision({flag}, all={all})",
    rank_zero_first="{rt}.main_process_first()",
    is_global_zero="{rt}.is_main_process",
    barrier="{rt}.wait_for_everyone()",
    seed_everything="set_seed({seed})",
    eval_data_sharded=False,
    launch_hint="accelerate launch --cpu --num_processes N script.py",
    method_names=(
        ("prepare", "setup"),
        ("no_sync", "no_backward_sync"),
        ("accumulate", "no_backward_sync"),
        ("clip_grad_norm_", "clip_gradients"),
        ("clip_grad_value_", "clip_gradients"),
        ("unwrap_model", "unwrap"),
        ("main_process_first", "rank_zero_first"),
        ("wait_for_everyone", "barrier"),
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
