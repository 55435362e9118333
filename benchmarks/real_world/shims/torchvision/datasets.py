"""Fake ``torchvision.datasets``: a few dozen deterministic random samples per dataset, right shapes and dtypes."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from rw_fakes import rng, size


class VisionDataset(torch.utils.data.Dataset):
    def __init__(self, root=None, transform=None, target_transform=None) -> None:
        self.root, self.transform, self.target_transform = root, transform, target_transform

    def _finish(self, img, target):
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target


class MNIST(VisionDataset):
    """28x28 grey images (``data`` uint8 N x 28 x 28, ``targets`` int64), PIL 'L' per item."""

    classes = [f"{i} - digit" for i in range(10)]
    train_size, test_size = 64, 32

    def __init__(self, root=None, train=True, transform=None, target_transform=None,
                 download=False) -> None:
        super().__init__(root, transform, target_transform)
        self.train = train
        n = size(self.train_size, True) if train else size(self.test_size, False)
        r = rng(type(self).__name__, train)
        self.data = torch.from_numpy(r.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
        # every class present at least n // 10 times (scripts pair samples by class)
        self.targets = torch.from_numpy(r.permutation(np.arange(n) % 10).astype(np.int64))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index):
        img = Image.fromarray(self.data[index].numpy(), mode="L")
        return self._finish(img, int(self.targets[index]))


class FashionMNIST(MNIST):
    pass


class KMNIST(MNIST):
    pass


class CIFAR10(VisionDataset):
    """32x32 RGB images (``data`` uint8 N x 32 x 32 x 3, ``targets`` a list), PIL 'RGB' per item."""

    train_size, test_size, num_classes = 64, 32, 10

    def __init__(self, root=None, train=True, transform=None, target_transform=None,
                 download=False) -> None:
        super().__init__(root, transform, target_transform)
        n = size(self.train_size, True) if train else size(self.test_size, False)
        r = rng(type(self).__name__, train)
        self.data = r.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        self.targets = [int(t) for t in r.permutation(np.arange(n) % self.num_classes)]

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index):
        return self._finish(Image.fromarray(self.data[index], mode="RGB"), self.targets[index])


class CIFAR100(CIFAR10):
    num_classes = 100


class _RandomImages(VisionDataset):
    """``n`` RGB images of ``shape`` (H, W), generated per index, label ``label(i)``."""

    def __init__(self, name, n, shape, transform=None, target_transform=None, classes=1) -> None:
        super().__init__(None, transform, target_transform)
        self.name, self.n, self.shape, self.num_classes = name, n, shape, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        if index >= self.n:
            raise IndexError(index)
        r = rng(self.name, index)
        pixels = r.integers(0, 256, size=(*self.shape, 3), dtype=np.uint8)
        return self._finish(Image.fromarray(pixels, "RGB"), int(r.integers(self.num_classes)))


class FakeData(_RandomImages):
    def __init__(self, size=1000, image_size=(3, 224, 224), num_classes=10, transform=None,
                 target_transform=None, random_offset=0) -> None:
        super().__init__("FakeData", size, tuple(image_size[1:]), transform, target_transform,
                         num_classes)


class ImageFolder(_RandomImages):
    """Ignores ``root``: ``RW_FAKE_TRAIN_SIZE`` (default 8) 48x48 images of class 0."""

    def __init__(self, root=None, transform=None, target_transform=None, **kwargs) -> None:
        super().__init__("ImageFolder", size(8), (48, 48), transform, target_transform)
        self.root, self.classes, self.class_to_idx = root, ["fake"], {"fake": 0}


class CelebA(_RandomImages):
    """``RW_FAKE_TRAIN_SIZE`` (default 32) 80x64 faces-shaped RGB images, attribute 0."""

    def __init__(self, root=None, split="train", target_type="attr", transform=None,
                 target_transform=None, download=False) -> None:
        super().__init__("CelebA", size(32), (80, 64), transform, target_transform)
        self.root = root


class LSUN(ImageFolder):
    pass
