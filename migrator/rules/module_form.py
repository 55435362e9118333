"""MIG5xx: the module form (`--form module`) - converted, or why the script fell back to the wrapper form.

These classes document the codes (``migrate --explain``); ``migrator.module_form`` emits them,
they plan nothing in the wrapper form.
"""

from __future__ import annotations

from migrator.rules.base import Rule


class ConvertedToModule(Rule):
    """The training loop became a module class driven by a Trainer.

    **What**: `--form module` turns `for epoch in range(E):` with a DataLoader batch loop into a
    generated class (`L.LightningModule` for `--target lightning`, `runtime.TrainModule` for
    `--target runtime`) that wraps the script's model as `self.model`: the batch loop body is
    `training_step` (returning the loss), the evaluation loop `validation_step` (its
    accumulators are summed over processes and logged), statements around the loops become
    `on_train_epoch_start` / `on_validation_epoch_start` / `on_validation_epoch_end`, the
    optimizer and scheduler `configure_optimizers` (interval kept), `clip_grad_norm_` the
    Trainer's `gradient_clip_val`. The loop is replaced by `Trainer(max_epochs=E, ...)` and
    `trainer.fit(Module(model), train_loader, val_loader, ckpt_path="last")`; nothing else in
    the file changes. Several optimizers or backward passes per batch (GANs) give manual
    optimization: the models become `self.<name>` submodules (see MIG504).

    **Why**: the Trainer brings checkpointing and resume, logging, early stopping, LR
    scheduling, accumulation and clipping on every strategy without editing the loop again.

    **Before**:
    ```python
    for epoch in range(args.epochs):
        for x, y in loader:
            loss = F.mse_loss(model(x), y)
            loss.backward(); optimizer.step(); optimizer.zero_grad()
    ```
    **After**:
    ```python
    class NetModule(L.LightningModule):
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.mse_loss(self.model(x), y)
            return loss
    trainer = L.Trainer(max_epochs=args.epochs, ...)
    trainer.fit(NetModule(model), loader, ckpt_path="last")
    ```
    """

    code = "MIG501"
    name = "module-form-converted"
    summary = "training loop converted to a module class + Trainer"


class NoRecognisableLoop(Rule):
    """No loop the module form can express: the file is migrated in the wrapper form instead.

    **What**: the module form needs one `for epoch in range(...)` loop holding a `for` over a
    DataLoader with one `loss.backward()`, and one `optimizer = Opt(model.parameters(), ...)`
    created before it in the same block (or in a block holding that one through `if` statements
    only: a module-level optimizer and an `if __name__ == "__main__":` loop). Batchified tensors without a DataLoader, loops in
    helper functions or methods, `while` epoch loops and optimizers created elsewhere do not
    fit; nor does code that reads the optimizer or scheduler on the other side of an epoch
    `scheduler.step()` than the Trainer steps it (Lightning steps before validation, the
    runtime after the epoch; what follows the step at the end of the epoch is kept after it).

    **Why**: a half-converted file is worse than none; the wrapper form keeps the script's
    shape and still runs distributed.

    **Before**: `for i in range(0, data.size(0), bptt): ...`  **After**: wrapper form; finding
    says which part did not fit.
    """

    code = "MIG502"
    name = "module-form-no-loop"
    summary = "no loop the module form can express: migrated in the wrapper form"


class StepCannotExpress(Rule):
    """Control flow a training step cannot express: migrated in the wrapper form instead.

    **What**: `break` / `continue` / `return` in the batch loop (e.g. a loss-threshold exit),
    `break` out of the epoch loop, `optimizer.step(closure)` (LBFGS), a conditional
    `backward()`, and (manual optimization) an optimizer that steps or zeroes conditionally
    (gradient accumulation). Manual accumulation converts to `accumulate_grad_batches=K` when
    exact: `loss = <E> / K` before `loss.backward()`, and an `if (i + 1) % K == 0:` holding
    (a clipping call,) `optimizer.step()`, then `optimizer.zero_grad()` (and a per-step
    `scheduler.step()`); the step returns `<E>` (both Trainers divide by K) and `loss` keeps its
    divided value for prints. It falls back with this code when other work runs in that `if`,
    a later statement of the batch loop reads the model/optimizer/scheduler, or the batches per
    epoch are not known from the file to be a multiple of K (a constant K, a
    `DataLoader(TensorDataset(torch.randn(N, ...), ...), batch_size=B)` with constant N and B):
    the script carries a partial window into the next epoch, Lightning steps it at epoch end,
    the runtime counts windows across epochs. One `break` is converted instead: `if <flag>: break` ending the batch-loop
    body (or ending `if i % n == 0:` bodies that end it), whose flag calls nothing and is not
    changed by the loop, becomes `limit_train_batches=1 if <flag> else None` (an evaluation
    loop: `limit_val_batches`), e.g. pytorch/examples' `if args.dry_run: break`. So is a
    `break` out of the epoch loop ending an `if` (no `else`) that ends the epoch, after
    training: it sets `self.trainer.should_stop = True` in the epoch-end hook, and the run
    stops when any process stops.

    **Why**: the Trainer owns the loops; a step returns one loss per batch and cannot leave
    its epoch, and the Trainer steps optimizers without a closure.

    **Before**: `if loss.item() < tol: break`  **After**: wrapper form, unchanged control flow.
    """

    code = "MIG503"
    name = "module-form-control-flow"
    summary = "control flow a training step cannot express: migrated in the wrapper form"


