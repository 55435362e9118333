"""Fake ``torchvision.transforms``: the common ones on PIL images and (C, H, W) tensors."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def _hw(size) -> tuple[int, int] | None:
    if isinstance(size, int):
        return None
    return (int(size[0]), int(size[1])) if len(size) > 1 else (int(size[0]), int(size[0]))


class Compose:
    def __init__(self, transforms) -> None:
        self.transforms = list(transforms)

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class Lambda:
    def __init__(self, fn) -> None:
        self.fn = fn

    def __call__(self, x):
        return self.fn(x)


class ToTensor:
    """PIL image or H x W (x C) uint8 array -> float tensor C x H x W in [0, 1]."""

    def __call__(self, pic):
        if isinstance(pic, torch.Tensor):
            return pic
        arr = np.array(pic, copy=True)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        return t.float().div(255) if t.dtype == torch.uint8 else t.float()


class PILToTensor:
    def __call__(self, pic):
        arr = np.array(pic, copy=True)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class ToPILImage:
    def __call__(self, t):
        arr = t.mul(255).clamp(0, 255).byte().permute(1, 2, 0).numpy() if t.is_floating_point() \
            else t.permute(1, 2, 0).numpy()
        return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)


class Normalize:
    def __init__(self, mean, std, inplace=False) -> None:
        self.mean, self.std = mean, std

    def __call__(self, t):
        mean = torch.as_tensor(self.mean, dtype=t.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=t.dtype).view(-1, 1, 1)
        return (t - mean) / std


class Resize:
    """An int resizes the shorter edge (aspect kept); a pair is (height, width)."""

    def __init__(self, size, interpolation=None, antialias=True) -> None:
        self.size = size

    def _target(self, h: int, w: int) -> tuple[int, int]:
        pair = _hw(self.size)
        if pair:
            return pair
        s = int(self.size)
        return (s, max(1, int(s * w / h))) if h <= w else (max(1, int(s * h / w)), s)

    def __call__(self, img):
        if isinstance(img, torch.Tensor):
            h, w = self._target(*img.shape[-2:])
            return F.interpolate(img[None].float(), size=(h, w), mode="bilinear",
                                 align_corners=False)[0]
        h, w = self._target(img.height, img.width)
        return img.resize((w, h), Image.BILINEAR)


class CenterCrop:
    def __init__(self, size) -> None:
        self.size = _hw(size) or (int(size), int(size))

    def __call__(self, img):
        th, tw = self.size
        if isinstance(img, torch.Tensor):
            h, w = img.shape[-2:]
            if h < th or w < tw:
                img = F.pad(img, (0, max(0, tw - w), 0, max(0, th - h)))
                h, w = img.shape[-2:]
            top, left = (h - th) // 2, (w - tw) // 2
            return img[..., top : top + th, left : left + tw]
        left, top = (img.width - tw) // 2, (img.height - th) // 2
        return img.crop((left, top, left + tw, top + th))


class RandomCrop(CenterCrop):
    def __init__(self, size, padding=None, **kwargs) -> None:
        super().__init__(size)


class RandomResizedCrop(Resize):
    def __init__(self, size, **kwargs) -> None:
        super().__init__(_hw(size) or (int(size), int(size)))


class RandomHorizontalFlip:
    """Flips with probability ``p``, drawing from torch's global RNG as the real one does."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, img):
        if torch.rand(1) < self.p:
            if isinstance(img, torch.Tensor):
                return img.flip(-1)
            return img.transpose(Image.FLIP_LEFT_RIGHT)
        return img


class Grayscale:
    def __init__(self, num_output_channels: int = 1) -> None:
        self.n = num_output_channels

    def __call__(self, img):
        img = img.convert("L")
        return img if self.n == 1 else img.convert("RGB")


class Pad:
    def __init__(self, padding, fill=0) -> None:
        self.padding = padding

    def __call__(self, img):
        return F.pad(img, (self.padding,) * 4) if isinstance(img, torch.Tensor) else img
