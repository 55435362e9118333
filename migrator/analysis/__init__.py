"""Analysis: one read-only pass over the tree, then frozen facts derived on demand."""

from __future__ import annotations

import libcst as cst

from migrator.analysis.devices import DeviceFacts
from migrator.analysis.index import Index


class Facts(DeviceFacts):
    """Every fact group (core, training, devices); see docs/internals.md "How to write a rule"."""


def analyse(module: cst.Module) -> Facts:
    """Index ``module`` once (metadata resolved here) and return its lazily derived facts."""
    return Facts(Index(module))
