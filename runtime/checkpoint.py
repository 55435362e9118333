"""Checkpoints: atomic full-file writes, FSDP sharded saves (torch.distributed.checkpoint),
prefix stripping, safe (weights-only) loading, consolidation and resume."""

from __future__ import annotations

import os
import pickle
import shutil
from typing import Any

import torch
import torch.distributed as dist

from runtime.data import apply_to_tensors
from runtime.wrappers import WrappedOptimizer, unwrap_module

PREFIXES = ("module.", "_orig_mod.")
# Wrapped optimizers count too: DeepSpeed's ZeRO optimizers are not torch Optimizers.
OPTIMIZERS = (torch.optim.Optimizer, WrappedOptimizer)


def strip_prefixes(state_dict: Any) -> Any:
    """Drop ``module.`` (DDP) / ``_orig_mod.`` (torch.compile) prefixes shared by every key."""
    if not isinstance(state_dict, dict) or not state_dict:
        return state_dict
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if all(isinstance(k, str) and k.startswith(prefix) for k in state_dict):
                state_dict = type(state_dict)((k[len(prefix):], v) for k, v in state_dict.items())
                changed = True
    return state_dict


def _original_optimizer(opt: Any) -> Any:
    return opt.optimizer if isinstance(opt, WrappedOptimizer) else opt


def holds_modules(state: Any) -> bool:
    """Whether ``state`` (or its top-level values) holds modules or optimizers."""
    values = state.values() if isinstance(state, dict) else [state]
    return any(isinstance(v, (torch.nn.Module, *OPTIMIZERS)) for v in values)


def _full_tensor(t: torch.Tensor) -> torch.Tensor:
    # DTensor shards (FSDP2) gathered into one plain tensor; collective on every rank.
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _saveable(value: Any, strategy: Any) -> Any:
    if isinstance(value, torch.nn.Module):
        return strategy.module_state_dict(unwrap_module(value))
    if isinstance(value, OPTIMIZERS):
        return strategy.optimizer_state_dict(_original_optimizer(value))
    if hasattr(value, "state_dict") and callable(value.state_dict):  # schedulers, scalers
        return value.state_dict()
    return apply_to_tensors(value, _full_tensor)


def to_saveable(state: Any, strategy: Any) -> Any:
    """Replace models/optimizers/schedulers in ``state`` by their full, unwrapped state dicts."""
    if isinstance(state, dict) and not holds_modules(state):
        return _saveable(state, strategy)
    if isinstance(state, dict):
        return {key: _saveable(value, strategy) for key, value in state.items()}
    return _saveable(state, strategy)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash at any point leaves either the previous file or the complete new one.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def _is_rank_zero() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_full(path: str | os.PathLike, obj: Any, strategy: Any = None) -> None:
    """Rank 0 writes ``obj`` atomically; every rank waits until the file is complete."""
    if _is_rank_zero():
        atomic_save(obj, path)
    _barrier()


