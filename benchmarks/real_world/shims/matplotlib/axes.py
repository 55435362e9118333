"""Fake ``matplotlib.axes``."""


class Axes:
    pass
