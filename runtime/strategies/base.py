"""The Strategy base class: process group, module/optimizer setup, backward, collectives."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import torch
import torch.distributed as dist

from runtime.accelerator import Accelerator
from runtime.environment import Environment
from runtime.precision import Precision

_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN", "prod": "PRODUCT", "mean": "SUM"}


_EXIT_WAIT_S = 10.0
#: how long a rank at exit waits for slower peers (rank 0 still writing a checkpoint)
_ARRIVE_WAIT_S = 120.0


# Object collectives pickle into uint8 tensors here rather than through
# dist.broadcast_object_list / all_gather_object: torch unpickles those via tensor.numpy(),
# and numpy is neither our dependency nor the CPU torch wheel's ("Numpy is not available").
def _pickled(obj: Any, device: torch.device) -> torch.Tensor:
    return torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8).to(device)


def _unpickled(data: torch.Tensor, size: int) -> Any:
    data = data[:size].cpu().contiguous()
    return pickle.loads(ctypes.string_at(data.data_ptr(), size))


def _destroy_process_group() -> None:
    """Tear the default group down at exit, every rank together (bounded waits on the store).

    With gloo, a rank that destroys its group while a peer is still working (rank 0 writing
    the last checkpoint) or still tearing its own pairs down can make that peer abort after
    all its work was done ("terminate called without an active exception", SIGABRT), and
    the launcher then reports the run as failed. So: wait until every rank has reached
    exit, destroy, then wait until every rank has destroyed. A peer that died or left never
    arrives; the waits are bounded for that case."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    store, world = None, dist.get_world_size()
    with contextlib.suppress(Exception):
        store = dist.distributed_c10d._get_default_store()
    # A rank leaving on an exception (sys.last_value: set by the interpreter, and by
    # runtime/launch_worker.py) counts itself in but does not wait: its peers may be blocked
    # on it in a collective.
    failing = getattr(sys, "last_value", None) is not None
    shared = store is not None and world > 1
    if shared:
        _store_rendezvous(store, "torch_migrate/exiting", world, 0 if failing else _ARRIVE_WAIT_S)
    dist.destroy_process_group()
    if shared:
        _store_rendezvous(store, "torch_migrate/exited", world, 0 if failing else _EXIT_WAIT_S)


def _store_rendezvous(store: Any, key: str, world: int, limit: float) -> None:
    """Count this rank in at ``key`` and wait (at most ``limit`` s) for the other ranks."""
    with contextlib.suppress(Exception):  # a peer that died or left: nothing left to wait for
        store.add(key, 1)
        deadline = time.monotonic() + limit
        while store.add(key, 0) < world and time.monotonic() < deadline:
            time.sleep(0.01)


