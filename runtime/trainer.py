"""`Trainer`: runs a `TrainModule`'s fit/validate loops on top of the `Runtime` facade."""

from __future__ import annotations

import contextlib

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from runtime import trainer_state
from runtime.callbacks import Callback, EarlyStopping, ModelCheckpoint
from runtime.loggers import Logger, default_loggers
from runtime.module import (
    MetricStore,
    SchedulerConfig,
    TrainModule,
    call_through_forward,
    parse_optimizers,
)
from runtime.profiling import make_profiler
from runtime.progress import ProgressBar
from runtime.trainer_state import batches, num_batches, set_epoch


@contextlib.contextmanager
def _reductions_by_manual_backward(model: Any):
    """Under manual optimization each ``manual_backward`` starts its own gradient reduction
    (``DDPStrategy.backward``); the step's forward (DDP's, around the whole step) must not
    prepare one. It would run *after* the step's backward passes, leaving DDP waiting for a
    backward that never comes (the next step fails with ``initialize_buckets must NOT be
    called during autograd execution``). A plain ``loss.backward()`` in the step (the
    script's own helper functions) is then not reduced: the module form only generates that
    where every process runs the same passes on the same data (docs/targets.md)."""
    ddp = getattr(model, "_forward_module", model)
    if not isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
        yield
        return
    sync = ddp.require_backward_grad_sync
    ddp.require_backward_grad_sync = False
    ddp._manual_grad_sync = sync
    try:
        yield
    finally:
        ddp.require_backward_grad_sync = sync
        del ddp._manual_grad_sync


