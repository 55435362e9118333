"""A one-line progress bar on a terminal (stderr); silent when stderr is not a TTY."""

from __future__ import annotations

import sys
import time
from typing import IO


def _format_value(value: float) -> str:
    return f"{value:.4g}"


class ProgressBar:
    """Redraws ``Epoch e/E [####....] i/n  metric=value ...`` in place with ``\\r``.

    The trainer creates it on global rank 0 only. ``enabled=None`` means "when ``stream`` is
    a TTY", so logs of batch jobs stay free of carriage returns. Redraws are throttled to
    ``refresh_s`` so the bar costs nothing measurable per batch.
    """

    def __init__(self, enabled: bool | None = None, stream: IO[str] | None = None,
                 refresh_s: float = 0.1, width: int = 20) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.enabled = bool(isatty()) if enabled is None else enabled
        self.refresh_s, self.width = refresh_s, width
        self._last_draw = 0.0
        self._line_len = 0
        self._prefix = ""
        self._total: int | None = None

    def start(self, description: str, total: int | None) -> None:
        """Begin a new pass (an epoch or a validation run) of ``total`` batches."""
        self._prefix, self._total, self._last_draw = description, total, 0.0

    def update(self, done: int, metrics: dict[str, float], *, force: bool = False) -> None:
        """Show ``done`` batches finished and ``metrics`` (redrawn at most every refresh_s)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.refresh_s:
            return
        self._last_draw = now
        if self._total:
            filled = min(self.width, self.width * done // self._total)
            bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self._total}"
        else:
            bar = f"{done}"
        shown = "  ".join(f"{k}={_format_value(v)}" for k, v in metrics.items())
        line = f"{self._prefix} {bar}  {shown}".rstrip()
        pad = max(0, self._line_len - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._line_len = len(line)

    def finish(self, done: int, metrics: dict[str, float]) -> None:
        """Draw the final state of the pass and move to a new line."""
        if not self.enabled:
            return
        self.update(done, metrics, force=True)
        self.stream.write("\n")
        self.stream.flush()
        self._line_len = 0
