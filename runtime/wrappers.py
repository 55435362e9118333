"""Wrapped module, optimizer and data loader returned by ``Runtime.setup*``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from runtime.data import apply_to_tensors, move_to_device
from runtime.strategies.base import Strategy

_backward_state = threading.local()  # .active: inside Runtime.backward

BARE_BACKWARD_MESSAGE = (
    "loss.backward() was called directly, but strategy {strategy!r} with precision "
    "{precision!r} needs the runtime to run the backward (loss scaling, engine hooks): "
    "replace `loss.backward()` with `rt.backward(loss)`"
)


class backward_guard_off:
    """Context marking that the runtime itself is running the backward."""

    def __enter__(self) -> None:
        _backward_state.active = True

    def __exit__(self, *exc: object) -> None:
        _backward_state.active = False


def _guard_hook(strategy: Strategy) -> Callable:
    def hook(grad: torch.Tensor) -> None:
        if not getattr(_backward_state, "active", False):
            raise RuntimeError(BARE_BACKWARD_MESSAGE.format(strategy=strategy.name,
                                                            precision=strategy.precision.name))

    return hook


class AccumulationCounter:
    """Counts optimizer steps so micro-steps and boundaries agree across the wrappers."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.calls = 0  # step() calls on the first set-up optimizer

    @property
    def next_is_boundary(self) -> bool:
        return (self.calls + 1) % self.every == 0


