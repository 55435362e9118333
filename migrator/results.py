"""Values the pipeline returns: findings and per-file results (only the CLI prints)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Finding:
    """One reported item: ``path:line:col: CODE message``.

    ``fixed`` is True when the migrator rewrote the code it reports on; False when the
    finding is information or needs a human (MIG9xx).
    """

    line: int
    col: int
    code: str
    message: str
    fixed: bool = True

    def render(self, path: str) -> str:
        return f"{path}:{self.line}:{self.col}: {self.code} {self.message}"


class Status(enum.Enum):
    UNCHANGED = "unchanged"  # nothing to rewrite (findings may still exist)
    CHANGED = "changed"  # output differs from source
    SKIPPED = "skipped"  # not processed, ``reason`` says why (skip-file, no torch, ...)
    FAILED = "failed"  # bad input (reason) or internal error (traceback)


@dataclass(frozen=True)
class FileResult:
    """Outcome of migrating one source text."""

    path: str
    source: str
    output: str
    status: Status
    findings: tuple[Finding, ...] = ()
    reason: str | None = None  # SKIPPED / FAILED: one human line
    traceback: str | None = None  # FAILED by an internal error only
    internal_error: bool = False  # FAILED: True for a bug in the migrator (exit 123)
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def changed(self) -> bool:
        return self.status is Status.CHANGED
