"""TrainModules and data shared by the trainer tests (in-process) and torchrun workers."""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from runtime import TrainModule


def make_data(n: int = 48, seed: int = 0) -> TensorDataset:
    """A fixed regression set: y = sum(x) + noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def loaders(batch_size: int = 4, n_train: int = 48, n_val: int = 22, shuffle: bool = True):
    """(train loader, validation loader); the validation set size is odd on purpose."""
    return (DataLoader(make_data(n_train, 0), batch_size=batch_size, shuffle=shuffle),
            DataLoader(make_data(n_val, 1), batch_size=5))


class Regression(TrainModule):
    """A small MLP with dropout (so resume must restore the RNG) and an optional scheduler."""

    def __init__(self, lr: float = 0.05, interval: str | None = None, dropout: float = 0.1,
                 scheduler: str = "step", monitor: str = "val_loss") -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
                                       torch.nn.Dropout(dropout), torch.nn.Linear(8, 1))
        self.lr, self.interval, self.scheduler, self.monitor = lr, interval, scheduler, monitor
        self.lrs: list[float] = []  # learning rate used by each optimizer step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        self.log("train_loss", loss, prog_bar=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y), prog_bar=True)
        self.log("val_sq_sum", F.mse_loss(self(x), y, reduction="sum"), reduce_fx="sum")

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        if self.interval is None:
            return opt
        if self.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": self.monitor}}
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": self.interval}}


class Scripted(Regression):
    """Logs ``score`` = ``scores[current_epoch]`` at validation: drives checkpoint/stop tests."""

    def __init__(self, scores: list[float], **kwargs) -> None:
        super().__init__(dropout=0.0, **kwargs)
        self.scores = scores

    def on_validation_epoch_end(self) -> None:
        self.log("score", self.scores[self.current_epoch])


class TinyGAN(TrainModule):
    """Generator + discriminator, two optimizers, three backward calls per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.gen = torch.nn.Linear(2, 4)
        self.disc = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        real = batch[0]
        opt_g, opt_d = self.optimizers()
        z = torch.randn(real.shape[0], 2)
        fake = self.gen(z)
        ones, zeros = torch.ones(real.shape[0], 1), torch.zeros(real.shape[0], 1)
        d_loss_real = F.binary_cross_entropy_with_logits(self.disc(real), ones)
        d_loss_fake = F.binary_cross_entropy_with_logits(self.disc(fake.detach()), zeros)
        opt_d.zero_grad()
        self.manual_backward(d_loss_real)
        self.manual_backward(d_loss_fake)
        opt_d.step()
        g_loss = F.binary_cross_entropy_with_logits(self.disc(fake), ones)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.log("g_loss", g_loss, prog_bar=True)
        self.log("d_loss", d_loss_real + d_loss_fake)

    def configure_optimizers(self):
        return [torch.optim.Adam(self.gen.parameters(), lr=0.01),
                torch.optim.Adam(self.disc.parameters(), lr=0.01)]
