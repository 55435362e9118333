"""torchrun worker: a manual-optimization TrainModule over ``itertools.count(1)`` that stops
itself with ``trainer.should_stop`` (the module form's shape for a plain training loop)."""

from __future__ import annotations

import itertools
import json
import os
import sys
import warnings

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Sampler, TensorDataset

from runtime import TrainModule, Trainer


class EveryOther(Sampler[int]):
    """A custom sampler: the runtime cannot shard its loader and must say so."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(0, self.n, 2))

    def __len__(self) -> int:
        return (self.n + 1) // 2


class Loop(TrainModule):
    """One iteration = one training_step; the data differ by rank, so the replicas stay
    identical only if ``manual_backward`` averages the gradients across ranks."""

    def __init__(self, stop_at: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = torch.nn.Linear(3, 1)
        self.stop_at = stop_at
        self.seen: list[int] = []
        self.epoch_ends = 0

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        g = torch.Generator().manual_seed(1000 * self.trainer.global_rank + batch)
        x = torch.randn(8, 3, generator=g)
        loss = F.mse_loss(self.net(x), x.sum(1, keepdim=True))
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.log("loss", loss, on_epoch=True)  # an epoch aggregate: a collective at epoch end
        self.seen.append(batch)
        if batch >= self.stop_at:  # the same condition, hence the same batch, on every rank
            self.trainer.should_stop = True
        return loss

    def on_train_epoch_end(self) -> None:
        self.epoch_ends += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    stop_at = int(sys.argv[1])
    # every warning, not once per location: both setup_dataloaders calls below warn from the
    # same line, and the test counts them
    warnings.simplefilter("always")
    torch.manual_seed(0)  # identical initial weights on every rank
    module = Loop(stop_at)
    before = torch.cat([p.detach().flatten() for p in module.parameters()])
    # find_unused_parameters=True: what the module form passes under manual optimization
    trainer = Trainer(max_epochs=1, enable_checkpointing=False, logger=False,
                      enable_progress_bar=False, default_root_dir=os.getcwd(),
                      find_unused_parameters=True)
    trainer.fit(module, itertools.count(1))
    # A DataLoader that cannot be sharded still warns (once, rank 0); count(1) above did not.
    trainer.runtime.setup_dataloaders(DataLoader(TensorDataset(torch.arange(6)),
                                                 sampler=EveryOther(6)))
    params = torch.cat([p.detach().flatten() for p in module.parameters()])
    print("RESULT " + json.dumps({
        "rank": trainer.global_rank, "world": trainer.world_size, "seen": module.seen,
        "step": trainer.global_step, "epoch": trainer.current_epoch,
        "epoch_ends": module.epoch_ends, "loss_epoch": trainer.callback_metrics.get("loss"),
        "changed": not torch.equal(before, params), "params": params.tolist(),
    }), flush=True)


if __name__ == "__main__":
    main()
