"""The one place that writes to the terminal: findings, diffs, documents, summary, progress."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from migrator.batch import Outcome
from migrator.report import Report
from migrator.results import Status


class Terminal:
    """Streams a run's output in the chosen ``fmt``.

    Text: a diff (default mode / ``--diff``) goes to stdout and the findings then go to
    stderr, so ``migrate src > fix.patch`` gives a patch ``git apply`` takes; without a diff
    the findings are the output (stdout). Summary, warnings, progress: stderr.
    json / sarif: one document on stdout at the end. github: annotation lines on stdout.
    """

    def __init__(
        self,
        fmt: str = "text",
        *,
        show_diff: bool = False,
        quiet: bool = False,
        verbose: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.fmt = fmt
        self.show_diff = show_diff
        self.quiet = quiet
        self.verbose = verbose
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._progress_shown = False
        self._last_progress = 0.0

    def _findings_stream(self) -> TextIO:
        return self.err if self.show_diff else self.out

    def file(self, outcome: Outcome) -> None:
        """Everything about one file that is printed as soon as it is known."""
        self._clear_progress()
        if self.fmt == "github":
            from migrator.formats.github import annotations

            for line in annotations(outcome):
                print(line, file=self.out)
            return
        if self.fmt != "text":
            return
        if self.show_diff and outcome.diff:
            self.out.write(outcome.diff)
        stream = self._findings_stream()
        for f in outcome.findings:
            print(f.render(outcome.path), file=stream)
        if outcome.status is Status.SKIPPED and self.verbose:
            print(f"{outcome.path}: skipped: {outcome.reason}", file=self.err)
        elif outcome.status is Status.SKIPPED and outcome.explicit and outcome.reason == "empty file":
            print(f"{outcome.path}: skipped: empty file, nothing to migrate", file=self.err)
        if outcome.traceback and self.verbose:
            print(outcome.traceback, file=self.err)
        self.out.flush()

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
        if document is not None:
            self.out.write(document)
            self.out.flush()
        if self.fmt == "text" and not self.quiet:
            print(report.summary(), file=self.err)

    def warning(self, message: str) -> None:
        self._clear_progress()
        print(f"warning: {message}", file=self.err)

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
