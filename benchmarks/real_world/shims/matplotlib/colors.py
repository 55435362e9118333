"""Fake ``matplotlib.colors``."""


class Colormap:
    pass
