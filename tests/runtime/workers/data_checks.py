"""Worker part: sharding, automatic set_epoch and padding-free evaluation on 2 ranks."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from runtime import Runtime


def _ids(loader) -> list[int]:
    return [int(i) for (batch,) in loader for i in batch]


def check_data(strategy: str) -> dict:
    rt = Runtime(strategy=strategy)
    ds = TensorDataset(torch.arange(10))
    train = rt.setup_dataloaders(DataLoader(ds, batch_size=2, shuffle=True,
                                            generator=torch.Generator().manual_seed(7)))
    epochs = [rt.all_gather(_ids(train)) for _ in range(2)]  # lists from both ranks
    dropping = rt.setup_dataloaders(DataLoader(TensorDataset(torch.arange(11)), batch_size=2,
                                               drop_last=True))
    results = {
        "epoch0_disjoint_cover": sorted(epochs[0][0] + epochs[0][1]) == list(range(10)),
        "epoch1_disjoint_cover": sorted(epochs[1][0] + epochs[1][1]) == list(range(10)),
        "reshuffled": epochs[0] != epochs[1],
        "drop_last_len": len(dropping),
    }
    # Evaluation: 11 samples on 2 ranks, every forward through the set-up model.
    model = rt.setup(torch.nn.Linear(1, 1))
    evaluation = rt.setup_dataloaders(DataLoader(TensorDataset(torch.arange(11)), batch_size=4),
                                      evaluation=True)
    total, count, gathered, batches = 0, 0, [], 0
    with torch.no_grad():
        for (ids,) in evaluation:
            model(ids.float().unsqueeze(1))
            batches += 1
            total += int(ids.sum())
            count += len(ids)
            gathered.append(rt.gather_for_metrics(ids))
    results.update(
        eval_sum=rt.all_reduce(total), eval_count=rt.all_reduce(count),
        eval_gathered=sorted(int(i) for g in gathered for i in g),
        eval_batches=rt.all_gather(batches),
    )
    return results
