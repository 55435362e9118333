"""Fake ``matplotlib.pyplot``: drawing calls do nothing; ``savefig`` writes the file it names."""

import contextlib
from types import SimpleNamespace


class Figure:
    def savefig(self, fname, *args, **kwargs):
        savefig(fname)


class _Style(contextlib.ContextDecorator):
    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


style = SimpleNamespace(context=_Style, use=lambda *a, **k: None)


def savefig(fname, *args, **kwargs):
    with open(fname, "wb") as f:
        f.write(b"%PDF-1.4\n% fake figure written by the torch-migrate scoreboard shim\n")


def _nothing(*args, **kwargs):
    return None


def __getattr__(name):
    return _nothing
