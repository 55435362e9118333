"""Pick the device and the collective backend: CUDA + NCCL when available, else CPU + gloo."""

from __future__ import annotations

import os

import torch

from runtime.environment import Environment

ACCELERATORS = ("auto", "cpu", "cuda")


class Accelerator:
    """A device type and the process-group backend that goes with it."""

    name = "cpu"
    backend = "gloo"

    def device(self, local_rank: int) -> torch.device:
        """The device this process uses."""
        return torch.device("cpu")

    def available_devices(self) -> int:
        """How many processes per node this accelerator can host."""
        return os.cpu_count() or 1

    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` current for this process (CUDA only)."""


class CUDAAccelerator(Accelerator):
    """One CUDA device per local rank, NCCL collectives."""

    name = "cuda"
    backend = "nccl"

    def device(self, local_rank: int) -> torch.device:
        return torch.device("cuda", local_rank)

    def available_devices(self) -> int:
        return torch.cuda.device_count()

    def setup_device(self, device: torch.device) -> None:
        torch.cuda.set_device(device)


def select_accelerator(name: str, env: Environment) -> Accelerator:
    """Resolve ``name`` ("auto", "cpu", "cuda"), checking the node has enough devices."""
    if name not in ACCELERATORS:
        raise ValueError(f"unknown accelerator {name!r}; valid accelerators: {', '.join(ACCELERATORS)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("accelerator 'cuda' requested but torch.cuda.is_available() is False; "
                           "use accelerator='cpu' (or --accelerator cpu)")
    use_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    accelerator = CUDAAccelerator() if use_cuda else Accelerator()
    if use_cuda and env.local_world_size > accelerator.available_devices():
        raise RuntimeError(
            f"{env.local_world_size} processes per node but only {accelerator.available_devices()} "
            f"CUDA devices are visible; launch with --devices {accelerator.available_devices()} or fewer"
        )
    return accelerator
