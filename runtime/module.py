"""`TrainModule`: the Lightning-style structured model (steps, optimizers, logging, hooks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # the trainer imports this module; avoid the cycle at run time
    from runtime.trainer import Trainer

_REDUCE_FXS = ("mean", "sum", "max", "min")


class TrainModule(nn.Module):
    """A model that also knows how to train itself, driven by :class:`runtime.Trainer`.

    Override ``training_step`` (returns the loss, or a dict holding ``"loss"``),
    ``configure_optimizers`` and, optionally, ``validation_step`` and the epoch hooks. Call
    ``self.log(name, value)`` to record metrics: they reach the progress bar, the loggers
    and the callbacks (``ModelCheckpoint(monitor=...)``, ``EarlyStopping``).

    Set ``self.automatic_optimization = False`` in ``__init__`` to drive the optimizers
    yourself (GANs, several optimizers): fetch them with ``self.optimizers()``, call
    ``self.manual_backward(loss)``, ``opt.step()`` and ``opt.zero_grad()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization: bool = True
        self._trainer: Trainer | None = None

    # ---- what the user overrides -------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        """Compute and return the loss for one batch (a tensor or ``{"loss": tensor, ...}``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement training_step")

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        """Evaluate one batch; log metrics with ``self.log`` (reduced across processes)."""
        return None

    def configure_optimizers(self) -> Any:
        """Return an optimizer, a list of optimizers, ``(optimizers, schedulers)``, or a dict
        ``{"optimizer": opt, "lr_scheduler": {"scheduler": s, "interval": "epoch"}}``."""
        raise NotImplementedError(f"{type(self).__name__} must implement configure_optimizers")

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Step one scheduler the Trainer steps (``metric``: the monitored value, or None).
        Override to run code right after the step, as in Lightning."""
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def on_fit_start(self) -> None:
        """Called once when ``fit`` starts, after set-up and any checkpoint restore."""

    def on_fit_end(self) -> None:
        """Called once when ``fit`` ends."""

    def on_train_epoch_start(self) -> None:
        """Called at the start of every training epoch."""

    def on_train_epoch_end(self) -> None:
        """Called at the end of every training epoch (after that epoch's validation)."""

    def on_validation_epoch_start(self) -> None:
        """Called before the first validation batch."""

    def on_validation_epoch_end(self) -> None:
        """Called after the last validation batch; ``self.log`` here logs epoch values."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add plain values to ``checkpoint`` before it is written."""

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Read back what ``on_save_checkpoint`` added."""

    # ---- what the trainer provides -------------------------------------------------------
    @property
    def trainer(self) -> Trainer:
        """The trainer running this module (raises when the module is used standalone)."""
        if self._trainer is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a runtime.Trainer")
        return self._trainer

    @property
    def current_epoch(self) -> int:
        """Index of the epoch being trained (0 before ``fit``)."""
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        """Number of optimizer steps taken so far (0 before ``fit``)."""
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def device(self) -> torch.device:
        """The device this process trains on."""
        if self._trainer is not None:
            return self._trainer.runtime.device
        param = next(self.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool = True,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        sync_dist: bool = False,
        reduce_fx: str = "mean",
        batch_size: int | None = None,
    ) -> None:
        """Record a scalar metric.

        Defaults follow Lightning: in ``training_step`` a value is logged per step
        (``on_step=True, on_epoch=False``); in ``validation_step`` and epoch hooks it is
        aggregated over the epoch. Epoch aggregates are always reduced across processes
        (batch-size weighted mean, or ``reduce_fx="sum"/"max"/"min"``); ``sync_dist=True``
        additionally averages per-step values across processes (a collective every call).
        """
        self.trainer._metrics.log(
            name, value, prog_bar=prog_bar, logger=logger, on_step=on_step,
            on_epoch=on_epoch, sync_dist=sync_dist, reduce_fx=reduce_fx, batch_size=batch_size,
        )

    def log_dict(self, metrics: dict[str, Any], **kwargs: Any) -> None:
        """``self.log`` every item of ``metrics`` with the same options."""
        for name, value in metrics.items():
            self.log(name, value, **kwargs)

    def optimizers(self) -> Any:
        """The set-up optimizer (one) or list of optimizers (several)."""
        opts = self.trainer.optimizers
        return opts[0] if len(opts) == 1 else list(opts)

    def lr_schedulers(self) -> Any:
        """The scheduler (one), a list (several), or None."""
        scheds = [cfg.scheduler for cfg in self.trainer.lr_scheduler_configs]
        if not scheds:
            return None
        return scheds[0] if len(scheds) == 1 else scheds

    def manual_backward(self, loss: torch.Tensor) -> None:
        """Backward through the runtime (precision scaling, strategy hooks); use instead of
        ``loss.backward()`` under manual optimization. Several calls per step work under
        DDP when the trainer has ``find_unused_parameters=True`` (GANs)."""
        # model=: under DDP each manual backward starts its own gradient reduction
        self.trainer.runtime.backward(loss, model=self.trainer._model)

    def clip_gradients(
        self, optimizer: Any, gradient_clip_val: float, gradient_clip_algorithm: str = "norm"
    ) -> Any:
        """Clip the gradients of the parameters ``optimizer`` updates (manual optimization)."""
        return self.trainer._clip(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on global rank 0 only."""
        if self._trainer is None:
            print(*args, **kwargs)
        else:
            self._trainer.runtime.print(*args, **kwargs)


def call_through_forward(model: nn.Module, original: nn.Module, method: str, *args: Any) -> Any:
    """Call ``original.<method>(*args)`` *through* ``model``'s forward (``model`` wraps
    ``original``: a ``Runtime.setup`` result).

    Strategy wrappers act in the wrapped forward (DDP's gradient-sync preparation, FSDP's
    unsharding, precision autocast), so a training step must run inside it: ``original``'s
    ``forward`` is swapped for the step for one call, and swapped back before the step runs,
    so ``self(x)`` inside the step reaches the real forward.
    """
    had_own = "forward" in original.__dict__
    saved = original.__dict__.get("forward")

    def restore() -> None:
        if had_own:
            original.__dict__["forward"] = saved
        else:
            original.__dict__.pop("forward", None)

    def step_as_forward(*a: Any, **kw: Any) -> Any:
        restore()
        return getattr(original, method)(*a, **kw)

    original.__dict__["forward"] = step_as_forward
    try:
        return model(*args)
    finally:
        restore()


# ---- configure_optimizers() -----------------------------------------------------------------


@dataclass
class SchedulerConfig:
    """One learning-rate scheduler and when the trainer steps it."""

    scheduler: Any
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None
    strict: bool = True
    name: str | None = None

    @property
    def needs_metric(self) -> bool:
        """ReduceLROnPlateau-style schedulers take the monitored value in ``step``."""
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def _as_scheduler_config(item: Any, monitor: str | None = None) -> SchedulerConfig:
    if isinstance(item, dict):
        unknown = set(item) - {"scheduler", "interval", "frequency", "monitor", "strict", "name"}
        if unknown or "scheduler" not in item:
            raise ValueError(
                f"lr_scheduler dict {sorted(item)} must hold 'scheduler' and only "
                "'interval', 'frequency', 'monitor', 'strict', 'name'"
            )
        cfg = SchedulerConfig(**item)
    else:
        cfg = SchedulerConfig(scheduler=item)
    if cfg.monitor is None:
        cfg.monitor = monitor  # Lightning also takes it from the optimizer dict
    if cfg.interval not in ("epoch", "step"):
        raise ValueError(f"lr_scheduler interval {cfg.interval!r}: use 'epoch' or 'step'")
    if cfg.frequency < 1:
        raise ValueError(f"lr_scheduler frequency {cfg.frequency!r} must be >= 1")
    if cfg.needs_metric and cfg.monitor is None:
        raise ValueError("ReduceLROnPlateau needs 'monitor' in its lr_scheduler dict")
    return cfg


def parse_optimizers(config: Any) -> tuple[list[Any], list[SchedulerConfig]]:
    """Normalise what ``configure_optimizers`` returned into (optimizers, scheduler configs).

    Accepts every form Lightning accepts: one optimizer; a list/tuple of optimizers;
    ``([optimizers], [schedulers])``; a dict with ``optimizer`` and optional ``lr_scheduler``
    (a scheduler or a config dict) and ``monitor``; a list of such dicts.
    """
    if config is None:
        raise ValueError("configure_optimizers returned None: return at least one optimizer")
    if isinstance(config, torch.optim.Optimizer):
        return [config], []
    if isinstance(config, dict):
        config = [config]
    if (
        isinstance(config, (list, tuple)) and len(config) == 2
        and isinstance(config[0], (list, tuple)) and isinstance(config[1], (list, tuple))
    ):
        return list(config[0]), [_as_scheduler_config(s) for s in config[1]]
    optimizers: list[Any] = []
    schedulers: list[SchedulerConfig] = []
    for item in config:
        if isinstance(item, dict):
            if "optimizer" not in item:
                raise ValueError(f"configure_optimizers dict {sorted(item)} has no 'optimizer'")
            optimizers.append(item["optimizer"])
            if item.get("lr_scheduler") is not None:
                schedulers.append(_as_scheduler_config(item["lr_scheduler"], item.get("monitor")))
        elif isinstance(item, torch.optim.Optimizer):
            optimizers.append(item)
        else:
            raise TypeError(
                f"configure_optimizers returned {type(item).__name__}: expected an optimizer, "
                "a list of optimizers, (optimizers, schedulers) or a dict with 'optimizer'"
            )
    if not optimizers:
        raise ValueError("configure_optimizers returned no optimizer")
    return optimizers, schedulers


# ---- self.log() bookkeeping -----------------------------------------------------------------


@dataclass
class _Aggregate:
    """Running epoch aggregate of one metric on this process."""

    reduce_fx: str
    total: float = 0.0
    weight: float = 0.0
    extreme: float | None = None
    prog_bar: bool = False
    logger: bool = True


@dataclass
class MetricStore:
    """Collects ``self.log`` values: per-step values now, epoch aggregates at epoch end."""

    phase: str = "train"
    batch: Any = None
    step_values: dict[str, float] = field(default_factory=dict)
    step_flags: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # prog_bar, logger
    epoch: dict[str, _Aggregate] = field(default_factory=dict)
    step_reducer: Callable[[torch.Tensor], torch.Tensor] | None = None

    def start(self, phase: str) -> None:
        """Begin a new epoch of ``phase`` ("train" or "val"): forget the old aggregates."""
        self.phase, self.epoch, self.batch = phase, {}, None

    def log(self, name: str, value: Any, *, prog_bar: bool, logger: bool, on_step: bool | None,
            on_epoch: bool | None, sync_dist: bool, reduce_fx: str,
            batch_size: int | None) -> None:
        """Record one value (see ``TrainModule.log``)."""
        if reduce_fx not in _REDUCE_FXS:
            raise ValueError(f"reduce_fx={reduce_fx!r}: use one of {', '.join(_REDUCE_FXS)}")
        in_step = self.batch is not None
        training = self.phase == "train" and in_step
        on_step = training if on_step is None else on_step and in_step
        on_epoch = (not training) if on_epoch is None else on_epoch
        tensor = torch.as_tensor(value).detach()
        if tensor.numel() != 1:
            raise ValueError(f"self.log({name!r}, ...) needs a scalar, got shape {tuple(tensor.shape)}")
        both = on_step and on_epoch
        if on_step:
            if sync_dist and self.step_reducer is not None:
                tensor = self.step_reducer(tensor.to(torch.float64))
            key = f"{name}_step" if both else name
            self.step_values[key] = float(tensor)
            self.step_flags[key] = (prog_bar, logger)
        if on_epoch:
            key = f"{name}_epoch" if both else name
            weight = float(batch_size if batch_size is not None else _batch_size(self.batch))
            agg = self.epoch.setdefault(key, _Aggregate(reduce_fx, prog_bar=prog_bar, logger=logger))
            scalar = float(tensor)
            agg.total += scalar * weight if reduce_fx == "mean" else scalar
            agg.weight += weight
            if reduce_fx in ("max", "min"):
                pick = max if reduce_fx == "max" else min
                agg.extreme = scalar if agg.extreme is None else pick(agg.extreme, scalar)

    def take_step_values(self) -> dict[str, float]:
        """The values logged since the last call (cleared)."""
        values, self.step_values = self.step_values, {}
        return values

    def reduce_epoch(self, runtime: Any) -> dict[str, float]:
        """Epoch aggregates reduced over all processes (a collective: call on every rank).

        Rank 0's metric names decide which metrics are reduced (a name that only another
        rank logged is dropped); a rank that saw no batch for a name contributes nothing.
        """
        spec = sorted((name, agg.reduce_fx) for name, agg in self.epoch.items())
        if runtime.world_size > 1:
            spec = runtime.broadcast(spec, src=0)
        if not spec:
            return {}
        aggs = [self.epoch.get(name) or _Aggregate(fx) for name, fx in spec]
        sums = torch.tensor([[a.total, a.weight] for a in aggs], dtype=torch.float64)
        inf = float("inf")
        maxes = torch.tensor([a.extreme if a.reduce_fx == "max" and a.extreme is not None
                              else -inf for a in aggs], dtype=torch.float64)
        mins = torch.tensor([a.extreme if a.reduce_fx == "min" and a.extreme is not None
                             else inf for a in aggs], dtype=torch.float64)
        if runtime.world_size > 1:
            device = runtime.device
            sums = runtime.all_reduce(sums.to(device), op="sum").cpu()
            # one gather for both extremes: min(x) == -max(-x)
            gathered = runtime.all_gather(torch.stack([maxes, -mins]).to(device)).cpu()
            gathered = gathered.reshape(-1, 2, len(spec)).max(0).values
            maxes, mins = gathered[0], -gathered[1]
        out: dict[str, float] = {}
        for i, (name, fx) in enumerate(spec):
            total, weight = float(sums[i, 0]), float(sums[i, 1])
            if fx == "mean":
                out[name] = total / weight if weight else float("nan")
            elif fx == "sum":
                out[name] = total
            else:
                out[name] = float(maxes[i] if fx == "max" else mins[i])
        return out

    def epoch_flags(self, name: str) -> tuple[bool, bool]:
        """(prog_bar, logger) of an epoch metric (defaults when only another rank logged it)."""
        agg = self.epoch.get(name)
        return (agg.prog_bar, agg.logger) if agg is not None else (False, True)


def _batch_size(batch: Any) -> int:
    """Length of the first tensor found in ``batch`` (1 when there is none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            if isinstance(item, (torch.Tensor, list, tuple, dict)):
                return _batch_size(item)
    return 1