def safe_load(path: str | os.PathLike, weights_only: bool = True) -> Any:
    """``torch.load`` on CPU; refuses pickled code unless ``weights_only=False``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        raise pickle.UnpicklingError(
            f"{path} holds pickled Python objects, which can run code when loaded; load it with "
            f"rt.load({os.fspath(path)!r}, weights_only=False) only if you trust the file. "
            f"({str(exc).splitlines()[0]})"
        ) from None


def restore(state: Any, loaded: Any, strategy: Any, strict: bool = True) -> dict:
    """Load ``loaded`` into the objects of ``state`` in place; return the unclaimed entries."""
    if isinstance(state, torch.nn.Module):
        strategy.load_module_state_dict(unwrap_module(state), strip_prefixes(loaded), strict)
        return {}
    for key, target in state.items():
        if key not in loaded:
            if strict:
                raise KeyError(f"checkpoint has no entry {key!r}; it holds: {', '.join(loaded)}")
            continue
        if isinstance(target, torch.nn.Module):
            strategy.load_module_state_dict(unwrap_module(target), strip_prefixes(loaded[key]),
                                            strict)
        elif isinstance(target, OPTIMIZERS):
            strategy.load_optimizer_state_dict(_original_optimizer(target), loaded[key])
        elif hasattr(target, "load_state_dict") and callable(target.load_state_dict):
            target.load_state_dict(loaded[key])
        else:
            state[key] = loaded[key]
    return {k: v for k, v in loaded.items() if k not in state}


def load_full(path: str | os.PathLike, state: Any, weights_only: bool, strategy: Any,
              strict: bool = True) -> Any:
    """Read a full checkpoint file; restore into ``state`` if given, else return it."""
    loaded = safe_load(path, weights_only)
    return loaded if state is None else restore(state, loaded, strategy, strict)


# -- sharded checkpoints (FSDP) ----------------------------------------------------------------
def is_sharded(path: str | os.PathLike) -> bool:
    """A checkpoint directory (torch.distributed.checkpoint or DeepSpeed), or its backup
    after an interrupted swap."""
    path = os.fspath(path)
    return any(os.path.isfile(os.path.join(p, marker)) for p in (path, path + ".old")
               for marker in (".metadata", "latest"))


def _sharded_view(state: dict, strategy: Any) -> dict:
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    view: dict = {}
    for key, value in state.items():
        if isinstance(value, torch.nn.Module):
            view[key] = get_model_state_dict(unwrap_module(value))
        elif isinstance(value, OPTIMIZERS):
            opt = _original_optimizer(value)
            view[key] = get_optimizer_state_dict(strategy.optimizer_modules[id(opt)], opt)
        elif hasattr(value, "state_dict") and callable(value.state_dict):
            view[key] = value.state_dict()
        else:
            view[key] = value
    return view


def _write_directory(path: str, write: Any) -> None:
    """Every rank runs ``write(tmp_dir)``; rank 0 then swaps the directory in atomically."""
    tmp, old = path + ".tmp", path + ".old"
    if _is_rank_zero() and os.path.exists(tmp):
        shutil.rmtree(tmp)
    _barrier()
    write(tmp)
    _barrier()
    if _is_rank_zero():
        if os.path.exists(path):
            os.replace(path, old)  # a crash now leaves `old`, which load falls back to
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
        shutil.rmtree(old, ignore_errors=True)
    _barrier()


def _existing_directory(path: str) -> str:
    return path if os.path.isdir(path) else path + ".old"


def _require_numpy() -> None:
    """torch.distributed.checkpoint's object collectives unpickle through numpy, which the
    CPU torch wheel does not install: fail on every rank alike, before any collective."""
    try:
        import numpy  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "sharded FSDP checkpoints (torch.distributed.checkpoint) need numpy: "
            "pip install numpy, or write one full file instead with "
            "Runtime(strategy='fsdp', save_full=True)") from exc


def save_sharded(path: str | os.PathLike, state: dict, strategy: Any) -> None:
    """Every rank writes its shards into ``path`` (a directory), atomically swapped in."""
    _require_numpy()
    import torch.distributed.checkpoint as dcp

    view = _sharded_view(state, strategy)
    _write_directory(os.fspath(path), lambda tmp: dcp.save(view, checkpoint_id=tmp))


def load_sharded(path: str | os.PathLike, state: dict, strategy: Any) -> dict:
    """Load a sharded checkpoint into ``state`` in place (each rank reads its shards)."""
    _require_numpy()
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    view = _sharded_view(state, strategy)
    dcp.load(view, checkpoint_id=_existing_directory(os.fspath(path)))
    for key, value in state.items():
        if isinstance(value, torch.nn.Module):
            set_model_state_dict(unwrap_module(value), view[key])
        elif isinstance(value, OPTIMIZERS):
            opt = _original_optimizer(value)
            set_optimizer_state_dict(strategy.optimizer_modules[id(opt)], opt, view[key])
        elif hasattr(value, "load_state_dict") and callable(value.load_state_dict):
            value.load_state_dict(view[key])
        else:
            state[key] = view[key]
    return {}


# -- DeepSpeed checkpoints (ZeRO partitions the optimizer state) -----------------------------
def _split(state: dict) -> tuple[dict, dict]:
    engine_owned = {k: v for k, v in state.items()
                    if isinstance(v, (torch.nn.Module, *OPTIMIZERS))}
    return engine_owned, {k: v for k, v in state.items() if k not in engine_owned}


def save_deepspeed(path: str | os.PathLike, state: dict, strategy: Any) -> None:
    """The engine's own checkpoint (model, partitioned optimizer, client values) in a
    directory, atomically swapped in."""
    _, client = _split(state)
    client_state = to_saveable(client, strategy) if client else {}
    _write_directory(os.fspath(path), lambda tmp: strategy.engine.save_checkpoint(
        tmp, tag="checkpoint", client_state={"values": client_state}))


def load_deepspeed(path: str | os.PathLike, state: dict, strategy: Any) -> dict:
    """Restore a `save_deepspeed` checkpoint into the engine and ``state``."""
    engine_owned, client = _split(state)
    _, client_state = strategy.engine.load_checkpoint(
        _existing_directory(os.fspath(path)), tag="checkpoint",
        load_optimizer_states=any(isinstance(v, OPTIMIZERS)
                                  for v in engine_owned.values()))
    values = (client_state or {}).get("values", {})
    rest = restore(client, values, strategy)
    state.update(client)  # plain values were restored into the `client` copy
    return rest


def consolidate(checkpoint_dir: str | os.PathLike, output_file: str | os.PathLike) -> None:
    """Turn a sharded checkpoint directory into one ``torch.load``-able file (one process)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    output_file = os.fspath(output_file)
    tmp = output_file + f".{os.getpid()}.tmp"
    dcp_to_torch_save(os.fspath(checkpoint_dir), tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, output_file)


def checkpoint_exists(path: str | os.PathLike) -> bool:
    """A complete checkpoint (file or sharded directory) is at ``path``."""
    return os.path.isfile(path) or is_sharded(path)
