"""Fake ``torchvision.models``: tiny networks with the real ones' layer names and indices.

Requested pretrained weights are a fixed seeded initialisation (drawn from a private
generator, so the script's own RNG stream is untouched, as when real weights are loaded).
"""

from __future__ import annotations

import enum

import torch
from torch import nn


class VGG16_Weights(enum.Enum):  # noqa: N801 - torchvision's spelling
    IMAGENET1K_V1 = "IMAGENET1K_V1"
    DEFAULT = "IMAGENET1K_V1"


class ResNet18_Weights(enum.Enum):  # noqa: N801
    IMAGENET1K_V1 = "IMAGENET1K_V1"
    DEFAULT = "IMAGENET1K_V1"


def _pretrained(module: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return module


class VGG(nn.Module):
    def __init__(self, features: nn.Sequential, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(features[-3].out_channels, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16(weights=None, progress: bool = True, **kwargs) -> VGG:
    """VGG-16's 31 feature layers (conv/ReLU/max-pool at the real indices), 8-32 channels wide."""
    layers, c_in = [], 3
    for v in [8, 8, "M", 16, 16, "M", 32, 32, 32, "M", 32, 32, 32, "M", 32, 32, 32, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = v
    model = VGG(nn.Sequential(*layers), **kwargs)
    return _pretrained(model) if weights is not None else model


class ResNet(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(nn.Conv2d(64, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                    nn.ReLU(inplace=True))
        self.layer2, self.layer3, self.layer4 = nn.Identity(), nn.Identity(), nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(weights=None, progress: bool = True, **kwargs) -> ResNet:
    model = ResNet(**kwargs)
    return _pretrained(model) if weights is not None else model


def __getattr__(name: str):
    """Other architectures (imported by torchmetrics when it finds torchvision): tiny ResNets."""
    if name.endswith("_Weights"):
        return ResNet18_Weights
    if name[:1].islower() and not name.startswith("_"):
        return resnet18
    raise AttributeError(name)
