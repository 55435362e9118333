"""Numerical precision plugins: 32-true, 16-mixed (GradScaler), bf16-mixed, bf16-true."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import torch

from runtime.data import apply_to_tensors
from runtime.registry import PRECISIONS


class Precision:
    """Full fp32: every hook is a pass-through. Base class of the other precisions.

    A `Strategy` owns one precision and calls these hooks: ``convert_module`` once at setup,
    ``forward_context`` / ``convert_input`` / ``convert_output`` around every wrapped forward,
    ``backward`` / ``optimizer_step`` / ``unscale_gradients`` for the optimisation step.
    """

    name = "32-true"
    #: dtype of floating inputs/parameters (None: leave as is)
    param_dtype: torch.dtype | None = None
    #: True when a bare ``loss.backward()`` would be wrong (the guard then raises)
    requires_backward_call = False

    def __init__(self, device_type: str = "cpu") -> None:
        self.device_type = device_type

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Cast the module's parameters if this precision trains in a low dtype."""
        return module

    def forward_context(self) -> ContextManager:
        """Context the wrapped forward runs in (autocast for the mixed modes)."""
        return contextlib.nullcontext()

    def convert_input(self, data: Any) -> Any:
        """Cast floating inputs of the wrapped forward."""
        return data

    def convert_output(self, data: Any) -> Any:
        """Cast floating outputs of the wrapped forward."""
        return data

    def backward(self, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        """Run autograd from ``tensor`` (scaled first under 16-mixed)."""
        tensor.backward(*args, **kwargs)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable | None = None,
                       **kwargs: Any) -> Any:
        """Step ``optimizer``; returns what the optimizer (or the closure) returned."""
        return optimizer.step(closure, **kwargs) if closure is not None else optimizer.step(**kwargs)

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients to their true scale before clipping (16-mixed only)."""

    def state_dict(self) -> dict:
        """State to checkpoint (the loss scaler's)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``."""


PRECISIONS.register("32-true")(Precision)


def cast_floats(data: Any, dtype: torch.dtype) -> Any:
    """Cast every floating tensor in ``data`` (nested containers too) to ``dtype``."""
    return apply_to_tensors(data, lambda t: t.to(dtype) if torch.is_floating_point(t) else t)


class MixedPrecision(Precision):
    """Autocast to ``dtype`` inside the forward; parameters (master weights) stay fp32."""

    dtype = torch.bfloat16

    def forward_context(self) -> ContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype)

    def convert_output(self, data: Any) -> Any:
        # Losses computed outside the model then run in fp32, as in the original script.
        return cast_floats(data, torch.get_default_dtype())


@PRECISIONS.register("bf16-mixed")
class BF16Mixed(MixedPrecision):
    """bfloat16 autocast; no loss scaling needed (bf16 has fp32's exponent range)."""

    name = "bf16-mixed"


@PRECISIONS.register("16-mixed")
class FP16Mixed(MixedPrecision):
    """float16 autocast plus a GradScaler: steps with inf/nan gradients are skipped."""

    name = "16-mixed"
    dtype = torch.float16
    requires_backward_call = True

    def __init__(self, device_type: str = "cpu", scaler: Any = None) -> None:
        super().__init__(device_type)
        self.scaler = scaler if scaler is not None else torch.amp.GradScaler(device_type)
        self._unscaled: set[int] = set()  # optimizers already unscaled in this step

    def backward(self, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        self.scaler.scale(tensor).backward(*args, **kwargs)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable | None = None,
                       **kwargs: Any) -> Any:
        # GradScaler cannot run a closure itself: evaluate it first (it calls rt.backward).
        result = closure() if closure is not None else None
        self._unscaled.discard(id(optimizer))
        stepped = self.scaler.step(optimizer, **kwargs)
        self.scaler.update()
        return result if closure is not None else stepped

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        # GradScaler.unscale_ raises when called twice for one optimizer in one step.
        if id(optimizer) not in self._unscaled:
            self._unscaled.add(id(optimizer))
            self.scaler.unscale_(optimizer)

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


@PRECISIONS.register("bf16-true")
class BF16True(Precision):
    """Parameters, inputs and outputs in bfloat16 (no fp32 master weights)."""

    name = "bf16-true"
    param_dtype = torch.bfloat16

    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(torch.bfloat16)

    def convert_input(self, data: Any) -> Any:
        return cast_floats(data, torch.bfloat16)


def create_precision(name: str, device_type: str) -> Precision:
    """Instantiate the precision registered as ``name``; checks the device supports it."""
    cls = PRECISIONS.get(name)
    if name == "16-mixed" and device_type == "cpu" and not hasattr(torch.amp, "GradScaler"):
        raise RuntimeError("precision '16-mixed' on CPU needs torch>=2.3; use 'bf16-mixed'")
    return cls(device_type)
