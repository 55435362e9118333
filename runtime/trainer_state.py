"""Trainer checkpoints (what they hold, saving, resuming) and loader pass bookkeeping."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from runtime.trainer import Trainer

FORMAT_VERSION = 1


def _optimizer_keys(n: int) -> list[str]:
    # the first optimizer under "optimizer", like a wrapper-form checkpoint
    return ["optimizer"] + [f"optimizer_{i}" for i in range(1, n)]


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
    except ImportError:
        return state
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # as a tensor and plain numbers, so weights_only loading accepts it
    state["numpy"] = [name, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached]
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        try:
            import numpy as np
        except ImportError:
            return
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, cached))


def save(trainer: Trainer, path: Path) -> None:
    """Write ``trainer``'s full training state to ``path`` through ``Runtime.save``.

    Every rank must call it (sharded strategies gather the state collectively); rank 0
    writes, atomically. The RNG state saved is rank 0's and is restored on every rank.
    """
    state: dict[str, Any] = {"model": trainer._model}
    state.update(zip(_optimizer_keys(len(trainer.optimizers)), trainer.optimizers))
    state.update(
        format_version=FORMAT_VERSION,
        epoch=trainer.current_epoch,
        # an epoch-end checkpoint resumes at the next epoch; any other restarts this one
        resume_epoch=trainer.current_epoch + (1 if trainer._epoch_done else 0),
        global_step=trainer.global_step,
        batches_seen=trainer._batches_seen,
        lr_schedulers=[cfg.scheduler.state_dict() for cfg in trainer.lr_scheduler_configs],
        callbacks={cb.state_key: cb.state_dict() for cb in trainer.callbacks if cb.state_dict()},
        rng=_rng_state(),
    )
    trainer.module.on_save_checkpoint(state)
    trainer.runtime.save(str(path), state)


def resolve(trainer: Trainer, ckpt_path: str | os.PathLike) -> Path | None:
    """``"last"`` -> the checkpoint callback's ``last.ckpt`` (None when absent), else the path."""
    if str(ckpt_path) != "last":
        path = Path(ckpt_path)
        if not path.exists():  # a file, or a directory for sharded strategies
            raise FileNotFoundError(f"fit(ckpt_path={str(ckpt_path)!r}): no such checkpoint")
        return path
    cb = trainer.checkpoint_callback
    if cb is None:
        raise ValueError('fit(ckpt_path="last") needs a ModelCheckpoint callback '
                         "(enable_checkpointing=True adds one)")
    path = cb.last_path(trainer)
    return path if path.exists() else None


def restore(trainer: Trainer, ckpt_path: str | os.PathLike) -> None:
    """Load model, optimizers, schedulers, callbacks, counters and RNG from a checkpoint."""
    path = resolve(trainer, ckpt_path)
    # every rank must agree on whether there is something to resume from
    found = bool(trainer.runtime.reduce_boolean_decision(path is not None, all=True))
    if not found:
        trainer.runtime.print(f'fit(ckpt_path="{ckpt_path}"): no last checkpoint in '
                              f"{trainer.checkpoint_callback.setup_dir(trainer)}; "
                              "training from the start", file=sys.stderr)
        return
    targets: dict[str, Any] = {"model": trainer._model}
    targets.update(zip(_optimizer_keys(len(trainer.optimizers)), trainer.optimizers))
    rest = trainer.runtime.load(str(path), targets)
    scheds = rest.get("lr_schedulers", [])
    if len(scheds) != len(trainer.lr_scheduler_configs):
        raise ValueError(f"{path} holds {len(scheds)} lr schedulers, configure_optimizers "
                         f"returned {len(trainer.lr_scheduler_configs)}")
    for cfg, sd in zip(trainer.lr_scheduler_configs, scheds):
        cfg.scheduler.load_state_dict(sd)
    saved = rest.get("callbacks", {})
    for cb in trainer.callbacks:
        if cb.state_key in saved:
            cb.load_state_dict(saved[cb.state_key])
    trainer.current_epoch = int(rest["resume_epoch"])
    trainer.global_step = int(rest["global_step"])
    trainer._batches_seen = int(rest.get("batches_seen", 0))
    if "rng" in rest:
        _set_rng_state(rest["rng"])
    trainer.module.on_load_checkpoint(rest)


# ---- loader passes -------------------------------------------------------------------------


def num_batches(loader: Iterable, limit: float | None) -> int | None:
    """Batches one pass yields after ``limit`` (int count or float fraction); None if unknown."""
    try:
        n: int | None = len(loader)  # type: ignore[arg-type]
    except TypeError:
        n = None
    if limit is None:
        return n
    if isinstance(limit, float) and limit <= 1.0:
        if n is None:
            raise ValueError(f"limit={limit} is a fraction but the loader has no len()")
        return int(n * limit)
    return int(limit) if n is None else min(n, int(limit))


def batches(loader: Iterable, total: int | None) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, batch)``, at most ``total`` batches (all when None), never fetching
    a batch past the limit (fetching can draw random numbers in the dataset)."""
    it = iter(loader)
    idx = 0
    while total is None or idx < total:
        try:
            batch = next(it)
        except StopIteration:
            return
        yield idx, batch
        idx += 1


def set_epoch(loader: Any, epoch: int) -> None:
    """Tell a distributed sampler the epoch, so a resumed run reshuffles like the original."""
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if obj is not None and callable(getattr(obj, "set_epoch", None)):
            obj.set_epoch(epoch)
            return
