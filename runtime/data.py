"""Data plumbing: batch device moves, distributed samplers (training and padding-free eval)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)


def apply_to_tensors(data: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Apply ``fn`` to every tensor in nested tuples, lists, dicts, namedtuples, dataclasses."""
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, dict):
        return type(data)((k, apply_to_tensors(v, fn)) for k, v in data.items())
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # namedtuple
        return type(data)(*(apply_to_tensors(v, fn) for v in data))
    if isinstance(data, (list, tuple)):
        return type(data)(apply_to_tensors(v, fn) for v in data)
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        changes = {f.name: apply_to_tensors(getattr(data, f.name), fn)
                   for f in dataclasses.fields(data) if f.init}
        return dataclasses.replace(data, **changes)
    return data


def move_to_device(data: Any, device: torch.device) -> Any:
    """Move every tensor in ``data`` to ``device`` (non-blocking from pinned memory)."""
    return apply_to_tensors(data, lambda t: t.to(device, non_blocking=True))


class UnpaddedDistributedSampler(Sampler[int]):
    """Evaluation sampler: rank r gets samples r, r+W, r+2W, ... of the dataset, no padding.

    Every sample is seen exactly once across ranks, so per-rank sums followed by
    ``rt.all_reduce`` give the exact metric. Ranks may get one batch more than others: only
    use it where the forward is not a collective (single, ddp, deepspeed stage < 3).
    """

    def __init__(self, dataset: Any, num_replicas: int, rank: int, shuffle: bool = False,
                 seed: int = 0) -> None:
        self.dataset_len = len(dataset)
        self.num_replicas, self.rank, self.shuffle, self.seed = num_replicas, rank, shuffle, seed
        self.epoch = 0

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.dataset_len, generator=g).tolist()
        else:
            indices = list(range(self.dataset_len))
        return iter(indices[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return len(range(self.rank, self.dataset_len, self.num_replicas))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def loader_shuffles(loader: DataLoader) -> bool:
    """Whether ``loader`` was built with ``shuffle=True`` (a RandomSampler)."""
    return isinstance(loader.sampler, RandomSampler)


def shardable(loader: DataLoader) -> bool:
    """True when the loader uses a stock sampler we can replace by a distributed one."""
    return (
        not isinstance(loader.dataset, torch.utils.data.IterableDataset)
        and isinstance(loader.sampler, (RandomSampler, SequentialSampler))
        and getattr(loader.batch_sampler, "sampler", None) is loader.sampler
        and hasattr(loader.dataset, "__len__")
    )


def distributed_loader(loader: DataLoader, num_replicas: int, rank: int, seed: int,
                       evaluation: bool, pad_evaluation: bool) -> DataLoader:
    """A copy of ``loader`` drawing from a distributed sampler; keeps every other setting.

    ``seed`` must be identical on all ranks (shuffled shards must partition the dataset).
    Evaluation loaders are unpadded unless ``pad_evaluation`` (collective forward: every rank
    must run the same number of batches; `Runtime.gather_for_metrics` drops the padding).
    """
    shuffle = loader_shuffles(loader)
    if evaluation and not pad_evaluation:
        sampler: Sampler = UnpaddedDistributedSampler(loader.dataset, num_replicas, rank,
                                                      shuffle=shuffle, seed=seed)
    else:
        sampler = DistributedSampler(loader.dataset, num_replicas=num_replicas, rank=rank,
                                     shuffle=shuffle, seed=seed,
                                     drop_last=loader.drop_last and not evaluation)
    kwargs = {
        "batch_size": loader.batch_size, "sampler": sampler, "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn, "pin_memory": loader.pin_memory, "drop_last": loader.drop_last,
        "timeout": loader.timeout, "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context, "generator": loader.generator,
        "persistent_workers": loader.persistent_workers, "pin_memory_device": loader.pin_memory_device,
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return type(loader)(loader.dataset, **kwargs) if type(loader) is DataLoader else DataLoader(
        loader.dataset, **kwargs)