class Trainer:
    """Lightning-style loop: ``Trainer(max_epochs=10).fit(module, train_loader, val_loader)``.

    Everything distributed goes through :class:`runtime.Runtime` (``strategy``,
    ``precision`` and ``accumulate_grad_batches`` are its arguments, and the launcher's
    environment overrides them as usual), so the same script runs on 1 process or N.
    Resuming (``fit(..., ckpt_path="last")``) restarts at the epoch after the checkpoint's:
    checkpoints written by :class:`ModelCheckpoint` sit at epoch boundaries.
    See ``docs/trainer.md`` for the full guide and the differences from Lightning.
    """

    def __init__(
        self,
        max_epochs: int | None = None,
        max_steps: int | None = None,
        strategy: str = "auto",
        precision: str = "32-true",
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        callbacks: Callback | list[Callback] | None = None,
        default_root_dir: str | os.PathLike = ".",
        logger: bool | Logger | list[Logger] | None = True,
        enable_progress_bar: bool | None = None,
        enable_checkpointing: bool = True,
        check_val_every_n_epoch: int = 1,
        limit_train_batches: float | None = None,
        limit_val_batches: float | None = None,
        log_every_n_steps: int = 50,
        profiler: Any = None,
        seed: int | None = None,
        runtime: Any = None,
        **strategy_options: Any,
    ) -> None:
        if gradient_clip_algorithm not in ("norm", "value"):
            raise ValueError(f"gradient_clip_algorithm={gradient_clip_algorithm!r}: "
                             "use 'norm' or 'value'")
        if runtime is None:
            from runtime import Runtime
            from runtime.environment import read_environment

            options = dict(strategy_options)
            if gradient_clip_val and gradient_clip_algorithm == "norm" and strategy in (
                    "auto", "deepspeed"):
                options.setdefault("gradient_clipping", gradient_clip_val)  # DeepSpeed clips
            runtime = Runtime(strategy=strategy, precision=precision,
                              accumulate_grad_batches=accumulate_grad_batches, **options)
            # the launcher's --accumulate overrides ours inside the runtime; follow it
            accumulate_grad_batches = read_environment().accumulate or accumulate_grad_batches
        self.runtime = runtime
        if seed is not None:
            runtime.seed_everything(seed)
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self.max_epochs = max_epochs if max_epochs is not None else (
            1000 if max_steps is None else 10**9)
        self.max_steps = max_steps
        self.gradient_clip_val, self.gradient_clip_algorithm = (
            gradient_clip_val, gradient_clip_algorithm)
        self.default_root_dir = Path(default_root_dir)
        cbs = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or [])
        if enable_checkpointing and not any(isinstance(c, ModelCheckpoint) for c in cbs):
            cbs.append(ModelCheckpoint(save_top_k=0, save_last=True))  # last.ckpt only
        self.callbacks = cbs
        self._logger_arg, self._progress_arg = logger, enable_progress_bar
        self.check_val_every_n_epoch = max(1, check_val_every_n_epoch)
        self.limit_train_batches, self.limit_val_batches = limit_train_batches, limit_val_batches
        self.log_every_n_steps = max(1, log_every_n_steps)
        self.profiler = make_profiler(profiler, self.default_root_dir)

        self.current_epoch = 0
        self.global_step = 0
        self.should_stop = False
        self.validated_this_epoch = False
        self.callback_metrics: dict[str, float] = {}
        self.epoch_metrics: dict[str, float] = {}  # the values produced in this epoch only
        self.logged_metrics: dict[str, float] = {}
        self.progress_bar_metrics: dict[str, float] = {}
        self.optimizers: list[Any] = []
        self.lr_scheduler_configs: list[SchedulerConfig] = []
        self.loggers: list[Logger] = []
        self.module: TrainModule | None = None
        self._model: Any = None  # what Runtime.setup returned for self.module
        self._train_metrics = MetricStore(step_reducer=self._mean_across_ranks)
        self._val_metrics = MetricStore(phase="val", step_reducer=self._mean_across_ranks)
        self._metrics = self._train_metrics
        self._batches_seen = 0
        self._micro_steps = 0  # optimizer calls since the runtime was created (its counter)
        self._epoch_done = False
        self._val_values: dict[str, float] = {}
        self._logger_flags: dict[str, bool] = {}
        self._io_ready = False
        self.progress = ProgressBar(enabled=False)

    # ---- public properties ------------------------------------------------------------------
    @property
    def is_global_zero(self) -> bool:
        return bool(self.runtime.is_global_zero)

    @property
    def world_size(self) -> int:
        return int(self.runtime.world_size)

    @property
    def global_rank(self) -> int:
        return int(self.runtime.global_rank)

    @property
    def log_dir(self) -> str | None:
        """The first logger's directory (None on ranks other than 0 or without loggers)."""
        return self.loggers[0].log_dir if self.loggers else None

    @property
    def checkpoint_callback(self) -> ModelCheckpoint | None:
        return next((c for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)

    @property
    def early_stopping_callback(self) -> EarlyStopping | None:
        return next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)

    @property
    def is_last_epoch(self) -> bool:
        return (self.should_stop or self.current_epoch + 1 >= self.max_epochs
                or (self.max_steps is not None and self.global_step >= self.max_steps))

    # ---- fit / validate ---------------------------------------------------------------------
    def fit(self, module: TrainModule, train_dataloaders: Iterable,
            val_dataloaders: Iterable | None = None, ckpt_path: str | os.PathLike | None = None
            ) -> None:
        """Train ``module``; ``ckpt_path`` ("last" or a file) resumes at the next epoch.

        ``train_dataloaders`` may be any iterable: a DataLoader is sharded across ranks, a
        plain one (``range``, ``itertools.count(1)``, a list, a generator) is iterated as-is
        on every rank, one item per ``training_step``; an infinite one ends only through
        ``should_stop`` or ``max_steps``.
        """
        if not isinstance(module, TrainModule):
            raise TypeError(f"fit() needs a runtime.TrainModule, got {type(module).__name__}")
        self._attach(module)
        config = module.configure_optimizers()
        if config is None and not module.automatic_optimization:
            # as in Lightning: a module that updates its parameters itself needs no optimizer
            optimizers, self.lr_scheduler_configs = [], []
        else:
            optimizers, self.lr_scheduler_configs = parse_optimizers(config)
        if module.automatic_optimization and len(optimizers) > 1:
            raise ValueError("several optimizers need manual optimization: set "
                             "self.automatic_optimization = False and step them yourself")
        if not module.automatic_optimization and self.accumulate_grad_batches > 1:
            raise ValueError("accumulate_grad_batches applies to automatic optimization; "
                             "under manual optimization accumulate in training_step")
        if optimizers:
            model, *self.optimizers = self.runtime.setup(module, *optimizers)
        else:
            model, self.optimizers = self.runtime.setup(module), []
        self._model = model
        train_loader = self.runtime.setup_dataloaders(train_dataloaders)
        val_loader = (self.runtime.setup_dataloaders(val_dataloaders, evaluation=True)
                      if val_dataloaders is not None else None)
        self._init_io()
        self.should_stop = False
        if ckpt_path is not None:
            self._restore(ckpt_path)
            if self._fit_done():  # a finished run's checkpoint: nothing left to train
                self.runtime.print(
                    f'fit(ckpt_path="{ckpt_path}"): the checkpoint is from a finished run '
                    f"(epoch {self.current_epoch} of max_epochs={self.max_epochs}): nothing to "
                    f"train; delete {self.checkpoint_callback.setup_dir(self) if self.checkpoint_callback else 'it'} "
                    "to start over", file=sys.stderr)
        module.on_fit_start()
        self._call_callbacks("on_fit_start")
        self.profiler.start()
        try:
            while not self._fit_done():
                self._run_epoch(train_loader, val_loader)
        finally:
            summary = self.profiler.stop(self.is_global_zero)
            for lg in self.loggers:
                lg.finalize()
        if summary:
            self.runtime.print(summary)
        module.on_fit_end()
        self._call_callbacks("on_fit_end")

    def validate(self, module: TrainModule, dataloaders: Iterable) -> list[dict[str, float]]:
        """Run ``validation_step`` over ``dataloaders``; returns ``[metrics]`` (reduced)."""
        if module is not self.module:
            self._attach(module)
            self._model = self.runtime.setup(module)
        loader = self.runtime.setup_dataloaders(dataloaders, evaluation=True)
        self._init_io()
        values = self._run_validation(loader)
        self.log_metrics(values)
        for lg in self.loggers:
            lg.save()
        return [values]

    # ---- the loops --------------------------------------------------------------------------
    def _fit_done(self) -> bool:
        return (self.should_stop or self.current_epoch >= self.max_epochs
                or (self.max_steps is not None and self.global_step >= self.max_steps))

    def _stop_mid_epoch(self) -> bool:
        """After a batch: ``should_stop`` (set in ``training_step`` or a batch callback, as in
        Lightning) or ``max_steps`` ends the epoch here; the epoch end still runs and fit stops.

        Checked before the next batch is fetched: an infinite iterable (``itertools.count``)
        ends only here, and fetching a batch can draw random numbers or consume a generator.
        ``should_stop`` is per process: code setting it mid-epoch must set it alike on every
        rank (the generated loops do) or the ranks' collectives stop matching.
        """
        return self.should_stop or (self.max_steps is not None
                                    and self.global_step >= self.max_steps)

    def _run_epoch(self, train_loader: Iterable, val_loader: Iterable | None) -> None:
        module = self.module
        module.train()
        self._epoch_done, self.validated_this_epoch = False, False
        self.epoch_metrics = {}
        self._metrics = self._train_metrics
        self._train_metrics.start("train")
        set_epoch(train_loader, self.current_epoch)
        with self.profiler.profile("on_train_epoch_start"):
            module.on_train_epoch_start()
            self._call_callbacks("on_train_epoch_start")
        total = num_batches(train_loader, self.limit_train_batches)
        self.progress.start(f"Epoch {self.current_epoch}", total)
        done = 0
        for batch_idx, batch in batches(train_loader, total):
            self._train_metrics.batch = batch
            outputs = self._training_batch(batch, batch_idx)
            self._train_metrics.batch = None
            self._after_batch(outputs, batch, batch_idx)
            done = batch_idx + 1
            if self._stop_mid_epoch():
                break
        self.progress.finish(done, self.progress_bar_metrics)
        if val_loader is not None and (self.current_epoch + 1) % self.check_val_every_n_epoch == 0:
            self._run_validation(val_loader)
        with self.profiler.profile("on_train_epoch_end"):
            module.on_train_epoch_end()
        train_values = self._train_metrics.reduce_epoch(self.runtime)
        self._publish(train_values, self._train_metrics)
        self._step_schedulers("epoch")
        row = {**train_values, **(self._val_values if self.validated_this_epoch else {})}
        self.log_metrics({k: v for k, v in row.items() if self._loggable(k)})
        for lg in self.loggers:
            lg.save()
        self._epoch_done = True
        with self.profiler.profile("callbacks.on_train_epoch_end"):
            self._call_callbacks("on_train_epoch_end")
        self.current_epoch += 1

    def _training_batch(self, batch: Any, batch_idx: int) -> Any:
        module = self.module
        if not module.automatic_optimization:
            with self.profiler.profile("training_step"), _reductions_by_manual_backward(self._model):
                outputs = self._redirect("training_step", batch, batch_idx)
            self.global_step += 1  # one step per batch under manual optimization
            return outputs
        # The runtime accumulates: it averages the loss, skips gradient sync on micro-steps
        # and turns their optimizer calls into no-ops. Every batch therefore runs the full
        # step sequence; only clipping, counters and schedulers need to know the boundary.
        self._micro_steps += 1
        boundary = self._micro_steps % self.accumulate_grad_batches == 0
        with self.profiler.profile("training_step"):
            outputs = self._redirect("training_step", batch, batch_idx)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            raise ValueError("training_step returned no loss (return a tensor or "
                             "{'loss': tensor}); skipping batches would hang other ranks")
        with self.profiler.profile("backward"):
            self.runtime.backward(loss)
        opt = self.optimizers[0]
        if boundary and self.gradient_clip_val:
            with self.profiler.profile("clip_gradients"):
                self._clip(opt, self.gradient_clip_val, self.gradient_clip_algorithm)
        with self.profiler.profile("optimizer_step"):
            opt.step()
            opt.zero_grad()
        if boundary:
            self.global_step += 1
            self._step_schedulers("step")
        return outputs

    def _after_batch(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._batches_seen += 1
        step_values = self._train_metrics.take_step_values()
        flags = self._train_metrics.step_flags
        self.callback_metrics.update(step_values)
        self.epoch_metrics.update(step_values)
        self.progress_bar_metrics.update({k: v for k, v in step_values.items() if flags[k][0]})
        if self._batches_seen % self.log_every_n_steps == 0:
            self.log_metrics({k: v for k, v in step_values.items() if flags[k][1]})
        with self.profiler.profile("callbacks.on_train_batch_end"):
            self._call_callbacks("on_train_batch_end", outputs, batch, batch_idx)
        self.profiler.step()
        self.progress.update(batch_idx + 1, self.progress_bar_metrics)

    def _run_validation(self, loader: Iterable) -> dict[str, float]:
        module = self.module
        was_training = module.training
        module.eval()
        self._metrics = self._val_metrics
        self._val_metrics.start("val")
        module.on_validation_epoch_start()
        total = num_batches(loader, self.limit_val_batches)
        self.progress.start("Validation", total)
        done = 0
        with torch.no_grad():
            for batch_idx, batch in batches(loader, total):
                self._val_metrics.batch = batch
                with self.profiler.profile("validation_step"):
                    self._redirect("validation_step", batch, batch_idx)
                self._val_metrics.batch = None
                done = batch_idx + 1
                self.progress.update(done, self.progress_bar_metrics)
        module.on_validation_epoch_end()
        values = self._val_metrics.reduce_epoch(self.runtime)
        self._publish(values, self._val_metrics)
        self.progress.finish(done, self.progress_bar_metrics)
        self._val_values, self.validated_this_epoch = values, True
        self._call_callbacks("on_validation_epoch_end")
        self._metrics = self._train_metrics
        module.train(was_training)
        return values

    # ---- helpers ----------------------------------------------------------------------------
    def _redirect(self, method: str, *args: Any) -> Any:
        return call_through_forward(self._model, self.runtime.unwrap(self._model), method, *args)

    def _clip(self, optimizer: Any, value: float, algorithm: str) -> Any:
        if algorithm == "norm":
            return self.runtime.clip_gradients(self._model, optimizer, max_norm=value)
        return self.runtime.clip_gradients(self._model, optimizer, clip_val=value)

    def _step_schedulers(self, interval: str) -> None:
        if self.module is not None and not self.module.automatic_optimization:
            return  # manual optimization steps its own schedulers (as in Lightning)
        count = self.global_step if interval == "step" else self.current_epoch + 1
        for cfg in self.lr_scheduler_configs:
            if cfg.interval != interval or count % cfg.frequency:
                continue
            if not cfg.needs_metric:
                self.module.lr_scheduler_step(cfg.scheduler, None)
            elif cfg.monitor in self.epoch_metrics:
                self.module.lr_scheduler_step(cfg.scheduler, self.epoch_metrics[cfg.monitor])
            elif cfg.strict and self.validated_this_epoch:
                raise KeyError(f"lr_scheduler monitor {cfg.monitor!r} was not logged; logged: "
                               f"{', '.join(sorted(self.callback_metrics)) or 'none'}")

    def _mean_across_ranks(self, value: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return value
        return self.runtime.all_reduce(value.to(self.runtime.device), op="mean").cpu()

    def _publish(self, values: dict[str, float], store: MetricStore) -> None:
        self.callback_metrics.update(values)
        self.epoch_metrics.update(values)
        self.progress_bar_metrics.update(
            {k: v for k, v in values.items() if store.epoch_flags(k)[0]})
        self._logger_flags.update({k: store.epoch_flags(k)[1] for k in values})

    def _loggable(self, name: str) -> bool:
        return self._logger_flags.get(name, True)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Send ``metrics`` (plus the epoch) to every logger at the current global step."""
        if not metrics:
            return
        row = {"epoch": self.current_epoch, **metrics}
        self.logged_metrics.update(metrics)
        for lg in self.loggers:
            lg.log_metrics(row, self.global_step)

    def _attach(self, module: TrainModule) -> None:
        self.module = module
        module._trainer = self

    def _init_io(self) -> None:
        if self._io_ready:
            return
        self._io_ready = True
        if self.is_global_zero:
            arg = self._logger_arg
            if arg is True:
                self.loggers = default_loggers(self.default_root_dir)
            elif arg:
                self.loggers = [arg] if isinstance(arg, Logger) else list(arg)
            for lg in self.loggers:
                lg.log_hyperparams(self._hparams())
            self.progress = ProgressBar(enabled=self._progress_arg)

    def _hparams(self) -> dict[str, Any]:
        return {"max_epochs": self.max_epochs, "max_steps": self.max_steps,
                "world_size": self.world_size,
                "accumulate_grad_batches": self.accumulate_grad_batches,
                "gradient_clip_val": self.gradient_clip_val}

    def _call_callbacks(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, self.module, *args)

    # ---- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write a full training checkpoint (every rank calls it; rank 0 writes, atomically)."""
        trainer_state.save(self, Path(path))

    def _restore(self, ckpt_path: str | os.PathLike) -> None:
        trainer_state.restore(self, ckpt_path)

