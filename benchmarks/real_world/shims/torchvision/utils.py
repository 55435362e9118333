"""Fake ``torchvision.utils``: ``make_grid`` and ``save_image`` (a real PNG of the grid)."""

from __future__ import annotations

import math

import torch
from PIL import Image


def make_grid(tensor, nrow: int = 8, padding: int = 2, normalize: bool = False,
              value_range=None, scale_each: bool = False, pad_value: float = 0.0, **kwargs):
    if isinstance(tensor, (list, tuple)):
        tensor = torch.stack(list(tensor))
    tensor = tensor.detach()
    if tensor.dim() == 2:
        tensor = tensor[None]
    if tensor.dim() == 3:
        tensor = tensor[None]
    if tensor.size(1) == 1:
        tensor = tensor.repeat(1, 3, 1, 1)
    if normalize:
        lo, hi = value_range or (float(tensor.min()), float(tensor.max()))
        tensor = (tensor.clamp(lo, hi) - lo) / max(hi - lo, 1e-5)
    n, c, h, w = tensor.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    grid = torch.full((c, rows * (h + padding) + padding, cols * (w + padding) + padding),
                      pad_value, dtype=tensor.dtype)
    for i in range(n):
        y, x = divmod(i, cols)
        top, left = y * (h + padding) + padding, x * (w + padding) + padding
        grid[:, top : top + h, left : left + w] = tensor[i]
    return grid


def save_image(tensor, fp, format=None, **kwargs) -> None:
    grid = make_grid(tensor, **kwargs)
    arr = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()
    Image.fromarray(arr).save(fp, format=format or "PNG")