class WrappedModule(torch.nn.Module):
    """Calls the strategy's module in forward; everything else reaches the original module."""

    def __init__(self, forward_module: torch.nn.Module, original: torch.nn.Module,
                 strategy: Strategy, counter: AccumulationCounter | None) -> None:
        super().__init__()
        self._forward_module = forward_module
        self.__dict__["_original_module"] = original  # not a submodule: no duplicate params
        self.__dict__["_strategy"] = strategy
        self.__dict__["_counter"] = counter  # None unless the runtime accumulates itself
        self.__dict__["_manual_no_sync"] = False
        self.__dict__["_forward_methods"] = set()
        self.__dict__["_guard"] = strategy.requires_backward_call or (
            strategy.precision.requires_backward_call)
        # Fast path: plain fp32 without accumulation or guard calls the module directly.
        self.__dict__["_plain"] = (strategy.precision.name == "32-true" and counter is None
                                   and not self._guard)

    @property
    def module(self) -> torch.nn.Module:
        """The original module (as ``nn.DataParallel(...).module`` would give)."""
        return self._original_module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._plain:
            return self._forward_module(*args, **kwargs)
        strategy = self._strategy
        if self._counter is not None or self._manual_no_sync:
            sync = not self._manual_no_sync and (
                self._counter is None or self._counter.next_is_boundary)
            strategy.set_gradient_sync(self._forward_module, sync)
        args, kwargs = strategy.convert_input((args, kwargs))
        with strategy.forward_context():
            out = self._forward_module(*args, **kwargs)
        out = strategy.convert_output(out)
        if self._guard and torch.is_grad_enabled():
            hook = _guard_hook(strategy)
            apply_to_tensors(out, lambda t: t.register_hook(hook) if t.requires_grad else None)
        return out

    def mark_forward_method(self, name: str) -> None:
        """Route calls of ``model.<name>(...)`` through the strategy's forward (DDP hooks)."""
        if not callable(getattr(self._original_module, name, None)):
            raise TypeError(f"{type(self._original_module).__name__} has no method {name!r}")
        self._forward_methods.add(name)

    def _call_as_forward(self, name: str, *args: Any, **kwargs: Any) -> Any:
        original = self._original_module
        original.forward = getattr(original, name)  # instance attribute shadows the class's
        try:
            return self(*args, **kwargs)
        finally:
            del original.forward

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        if name in self.__dict__.get("_forward_methods", ()):
            return lambda *a, **k: self._call_as_forward(name, *a, **k)
        return getattr(self.__dict__["_original_module"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        original = self.__dict__.get("_original_module")
        # Script attributes (model.temperature = 2) belong on the user's module.
        if original is not None and name != "training" and not name.startswith("_") and (
                hasattr(original, name) and not isinstance(value, torch.nn.Module)):
            setattr(original, name, value)
        else:
            super().__setattr__(name, value)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The original module's state dict: no ``module.`` / ``_orig_mod.`` prefixes."""
        return unwrap_module(self).state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        from runtime.checkpoint import strip_prefixes

        return unwrap_module(self).load_state_dict(strip_prefixes(state_dict), strict=strict,
                                                   assign=assign)


def unwrap_module(module: torch.nn.Module) -> torch.nn.Module:
    """The user's module under runtime / DDP / torch.compile wrappers."""
    while True:
        if isinstance(module, WrappedModule):
            module = module._original_module
        elif hasattr(module, "_orig_mod"):  # torch.compile's OptimizedModule
            module = module._orig_mod
        else:
            return module


class WrappedOptimizer:
    """Shares the original optimizer's state; ``step``/``zero_grad`` act on boundaries only.

    Its class is a dynamic subclass of the user's optimizer class, so ``isinstance(opt,
    AdamW)`` and LR schedulers keep working even where the strategy steps another object
    (DeepSpeed's ZeRO optimizer, whose ``param_groups`` are the user's optimizer's, so a
    scheduler's LR reaches the real step); ``step(closure)`` returns what the closure returned.
    """

    def __init__(self, optimizer: Any, strategy: Strategy, counter: AccumulationCounter | None,
                 primary: bool, original: torch.optim.Optimizer | None = None) -> None:
        """``optimizer``: what the strategy steps; ``original``: the user's optimizer (the
        same object unless the strategy replaced it)."""
        original = optimizer if original is None else original
        self.__dict__ = {k: v for k, v in original.__dict__.items() if k not in ("step",)}
        self.__class__ = type(f"Wrapped{type(original).__name__}",
                              (WrappedOptimizer, type(original)), {})
        self._optimizer = optimizer
        self._strategy = strategy
        self._counter = counter
        self._primary = primary
        self._calls = 0

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer

    # Read through, not copied: load_state_dict on the original (a checkpoint restore)
    # replaces its param_groups/state objects, and the wrapper must see the new ones.
    @property
    def param_groups(self) -> list:
        return self._optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list) -> None:
        self._optimizer.param_groups = value

    @property
    def state(self) -> Any:
        return self._optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self._optimizer.state = value

    def _accumulating(self) -> bool:
        return self._counter is not None and self._calls % self._counter.every != 0

    def step(self, closure: Callable | None = None, **kwargs: Any) -> Any:
        self._calls += 1
        if self._primary and self._counter is not None:
            self._counter.calls = self._calls
        if self._accumulating():  # a micro-step: gradients keep accumulating
            return None
        return self._strategy.optimizer_step(self._optimizer, closure, **kwargs)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not self._accumulating():
            self._strategy.zero_grad(self._optimizer, set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self._optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self._optimizer.load_state_dict(state_dict)


class WrappedDataLoader:
    """Iterates the (re-sampled) loader, moving batches to the device; counts epochs so the
    distributed sampler reshuffles on every new pass (``set_epoch``).

    ``batch_start`` is the position, within this rank's shard, of the current batch's first
    sample: `Runtime.gather_for_metrics` uses it to drop the sampler's padding.
    """

    def __init__(self, loader: DataLoader, device: torch.device | None,
                 on_iter: Callable[[WrappedDataLoader], None] | None = None) -> None:
        self._loader = loader
        self._device = device  # None: batches stay where the collate function put them
        self._on_iter = on_iter
        self._epoch = 0
        self.batch_start = 0

    @property
    def loader(self) -> DataLoader:
        return self._loader

    def __len__(self) -> int:
        return len(self._loader)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass shuffle as pass number ``epoch`` (a resumed run's first epoch)."""
        self._epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        sampler = getattr(self._loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self._epoch)
        self._epoch += 1
        if self._on_iter is not None:
            self._on_iter(self)
        # plain iterables (range, a generator) have no batch_size: one item per "batch"
        self.batch_start, size = 0, getattr(self._loader, "batch_size", None) or 1
        for i, batch in enumerate(self._loader):
            self.batch_start = i * size
            yield batch if self._device is None else move_to_device(batch, self._device)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_loader"], name)
