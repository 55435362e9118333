"""`Runtime`: the object migrated scripts call; it delegates every decision to its strategy."""

from __future__ import annotations

import contextlib
import inspect
import os
import random
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from runtime import checkpoint
from runtime.accelerator import select_accelerator
from runtime.data import distributed_loader, shardable
from runtime.environment import Environment, read_environment
from runtime.precision import create_precision
from runtime.registry import STRATEGIES
from runtime.strategies import Strategy
from runtime.wrappers import (
    AccumulationCounter,
    WrappedDataLoader,
    WrappedModule,
    WrappedOptimizer,
    backward_guard_off,
    unwrap_module,
)


def _strategy_name(requested: str, env: Environment) -> str:
    name = env.strategy or requested
    if name == "auto":
        return "ddp" if env.world_size > 1 else "single"
    STRATEGIES.get(name)  # raises, listing the valid names
    return name


def _accepted(cls: type, options: dict) -> dict:
    """The constructor options ``cls`` takes (launcher overrides may switch strategy)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in options.items() if k in params}


_NUMBER_OPS = {
    "sum": torch.sum, "mean": torch.mean, "max": torch.max, "min": torch.min, "prod": torch.prod,
}


class Runtime:
    """Distributed training for a plain PyTorch script, one object.

    Constructor arguments are defaults: ``TORCH_MIGRATE_STRATEGY`` / ``_PRECISION`` /
    ``_ACCUMULATE`` (set by ``migrate run``) override them. Extra keyword arguments are
    strategy options (e.g. ``block_classes`` for fsdp, ``stage`` / ``config`` for deepspeed).
    """

    def __init__(self, strategy: str = "auto", precision: str = "32-true",
                 accumulate_grad_batches: int = 1, seed: int | None = None, *,
                 accelerator: str = "auto", timeout: float = 1800.0,
                 **strategy_options: Any) -> None:
        env = read_environment()
        accumulate = env.accumulate or accumulate_grad_batches
        if not isinstance(accumulate, int) or accumulate < 1:
            raise ValueError(f"accumulate_grad_batches={accumulate!r}: expected an integer >= 1")
        name = _strategy_name(strategy, env)
        accel = select_accelerator(env.accelerator or accelerator, env)
        prec = create_precision(env.precision or precision, accel.device(0).type)
        cls = STRATEGIES.get(name)
        options = _accepted(cls, strategy_options)
        ignored = set(strategy_options) - set(options)
        if ignored and name == strategy:
            raise TypeError(f"strategy {name!r} takes no option(s) {', '.join(sorted(ignored))}")
        self._strategy: Strategy = cls(env, accel, prec, accumulate=accumulate,
                                       timeout=env.timeout or timeout, **options)
        self._strategy.setup_environment()
        self._env = env
        self._counter = None
        if accumulate > 1 and not self._strategy.handles_accumulation:
            self._counter = AccumulationCounter(accumulate)
        self._models: list[WrappedModule] = []
        self._has_primary_optimizer = False
        self._eval_loader: WrappedDataLoader | None = None
        if seed is not None:
            self.seed_everything(seed)

    # -- where am I ----------------------------------------------------------------------------
    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def device(self) -> torch.device:
        return self._strategy.root_device

    @property
    def global_rank(self) -> int:
        return self._env.global_rank

    @property
    def local_rank(self) -> int:
        return self._env.local_rank

    @property
    def node_rank(self) -> int:
        return self._env.node_rank

    @property
    def world_size(self) -> int:
        return self._env.world_size

    @property
    def is_global_zero(self) -> bool:
        return self._env.global_rank == 0

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, module: torch.nn.Module, *optimizers: torch.optim.Optimizer) -> Any:
        """Wrap ``module`` (and its optimizers): ``model = rt.setup(model)`` or
        ``model, opt1, opt2 = rt.setup(model, opt1, opt2)``."""
        if isinstance(module, WrappedModule):
            raise TypeError("this model was already passed to rt.setup; set up each model once")
        original = module
        forward_module, opts = self._strategy.setup_module_and_optimizers(module, optimizers)
        wrapped = WrappedModule(forward_module, unwrap_module(original), self._strategy,
                                self._counter)
        self._models.append(wrapped)
        wrapped_opts = []
        for opt, user_opt in zip(opts, optimizers):
            wrapped_opts.append(WrappedOptimizer(opt, self._strategy, self._counter,
                                                 primary=not self._has_primary_optimizer,
                                                 original=user_opt))
            self._has_primary_optimizer = True
        return (wrapped, *wrapped_opts) if optimizers else wrapped

    def setup_dataloaders(self, *loaders: DataLoader, evaluation: bool = False,
                          move_to_device: bool = True) -> Any:
        """Shard each loader across ranks and move its batches to ``rt.device`` (an iterable
        other than a DataLoader is not sharded: every rank iterates all of it).

        ``evaluation=True`` shards without padding (every sample counted once), except under
        strategies whose forward is collective (fsdp, deepspeed stage 3): there shards are
        padded to equal length and `gather_for_metrics` drops the padding.
        """
        device = self.device if move_to_device and self.device.type != "cpu" else None
        wrapped = [self._setup_loader(loader, evaluation, device) for loader in loaders]
        return wrapped[0] if len(wrapped) == 1 else tuple(wrapped)

    def _setup_loader(self, loader: DataLoader, evaluation: bool,
                      device: torch.device | None) -> WrappedDataLoader:
        """A DataLoader is sharded; any other iterable (``range``, ``itertools.count``, a list,
        a generator) is replicated: every rank iterates it as-is, without a warning, since it
        has no dataset to shard and is passed on purpose (a training loop's iteration counter)."""
        if (isinstance(loader, DataLoader) and self._strategy.distributed
                and self.world_size > 1):
            if shardable(loader):
                seed = loader.generator.initial_seed() if loader.generator is not None else (
                    torch.initial_seed())
                # Shuffled shards must come from one permutation: take rank 0's seed.
                seed = int(self.broadcast(seed % 2**31))
                loader = distributed_loader(loader, self.world_size, self.global_rank, seed,
                                            evaluation, self._strategy.collective_forward)
            elif self.is_global_zero:
                warnings.warn("this DataLoader has a custom sampler or an iterable dataset: it is "
                              "not sharded, every rank sees all of its data", stacklevel=3)
        on_iter = self._set_eval_loader if evaluation else None
        return WrappedDataLoader(loader, device, on_iter)

    def _set_eval_loader(self, loader: WrappedDataLoader) -> None:
        self._eval_loader = loader

    # -- training step ---------------------------------------------------------------------------
    def backward(self, tensor: torch.Tensor, *args: Any, model: Any = None, **kwargs: Any) -> None:
        """Replacement for ``loss.backward()``: loss scaling, accumulation, strategy hooks."""
        with backward_guard_off():
            self._strategy.backward(tensor, model, *args, **kwargs)

    def no_backward_sync(self, module: WrappedModule, enabled: bool = True) -> Any:
        """Skip gradient synchronisation in this block (manual accumulation micro-steps)."""
        if not isinstance(module, WrappedModule):
            raise TypeError("rt.no_backward_sync expects the model returned by rt.setup, got "
                            f"{type(module).__name__}")
        return self._manual_no_sync(module) if enabled else contextlib.nullcontext()

    @contextlib.contextmanager
    def _manual_no_sync(self, module: WrappedModule) -> Iterator[None]:
        module.__dict__["_manual_no_sync"] = True
        module.__dict__["_plain"] = False
        try:
            yield
        finally:
            module.__dict__["_manual_no_sync"] = False
            self._strategy.set_gradient_sync(module._forward_module, True)

    def clip_gradients(self, module: Any, optimizer: Any, max_norm: float | None = None,
                       norm_type: float = 2.0, clip_val: float | None = None) -> Any:
        """Clip by global norm (returns the total norm) or by value; unscales 16-mixed first."""
        if (max_norm is None) == (clip_val is None):
            raise ValueError("pass exactly one of max_norm=... or clip_val=...")
        opt = optimizer.optimizer if isinstance(optimizer, WrappedOptimizer) else optimizer
        if max_norm is not None:
            return self._strategy.clip_gradients_norm(module, opt, max_norm, norm_type)
        return self._strategy.clip_gradients_value(module, opt, clip_val)

    # -- collectives ---------------------------------------------------------------------------
    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on global rank 0 only."""
        if self.is_global_zero:
            print(*args, **kwargs)

    def barrier(self) -> None:
        self._strategy.barrier()

    def all_reduce(self, x: Any, op: str = "sum") -> Any:
        """Reduce across ranks; a python int/float comes back as the same type."""
        if isinstance(x, torch.Tensor):
            return self._strategy.all_reduce(x, op)
        if op not in _NUMBER_OPS:
            raise ValueError(f"unknown reduce op {op!r}; valid ops: {', '.join(_NUMBER_OPS)}")
        if not self._strategy.distributed:
            return x
        # One gather of (value, is a float) per rank, reduced here: every rank gets the same
        # type even where one rank's accumulator stayed the int 0 (an empty shard) while the
        # others hold floats (mixed dtypes in one all_reduce are undefined).
        mine = torch.tensor([float(x), float(isinstance(x, float))], dtype=torch.float64,
                            device=self.device)
        rows = self._strategy.all_gather(mine)
        total = _NUMBER_OPS[op](rows[:, 0]).item()
        return float(total) if op == "mean" or rows[:, 1].max().item() else int(total)

    def all_gather(self, x: Any) -> Any:
        """Tensors: stacked ``(world_size, *shape)``; other objects: a list, one per rank."""
        if isinstance(x, torch.Tensor):
            return self._strategy.all_gather(x)
        return self._strategy.all_gather_object(x)

    def gather_for_metrics(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample values of the current evaluation batch from every rank, concatenated,
        without the distributed sampler's padding: every dataset sample exactly once."""
        if not self._strategy.distributed:
            return x
        loader = self._eval_loader
        world, lengths = self.world_size, self.all_gather(torch.tensor(len(x), device=x.device))
        size = int(lengths.max())
        padded = torch.zeros((size, *x.shape[1:]), dtype=x.dtype, device=x.device)
        padded[: len(x)] = x
        pieces = self._strategy.all_gather(padded)
        # a plain iterable is not sharded: no padding to drop
        total = (len(loader.loader.dataset)
                 if loader is not None and isinstance(loader.loader, DataLoader) else None)
        out = []
        for rank, (piece, n) in enumerate(zip(pieces, lengths.tolist())):
            keep = n
            if total is not None:  # position i of a shard is sample i*world+rank of the pass
                keep = sum(1 for j in range(n) if (loader.batch_start + j) * world + rank < total)
            out.append(piece[:keep])
        return torch.cat(out)

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return self._strategy.broadcast(obj, src)

    def reduce_boolean_decision(self, flag: bool, all: bool = True) -> bool:
        """Collective decision: True if every rank (``all=True``) / any rank says True."""
        votes = self._strategy.all_reduce(torch.tensor(int(bool(flag)), device=self.device))
        return bool(votes == self.world_size) if all else bool(votes > 0)

    @contextlib.contextmanager
    def rank_zero_first(self, local: bool = False) -> Iterator[None]:
        """Rank 0 (of the node if ``local``) runs the block first, e.g. to download data."""
        first = (self.local_rank if local else self.global_rank) == 0
        if not first:
            self.barrier()
        yield
        if first:
            self.barrier()

    def seed_everything(self, seed: int) -> int:
        """Seed ``random``, numpy (if installed) and torch exactly like ``torch.manual_seed``."""
        random.seed(seed)
        try:
            import numpy
        except ImportError:
            pass
        else:
            numpy.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        os.environ["PL_GLOBAL_SEED"] = str(seed)  # readable by DataLoader workers
        return seed

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, state: Any) -> None:
        """Write ``state`` (models, optimizers, schedulers, values) once, atomically."""
        self._strategy.save_checkpoint(os.fspath(path), state)

    def load(self, path: str | os.PathLike, state: Any = None, *, weights_only: bool = True,
             strict: bool = True) -> Any:
        """Without ``state``: the checkpoint's contents. With ``state``: restore in place and
        return the entries ``state`` did not ask for. Pickled code needs ``weights_only=False``."""
        path = os.fspath(path)
        if state is None:
            return checkpoint.safe_load(path, weights_only)
        return self._strategy.load_checkpoint(path, state, weights_only)

    def resume(self, path: str | os.PathLike, state: dict) -> bool:
        """Restore ``state`` from ``path`` if a checkpoint exists there (after a crash, or a
        torchrun ``--max-restarts`` restart); False on a fresh start."""
        if not checkpoint.checkpoint_exists(path):
            return False
        self.load(path, state)
        return True

    def unwrap(self, obj: Any) -> Any:
        """The original module / optimizer behind a wrapped one."""
        if isinstance(obj, WrappedOptimizer):
            return obj.optimizer
        return unwrap_module(obj) if isinstance(obj, torch.nn.Module) else obj
