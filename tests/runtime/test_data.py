"""Data: single-process loaders unchanged, device moves through nested batches, samplers."""

from __future__ import annotations

import dataclasses
from collections import namedtuple

import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from runtime import Runtime
from runtime.data import UnpaddedDistributedSampler, distributed_loader, move_to_device

Pair = namedtuple("Pair", ["x", "y"])


@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    meta: str


def test_single_process_loader_yields_the_same_batches_and_rng_use():
    ds = TensorDataset(torch.arange(20))
    torch.manual_seed(5)
    original = [b[0].tolist() for _ in range(2) for b in DataLoader(ds, batch_size=3, shuffle=True)]
    after_original = torch.rand(1)
    torch.manual_seed(5)
    rt = Runtime()
    loader = rt.setup_dataloaders(DataLoader(ds, batch_size=3, shuffle=True))
    assert isinstance(loader.sampler, RandomSampler)  # its own sampler, not a distributed one
    wrapped = [b[0].tolist() for _ in range(2) for b in loader]
    assert wrapped == original and len(loader) == 7
    assert torch.equal(torch.rand(1), after_original)


def test_setup_dataloaders_returns_one_object_or_a_tuple():
    rt = Runtime()
    a, b = DataLoader(TensorDataset(torch.arange(2))), DataLoader(TensorDataset(torch.arange(3)))
    assert len(rt.setup_dataloaders(a)) == 2
    assert [len(x) for x in rt.setup_dataloaders(a, b)] == [2, 3]


def test_move_to_device_handles_nested_containers():
    batch = {"pair": Pair(torch.ones(1), [torch.zeros(2), 3]), "dc": Batch(torch.ones(2), "m")}
    moved = move_to_device(batch, torch.device("meta"))
    assert moved["pair"].x.device.type == "meta" and isinstance(moved["pair"], Pair)
    assert moved["pair"].y[0].device.type == "meta" and moved["pair"].y[1] == 3
    assert isinstance(moved["dc"], Batch) and moved["dc"].x.device.type == "meta"
    assert moved["dc"].meta == "m"


def test_distributed_loader_keeps_shuffle_drop_last_and_seed():
    ds = TensorDataset(torch.arange(11))
    loader = DataLoader(ds, batch_size=2, shuffle=True, drop_last=True, num_workers=0)
    shards = [distributed_loader(loader, 2, r, seed=7, evaluation=False, pad_evaluation=False)
              for r in (0, 1)]
    for shard in shards:
        assert shard.sampler.shuffle and shard.sampler.seed == 7 and shard.drop_last
        assert len(shard) == 2
    ids = [[int(i) for (b,) in s for i in b] for s in shards]
    assert not set(ids[0]) & set(ids[1])


def test_unpadded_eval_sampler_counts_every_sample_once():
    shards = [list(UnpaddedDistributedSampler(range(11), 3, r)) for r in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(11))
    assert [len(s) for s in shards] == [4, 4, 3]