class ManualOptimization(Rule):
    """Several optimizers / backward passes the step cannot express, or parameters updated by hand.

    **What**: GAN-style loops (several optimizers, several `backward()` calls per batch) are
    converted with manual optimization (`self.automatic_optimization = False`; the step binds the
    script's optimizer names from `self.optimizers()`, keeps its `zero_grad()`/`step()` calls and
    turns each `loss.backward()` into `self.manual_backward(loss)`; schedulers are stepped where
    the script steps them; DDP looks for unused parameters). They fall back to the wrapper form
    with this code when a `backward()` sits outside the training loop or takes arguments
    (`retain_graph=True`); manual SGD on `p.data` without an optimizer always does.

    **Why**: `manual_backward(loss)` takes the loss only and every pass must run inside the
    step; `configure_optimizers` has nothing to return for manual SGD.

    **Before**: `p.data.add_(p.grad, alpha=-lr)`  **After**: wrapper form.
    """

    code = "MIG504"
    name = "module-form-manual-optimization"
    summary = "several optimizers or hand-written updates: migrated in the wrapper form"


class CarriedState(Rule):
    """State carried across batches in the loop (e.g. an RNN hidden state) does not fit a step.

    **What**: a variable initialised before the batch loop and re-assigned from its own value
    inside it (`hidden = repackage_hidden(hidden)`) is reported and the file migrated in the
    wrapper form.

    **Why**: steps are independent calls; carrying state silently through module attributes
    breaks under resume and sharded data.

    **Before**: `hidden = model.init_hidden(bsz)` ... `output, hidden = model(data, hidden)`
    **After**: wrapper form.
    """

    code = "MIG505"
    name = "module-form-carried-state"
    summary = "state carried across batches: migrated in the wrapper form"


class LoopResultUsedAfter(Rule):
    """A value computed in the loop (or the optimizer) is used after it.

    **What**: names the loop binds and later code reads (the last loss printed after training),
    or an optimizer/scheduler used outside the loop (saved in a checkpoint), keep the file in
    the wrapper form.

    **Why**: after the conversion those values live inside the module and Trainer; the
    later code would read stale or undefined names.

    **Before**: `for epoch in ...: last = loss.item()` then `print(last)`  **After**:
    wrapper form. A value bound before the loop that an epoch hook reads and re-binds (`best =
    0.0`; `if acc > best: best = acc`) is not an escape: it becomes module state (saved in the
    checkpoint) and the code after the loop reads it back (`best = module.best`).
    """

    code = "MIG506"
    name = "module-form-escaping-value"
    summary = "loop values used after the loop: migrated in the wrapper form"


class PrecisionNotConverted(Rule):
    """Autocast / GradScaler use the Trainer's precision cannot express: migrated in the wrapper form.

    **What**: `with torch.autocast(...)` / `torch.cuda.amp.autocast(...)` blocks that are
    statements of a batch loop are dedented and a GradScaler's `scale(loss).backward()`,
    `step(opt)`, `update()` and `unscale_(opt)` (before clipping) become the Trainer's own
    backward/step: `Trainer(precision=...)` gets what MIG205 records for the wrapper form
    (`"16-mixed" if torch.cuda.is_available() else "32-true"` for CUDA autocast, `"bf16-mixed"`
    for a bfloat16 dtype or CPU autocast); `enabled=<expr>` becomes `"16-mixed" if <expr> and
    torch.cuda.is_available() else "32-true"` when `<expr>` is read where the Trainer is created
    and the loop does not change it. This code reports what does not convert: a scaler saved or
    restored by the script's own checkpoint/resume code, other scaler methods, autocast outside
    the batch loops (or entering other contexts), switches the loop changes or that a helper
    function reads, and blocks with different precisions.

    **Why**: the Trainer's precision owns autocast and loss scaling; a second scaler scales twice,
    and a precision fixed at construction cannot follow a switch that changes during training.

    **Before**: `with torch.autocast("cuda"): loss = ...; scaler.scale(loss).backward()`
    **After**: `loss = ...` in `training_step`; `Trainer(precision="16-mixed" if
    torch.cuda.is_available() else "32-true", ...)`.
    """

    code = "MIG507"
    name = "module-form-mixed-precision"
    summary = "autocast / GradScaler use the Trainer's precision cannot express: migrated in the wrapper form"
