"""Fake ``matplotlib``: ``use``, ``axes.Axes``, ``colors.Colormap`` (what torchmetrics imports when
it finds matplotlib) and a ``pyplot`` whose ``savefig`` writes a small placeholder file."""

from . import axes, colors  # noqa: F401

__version__ = "0.0-fake"


def use(*args, **kwargs):
    return None
