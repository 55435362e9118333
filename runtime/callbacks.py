"""Trainer callbacks: the hook base class, checkpointing, early stopping, LR monitoring."""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.module import TrainModule
    from runtime.trainer import Trainer

_MODES = {"min": (math.inf, lambda new, best, delta: new < best - delta),
          "max": (-math.inf, lambda new, best, delta: new > best + delta)}


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r}: use 'min' or 'max'")


class Callback:
    """Base class: override the hooks you need. Every hook runs on every process.

    A callback with state (``state_dict`` returns a non-empty dict) has it saved in
    checkpoints under ``state_key`` and restored by ``fit(ckpt_path=...)``.
    """

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint (class name by default)."""
        return type(self).__qualname__

    def on_fit_start(self, trainer: Trainer, module: TrainModule) -> None:
        """After set-up and restore, before the first epoch."""

    def on_fit_end(self, trainer: Trainer, module: TrainModule) -> None:
        """After the last epoch."""

    def on_train_epoch_start(self, trainer: Trainer, module: TrainModule) -> None:
        """Before the first batch of an epoch."""

    def on_train_batch_end(
        self, trainer: Trainer, module: TrainModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """After a training batch (and its optimizer step, when the batch ended a step)."""

    def on_validation_epoch_end(self, trainer: Trainer, module: TrainModule) -> None:
        """After validation; ``trainer.epoch_metrics`` holds this epoch's reduced values."""

    def on_train_epoch_end(self, trainer: Trainer, module: TrainModule) -> None:
        """After the epoch's validation, epoch scheduler steps and epoch logging."""

    def state_dict(self) -> dict[str, Any]:
        """Plain values (numbers, strings, lists, dicts) to keep in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class ModelCheckpoint(Callback):
    """Save ``last.ckpt`` every epoch and the ``save_top_k`` best checkpoints by ``monitor``.

    Files go to ``dirpath`` (default ``<default_root_dir>/checkpoints``); ``filename`` is a
    format string over ``epoch``, ``step`` and logged metrics, Lightning style:
    ``"{epoch}-{val_loss:.3f}"`` gives ``epoch=4-val_loss=0.123.ckpt``. Without ``monitor`` the
    newest epoch's checkpoint is the one kept. Writes go through ``Runtime.save`` (rank 0,
    atomic); the decisions use reduced metrics, so every rank agrees on them.
    """

    CHECKPOINT_EXT = ".ckpt"
    LAST_NAME = "last"

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        monitor: str | None = None,
        mode: str = "min",
        save_last: bool = True,
        save_top_k: int = 1,
        filename: str | None = None,
        every_n_epochs: int = 1,
    ) -> None:
        _check_mode(mode)
        if save_top_k < -1:
            raise ValueError(f"save_top_k={save_top_k}: use -1 (all), 0 (none) or a count")
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.monitor, self.mode, self.save_last = monitor, mode, save_last
        self.save_top_k, self.every_n_epochs = save_top_k, max(1, every_n_epochs)
        self.filename = filename or "{epoch}-{step}"
        self.best_k_models: dict[str, float] = {}  # path -> monitored value
        self.best_model_path = ""
        self.best_model_score: float | None = None
        self.last_model_path = ""

    @property
    def state_key(self) -> str:
        return f"ModelCheckpoint[monitor={self.monitor}]"

    def setup_dir(self, trainer: Trainer) -> Path:
        """Resolve ``dirpath`` against the trainer's root directory (once)."""
        if self.dirpath is None:
            self.dirpath = Path(trainer.default_root_dir) / "checkpoints"
        return self.dirpath

    def format_name(self, epoch: int, step: int, metrics: dict[str, float]) -> str:
        """Fill ``filename``: ``{name}`` -> ``name=value``, ``{name:fmt}`` formats the value."""
        values: dict[str, Any] = {"epoch": epoch, "step": step, **metrics}

        def fill(match: re.Match) -> str:
            key, fmt = match.group(1), match.group(2) or ""
            if key not in values:
                raise KeyError(
                    f"ModelCheckpoint filename uses {{{key}}}, not a logged metric; "
                    f"available: {', '.join(sorted(values))}"
                )
            return f"{key.replace('/', '_')}={format(values[key], fmt.lstrip(':'))}"

        return re.sub(r"\{([^{}:]+)(:[^{}]*)?\}", fill, self.filename)

    def last_path(self, trainer: Trainer) -> Path:
        """Where ``last.ckpt`` lives (used by ``fit(ckpt_path="last")``)."""
        return self.setup_dir(trainer) / (self.LAST_NAME + self.CHECKPOINT_EXT)

    def on_train_epoch_end(self, trainer: Trainer, module: TrainModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs and not trainer.is_last_epoch:
            return
        metrics = trainer.callback_metrics
        directory = self.setup_dir(trainer)
        if self.save_top_k != 0:
            self._save_top_k(trainer, directory, metrics)
        if self.save_last:
            path = self.last_path(trainer)
            trainer.save_checkpoint(path)  # after the top-k update: it carries our state
            self.last_model_path = str(path)

    def _save_top_k(self, trainer: Trainer, directory: Path, metrics: dict[str, float]) -> None:
        name = self.format_name(trainer.current_epoch, trainer.global_step, metrics)
        path = str(directory / (name + self.CHECKPOINT_EXT))
        if self.monitor is None:  # keep the newest only (or every one with save_top_k=-1)
            stale = list(self.best_k_models) if self.save_top_k != -1 else []
            self.best_k_models = {path: float(trainer.current_epoch)}
            self.best_model_path = path
            trainer.save_checkpoint(path)
            self._remove(trainer, [p for p in stale if p != path])
            return
        if self.monitor not in trainer.epoch_metrics:
            if trainer.validated_this_epoch:
                raise KeyError(
                    f"ModelCheckpoint(monitor={self.monitor!r}) found no such metric; logged: "
                    f"{', '.join(sorted(metrics)) or 'none'} (log it with self.log)"
                )
            return  # not produced this epoch (no validation): the ranking stays as it is
        score = float(trainer.epoch_metrics[self.monitor])
        if math.isnan(score):
            return
        if self.save_top_k != -1 and len(self.best_k_models) >= self.save_top_k:
            worst = self._worst()
            if not _MODES[self.mode][1](score, self.best_k_models[worst], 0.0):
                return
            del self.best_k_models[worst]
            stale = [worst]
        else:
            stale = []
        self.best_k_models[path] = score
        best = min if self.mode == "min" else max
        self.best_model_path = best(self.best_k_models, key=self.best_k_models.__getitem__)
        self.best_model_score = self.best_k_models[self.best_model_path]
        trainer.save_checkpoint(path)
        self._remove(trainer, [p for p in stale if p != path])

    def _worst(self) -> str:
        pick = max if self.mode == "min" else min
        return pick(self.best_k_models, key=self.best_k_models.__getitem__)

    @staticmethod
    def _remove(trainer: Trainer, paths: list[str]) -> None:
        trainer.runtime.barrier()  # the newer file is complete before the older goes
        if trainer.is_global_zero:
            for p in map(Path, paths):
                if p.is_dir():  # sharded strategies (fsdp) write a checkpoint directory
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor, "mode": self.mode, "dirpath": str(self.dirpath),
            "best_k_models": dict(self.best_k_models), "best_model_path": self.best_model_path,
            "best_model_score": self.best_model_score, "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if str(self.dirpath) != state.get("dirpath"):
            return  # a different directory: start a fresh ranking there (as Lightning does)
        self.best_k_models = dict(state["best_k_models"])
        self.best_model_path = state["best_model_path"]
        self.best_model_score = state["best_model_score"]
        self.last_model_path = state["last_model_path"]


class EarlyStopping(Callback):
    """Stop ``fit`` when ``monitor`` has not improved by ``min_delta`` for ``patience`` checks.

    Checked after every epoch in which ``monitor`` was logged. The stop decision goes
    through ``Runtime.reduce_boolean_decision``, so all processes stop at the same epoch.
    """

    def __init__(
        self, monitor: str, mode: str = "min", patience: int = 3, min_delta: float = 0.0,
        strict: bool = True, verbose: bool = False,
    ) -> None:
        _check_mode(mode)
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.strict, self.verbose = abs(min_delta), strict, verbose
        self.best_score = _MODES[mode][0]
        self.wait_count = 0
        self.stopped_epoch: int | None = None

    @property
    def state_key(self) -> str:
        return f"EarlyStopping[monitor={self.monitor}]"

    def on_train_epoch_end(self, trainer: Trainer, module: TrainModule) -> None:
        metrics = trainer.epoch_metrics  # a value from an earlier epoch is not a new check
        if self.monitor not in metrics:
            if self.strict and trainer.validated_this_epoch:
                raise KeyError(
                    f"EarlyStopping(monitor={self.monitor!r}) found no such metric; logged: "
                    f"{', '.join(sorted(metrics)) or 'none'}"
                )
            return
        score = float(metrics[self.monitor])
        if _MODES[self.mode][1](score, self.best_score, self.min_delta):
            self.best_score, self.wait_count = score, 0
            stop = False
        else:
            self.wait_count += 1
            stop = self.wait_count >= self.patience or math.isnan(score)
        stop = bool(trainer.runtime.reduce_boolean_decision(stop, all=False))
        if stop:
            self.stopped_epoch = trainer.current_epoch
            trainer.should_stop = True
            if self.verbose:
                trainer.runtime.print(
                    f"EarlyStopping: {self.monitor} did not improve for {self.wait_count} "
                    f"checks (best {self.best_score:.6g}); stopping at epoch {trainer.current_epoch}"
                )

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "wait_count": self.wait_count,
                "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = state["best_score"]
        self.wait_count = state["wait_count"]
        self.stopped_epoch = state["stopped_epoch"]


class LearningRateMonitor(Callback):
    """Log every optimizer's learning rate (``lr-<Optimizer>[-<i>]``) each epoch or step."""

    def __init__(self, logging_interval: str = "epoch") -> None:
        if logging_interval not in ("epoch", "step"):
            raise ValueError(f"logging_interval={logging_interval!r}: use 'epoch' or 'step'")
        self.logging_interval = logging_interval

    def _values(self, trainer: Trainer) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, opt in enumerate(trainer.optimizers):
            base = f"lr-{type(getattr(opt, 'optimizer', opt)).__name__}"
            base = base if len(trainer.optimizers) == 1 else f"{base}-{i}"
            for j, group in enumerate(opt.param_groups):
                out[base if len(opt.param_groups) == 1 else f"{base}/pg{j + 1}"] = group["lr"]
        return out

    def on_train_epoch_start(self, trainer: Trainer, module: TrainModule) -> None:
        if self.logging_interval == "epoch":
            trainer.log_metrics(self._values(trainer))

    def on_train_batch_end(
        self, trainer: Trainer, module: TrainModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.logging_interval == "step":
            trainer.log_metrics(self._values(trainer))
