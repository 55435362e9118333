"""The FSDP strategy: shard parameters, gradients and optimizer state with FSDP2 fully_shard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from runtime.registry import STRATEGIES
from runtime.strategies.base import Strategy


def _block_modules(module: torch.nn.Module, block_classes: Sequence[type | str]) -> list:
    """The repeated blocks to shard separately: instances of ``block_classes`` (classes or
    class names) if given, else the children of every ``nn.ModuleList``."""
    if block_classes:
        wanted = tuple(c for c in block_classes if isinstance(c, type))
        names = {c for c in block_classes if isinstance(c, str)}
        return [m for m in module.modules() if m is not module
                and (isinstance(m, wanted) or type(m).__name__ in names)]
    return [child for m in module.modules() if isinstance(m, torch.nn.ModuleList)
            for child in m.children()]


@STRATEGIES.register("fsdp")
class FSDPStrategy(Strategy):
    """FSDP2: ``fully_shard`` each repeated block, then the root module.

    Options: ``block_classes`` (classes or class names to shard as units; default: the
    children of every ``nn.ModuleList``), ``reshard_after_forward`` (default True),
    ``save_full`` (write one consolidated file instead of a sharded checkpoint directory).
    """

    name = "fsdp"
    collective_forward = True

    def __init__(self, *args, block_classes: Sequence[type | str] = (),
                 reshard_after_forward: bool = True, save_full: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.block_classes = tuple(block_classes)
        self.reshard_after_forward = reshard_after_forward
        self.save_full = save_full
        self.optimizer_modules: dict[int, torch.nn.Module] = {}  # id(optimizer) -> module

    def setup_environment(self) -> None:
        if not self.env.distributed:
            raise RuntimeError(
                "strategy 'fsdp' needs a process group but this process was not started by a "
                "launcher; run `migrate run --devices 2 --strategy fsdp script.py` (or torchrun), "
                "or use strategy 'single'"
            )
        super().setup_environment()
        if self.precision.name == "16-mixed":
            raise ValueError("precision '16-mixed' is not supported with strategy 'fsdp'; "
                             "use 'bf16-mixed' (no loss scaling needed)")

    def setup_module_and_optimizers(self, module: torch.nn.Module,
                                    optimizers: Sequence[torch.optim.Optimizer]) -> tuple:
        names = {id(p): n for n, p in module.named_parameters()}
        for opt in optimizers:
            if opt.state:
                raise ValueError("set up the model before the optimizer takes its first step: "
                                 "FSDP replaces the parameters the optimizer holds")
        module = self.setup_module(module)
        # fully_shard swapped every parameter for a sharded DTensor one: rebind optimizers.
        new = dict(module.named_parameters())
        for opt in optimizers:
            for group in opt.param_groups:
                group["params"] = [new[names[id(p)]] for p in group["params"]]
            self.optimizer_modules[id(opt)] = module
        return module, list(optimizers)

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        if not any(True for _ in module.parameters()):
            raise ValueError(f"{type(module).__name__} has no parameters to shard with FSDP; "
                             "move it with `.to(rt.device)` instead of passing it to rt.setup")
        module = self.precision.convert_module(module).to(self.root_device)
        # fully_shard shards each rank's own copy: make every rank start from rank 0's weights.
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)
        mesh = init_device_mesh(self.root_device.type, (dist.get_world_size(),))
        for block in _block_modules(module, self.block_classes):
            if any(True for _ in block.parameters()):
                fully_shard(block, mesh=mesh, reshard_after_forward=self.reshard_after_forward)
        fully_shard(module, mesh=mesh, reshard_after_forward=self.reshard_after_forward)
        return module

    def set_gradient_sync(self, module: torch.nn.Module, enabled: bool) -> None:
        # FSDP2 keeps unsharded gradients locally and reduce-scatters on the sync step.
        module.set_requires_gradient_sync(enabled)

    def module_state_dict(self, module: torch.nn.Module) -> dict:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # Collective: every rank gathers, rank 0 receives the full tensors on CPU.
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(module, options=opts)

    def load_module_state_dict(self, module: torch.nn.Module, state: dict,
                               strict: bool = True) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        opts = StateDictOptions(full_state_dict=True, strict=strict)
        return set_model_state_dict(module, state, options=opts)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.optimizer_modules[id(optimizer)], optimizer,
                                        options=opts)

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(self.optimizer_modules[id(optimizer)], optimizer, state,
                                 options=StateDictOptions(full_state_dict=True))

    def save_checkpoint(self, path: str, state: Any) -> None:
        from runtime import checkpoint

        if self.save_full or not checkpoint.holds_modules(state):
            checkpoint.save_full(path, checkpoint.to_saveable(state, self), self)
        else:
            checkpoint.save_sharded(path, state, self)

    def load_checkpoint(self, path: str, state: Any, weights_only: bool) -> Any:
        from runtime import checkpoint

        if checkpoint.is_sharded(path):
            return checkpoint.load_sharded(path, state, self)
        return checkpoint.load_full(path, state, weights_only, self)
