"""Fake ``torchvision`` for the scoreboard: tiny deterministic datasets, PIL/tensor transforms,
``utils.save_image``, small stand-ins for ``models.resnet18`` / ``models.vgg16``. Nothing is
downloaded; ``download=True`` does nothing."""

from PIL import Image

from . import datasets, models, transforms, utils  # noqa: F401

# Pillow 10 removed Image.ANTIALIAS, which fast_neural_style's utils.py still uses; torchvision
# installs alongside such scripts, so give it back here (same filter as Image.LANCZOS).
if not hasattr(Image, "ANTIALIAS"):
    Image.ANTIALIAS = Image.LANCZOS

__version__ = "0.0-fake"
