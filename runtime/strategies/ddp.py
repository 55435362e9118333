"""The DDP strategy: replicate the model, all-reduce gradients (torch DistributedDataParallel)."""

from __future__ import annotations

import torch
from torch.nn.parallel import DistributedDataParallel

from runtime.registry import STRATEGIES
from runtime.strategies.base import Strategy


def _contiguous_strides(shape: torch.Size) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _default_strides(module: torch.nn.Module) -> None:
    """Give every parameter and buffer the default (row-major) strides, in place (same tensor
    objects, same values). A buffer built as ``pe.unsqueeze(0).transpose(0, 1)`` is contiguous
    but keeps an odd stride on its size-1 dimension, and DDP's broadcast of module states then
    fails on every rank ("some elements of the input tensor and the written-to tensor refer to
    a single memory location"; the Transformer of pytorch/examples word_language_model;
    pytorch/pytorch#68407, open since 2021)."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.layout is torch.strided and tensor.stride() != _contiguous_strides(tensor.shape):
                tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)


@STRATEGIES.register("ddp")
class DDPStrategy(Strategy):
    """One model replica per process; gradients averaged by DDP's bucketed all-reduce."""

    name = "ddp"

    def __init__(self, *args, find_unused_parameters: bool = False,
                 static_graph: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ddp_kwargs = {"find_unused_parameters": find_unused_parameters,
                               "static_graph": static_graph}

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        module = super().setup_module(module)
        if not any(p.requires_grad for p in module.parameters()):
            raise ValueError(
                f"{type(module).__name__} has no parameter that requires grad, so DDP cannot "
                "wrap it; move a frozen helper network with `.to(rt.device)` instead of rt.setup"
            )
        _default_strides(module)
        device_ids = [self.root_device.index] if self.root_device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, **self.ddp_kwargs)

    def backward(self, tensor: torch.Tensor, module: torch.nn.Module | None, *args,
                 **kwargs) -> None:
        """With ``rt.backward(loss, model=model)``: one of several backward passes after one
        forward (manual optimization, GANs); start a fresh gradient reduction for this pass,
        as DDP's forward does for the first. Needs ``find_unused_parameters=True`` when a
        pass reaches only some parameters."""
        ddp = getattr(module, "_forward_module", module)
        # (inside a manual-optimization step the Trainer holds the forward's sync flag off and
        # keeps the script's choice here: runtime.trainer._reductions_by_manual_backward)
        sync = getattr(ddp, "_manual_grad_sync", None) if isinstance(ddp, DistributedDataParallel) else None
        if (isinstance(ddp, DistributedDataParallel)
                and (ddp.require_backward_grad_sync if sync is None else sync)
                and torch.is_grad_enabled()):
            ddp.reducer._rebuild_buckets()
            ddp.reducer.prepare_for_backward([tensor] if ddp.find_unused_parameters else [])
        super().backward(tensor, module, *args, **kwargs)

    def set_gradient_sync(self, module: torch.nn.Module, enabled: bool) -> None:
        # What DDP.no_sync() toggles; DDP reads it in forward, so set it before the forward.
        module.require_backward_grad_sync = enabled
