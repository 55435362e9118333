"""The single-device strategy: one process, no process group, every hook a pass-through."""

from __future__ import annotations

from runtime.registry import STRATEGIES
from runtime.strategies.base import Strategy


@STRATEGIES.register("single")
class SingleDeviceStrategy(Strategy):
    """Train on one device; collectives return their input (see `Strategy`)."""

    name = "single"

    def setup_environment(self) -> None:
        if self.env.world_size > 1:
            raise RuntimeError(
                f"strategy 'single' runs one process but WORLD_SIZE={self.env.world_size}; "
                "use strategy 'ddp', 'fsdp' or 'deepspeed' (or 'auto'), or run one process"
            )
        self.accelerator.setup_device(self.root_device)
