"""Strategies (single, ddp, fsdp, deepspeed); importing this registers them by name."""

from runtime.strategies.base import Strategy
from runtime.strategies.ddp import DDPStrategy
from runtime.strategies.deepspeed import DeepSpeedStrategy
from runtime.strategies.fsdp import FSDPStrategy
from runtime.strategies.single import SingleDeviceStrategy

__all__ = ["DDPStrategy", "DeepSpeedStrategy", "FSDPStrategy", "SingleDeviceStrategy", "Strategy"]
