"""The one place that writes to the terminal: findings, diffs, documents, summary, progress."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from migrator.batch import Outcome
from migrator.report import Report
from migrator.results import Status


class Terminal:
    """Streams a run's output in the chosen ``fmt``; one rule decides the streams (ruff's).

    stdout carries one product. When it carries migrated code (a diff in the default mode or
    with ``--diff``, the source with ``--write -``), the report (findings as text or github
    annotations, a json / sarif document) goes to stderr, so ``migrate src > fix.patch`` and
    an editor's ``migrate --write -`` get nothing but code; otherwise the report is the
    product and goes to stdout. Summary, warnings, notes and progress: always stderr.

    ``quiet`` 1 (``-q``): the report and the code only (no summary, warnings, notes,
    progress). ``quiet`` 2 (``-qq``, ``--silent``): the code only; the exit status tells.
    """

    def __init__(
        self,
        fmt: str = "text",
        *,
        show_diff: bool = False,
        code_on_stdout: bool = False,
        quiet: int = 0,
        verbose: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.fmt = fmt
        self.show_diff = show_diff
        self.quiet = int(quiet)
        self.verbose = verbose
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.report_stream = self.err if show_diff or code_on_stdout else self.out
        self._progress_shown = False
        self._last_progress = 0.0

    def file(self, outcome: Outcome) -> None:
        """Everything about one file that is printed as soon as it is known."""
        self._clear_progress()
        if self.show_diff and outcome.diff:
            self.out.write(outcome.diff)
        if self.quiet < 2:
            self._findings(outcome)
        if outcome.status is Status.SKIPPED and self.verbose:
            self.note(f"{outcome.path}: skipped: {outcome.reason}")
        elif outcome.status is Status.SKIPPED and outcome.explicit and outcome.reason == "empty file":
            self.note(f"{outcome.path}: skipped: empty file, nothing to migrate")
        if outcome.traceback and self.verbose:
            print(outcome.traceback, file=self.err)
        self.out.flush()

    def _findings(self, outcome: Outcome) -> None:
        if self.fmt == "github":
            from migrator.formats.github import annotations

            lines = annotations(outcome)
        elif self.fmt == "text":
            lines = [f.render(outcome.path) for f in outcome.findings]
        else:
            return  # json / sarif: one document at the end
        for line in lines:
            print(line, file=self.report_stream)
        self.report_stream.flush()

    def stdout_text(self, text: str) -> None:
        """The migrated source itself (``-`` with ``--write``)."""
        self.out.write(text)
        self.out.flush()

    def stdout_bytes(self, data: bytes) -> None:
        """An input passed through untouched (skipped or failed stdin with ``--write``)."""
        self.out.flush()
        buffer = getattr(self.out, "buffer", None)
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:
            self.out.write(data.decode("utf-8", errors="replace"))

    def finish(self, report: Report, *, document: str | None = None) -> None:
        self._clear_progress()
        if document is not None and self.quiet < 2:
            self.report_stream.write(document)
            self.report_stream.flush()
        if self.fmt == "text" and not self.quiet and report.outcomes:
            print(report.summary(), file=self.err)

    def warning(self, message: str) -> None:
        """A ``warning: ...`` line on stderr (hidden by ``-q``)."""
        if self.quiet:
            return
        self._clear_progress()
        print(f"warning: {message}", file=self.err)

    def note(self, message: str) -> None:
        """An informational line on stderr (hidden by ``-q``)."""
        if self.quiet:
            return
        self._clear_progress()
        print(message, file=self.err)

    def error(self, message: str) -> None:
        self._clear_progress()
        print(f"error: {message}", file=self.err)

    def progress(self, done: int, total: int) -> None:
        """A `[done/total]` counter on stderr, only on a terminal and at most 10 times a second."""
        if self.quiet or not _isatty(self.err):
            return
        now = time.monotonic()
        if done < total and now - self._last_progress < 0.1:
            return
        self._last_progress = now
        self.err.write(f"\rmigrate: {done}/{total} files")
        self.err.flush()
        self._progress_shown = True

    def _clear_progress(self) -> None:
        if self._progress_shown:
            self.err.write("\r\033[K")
            self._progress_shown = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
