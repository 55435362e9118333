"""Entry point for one source text: parse, analyse, plan, apply, verify (stub until the pipeline lands)."""

from __future__ import annotations

from migrator.options import Options
from migrator.results import FileResult, Status


def migrate_source(source: str, path: str = "<string>", options: Options = Options()) -> FileResult:
    """Migrate ``source`` (the text of ``path``) and return the result; never raises.

    Bad input (syntax error, ...) returns ``Status.FAILED`` with ``reason``; a bug in the
    migrator returns ``Status.FAILED`` with ``internal_error=True`` and a ``traceback``.
    """
    return FileResult(path=path, source=source, output=source, status=Status.UNCHANGED)
