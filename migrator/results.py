"""Values the pipeline returns: findings and per-file results (only the CLI prints)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

_LINE_BREAK = re.compile(r"[ \t]*[\r\n]+[ \t]*")


def _one_line(message: str) -> str:
    """Each line break, with the indentation around it, becomes one space."""
    return _LINE_BREAK.sub(" ", message).strip()


@dataclass(frozen=True, order=True)
class Finding:
    """One reported item: ``path:line:col: CODE message``.

    ``fixed`` is True when the migration rewrites the code it reports on (whether or not
    this run writes the result); False when the finding is information or needs a human
    (MIG9xx). ``message`` is one line: line breaks (with their indentation) become a space.
    """

    line: int
    col: int
    code: str
    message: str
    fixed: bool = True

    def __post_init__(self) -> None:
        # One line, always: a message embedding a multi-line expression would break
        # `path:line:col:` parsers and annotation formats; the indentation carries nothing.
        if "\n" in self.message or "\r" in self.message:
            object.__setattr__(self, "message", _one_line(self.message))

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