class Strategy:
    """How models are replicated or sharded across processes. Owns a `Precision`.

    Subclasses override only what differs: ``setup_module`` (wrap), ``set_gradient_sync``
    (skip gradient synchronisation on accumulation micro-steps), and the checkpoint hooks.
    Collectives here use ``torch.distributed`` when a process group exists and are no-ops
    otherwise, so the single-process strategy inherits the right behaviour.
    """

    name = "base"
    #: the forward of a set-up module is itself a collective (fsdp, deepspeed stage 3)
    collective_forward = False
    #: the strategy counts accumulation boundaries itself (deepspeed)
    handles_accumulation = False
    #: a bare ``loss.backward()`` would be wrong under this strategy
    requires_backward_call = False

    def __init__(self, env: Environment, accelerator: Accelerator, precision: Precision,
                 accumulate: int = 1, timeout: float = 1800.0) -> None:
        self.env = env
        self.accelerator = accelerator
        self.precision = precision
        self.accumulate = accumulate
        self.timeout = timeout
        self.root_device = accelerator.device(env.local_rank)

    # -- process group -------------------------------------------------------------------
    def setup_environment(self) -> None:
        """Select the device and create the default process group (idempotent)."""
        self.accelerator.setup_device(self.root_device)
        if self.env.distributed and not dist.is_initialized():
            dist.init_process_group(
                self.accelerator.backend,
                timeout=datetime.timedelta(seconds=self.timeout),
                **self._rendezvous(),
            )
            # Tear the group down before interpreter exit: gloo's threads destroyed by
            # static destructors instead abort the process ("terminate called ...").
            atexit.register(_destroy_process_group)

    def _rendezvous(self) -> dict:
        """How this process finds its peers (``init_process_group`` arguments)."""
        env = self.env
        if env.launcher == "slurm":  # SLURM sets no MASTER_*: connect to the first node
            return {"init_method": f"tcp://{env.master_addr}:{env.master_port}",
                    "rank": env.global_rank, "world_size": env.world_size}
        if env.restart_count == 0:  # torchrun: env:// joins the agent's store
            return {"init_method": "env://"}
        # After a torchrun restart the agent's store still holds the dead workers' gloo
        # addresses under the same keys (connectFullMesh then fails): use a fresh prefix.
        use_agent = env.agent_store
        store = dist.TCPStore(env.master_addr, env.master_port, env.world_size,
                              is_master=not use_agent and env.global_rank == 0,
                              timeout=datetime.timedelta(seconds=self.timeout),
                              multi_tenant=not use_agent)
        return {"store": dist.PrefixStore(f"torch_migrate/restart_{env.restart_count}", store),
                "rank": env.global_rank, "world_size": env.world_size}

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    # -- models and optimizers -------------------------------------------------------------
    def setup_module_and_optimizers(
        self, module: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer]
    ) -> tuple[torch.nn.Module, list[torch.optim.Optimizer]]:
        """Return (module to call forward on, optimizers to step)."""
        return self.setup_module(module), list(optimizers)

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """Convert precision and move to the device; wrapping strategies override."""
        return self.precision.convert_module(module).to(self.root_device)

    def set_gradient_sync(self, module: torch.nn.Module, enabled: bool) -> None:
        """Enable/disable gradient synchronisation for the next forward+backward."""

    def no_backward_sync(self, module: torch.nn.Module, enabled: bool = True) -> ContextManager:
        """Context skipping gradient synchronisation (a no-op when not enabled)."""
        if not enabled:
            return contextlib.nullcontext()
        return self._no_sync(module)

    @contextlib.contextmanager
    def _no_sync(self, module: torch.nn.Module):
        self.set_gradient_sync(module, False)
        try:
            yield
        finally:
            self.set_gradient_sync(module, True)

    def forward_context(self) -> ContextManager:
        """Context of every wrapped forward (the precision's autocast)."""
        return self.precision.forward_context()

    def convert_input(self, data: Any) -> Any:
        return self.precision.convert_input(data)

    def convert_output(self, data: Any) -> Any:
        return self.precision.convert_output(data)

    def module_state_dict(self, module: torch.nn.Module) -> dict:
        """Full state dict of the original module (what rank 0 writes to a file)."""
        return module.state_dict()

    def load_module_state_dict(self, module: torch.nn.Module, state: dict,
                               strict: bool = True) -> Any:
        return module.load_state_dict(state, strict=strict)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict:
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)

    # -- optimisation ----------------------------------------------------------------------
    def backward(self, tensor: torch.Tensor, module: torch.nn.Module | None, *args: Any,
                 **kwargs: Any) -> None:
        """Backward through the precision; with accumulation the loss is averaged over it."""
        if self.accumulate > 1:
            tensor = tensor / self.accumulate
        self.precision.backward(tensor, *args, **kwargs)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable | None = None,
                       **kwargs: Any) -> Any:
        return self.precision.optimizer_step(optimizer, closure, **kwargs)

    def zero_grad(self, optimizer: torch.optim.Optimizer, set_to_none: bool = True) -> None:
        optimizer.zero_grad(set_to_none=set_to_none)

    def clip_gradients_norm(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                            max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """Clip the global gradient norm (DTensor-aware for sharded parameters)."""
        self.precision.unscale_gradients(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
        # A DTensor norm (FSDP2) is reduced across shards already; hand back a plain tensor.
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def clip_gradients_value(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             clip_val: float) -> None:
        self.precision.unscale_gradients(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_value_(params, clip_val)

    # -- collectives -----------------------------------------------------------------------
    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduced copy of ``tensor`` (the input is left untouched)."""
        if op not in _OPS:
            raise ValueError(f"unknown reduce op {op!r}; valid ops: {', '.join(_OPS)}")
        if not self.distributed:
            return tensor
        out = tensor.detach().clone()
        if op == "mean" and not torch.is_floating_point(out):
            out = out.double()
        dist.all_reduce(out, op=getattr(dist.ReduceOp, _OPS[op]))
        return out / dist.get_world_size() if op == "mean" else out

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Stack of every rank's ``tensor``: shape ``(world_size, *tensor.shape)``."""
        if not self.distributed:
            return tensor.unsqueeze(0)
        out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(out, tensor.contiguous())
        return torch.stack(out)

    def all_gather_object(self, obj: Any) -> list:
        if not self.distributed:
            return [obj]
        data = _pickled(obj, self.root_device)
        sizes = self.all_gather(torch.tensor(data.numel(), device=self.root_device)).tolist()
        padded = torch.zeros(max(sizes), dtype=torch.uint8, device=self.root_device)
        padded[: data.numel()] = data
        return [_unpickled(piece, n) for piece, n in zip(self.all_gather(padded), sizes)]

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not self.distributed:
            return obj
        if isinstance(obj, torch.Tensor):
            out = obj.detach().clone().contiguous()
            dist.broadcast(out, src)
            return out
        mine = dist.get_rank() == src
        data = _pickled(obj, self.root_device) if mine else None
        size = torch.tensor(data.numel() if mine else 0, device=self.root_device)
        dist.broadcast(size, src)
        if mine:
            dist.broadcast(data, src)
            return obj
        data = torch.empty(int(size), dtype=torch.uint8, device=self.root_device)
        dist.broadcast(data, src)
        return _unpickled(data, int(size))

    # -- checkpoints (implemented in runtime.checkpoint) -------------------------------------
    def save_checkpoint(self, path: str, state: Any) -> None:
        from runtime import checkpoint

        checkpoint.save_full(path, checkpoint.to_saveable(state, self), self)

    def load_checkpoint(self, path: str, state: Any, weights_only: bool) -> Any:
        from runtime import checkpoint

        return checkpoint.load_full(path, state, weights_only, self)

    def teardown(self) -> None:
        """Destroy the process group this strategy created (every rank together)."""
        if self.distributed:
            _destroy_process_group()
