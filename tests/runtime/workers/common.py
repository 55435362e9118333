"""Model, data and reference training shared by the runtime workers and their tests."""

from __future__ import annotations

import torch

STEPS, MICRO, LR = 3, 4, 0.05  # optimizer steps, samples per rank per micro-step, AdamW lr


class Block(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.lin(x))


class Net(torch.nn.Module):
    """A stem, a ModuleList of repeated blocks (FSDP shards each), and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Linear(8, 16)
        self.blocks = torch.nn.ModuleList([Block(16), Block(16)])
        self.head = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def make_model() -> Net:
    torch.manual_seed(0)
    return Net()


def dataset(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return torch.randn(n, 8, generator=g), torch.randn(n, 1, generator=g)


def rank_batches(rank: int, world: int, accumulate: int) -> list:
    """Micro-batches rank ``rank`` trains on; together they form each global batch."""
    per_step = world * accumulate * MICRO
    x, y = dataset(STEPS * per_step)
    out = []
    for step in range(STEPS):
        for micro in range(accumulate):
            start = step * per_step + (micro * world + rank) * MICRO
            out.append((x[start:start + MICRO], y[start:start + MICRO]))
    return out


def reference_params(world: int, accumulate: int) -> dict[str, torch.Tensor]:
    """One process, one AdamW step per concatenated global batch (the ground truth)."""
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    per_step = world * accumulate * MICRO
    x, y = dataset(STEPS * per_step)
    for step in range(STEPS):
        xb, yb = x[step * per_step:(step + 1) * per_step], y[step * per_step:(step + 1) * per_step]
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(xb), yb).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
